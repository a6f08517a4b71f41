"""The evaluation set's conditions (notebooks 10 and 20): adv, rst, rst_refined and gn audio for every
eval utterance, written by one-thread worker processes, and their SNR / EER summaries."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spkadv.audio import sidecar
from spkadv.audio.io import load_audio, save_audio
from spkadv.base.config import condition_dir
from spkadv.base.fileio import atomic_paths
from spkadv.base.threads import process_map, worker_count
from spkadv.core.modelfile import ProtectionModel, portable_copy
from spkadv.core.protect import protect, protection_code, restore, restore_refined
from spkadv.encoders.embed import embed_files
from spkadv.evaluation import metrics
from spkadv.evaluation.metrics import snr_db

# --- evaluation-set processing (notebooks 10 and 20) ------------------------------------------


def quantize_pcm16(x: np.ndarray) -> np.ndarray:
    """What storing ``x`` as 16-bit PCM does to it (soundfile's float -> int16 scaling)."""
    return (np.round(np.clip(x, -1.0, 1.0 - 1.0 / 32768) * 32768) / 32768).astype(np.float32)


def write_conditions(
    model: ProtectionModel,
    rows,
    folders: dict[str, os.PathLike],
    refine_iterations: int = 10,
    int16_utterances: int = 0,
    progress: bool = True,
    noise_seed: int = 0,
    workers: int = 1,
):
    """Protect (and restore) every eval utterance; write ``<folder>/<utt_id>.wav`` as float WAV.

    A model with a per-utterance code gets it optimised for each utterance (the model's
    ``meta["code_steps"]``); the code goes into the protected file's sidecar, as with the CLI.

    Args:
        rows: manifest rows (``utt_id``, ``path``).
        folders: condition -> folder, among ``adv`` (or ``adv_ssed``), ``rst``, ``rst_refined``,
            and ``gn``: Gaussian noise of the same power as this utterance's δ (same SNR as x').
        int16_utterances: for the first N utterances, also measure restoration from x' stored as
            16-bit PCM (one-shot, refined, and the quantisation floor SNR(x, x + q)).
        workers: processes sharing the utterances, one torch thread each (1: in this process;
            0: one per torch thread of this process, or 1 when the model is on a GPU). The code
            optimisation runs small convolutions that a second thread barely speeds up, so two
            one-thread processes on two cores get through the eval set faster than one process
            with two threads (1.34x on 40 default utterances, ``benchmarks/bench_workers.py``).

    Returns:
        DataFrame with one row per utterance (``rows``' order) and the SNRs (dB) of each
        condition against x.
    """
    items = [
        (i, utt, str(path))
        for i, (utt, path) in enumerate(zip(rows["utt_id"], rows["path"], strict=True))
    ]
    options = {
        "folders": {k: str(v) for k, v in folders.items()},
        "refine_iterations": refine_iterations,
        "int16_utterances": int16_utterances,
        "noise_seed": noise_seed,
    }
    workers = resolve_workers(model, workers, len(items))
    bar = tqdm(total=len(items), desc="eval set", disable=not progress)
    records: list[dict[str, Any]] = []
    state = model if workers == 1 else portable_copy(model)  # worker processes get CPU copies
    tasks = [(*item, options) for item in items]
    for _, record in process_map(_record, tasks, workers, state):
        records.append(record)
        bar.update()
    bar.close()
    records.sort(key=lambda r: r.pop("_index"))
    return pd.DataFrame(records)


def resolve_workers(model: ProtectionModel, workers: int, items: int) -> int:
    """The process count :func:`write_conditions` uses for ``workers`` (see there)."""
    on_cpu = next(model.generator.parameters()).device.type == "cpu"
    return worker_count(workers, items, parallel=on_cpu)


def _record(model: ProtectionModel, task: tuple) -> dict[str, Any]:
    """A task of :func:`write_conditions`, ``(index, utt_id, path, options)``, for ``model``."""
    *item, options = task
    return _condition_record(model, *item, **options)


def _condition_record(
    model: ProtectionModel,
    index: int,
    utt: str,
    path: str,
    folders: dict[str, str],
    refine_iterations: int,
    int16_utterances: int,
    noise_seed: int,
) -> dict[str, Any]:
    """One utterance of :func:`write_conditions`: its files written, its SNRs returned."""

    adv_key = next(k for k in folders if k.startswith("adv"))
    x = load_audio(path)
    out: dict[str, Any] = {"_index": index, "utt_id": utt}
    code = protection_code(model, x)
    adv = protect(model, x, code=code)
    adv_path = Path(folders[adv_key]) / f"{utt}.wav"
    if code is None:
        save_audio(adv_path, adv)
    else:  # the audio and its code are renamed into place together, or neither is
        with atomic_paths(adv_path, sidecar.tag_path(adv_path)) as (tmp_audio, tmp_tag):
            save_audio(tmp_audio, adv)
            sidecar.write_tag(adv_path, model.fingerprint, code, to=tmp_tag)
    out["snr_adv_db"] = snr_db(x, adv)
    if "gn" in folders:
        gn = matched_noise(x, adv - x, noise_seed, utt)
        save_audio(Path(folders["gn"]) / f"{utt}.wav", gn)
        out["snr_gn_db"] = snr_db(x, gn)
    if "rst" in folders:
        rst = restore(model, adv, code=code)
        save_audio(Path(folders["rst"]) / f"{utt}.wav", rst)
        out["snr_rst_db"] = snr_db(x, rst)
    if "rst_refined" in folders:
        ref = restore_refined(model, adv, refine_iterations, code=code)
        save_audio(Path(folders["rst_refined"]) / f"{utt}.wav", ref)
        out["snr_rst_refined_db"] = snr_db(x, ref)
    if index < int16_utterances and model.removal is not None:
        adv16 = quantize_pcm16(adv)
        out["snr_int16_floor_db"] = snr_db(x, x + (adv16 - adv))
        out["snr_rst_int16_db"] = snr_db(x, restore(model, adv16, code=code))
        out["snr_rst_refined_int16_db"] = snr_db(
            x, restore_refined(model, adv16, refine_iterations, code=code)
        )
    return out


def matched_noise(x: np.ndarray, delta: np.ndarray, seed: int, utt_id: str) -> np.ndarray:
    """Condition ``gn``: x plus white Gaussian noise of δ's power, seeded by (seed, utt_id).

    Same SNR against x as the protected x' = x + δ; what the perturbation does beyond that is its
    adversarial part.
    """
    rng = np.random.default_rng([seed, zlib.crc32(utt_id.encode())])
    power = float(np.mean(np.asarray(delta, dtype=np.float64) ** 2))
    noise = rng.standard_normal(len(x)) * np.sqrt(power)
    return (x + noise).astype(np.float32)


def mean_db(values) -> float:
    """Mean of per-utterance dB values, with inf (exact restoration) capped at 200 dB."""
    arr = np.asarray(values, dtype=np.float64)
    return float(np.mean(np.minimum(arr, 200.0)))


def condition_eers(
    trials, embeddings: dict[str, dict[str, np.ndarray]], pairs: list[str]
) -> dict[str, float]:
    """Pooled EER (percent, ROC-interpolated) of trial conditions ``"enrol-test"`` like ``rec-adv``.

    Args:
        embeddings: audio condition -> {utt_id: embedding}.
    """

    out = {}
    for pair in pairs:
        enrol, test = pair.split("-")
        scores = metrics.score_trials(trials, embeddings[test], embeddings[enrol])
        target = trials["target"].to_numpy().astype(bool)
        out[pair] = metrics.eer(scores[target], scores[~target])
    return out


def eval_embeddings(
    encoder,
    profile: str,
    rows,
    conditions,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """``{condition: {utt_id: embedding}}`` of the eval rows with one encoder, for
    :func:`condition_eers`: ``rec`` is the rows' own audio, any other condition the files
    :func:`write_conditions` wrote to ``config.condition_dir(profile, condition)``."""
    out = {}
    for cond in conditions:
        if cond == "rec":
            paths = list(rows["path"])
        else:
            paths = [condition_dir(profile, cond) / f"{u}.wav" for u in rows["utt_id"]]
        emb = embed_files(encoder, paths, cache_dir=cache_dir, progress=progress)
        out[cond] = dict(zip(rows["utt_id"], emb, strict=True))
    return out


def pesq_scores(profile: str, rows, condition: str) -> list[float]:
    """PESQ narrow-band raw (:func:`spkadv.evaluation.metrics.pesq_nb_raw`) of each eval row's
    audio in ``condition`` against its original, in the rows' order."""
    folder = condition_dir(profile, condition)
    return [
        metrics.pesq_nb_raw(load_audio(path), load_audio(folder / f"{utt}.wav"))
        for utt, path in zip(rows["utt_id"], rows["path"], strict=True)
    ]
