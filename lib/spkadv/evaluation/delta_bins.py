"""Where a perturbation's energy sits relative to the speech: the local SNR of each time-frequency
bin, ``10 log10(|X(t, f)|^2 / |Δ(t, f)|^2)``, for pairs (x, x' = x + δ).

The hypothesis it tests: a white box on log-fbank features (CAM++) lets δ live in the bins where x
has little energy, so the local SNR there is poor (δ dominates the bin, which a log front end sees
as a large change) while the global SNR stays high (31 dB on the default profile); a front end on
linear power (GE2E's mel power) is dominated by the loud bins and barely sees those. The figures of
merit: the share of δ's energy in bins with local SNR below 0 dB (δ louder than x there) and below
10 dB, and the median local SNR weighted by δ's energy, against Gaussian noise of the same power
(:func:`spkadv.evaluation.conditions.matched_noise`), which spreads evenly over the bins.

STFT: ``N_FFT`` = 512 samples (32 ms at 16 kHz), hop ``HOP`` = 128 (8 ms), periodic Hann window,
frames inside the signal only (no padding). A bin is left out when both |X|^2 and |Δ|^2 are below
``FLOOR_DB`` dB relative to the bin power of a full-scale sine (digital silence: the zeros around
synthetic utterances). Local SNRs are histogrammed in ``BIN_DB`` steps over [``LOW_DB``,
``HIGH_DB``]; values beyond fall in the end bins (a bin where x is below the floor and δ is not is
at -inf: the first bin).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np

from spkadv.evaluation.metrics import snr_db

N_FFT = 512
HOP = 128
FLOOR_DB = -120.0  # relative to the bin power of a full-scale sine
LOW_DB, HIGH_DB, BIN_DB = -60.0, 80.0, 0.5
SHARE_BELOW_DB = (0.0, 10.0)


def edges() -> np.ndarray:
    """The histogram's bin edges in dB (0 and 10 dB are edges)."""
    return np.linspace(LOW_DB, HIGH_DB, round((HIGH_DB - LOW_DB) / BIN_DB) + 1)


def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)


def floor_power() -> float:
    """``FLOOR_DB`` as a bin power: a full-scale sine's peak bin is (sum of the window / 2)^2."""
    return float((_window().sum() / 2) ** 2 * 10 ** (FLOOR_DB / 10))


def power_spectrogram(x: np.ndarray) -> np.ndarray:
    """|STFT|^2 of a 1-D signal: (frames, N_FFT // 2 + 1), Hann, hop ``HOP``, no padding."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) < N_FFT:
        raise ValueError(f"a 1-D signal of at least {N_FFT} samples, got shape {x.shape}")
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    spec = np.fft.rfft(frames * _window(), axis=-1)
    return spec.real**2 + spec.imag**2


def local_snr_db(x: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local SNR in dB, |Δ|^2, |X|^2) of the bins kept (above the floor), flattened."""
    if np.shape(x) != np.shape(delta):
        raise ValueError(f"x and δ differ in shape: {np.shape(x)} vs {np.shape(delta)}")
    px, pd = power_spectrogram(x), power_spectrogram(delta)
    keep = np.maximum(px, pd) >= floor_power()
    px, pd = px[keep], pd[keep]
    with np.errstate(divide="ignore"):
        snr = 10 * np.log10(px) - 10 * np.log10(pd)  # -inf: x silent there, +inf: δ silent
    return snr, pd, px


