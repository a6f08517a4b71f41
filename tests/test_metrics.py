"""Metrics against constructed inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from spkadv.evaluation import metrics

SR = 16_000


def speech_like(seconds: float = 3.0, sr: int = SR) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with a gliding F0 (PESQ and Praat accept it)."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120.0 + 20.0 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    x = x * np.clip(0.5 + 0.5 * np.sin(2 * np.pi * 3 * t), 0, None) ** 2
    return (0.3 * x / np.abs(x).max()).astype(np.float64)


def with_noise(x: np.ndarray, snr: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=x.size)
    noise *= math.sqrt(np.mean(x**2) / 10 ** (snr / 10) / np.mean(noise**2))
    return x + noise


# --- SNR ------------------------------------------------------------------------------------


def test_snr_exact_on_constructed_signals():
    ref = np.array([1.0, -1.0, 1.0, -1.0])  # power sum 4
    test = ref + np.array([0.1, 0.0, -0.1, 0.0])  # noise sum 0.02
    assert metrics.snr_db(ref, test) == pytest.approx(10 * math.log10(4 / 0.02))
    assert metrics.snr_db(ref, 1.1 * ref) == pytest.approx(20.0)


def test_snr_infinite_when_equal_and_length_mismatch_is_an_error():
    x = speech_like(0.5)
    assert metrics.snr_db(x, x.copy()) == math.inf
    with pytest.raises(ValueError, match="samples"):
        metrics.snr_db(x, x[:-1])


# --- PESQ -----------------------------------------------------------------------------------


def test_pesq_raw_nb_of_identical_signals_is_4_5():
    x = speech_like()
    assert metrics.pesq_nb_raw(x, x, SR) == pytest.approx(4.5, abs=1e-3)
    assert metrics.pesq_wb(x, x, SR) > 4.5  # MOS-LQO ceiling is about 4.64


def test_pesq_decreases_with_noise():
    x = speech_like()
    scores = [metrics.pesq_nb_raw(x, with_noise(x, snr), SR) for snr in (40, 25, 10)]
    assert scores[0] > scores[1] > scores[2]
    assert all(-0.5 <= s <= 4.5 for s in scores)


def test_mos_lqo_inversion_round_trips():
    for raw in (-0.5, 1.0, 2.5, 4.0, 4.5):
        mos = 0.999 + 4.0 / (1.0 + math.exp(-1.4945 * raw + 4.6607))
        assert metrics.mos_lqo_to_raw_nb(mos) == pytest.approx(raw, abs=1e-9)
    with pytest.raises(ValueError, match="MOS-LQO"):
        metrics.mos_lqo_to_raw_nb(0.5)


# --- Pitch correlation ----------------------------------------------------------------------


def test_pitch_correlation_with_itself_is_one():
    x = speech_like()
    assert metrics.pitch_correlation(x, x, SR) == pytest.approx(1.0)


def test_pitch_correlation_aligns_a_time_shifted_copy():
    speech, pad = speech_like(), np.zeros(2400)
    x, shifted = np.r_[speech, pad], np.r_[pad, speech]  # the same speech 150 ms later
    a = metrics.f0_track(x, SR)
    b = metrics.f0_track(shifted, SR)
    # Without alignment the tracks disagree; with it they correlate almost perfectly.
    assert np.corrcoef(a, b)[0, 1] < 0.9
    assert metrics.pitch_correlation(x, shifted, SR) > 0.97


def test_pitch_track_correlation_rules():
    # Stretching: a track at half the frame rate is interpolated to the longer length.
    a = np.array([100.0, 150.0, 200.0, 150.0, 100.0])
    b = np.array([100.0, 200.0, 100.0])
    assert metrics.pitch_track_correlation(a, b) == pytest.approx(1.0)
    # Constant (unvoiced) tracks give NaN in Pearson: reported as 0.
    assert metrics.pitch_track_correlation(np.zeros(10), np.zeros(10)) == 0.0
    # Out-of-range values count as unvoiced: 600 Hz becomes 0, matching the other track's gap.
    assert metrics.pitch_track_correlation(
        np.array([0.0, 100.0, 600.0, 120.0]), np.array([0.0, 100.0, 0.0, 120.0])
    ) == pytest.approx(1.0)


def test_pitch_correlation_pyworld_extractor_and_bad_name():
    x = speech_like(1.5)
    assert metrics.pitch_correlation(x, x, SR, extractor="harvest") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown pitch extractor"):
        metrics.pitch_correlation(x, x, SR, extractor="crepe")


# --- EER and friends ------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [metrics.eer, metrics.eer_kaldi])
def test_eer_hand_computed(fn):
    assert fn([2, 3, 4, 5], [0, 1]) == 0.0  # perfectly separated
    assert fn([1, 3], [0, 2]) == pytest.approx(50.0)
    # sorted: 8T 6T 5N 4T 3N 2T 1N 0N -> one target miss and one false accept at threshold 4
    assert fn([2, 4, 6, 8], [1, 3, 5, 0]) == pytest.approx(25.0)
    assert fn([1, 2, 3], [1.5]) == pytest.approx(100 / 3)
    assert fn([1, 1], [1, 1]) == pytest.approx(50.0)  # all tied


def test_eer_interpolates_where_kaldi_takes_a_rank_ratio():
    # Sorted: 3T, then a tie at 1 (one target, one non-target), then 0N. ROC points (FPR, FNR):
    # (0, 1), (0, .5), (.5, 0), (1, 0); the segment (0, .5)-(.5, 0) crosses FPR = FNR at .25.
    assert metrics.eer([1, 3], [1, 0]) == pytest.approx(25.0)
    # Kaldi: at target rank 0 (score 1) the top non-target (1) is not below it -> rank 1 -> 1/2.
    assert metrics.eer_kaldi([1, 3], [1, 0]) == pytest.approx(50.0)


@pytest.mark.parametrize("fn", [metrics.eer, metrics.eer_kaldi])
def test_eer_of_gaussian_scores_matches_theory(fn):
    rng = np.random.default_rng(1)
    d = 2.0  # unit-variance classes 2 apart: EER = Phi(-1)
    tar, non = rng.normal(d, 1, 100_000), rng.normal(0, 1, 100_000)
    assert fn(tar, non) == pytest.approx(100 * norm.cdf(-d / 2), abs=0.3)


def test_eer_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="target"):
        metrics.eer([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        metrics.eer([np.nan], [1.0])


def test_bootstrap_ci_is_seeded_and_brackets_the_eer():
    rng = np.random.default_rng(2)
    tar, non = rng.normal(2, 1, 400), rng.normal(0, 1, 4000)
    e = metrics.eer(tar, non)
    low, high = metrics.eer_bootstrap_ci(tar, non, n_boot=200, seed=3)
    assert low < e < high
    assert (low, high) == metrics.eer_bootstrap_ci(tar, non, n_boot=200, seed=3)
    assert high - low < 10


def test_min_dcf_and_det_curve():
    fpr, fnr = metrics.det_curve([2, 4, 6, 8], [1, 3, 5, 0])
    assert fpr[0] == 0 and fnr[0] == 1 and fpr[-1] == 1 and fnr[-1] == 0
    assert metrics.min_dcf([2, 3], [0, 1]) == 0.0
    # p_target 0.5: cost = (Pmiss + Pfa) / 2 / 0.5; best threshold of the 25 %-EER set gives .5
    assert metrics.min_dcf([2, 4, 6, 8], [1, 3, 5, 0], p_target=0.5) == pytest.approx(0.5)


def test_cosine_scores_rowwise_and_fast():
    import time

    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(metrics.cosine_scores(a, b), [0.0, 1.0])
    rng = np.random.default_rng(0)
    big_a, big_b = rng.normal(size=(40_000, 192)), rng.normal(size=(40_000, 192))
    start = time.perf_counter()
    metrics.cosine_scores(big_a, big_b)
    assert time.perf_counter() - start < 0.5
    with pytest.raises(ValueError, match="shape"):
        metrics.cosine_scores(a, b[:1])


def test_score_trials_uses_each_side():
    import pandas as pd

    trials = pd.DataFrame({"enrol": ["a", "a"], "test": ["b", "c"], "target": [1, 0]})
    emb = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.0]), "c": np.array([0.0, 1.0])}
    np.testing.assert_allclose(metrics.score_trials(trials, emb), [1.0, 0.0])
    with pytest.raises(KeyError, match="test embedding"):
        metrics.score_trials(trials, {"a": emb["a"]})
