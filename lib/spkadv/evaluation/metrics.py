"""Figures of merit of the paper (docs/protocol.md §5): SNR, PESQ, pitch correlation, EER, minDCF.

All functions take numpy arrays. Waveforms are 1-D float arrays in [-1, 1]; scores are 1-D
arrays of cosine similarities (higher = more likely the same speaker). EERs are in percent.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
from pesq import PesqError, pesq

from spkadv import SAMPLE_RATE
from spkadv.audio.io import resample

# ---------------------------------------------------------------------------------------------
# Signal quality
# ---------------------------------------------------------------------------------------------


def _pair(ref: np.ndarray, test: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if ref.ndim != 1 or test.ndim != 1:
        raise ValueError(f"{what}: expected 1-D waveforms, got shapes {ref.shape} and {test.shape}")
    if ref.shape != test.shape:
        raise ValueError(
            f"{what}: reference has {ref.size} samples but test has {test.size}; "
            "compare signals of the same length (trim or pad the processed one)"
        )
    if ref.size == 0:
        raise ValueError(f"{what}: empty waveforms")
    return ref, test


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """SNR of ``test`` against the original ``ref`` over the whole utterance, in dB.

    ``10 log10(sum ref^2 / sum (test - ref)^2)``; ``inf`` when the signals are identical.
    """
    ref, test = _pair(ref, test, "snr_db")
    noise = float(np.sum((test - ref) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# P.862.1 maps raw narrow-band P.862 scores x to MOS-LQO y = 0.999 + 4 / (1 + exp(-1.4945 x + 4.6607)).
_P862_1_A, _P862_1_B = -1.4945, 4.6607
PESQ_RAW_MAX, PESQ_RAW_MIN = 4.5, -0.5


def mos_lqo_to_raw_nb(mos: float) -> float:
    """Invert the P.862.1 mapping: narrow-band MOS-LQO -> raw P.862 score (clipped to [-0.5, 4.5])."""
    if not mos > 0.999:
        raise ValueError(f"MOS-LQO {mos} is outside the P.862.1 range (> 0.999)")
    inner = 4.0 / (mos - 0.999) - 1.0
    if inner <= 0.0:  # at or above the mapping's ceiling (4.999)
        return PESQ_RAW_MAX
    raw = (math.log(inner) - _P862_1_B) / _P862_1_A
    return float(min(max(raw, PESQ_RAW_MIN), PESQ_RAW_MAX))


def _pesq_call(
    ref: np.ndarray, test: np.ndarray, sr: int, mode: str, rates: tuple[int, ...]
) -> float:
    ref, test = _pair(ref, test, f"pesq ({mode})")
    if sr not in rates:
        target = rates[-1]
        ref = resample(ref.astype(np.float32), sr, target).astype(np.float64)
        test = resample(test.astype(np.float32), sr, target).astype(np.float64)
        sr = target
    try:
        return float(pesq(sr, ref, test, mode))
    except PesqError as err:
        raise ValueError(
            f"PESQ ({mode}) failed on {ref.size / sr:.2f} s of audio: {type(err).__name__} {err}; "
            "PESQ needs at least about 0.25 s of non-silent speech"
        ) from err


def pesq_nb_raw(ref: np.ndarray, test: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Narrow-band raw P.862 PESQ (the paper's variant: range -0.5..4.5, 4.5 for identical audio).

    The ``pesq`` package returns MOS-LQO (P.862.1); this inverts that mapping. Sample rates other
    than 8 or 16 kHz are resampled to 16 kHz (narrow-band mode filters to telephone band itself).
    """
    return mos_lqo_to_raw_nb(_pesq_call(ref, test, sr, "nb", (8000, 16000)))