@dataclass
class BinStats:
    """Histograms of local SNR over the bins of one or more (x, δ) pairs, summed."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(edges()) - 1))
    delta_energy: np.ndarray = field(default_factory=lambda: np.zeros(len(edges()) - 1))
    x_energy: float = 0.0  # time-domain sums, for the pooled global SNR
    d_energy: float = 0.0
    snrs: list[float] = field(default_factory=list)  # each pair's global SNR (metrics.snr_db)

    def add(self, x: np.ndarray, delta: np.ndarray) -> BinStats:
        """Add one pair (x, δ = x' - x); returns self."""
        snr, pd, _ = local_snr_db(x, delta)
        index = np.clip(np.searchsorted(edges(), snr, side="right") - 1, 0, len(self.counts) - 1)
        self.counts += np.bincount(index, minlength=len(self.counts))
        self.delta_energy += np.bincount(index, weights=pd, minlength=len(self.counts))
        self.x_energy += float(np.sum(np.asarray(x, dtype=np.float64) ** 2))
        self.d_energy += float(np.sum(np.asarray(delta, dtype=np.float64) ** 2))
        self.snrs.append(snr_db(x, x + delta))
        return self

    @property
    def pairs(self) -> int:
        return len(self.snrs)

    def global_snr_db(self) -> float:
        """Mean over the pairs of each one's global SNR (how the stages report SNR, dB)."""
        return float(np.mean(self.snrs))

    def pooled_snr_db(self) -> float:
        """10 log10 of x's energy over δ's, both summed over the pairs."""
        return float(10 * np.log10(self.x_energy / self.d_energy))

    def share_below(self, db: float) -> float:
        """Share of δ's (STFT) energy in bins whose local SNR is below ``db`` (an edge)."""
        position = np.flatnonzero(np.isclose(edges(), db))
        if len(position) != 1:
            raise ValueError(f"{db} dB is not an edge of the histogram")
        return float(self.delta_energy[: position[0]].sum() / self.delta_energy.sum())

    def weighted_median_db(self) -> float:
        """Median local SNR weighted by δ's energy (linear within the histogram bin)."""
        return _median(self.delta_energy)

    def median_db(self) -> float:
        """Median local SNR over the bins (unweighted)."""
        return _median(self.counts)

    def summary(self) -> dict[str, float]:
        out = {
            "pairs": self.pairs,
            "bins": int(self.counts.sum()),
            "global_snr_db": self.global_snr_db(),
            "pooled_snr_db": self.pooled_snr_db(),
            "median_local_snr_db": self.median_db(),
            "delta_weighted_median_local_snr_db": self.weighted_median_db(),
        }
        for db in SHARE_BELOW_DB:
            out[f"delta_energy_share_below_{db:g}db"] = self.share_below(db)
        return out


def _median(weights: np.ndarray) -> float:
    cum = np.cumsum(weights) / weights.sum()
    i = int(np.searchsorted(cum, 0.5))
    before = cum[i - 1] if i else 0.0
    lo = edges()[i]
    return float(lo + BIN_DB * (0.5 - before) / (cum[i] - before))


def delta_bins(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> BinStats:
    """:class:`BinStats` over pairs (x, x'): δ = x' - x."""
    stats = BinStats()
    for x, x_adv in pairs:
        x = np.asarray(x, dtype=np.float64)
        stats.add(x, np.asarray(x_adv, dtype=np.float64) - x)
    return stats


def figure(stats: Mapping[str, BinStats], title: str = "") -> plt.Figure:
    """Two panels per condition (e.g. ``{"δ": ..., "noise": ...}``): the share of bins per local
    SNR, and the share of the perturbation's energy per local SNR; 0 and 10 dB marked."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    centres = edges()[:-1] + BIN_DB / 2
    for name, s in stats.items():
        axes[0].plot(centres, s.counts / s.counts.sum() / BIN_DB, label=name)
        axes[1].plot(
            centres,
            s.delta_energy / s.delta_energy.sum() / BIN_DB,
            label=f"{name} (<0 dB: {s.share_below(0):.0%}, <10 dB: {s.share_below(10):.0%})",
        )
    for ax, ylabel in zip(axes, ("bins (density)", "perturbation energy (density)"), strict=True):
        for db in SHARE_BELOW_DB:
            ax.axvline(db, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("local SNR 10 log10(|X|² / |Δ|²) per bin (dB)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[0].set_title("bins by local SNR")
    axes[1].set_title("where the perturbation's energy sits")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
