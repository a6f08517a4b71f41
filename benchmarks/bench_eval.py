"""Item 5: evaluation costs: EER scoring of 40 000 trials, embedding and transcription real-time
factors, and a re-run of the table notebooks (40, 50) with warm caches against a cold run.

The table re-run mirrors ``runs/smoke`` into a scratch folder without the embedding /
transcript caches and the outputs of stages 40 and 50 (cold), runs those two stages with the
pipeline, then runs them again with ``--force`` (warm: caches kept); see benchmarks/bench_rerun.py.
Stages 00-30 must have been run for the smoke profile first.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks import common

TRIALS = 40_000
TARGET_FRACTION = (
    1 / 31
)  # 1 target and 30 non-target enrolments per test utterance (docs/protocol.md §5)
EMBED_SECONDS, QUICK_EMBED_SECONDS = 10.0, 2.0
ASR_FILES, QUICK_ASR_FILES = 4, 1
TABLE_STAGES = ("40_table1_eer", "50_table2_quality")


def eer_timing(trials: int = TRIALS) -> dict[str, Any]:
    metrics = common.require("spkadv.evaluation.metrics", "EER scoring")
    rng = np.random.default_rng(0)
    n_tar = max(1, int(trials * TARGET_FRACTION))
    tar = rng.normal(0.7, 0.1, n_tar)
    non = rng.normal(0.2, 0.15, trials - n_tar)
    out: dict[str, Any] = {"trials": trials, "target_trials": n_tar}
    for name in ("eer", "eer_kaldi", "min_dcf"):
        fn = getattr(metrics, name)
        out[f"{name}_seconds"] = common.best_time(lambda fn=fn: fn(tar, non), repeat=5)
    out["eer_40k_trials_seconds"] = out["eer_seconds"]
    return out


def embedding_rtf(seconds: float) -> dict[str, Any]:
    import torch

    encoders = common.require("spkadv.encoders.speaker", "embedding speed")
    x, source = common.speech_signal(seconds)
    batch = torch.from_numpy(x).unsqueeze(0)
    out: dict[str, Any] = {"audio": source, "audio_seconds": seconds}
    for name in ("campplus", "ge2e"):
        try:
            encoder = encoders.load(name, device="cpu")
        except Exception as err:  # asset not fetched
            out[f"embed_rtf_{name}"] = None
            out[f"embed_rtf_{name}_reason"] = f"{type(err).__name__}: {err}"
            continue

        def embed(encoder=encoder):
            with torch.inference_mode():
                encoder.embed(batch)

        out[f"embed_rtf_{name}"] = common.best_time(embed, repeat=3) / seconds
    return out


def transcription_rtf(files: int) -> dict[str, Any]:
    from spkadv.audio.io import load_audio

    out: dict[str, Any] = {}
    try:
        asr = common.require("spkadv.evaluation.asr", "transcription speed")
    except common.Unavailable as err:
        return {"asr_rtf_base": None, "asr_rtf_tiny.en": None, "asr_reason": str(err)}
    paths, source = common.speech_files(files)
    duration = sum(len(load_audio(p)) for p in paths) / common.SAMPLE_RATE
    out.update(asr_audio=source, asr_audio_seconds=duration)
    for model in ("base", "tiny.en"):
        try:
            asr.transcribe_files(
                paths[:1], backend="faster-whisper", model=model, cache_dir=False, progress=False
            )
            t0 = time.perf_counter()  # after one warm-up file: model loading is not transcription
            asr.transcribe_files(
                paths, backend="faster-whisper", model=model, cache_dir=False, progress=False
            )
            out[f"asr_rtf_{model}"] = (time.perf_counter() - t0) / duration
        except Exception as err:  # model asset missing, backend not installed
            out[f"asr_rtf_{model}"] = None
            out[f"asr_rtf_{model}_reason"] = f"{type(err).__name__}: {err}"
    return out


def table_rerun() -> dict[str, Any]:
    """Cold and warm runs of the smoke profile's table notebooks (see benchmarks/bench_rerun.py)."""
    from benchmarks import bench_rerun

    return bench_rerun.table_rerun("smoke")


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    out.update(eer_timing(4_000 if quick else TRIALS))
    print(f"  EER of {out['trials']} trials: {out['eer_seconds'] * 1e3:.1f} ms", flush=True)
    out.update(embedding_rtf(QUICK_EMBED_SECONDS if quick else EMBED_SECONDS))
    print(
        f"  embedding RTF: campplus {out.get('embed_rtf_campplus')}, ge2e {out.get('embed_rtf_ge2e')}",
        flush=True,
    )
    out.update(transcription_rtf(QUICK_ASR_FILES if quick else ASR_FILES))
    if quick:
        out.update(table_rerun_speedup=None, table_rerun_reason="not measured in a quick run")
    else:
        try:
            out.update(table_rerun())
        except (common.Unavailable, RuntimeError) as err:
            out.update(table_rerun_speedup=None, table_rerun_reason=str(err))
    return out
