"""Item 5: evaluation costs: EER scoring of 40 000 trials, embedding and transcription real-time
factors, and a re-run of the table notebooks (40, 50) with warm caches against a cold run.

The table re-run copies ``runs/smoke`` to a temporary ``SPKADV_RUNS``, removes the embedding /
transcript caches and the outputs of stages 40 and 50 (cold), runs those two stages with the
pipeline, then runs them again with ``--force`` (warm: caches kept). Stages 00-30 must have been
run for the smoke profile first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

TRIALS = 40_000
TARGET_FRACTION = 1 / 31  # 1 target and 30 non-target enrolments per test utterance (REFERENCE §5)
EMBED_SECONDS, QUICK_EMBED_SECONDS = 10.0, 2.0
ASR_FILES, QUICK_ASR_FILES = 4, 1
TABLE_STAGES = ("40_table1_eer", "50_table2_quality")


def eer_timing(trials: int = TRIALS) -> dict[str, Any]:
    metrics = common.require("spkadv.metrics", "EER scoring")
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

    encoders = common.require("spkadv.encoders", "embedding speed")
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
    from spkadv.audio import load_audio

    out: dict[str, Any] = {}
    try:
        asr = common.require("spkadv.asr", "transcription speed")
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


def _run_stages(runs: Path, force: bool) -> float:
    env = dict(os.environ, SPKADV_RUNS=str(runs), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "spkadv.pipeline", "--profile", "smoke"]
    for stage in TABLE_STAGES:
        cmd += ["--only", stage]
    if force:
        cmd.append("--force")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
    return time.perf_counter() - t0


def _slowest_cells(profile_runs: Path, top: int = 4) -> list[str]:
    """The slowest code cells of the executed table notebooks (papermill's per-cell durations)."""
    import json

    cells = []
    for stage in TABLE_STAGES:
        executed = profile_runs / stage / f"{stage}.ipynb"
        if not executed.exists():
            continue
        for i, cell in enumerate(json.loads(executed.read_text(encoding="utf-8"))["cells"]):
            duration = cell.get("metadata", {}).get("papermill", {}).get("duration")
            if cell["cell_type"] == "code" and duration:
                first = "".join(cell["source"]).strip().splitlines()[0][:70]
                cells.append((duration, f"{stage} cell {i}: {duration:.1f} s: {first}"))
    return [text for _, text in sorted(cells, reverse=True)[:top]]


def table_rerun() -> dict[str, Any]:
    from spkadv.config import notebooks_dir, runs_root

    source = runs_root() / "smoke"
    missing = [s for s in TABLE_STAGES if not (notebooks_dir() / f"{s}.ipynb").exists()]
    if missing:
        raise common.Unavailable(f"notebooks {missing} are not in {notebooks_dir()} yet")
    needed = ("00_data_prep", "20_joint_training", "30_purification")
    absent = [s for s in needed if not (source / s / "metrics.json").exists()]
    if absent:
        raise common.Unavailable(
            f"stages {absent} of the smoke profile have not run: python -m spkadv.pipeline --profile smoke"
        )
    with tempfile.TemporaryDirectory(prefix="spkadv-bench-") as tmp:
        runs = Path(tmp) / "runs"
        shutil.copytree(
            source,
            runs / "smoke",
            ignore=shutil.ignore_patterns("cache", *TABLE_STAGES, ".pipeline.lock"),
        )
        cold = _run_stages(runs, force=True)
        cold_cells = _slowest_cells(runs / "smoke")
        warm = _run_stages(runs, force=True)
        warm_cells = _slowest_cells(runs / "smoke")
    return {
        "table_cold_seconds": cold,
        "table_warm_seconds": warm,
        "cold_slowest_cells": cold_cells,
        "warm_slowest_cells": warm_cells,
        "table_rerun_speedup": cold / warm,
        "stages": list(TABLE_STAGES),
        "profile": "smoke",
    }


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
