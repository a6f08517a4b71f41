"""Does authorised restoration survive an ordinary channel? (notebook 30, beyond the paper)

Protected audio x' travels through channels its owner does not control: 16-bit storage,
resampling, a codec, noise. The key holder then restores the *distorted* file,
x̂ = x̃' + ε n' ⊙ m' with (n', m') = F_R(x̃'). :func:`restoration_robustness` measures, per
distortion (a :mod:`spkadv.audio.purify` spec; ``none`` is the undistorted reference), the SNR of
x̂ against the original x, the SNR of the distorted x̃' itself, and the rec-rst EER of the
restored audio on the given trials.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from spkadv.audio import purify, sidecar
from spkadv.audio.io import load_audio
from spkadv.base import config
from spkadv.core import modelfile, protect
from spkadv.evaluation import metrics
from spkadv.evaluation.tables import embed_conditions


def _mean_snr(rec_paths: Mapping[str, Path], waves: Iterable[tuple[str, np.ndarray]]) -> float:
    """Mean SNR (dB) of each ``(utt_id, y)`` against the original of ``utt_id``."""
    return float(np.mean([metrics.snr_db(load_audio(rec_paths[u]), y) for u, y in waves]))


def restoration_robustness(
    model: modelfile.ProtectionModel,
    profile: str,
    adv_paths: Mapping[str, Path],
    rec_paths: Mapping[str, Path],
    distortions: Sequence[str],
    encoder,
    trials: pd.DataFrame,
    enrol_embeddings: Mapping[str, np.ndarray],
    seed: int = 0,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Distort each protected file, restore it with ``model`` and score the result.

    Args:
        adv_paths: ``utt_id -> x'`` (a model with a per-utterance code reads it from the file's
            sidecar, as the key holder does).
        rec_paths: ``utt_id -> x`` for at least the utterances of ``adv_paths``.
        distortions: :mod:`spkadv.audio.purify` specs; the noise of ``noise_<snr>`` is seeded per
            utterance (:func:`spkadv.audio.purify.utterance_seed` of ``seed``).
        encoder, trials, enrol_embeddings: the white-box encoder scoring the restored test audio
            against the clean enrolments on ``trials``.

    The restored audio goes to condition ``rst_<distortion>`` of ``profile``
    (:func:`spkadv.base.config.condition_dir`), recomputed only where x' or the model changed.

    Returns:
        One row per distortion run (``distortion``, ``snr_rst_db``, ``eer_recrst``,
        ``snr_distorted_adv_db``, ``n_utts``) and ``{distortion: why}`` for those that cannot run
        here (codecs without ffmpeg).
    """
    codes = {purify.utterance_seed(seed, u): sidecar.read_code(p) for u, p in adv_paths.items()}
    target = trials["target"].to_numpy() == 1
    rows, skipped = [], {}
    for dist in distortions:
        ok, why = purify.spec_available(dist)
        if not ok:
            skipped[dist] = why
            continue
        cond = f"rst_{dist}"
        restored = purify.process_files(
            lambda x, s, dist=dist: protect.restore(
                model, purify.apply(dist, x, seed=s), code=codes[s]
            ),
            adv_paths,
            config.condition_dir(profile, cond),
            key=f"{dist}|{model.fingerprint}",
            seed=seed,
            progress=progress,
            desc=cond,
        )
        emb = embed_conditions(encoder, {cond: restored}, progress=progress, cache_dir=cache_dir)
        scores = metrics.score_trials(trials, emb[cond], enrol_embeddings)
        distorted = (
            (u, purify.apply(dist, load_audio(p), seed=purify.utterance_seed(seed, u)))
            for u, p in adv_paths.items()
        )
        rows.append(
            {
                "distortion": dist,
                "snr_rst_db": _mean_snr(
                    rec_paths, ((u, load_audio(p)) for u, p in restored.items())
                ),
                "eer_recrst": metrics.eer(scores[target], scores[~target]),
                "snr_distorted_adv_db": _mean_snr(rec_paths, distorted),
                "n_utts": len(restored),
            }
        )
    return pd.DataFrame(rows), skipped