def pesq_wb(ref: np.ndarray, test: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Wide-band PESQ (P.862.2 MOS-LQO, maximum about 4.64); audio is resampled to 16 kHz if needed."""
    return _pesq_call(ref, test, sr, "wb", (16000,))


# ---------------------------------------------------------------------------------------------
# Pitch correlation (VoicePrivacy 2022)
# ---------------------------------------------------------------------------------------------

PitchExtractor = Literal["praat", "harvest", "dio"]


def f0_track(
    x: np.ndarray,
    sr: int = SAMPLE_RATE,
    extractor: PitchExtractor = "praat",
    step_s: float = 0.01,
    f0_min: float = 75.0,
    f0_max: float = 500.0,
) -> np.ndarray:
    """F0 in Hz per frame (0 where unvoiced) with Praat (parselmouth) or WORLD (pyworld)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"f0_track: expected a non-empty 1-D waveform, got shape {x.shape}")
    # parselmouth, pyworld and scipy.signal are imported where used: the spkadv command imports
    # this module (spkadv check), and they are slow to import
    if extractor == "praat":
        import parselmouth

        pitch = parselmouth.Sound(x, sampling_frequency=sr).to_pitch(
            time_step=step_s, pitch_floor=f0_min, pitch_ceiling=f0_max
        )
        return np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    if extractor in ("harvest", "dio"):
        with warnings.catch_warnings():  # pyworld imports pkg_resources (deprecated): no warning
            warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
            import pyworld

        fn = pyworld.harvest if extractor == "harvest" else pyworld.dio
        f0, _ = fn(x, sr, f0_floor=f0_min, f0_ceil=f0_max, frame_period=step_s * 1000.0)
        return np.asarray(f0, dtype=np.float64)
    raise ValueError(f"unknown pitch extractor {extractor!r}; use 'praat', 'harvest' or 'dio'")


