"""The paper's figures: DET curves, waveforms and spectrograms, the spectrum of the perturbation,
the privacy-quality picture. Every function returns a matplotlib Figure; :func:`save_figure`
writes it under ``figures/`` (see :func:`spkadv.base.config.figures_dir`).

matplotlib and seaborn are imported in :func:`setup`, not at the top: the backend (Agg outside a
Jupyter kernel) must be chosen before pyplot loads, and importing this module stays cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.signal import spectrogram, welch
from scipy.stats import norm

from spkadv import SAMPLE_RATE
from spkadv.base.config import figures_dir
from spkadv.base.fileio import atomic_path
from spkadv.evaluation.metrics import det_curve, eer

_READY = False


def setup() -> None:
    """Set the seaborn theme once; use the non-interactive Agg backend outside a Jupyter kernel."""
    global _READY
    if _READY:
        return
    import matplotlib

    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    _READY = True


def _plt():
    setup()
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig, name: str, profile: str | None, formats: Sequence[str] = ("png",), dpi: int = 150
) -> list[Path]:
    """Write ``fig`` as ``<figures_dir(profile)>/<name>.<fmt>`` atomically; return the paths."""
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"figure name must be a plain file stem, got {name!r}")
    paths = []
    for fmt in formats:
        path = figures_dir(profile) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths


def det_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = ""):
    """DET curves on normal-deviate axes: ``{label: (target_scores, nontarget_scores)}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    lo, hi = 1e-3, 0.6
    for label, (tar, non) in curves.items():
        fpr, fnr = det_curve(tar, non)
        keep = (fpr > 0) & (fnr > 0)  # zero error rates lie at minus infinity on these axes
        ax.plot(
            norm.ppf(np.clip(fpr[keep], lo, hi)),
            norm.ppf(np.clip(fnr[keep], lo, hi)),
            label=f"{label} (EER {eer(tar, non):.2f} %)",
        )
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.4])
    ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.plot(norm.ppf([lo, hi]), norm.ppf([lo, hi]), color="grey", lw=0.8, ls=":")
    ax.set_xlim(norm.ppf([lo, hi]))
    ax.set_ylim(norm.ppf([lo, hi]))
    ax.set_xlabel("false acceptance rate (%)")
    ax.set_ylabel("false rejection rate (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def waveforms_and_spectrograms(
    signals: Mapping[str, np.ndarray], sr: int = SAMPLE_RATE, title: str = ""
):
    """One row per signal (e.g. x, delta, x', x̂): waveform on the left, log spectrogram on the right."""
    plt = _plt()
    n = len(signals)
    fig, axes = plt.subplots(
        n, 2, figsize=(11, 1.9 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 1.3]}
    )
    for row, (label, x) in enumerate(signals.items()):
        x = np.asarray(x, dtype=np.float64)
        t = np.arange(x.size) / sr
        axes[row, 0].plot(t, x, lw=0.4)
        axes[row, 0].set_ylabel(label)
        axes[row, 0].set_xlim(0, t[-1] if t.size else 1)
        f, tt, s = spectrogram(x, fs=sr, nperseg=512, noverlap=384)
        axes[row, 1].pcolormesh(
            tt,
            f / 1000,
            10 * np.log10(s + 1e-12),
            shading="auto",
            cmap="magma",
            vmin=-130,
            vmax=-30,
        )
        axes[row, 1].set_ylabel("kHz")
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 1].set_xlabel("time (s)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


BANDS_HZ = ((0, 1000), (1000, 4000), (4000, 8000))


def band_energy_fractions(x: np.ndarray, sr: int = SAMPLE_RATE, bands=BANDS_HZ) -> dict[str, float]:
    """Share of ``x``'s energy in each frequency band (Welch power spectrum)."""
    f, p = welch(np.asarray(x, dtype=np.float64), fs=sr, nperseg=1024)
    total = p.sum()
    return {
        f"{lo / 1000:g}-{hi / 1000:g} kHz": float(p[(f >= lo) & (f < hi)].sum() / total)
        for lo, hi in bands
    }


def delta_spectrum(
    spectra: Mapping[str, np.ndarray],
    sr: int = SAMPLE_RATE,
    title: str = "Where the perturbation's energy lies",
):
    """Long-term power spectra (Welch) of several signals, e.g. the speech x and the perturbation delta."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label, x in spectra.items():
        f, p = welch(np.asarray(x, dtype=np.float64), fs=sr, nperseg=1024)
        ax.plot(f / 1000, 10 * np.log10(p + 1e-20), label=label)
    ax.set_xlabel("frequency (kHz)")
    ax.set_ylabel("power (dB/Hz)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def privacy_quality(points, title: str = "Privacy vs quality"):
    """EER (privacy, higher = better hidden) against SNR (quality) per condition.

    Args:
        points: DataFrame with columns ``condition``, ``snr_db``, ``eer`` (percent) and optionally
            ``encoder`` (marker style).
    """
    import seaborn as sns

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    data = points.copy()
    data["snr_db"] = data["snr_db"].astype(float).clip(upper=80.0)  # rec (inf) drawn at the edge
    style = "encoder" if "encoder" in data.columns else None
    sns.scatterplot(data=data, x="snr_db", y="eer", hue="condition", style=style, s=80, ax=ax)
    for _, row in data.drop_duplicates("condition").iterrows():
        ax.annotate(
            row["condition"],
            (row["snr_db"], row["eer"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("SNR against the original (dB; inf drawn at 80)")
    ax.set_ylabel("EER (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def robustness_bars(table, title: str = "Restoration after channel distortions"):
    """Two panels: SNR(restored) and rec-rst EER per distortion (``robustness.csv`` as a DataFrame)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = table["distortion"].astype(str)
    axes[0].barh(names, table["snr_rst_db"].astype(float).clip(upper=150))
    axes[0].set_xlabel("SNR(restored) vs original (dB)")
    axes[1].barh(names, table["eer_recrst"].astype(float))
    axes[1].set_xlabel("rec-rst EER (%)")
    axes[1].set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(history: list[dict[str, float]], title: str = ""):
    """Training's loss curves (one panel per term) and the batch SNR of x', from the history of
    :func:`spkadv.core.train.train`."""
    plt = _plt()
    keys = [
        k
        for k in ("total", "angular", "quality", "rpt", "noise", "mask", "snr_db", "snr_rst_db")
        if any(k in h for h in history)
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 2.6), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(steps, [h.get(key, float("nan")) for h in history], lw=0.8)
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
