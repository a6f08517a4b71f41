"""Local (per time-frequency bin) SNR of a perturbation, on signals where the answer is known."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from spkadv.evaluation import delta_bins  # noqa: E402
from spkadv.evaluation.conditions import matched_noise  # noqa: E402

SR = 16000


def _speech_like(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonics of 130 Hz under a syllabic envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    tone = sum(np.sin(2 * np.pi * 130 * k * t) / k for k in range(1, 12))
    return 0.1 * tone * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 1e-3 * rng.standard_normal(len(t))


def _at_snr(x: np.ndarray, delta: np.ndarray, db: float) -> np.ndarray:
    return delta * np.sqrt(np.sum(x**2) / np.sum(delta**2) / 10 ** (db / 10))


def test_scaled_copy_is_at_the_same_snr_in_every_bin():
    x = _speech_like()
    stats = delta_bins.delta_bins([(x, x * 1.01)])  # δ = 0.01 x: 40 dB everywhere
    centres = delta_bins.edges()[:-1] + delta_bins.BIN_DB / 2
    occupied = centres[stats.counts > 0]
    assert occupied.min() >= 40 - delta_bins.BIN_DB and occupied.max() <= 40 + delta_bins.BIN_DB
    assert stats.global_snr_db() == pytest.approx(40, abs=1e-6)
    assert stats.weighted_median_db() == pytest.approx(40, abs=delta_bins.BIN_DB)
    assert stats.share_below(0) == 0 and stats.share_below(10) == 0
    n_bins = (1 + (len(x) - delta_bins.N_FFT) // delta_bins.HOP) * (delta_bins.N_FFT // 2 + 1)
    # only the rare deep nulls of the background noise fall below the floor (measured 4 of 63479)
    assert n_bins * 0.999 <= stats.counts.sum() <= n_bins


def test_delta_in_bins_where_x_is_silent_in_frequency():
    t = np.arange(2 * SR) / SR
    x = 0.3 * np.sin(2 * np.pi * 1000 * t)
    delta = _at_snr(x, np.sin(2 * np.pi * 5000 * t), 30)
    stats = delta_bins.BinStats().add(x, delta)
    assert stats.global_snr_db() == pytest.approx(30, abs=0.01)
    assert stats.share_below(0) > 0.99  # δ's bins hold nothing of x: all its energy is below 0 dB
    assert stats.weighted_median_db() < -20
    assert stats.counts[-1] > 0 and stats.delta_energy[-1] < 1e-6 * stats.delta_energy.sum()


def test_delta_in_bins_where_x_is_silent_in_time():
    x = _speech_like(3.0)
    x[SR : 2 * SR] = 0.0  # a pause of digital silence
    noise = np.zeros_like(x)
    noise[SR + 1000 : 2 * SR - 1000] = np.random.default_rng(1).standard_normal(SR - 2000)
    delta = _at_snr(x, noise, 31)
    stats = delta_bins.BinStats().add(x, delta)
    assert stats.global_snr_db() == pytest.approx(31, abs=0.01)
    assert stats.share_below(0) == pytest.approx(1.0, abs=1e-9)


def test_matched_noise_spreads_over_the_bins():
    """White x, white δ at 30 dB: each bin's SNR is 30 dB + 10 log10(E1 / E2), E1, E2 ~ Exp(1)
    (median 30 dB; below 10 dB with probability 1 %)."""
    rng = np.random.default_rng(2)
    x = 0.1 * rng.standard_normal(4 * SR)
    delta = matched_noise(x, _at_snr(x, rng.standard_normal(len(x)), 30), 0, "u") - x
    stats = delta_bins.BinStats().add(x, delta)
    assert stats.global_snr_db() == pytest.approx(30, abs=0.1)
    assert stats.median_db() == pytest.approx(30, abs=1)
    assert stats.share_below(10) < 0.05 and stats.share_below(0) < 0.005
    assert 20 < stats.weighted_median_db() < 30  # δ's energy leans to the bins where it is loud


def test_bins_silent_in_both_are_left_out():
    x = _speech_like(2.0)
    x[: SR // 2] = 0.0
    delta = 0.01 * x
    part = delta_bins.BinStats().add(x, delta)
    frames = 1 + (len(x) - delta_bins.N_FFT) // delta_bins.HOP
    silent_frames = 1 + (SR // 2 - delta_bins.N_FFT) // delta_bins.HOP  # wholly inside the zeros
    expected = (frames - silent_frames) * (delta_bins.N_FFT // 2 + 1)
    assert expected * 0.999 <= part.counts.sum() <= expected  # and a few deep nulls


def test_pairs_accumulate():
    x1, x2 = _speech_like(1.0, seed=1), _speech_like(1.5, seed=2)
    rng = np.random.default_rng(3)
    d1 = _at_snr(x1, rng.standard_normal(len(x1)), 40)
    d2 = _at_snr(x2, rng.standard_normal(len(x2)), 20)
    both = delta_bins.BinStats().add(x1, d1).add(x2, d2)
    again = delta_bins.delta_bins([(x1, x1 + d1), (x2, x2 + d2)])  # from (x, x')
    np.testing.assert_allclose(again.delta_energy, both.delta_energy, rtol=1e-6)
    one, two = delta_bins.BinStats().add(x1, d1), delta_bins.BinStats().add(x2, d2)
    np.testing.assert_array_equal(both.counts, one.counts + two.counts)
    np.testing.assert_allclose(both.delta_energy, one.delta_energy + two.delta_energy, rtol=1e-6)
    assert both.pairs == 2 and both.global_snr_db() == pytest.approx(30, abs=0.01)
    summary = both.summary()
    assert summary["pairs"] == 2 and 0 <= summary["delta_energy_share_below_10db"] <= 1
    with pytest.raises(ValueError, match="not an edge"):
        both.share_below(3.3)
    with pytest.raises(ValueError, match="differ in shape"):
        delta_bins.BinStats().add(x1, d2)


def test_figure_has_both_histograms():
    x = _speech_like()
    stats = {
        "δ": delta_bins.BinStats().add(x, 0.01 * x),
        "noise": delta_bins.BinStats().add(
            x, 1e-3 * np.random.default_rng(0).standard_normal(len(x))
        ),
    }
    fig = delta_bins.figure(stats, "test")
    try:
        assert len(fig.axes) == 2 and all(len(ax.lines) == 4 for ax in fig.axes)  # 2 + 2 markers
    finally:
        plt.close(fig)