def pitch_track_correlation(
    f0_a: np.ndarray, f0_b: np.ndarray, f0_min: float = 75.0, f0_max: float = 500.0
) -> float:
    """Pearson correlation of two F0 tracks after the VoicePrivacy 2022 alignment.

    The shorter track is linearly interpolated to the longer one's length, values outside
    ``[f0_min, f0_max]`` become 0 (unvoiced), the second track is circularly shifted by the lag
    that maximises the full cross-correlation, and the correlation runs over all frames
    (unvoiced zeros included). A NaN (a constant track) counts as 0.
    """
    from scipy.signal import correlate  # imported here, as in f0_track

    a = np.asarray(f0_a, dtype=np.float64)
    b = np.asarray(f0_b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return 0.0
    n = max(a.size, b.size)

    def stretch(t: np.ndarray) -> np.ndarray:
        if t.size == n:
            return t
        return np.interp(np.linspace(0.0, t.size - 1.0, n), np.arange(t.size), t)

    a, b = stretch(a), stretch(b)
    a = np.where((a >= f0_min) & (a <= f0_max), a, 0.0)
    b = np.where((b >= f0_min) & (b <= f0_max), b, 0.0)
    lag = int(np.argmax(correlate(a, b, mode="full"))) - (n - 1)
    b = np.roll(b, lag)
    if a.std() == 0.0 or b.std() == 0.0:
        return 0.0
    r = float(np.corrcoef(a, b)[0, 1])
    return 0.0 if math.isnan(r) else r


def pitch_correlation(
    ref: np.ndarray, test: np.ndarray, sr: int = SAMPLE_RATE, extractor: PitchExtractor = "praat"
) -> float:
    """Pitch correlation of two utterances (VoicePrivacy 2022): 10 ms frames, 75-500 Hz.

    Args:
        extractor: ``"praat"`` (the VoicePrivacy toolkit's choice) or pyworld's ``"harvest"`` / ``"dio"``.
    """
    return pitch_track_correlation(f0_track(ref, sr, extractor), f0_track(test, sr, extractor))


# ---------------------------------------------------------------------------------------------
# Speaker verification scoring
# ---------------------------------------------------------------------------------------------


def cosine_scores(enrol_emb: np.ndarray, test_emb: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[N, D]`` embedding arrays -> ``[N]``."""
    a = np.asarray(enrol_emb, dtype=np.float64)
    b = np.asarray(test_emb, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"cosine_scores: expected two [N, D] arrays of equal shape, got {a.shape} and {b.shape}"
        )
    num = np.einsum("nd,nd->n", a, b)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def _scores(
    target_scores: np.ndarray, nontarget_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    tar = np.asarray(target_scores, dtype=np.float64).ravel()
    non = np.asarray(nontarget_scores, dtype=np.float64).ravel()
    if tar.size == 0 or non.size == 0:
        raise ValueError(
            f"need target and non-target scores, got {tar.size} target and {non.size} non-target"
        )
    if not (np.isfinite(tar).all() and np.isfinite(non).all()):
        raise ValueError("scores hold NaN/Inf; check the embeddings (a silent or empty utterance?)")
    return tar, non


def _roc_counts(
    tar: np.ndarray,
    non: np.ndarray,
    tar_w: np.ndarray | None = None,
    non_w: np.ndarray | None = None,
):
    """Cumulative accepted target / non-target weights at each distinct threshold, high to low.

    Returns ``(cum_tar, cum_non)`` of shape ``[R, K+1]`` (row 0 of each curve is 'accept nothing')
    for ``R`` weightings (1 without weights; bootstrap count matrices otherwise).
    """
    scores = np.concatenate([tar, non])
    is_tar = np.concatenate([np.ones(tar.size, bool), np.zeros(non.size, bool)])
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    last_of_group = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # ties form one threshold
    if tar_w is None:
        w = np.ones((1, scores.size))
    else:
        w = np.concatenate([tar_w, non_w], axis=1).astype(np.float64)
    w = w[:, order]
    t_mask = is_tar[order]
    cum_t = np.cumsum(np.where(t_mask, w, 0.0), axis=1)[:, last_of_group]
    cum_n = np.cumsum(np.where(t_mask, 0.0, w), axis=1)[:, last_of_group]
    zeros = np.zeros((w.shape[0], 1))
    return np.hstack([zeros, cum_t]), np.hstack([zeros, cum_n])


def _interpolated_eer(cum_t: np.ndarray, cum_n: np.ndarray) -> np.ndarray:
    """EER where the piecewise-linear ROC crosses FNR = FPR, per row, as a fraction."""
    fnr = 1.0 - cum_t / cum_t[:, -1:]
    fpr = cum_n / cum_n[:, -1:]
    d = fnr - fpr  # non-increasing from 1 to -1
    j = np.argmax(d <= 0.0, axis=1)  # first point at or past the crossing (j >= 1)
    rows = np.arange(d.shape[0])
    d0, d1 = d[rows, j - 1], d[rows, j]
    t = np.where(d0 - d1 > 0, d0 / np.where(d0 - d1 > 0, d0 - d1, 1.0), 0.0)
    return fpr[rows, j - 1] + t * (fpr[rows, j] - fpr[rows, j - 1])


def eer(target_scores: np.ndarray, nontarget_scores: np.ndarray) -> float:
    """Equal error rate in percent, where the linearly interpolated ROC crosses FNR = FPR."""
    tar, non = _scores(target_scores, nontarget_scores)
    cum_t, cum_n = _roc_counts(tar, non)
    return float(100.0 * _interpolated_eer(cum_t, cum_n)[0])


def eer_threshold(target_scores: np.ndarray, nontarget_scores: np.ndarray) -> tuple[float, float]:
    """(threshold, EER %): :func:`eer` and the score threshold at which the ROC reaches it.

    A trial is accepted when ``score >= threshold``. Between two ROC points the threshold is
    interpolated as the error rates are; where the errors are equal over a whole interval of
    thresholds (separable scores, for one) its middle is taken, and where the crossing lies above
    every score, the highest score.
    """
    tar, non = _scores(target_scores, nontarget_scores)
    cum_t, cum_n = _roc_counts(tar, non)
    rate = float(100.0 * _interpolated_eer(cum_t, cum_n)[0])
    levels = np.unique(np.concatenate([tar, non]))[::-1]  # ROC point k >= 1 accepts >= levels[k-1]
    d = (1.0 - cum_t[0] / cum_t[0, -1]) - cum_n[0] / cum_n[0, -1]
    j = int(np.argmax(d <= 0.0))  # the point at or past the crossing, as in _interpolated_eer
    if d[j] == 0.0:  # equal errors for every threshold in (levels[j], levels[j-1]]
        return float((levels[j] + levels[j - 1]) / 2.0), rate
    if j == 1:
        return float(levels[0]), rate
    w = -d[j] / (d[j - 1] - d[j])  # fraction of the way from point j up to point j-1
    return float(levels[j - 1] + w * (levels[j - 2] - levels[j - 1])), rate


def eer_kaldi(target_scores: np.ndarray, nontarget_scores: np.ndarray) -> float:
    """EER in percent as Kaldi's ``compute-eer`` reports it (rank ratio, no interpolation).

    Sort both score lists; walk the target scores from the lowest: at target rank ``p`` the
    non-target at rank ``floor(N_non * p / N_tar)`` from the top is compared with it, and the first
    ``p`` whose target score exceeds that non-target gives EER = ``p / N_tar``.
    """
    tar, non = _scores(target_scores, nontarget_scores)
    tar = np.sort(tar)
    non = np.sort(non)
    n_tar, n_non = tar.size, non.size
    p = np.arange(n_tar - 1)
    n_pos = np.maximum(n_non - 1 - (n_non * p / n_tar).astype(np.int64), 0)
    hit = non[n_pos] < tar[p]
    first = int(np.argmax(hit)) if hit.any() else n_tar - 1
    return 100.0 * first / n_tar


def eer_bootstrap_ci(
    target_scores: np.ndarray,
    nontarget_scores: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 64,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the interpolated EER, in percent.

    Target and non-target trials are resampled independently with replacement (a trial-level
    bootstrap: it ignores that trials share utterances, so the interval is optimistic). Vectorised:
    each replicate is a row of resampling counts over the sorted scores.
    """
    tar, non = _scores(target_scores, nontarget_scores)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        tw = _bincount_rows(rng.integers(0, tar.size, size=(r, tar.size)), tar.size)
        nw = _bincount_rows(rng.integers(0, non.size, size=(r, non.size)), non.size)
        cum_t, cum_n = _roc_counts(tar, non, tw, nw)
        values.append(_interpolated_eer(cum_t, cum_n))
    eers = 100.0 * np.concatenate(values)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(eers, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _bincount_rows(idx: np.ndarray, n: int) -> np.ndarray:
    rows = idx.shape[0]
    flat = (idx + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n)


def det_curve(
    target_scores: np.ndarray, nontarget_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(false-acceptance rate, false-rejection rate) at every distinct threshold, as fractions."""
    tar, non = _scores(target_scores, nontarget_scores)
    cum_t, cum_n = _roc_counts(tar, non)
    return cum_n[0] / non.size, 1.0 - cum_t[0] / tar.size


def min_dcf(
    target_scores: np.ndarray,
    nontarget_scores: np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised minimum detection cost (NIST SRE style) over all thresholds."""
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie in (0, 1), got {p_target}")
    fpr, fnr = det_curve(target_scores, nontarget_scores)
    cost = c_miss * p_target * fnr + c_fa * (1.0 - p_target) * fpr
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def score_trials(
    trials, embeddings: dict[str, np.ndarray], enrol_embeddings: dict[str, np.ndarray] | None = None
):
    """Cosine score of every trial row (columns ``enrol``, ``test``) -> ``[N]`` array.

    Args:
        trials: DataFrame from :func:`spkadv.data.manifest.read_trials`.
        embeddings: utt_id -> embedding on the test side.
        enrol_embeddings: utt_id -> embedding on the enrolment side (default: ``embeddings``).
    """
    enrol_embeddings = embeddings if enrol_embeddings is None else enrol_embeddings
    for side, table, ids in (
        ("enrol", enrol_embeddings, trials["enrol"]),
        ("test", embeddings, trials["test"]),
    ):
        missing = sorted(set(ids) - set(table))
        if missing:
            raise KeyError(
                f"no {side} embedding for {len(missing)} utterance(s), e.g. {missing[:3]}"
            )
    enrol_ids = sorted(set(trials["enrol"]))
    test_ids = sorted(set(trials["test"]))
    enrol_mat = np.stack([enrol_embeddings[u] for u in enrol_ids])
    test_mat = np.stack([embeddings[u] for u in test_ids])
    e_idx = {u: i for i, u in enumerate(enrol_ids)}
    t_idx = {u: i for i, u in enumerate(test_ids)}
    ei = np.fromiter((e_idx[u] for u in trials["enrol"]), dtype=np.int64, count=len(trials))
    ti = np.fromiter((t_idx[u] for u in trials["test"]), dtype=np.int64, count=len(trials))
    return cosine_scores(enrol_mat[ei], test_mat[ti])
