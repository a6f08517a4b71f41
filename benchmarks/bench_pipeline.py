"""Item 6: minutes per pipeline stage (from ``runs/<profile>/summary.json``, written by
``python -m spkadv.run.pipeline``) and a profile of the slowest stage's main library call.

Training stages are profiled by running ``spkadv.core.train.train`` for a few steps of the profile's
configuration under ``cProfile`` (Python view: which library functions hold the time) and
``torch.profiler`` (operator view: which kernels). Other stages are profiled by running the
notebook's code, with the profile's parameters injected by papermill, as a script under
``cProfile`` in a temporary copy of the runs folder.
"""

from __future__ import annotations

import cProfile
import dataclasses
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import common

TRAINING_STAGES = {"10_ssed_baseline": "SSED", "20_joint_training": "JOINT"}
PROFILE_STEPS, QUICK_PROFILE_STEPS = 4, 2
TOP = 15
SHARE_LABELS = {  # (file stem, function) -> what it is, for the share-of-time summary
    ("models", "forward"): "F_P + F_R forward",
    ("campplus", "forward"): "CAM++ network forward",
    ("speaker", "kaldi_fbank"): "fbank front end",
    ("_tensor", "backward"): "backward (all modules)",
    ("losses", "compute_losses"): "losses",
    ("adam", "step"): "Adam step",
    ("train", "save_checkpoint"): "checkpoint writes",
}


def stage_minutes(profile: str) -> dict[str, Any]:
    """Per-stage minutes and status from the profile's summary.json (or why there is none)."""
    from spkadv.base.config import runs_root
    from spkadv.base.fileio import read_json

    path = runs_root() / profile / "summary.json"
    if not path.exists():
        return {
            "summary": None,
            "reason": f"{path} not found: run python -m spkadv.run.pipeline --profile {profile}",
        }
    summary = read_json(path)
    stages = {
        stem: {"minutes": round((entry.get("seconds") or 0) / 60, 2), "status": entry.get("status")}
        for stem, entry in sorted(summary.get("stages", {}).items())
    }
    ran = [s for s in stages.values() if s["status"] in ("ok", "skipped")]
    from spkadv.base.config import NOTEBOOK_STAGES

    complete = all(
        stem in stages and stages[stem]["status"] in ("ok", "skipped") for stem in NOTEBOOK_STAGES
    )
    return {
        "summary": str(path),
        "stages": stages,
        "total_minutes": round(sum(s["minutes"] for s in ran), 2),
        "complete": complete,
        "slowest_stage": max(stages, key=lambda s: stages[s]["minutes"]) if stages else None,
    }


def _stats_table(stats: pstats.Stats, limit: int) -> list[str]:
    """The ``limit`` spkadv functions with the largest cumulative time, as pstats prints them."""
    stream = io.StringIO()
    stats.stream = stream
    stats.sort_stats("cumulative").print_stats(r"spkadv[/\\]", limit)
    lines = stream.getvalue().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls")), 0)
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    return [ln.rstrip().replace(root, "") for ln in lines[start:] if ln.strip()]


def profile_training(profile: str, stage: str, quick: bool) -> dict[str, Any]:
    """cProfile + torch.profiler of a few training steps of ``stage`` with ``profile``'s settings."""
    import torch
    from spkadv.base.config import load_profile
    from spkadv.core import train as train_mod
    from spkadv.encoders import speaker as encoders
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from benchmarks.bench_train import training_waves

    params = load_profile(profile)
    config, where = common.profile_train_config(profile, TRAINING_STAGES[stage])
    steps = QUICK_PROFILE_STEPS if quick else PROFILE_STEPS
    config = dataclasses.replace(config, steps=steps, warm_start_steps=0, checkpoint_every=10**9)
    if quick:
        config = dataclasses.replace(config, batch_size=2, crop_seconds=0.5)
    encoder_name = params.get("WHITEBOX_ENCODER", "campplus")
    try:
        encoder = encoders.load(encoder_name, torch.device("cpu"))
    except Exception:  # asset missing
        encoder_name, encoder = "random-conv", encoders.load("random-conv")
    waves, _ = training_waves(16)
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as ckpt:
        with torch_profile(activities=[ProfilerActivity.CPU]) as ops:
            profiler.enable()
            train_mod.train(
                config,
                waves,
                encoder,
                ckpt,
                progress=False,
                resume=False,
                device=torch.device("cpu"),
            )
            profiler.disable()
    op_table = ops.key_averages().table(sort_by="self_cpu_time_total", row_limit=TOP)
    stats = pstats.Stats(profiler).stats
    total = max(entry[3] for entry in stats.values())  # cumulative time of train() itself
    share: dict[str, float] = {}
    for (filename, _, func), entry in stats.items():
        label = SHARE_LABELS.get((Path(filename).stem, func))
        if label:
            share[label] = max(share.get(label, 0.0), round(entry[3] / total, 4))
    return {
        "how": f"cProfile + torch.profiler of spkadv.core.train.train, {steps} steps, config from {where}, "
        f"encoder {encoder_name}, batch {config.batch_size} x {config.crop_seconds} s, CPU",
        "share_of_time": share,
        "cprofile_top_cumulative": _stats_table(pstats.Stats(profiler), TOP),
        "torch_ops_top_self_cpu": op_table.splitlines(),
    }


def profile_quality(profile: str, quick: bool) -> dict[str, Any]:
    """cProfile of Table 2's main library calls (``evaluation.quality_scores`` on the ``adv``
    condition, ``asr.transcribe_files``) on a few eval utterances, plus the cost of each pitch
    extractor and PESQ per second of audio."""
    import time

    import numpy as np
    from spkadv.audio.io import load_audio
    from spkadv.base.config import load_profile
    from spkadv.data import manifest as data
    from spkadv.evaluation import asr, metrics
    from spkadv.evaluation import tables as evaluation

    params = load_profile(profile)
    extractors = list(params.get("PITCH_EXTRACTORS", ["praat"]))
    manifest = data.read_manifest(data.manifest_path(profile))
    rows = manifest[manifest["subset"] == "eval"].head(2 if quick else 4)
    try:
        ref = evaluation.condition_paths(profile, rows, "rec")
        adv = evaluation.condition_paths(profile, rows, "adv")
    except FileNotFoundError as err:
        raise common.Unavailable(str(err)) from err
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        profiler.enable()
        evaluation.quality_scores(ref, {"adv": adv}, Path(tmp) / "q.csv", extractors, False)
        asr.transcribe_files(
            list(adv.values()),
            params.get("ASR_BACKEND", "faster-whisper"),
            params.get("ASR_MODEL", "base"),
            cache_dir=False,
            progress=False,
        )
        profiler.disable()
    x = load_audio(next(iter(ref.values())))
    y = load_audio(next(iter(adv.values())))
    seconds = len(x) / common.SAMPLE_RATE
    cost = {}
    for extractor in ("praat", "dio", "harvest"):
        metrics.f0_track(x, extractor=extractor)  # warm-up (imports)
        t0 = time.perf_counter()
        metrics.f0_track(x, extractor=extractor)
        cost[f"f0_{extractor}_rtf"] = (time.perf_counter() - t0) / seconds
    for name in ("pesq_nb_raw", "pesq_wb"):
        fn = getattr(metrics, name)
        t0 = time.perf_counter()
        fn(x, y)
        cost[f"{name}_rtf"] = (time.perf_counter() - t0) / seconds
    return {
        "how": f"cProfile of evaluation.quality_scores (adv, extractors {extractors}) and "
        f"asr.transcribe_files ({params.get('ASR_MODEL', 'base')}) on {len(rows)} eval utterances "
        f"of {profile}; per-call real-time factors on one {seconds:.1f} s utterance",
        "real_time_factors": {k: round(float(np.float64(v)), 4) for k, v in cost.items()},
        "cprofile_top_cumulative": _stats_table(pstats.Stats(profiler), TOP),
    }


def profile_notebook(profile: str, stage: str) -> dict[str, Any]:
    """cProfile of a non-training notebook run as a script on a temporary copy of the runs folder."""
    import nbformat
    from papermill.parameterize import parameterize_notebook
    from spkadv.base.config import load_profile, notebook_parameters, notebooks_dir, runs_root

    notebook = notebooks_dir() / f"{stage}.ipynb"
    if not notebook.exists():
        raise common.Unavailable(f"{notebook} not found")
    declared = notebook_parameters(notebook)
    params = {k: v for k, v in load_profile(profile).items() if k in declared}
    params["PROFILE"] = profile
    nb = parameterize_notebook(nbformat.read(notebook, as_version=4), params)
    code = ["from IPython.display import display"]
    for cell in nb.cells:
        if cell.cell_type == "code":
            code.append(
                "\n".join(
                    ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))
                )
            )
    with tempfile.TemporaryDirectory(prefix="spkadv-prof-") as tmp:
        runs = Path(tmp) / "runs"
        if (runs_root() / profile).exists():
            shutil.copytree(
                runs_root() / profile,
                runs / profile,
                ignore=shutil.ignore_patterns(stage, ".pipeline.lock"),
            )
        script, stats_file = Path(tmp) / f"{stage}.py", Path(tmp) / "stats.prof"
        script.write_text("\n\n".join(code), encoding="utf-8")
        env = dict(os.environ, SPKADV_RUNS=str(runs), TQDM_DISABLE="1", MPLBACKEND="Agg")
        cmd = [sys.executable, "-m", "cProfile", "-o", str(stats_file), str(script)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=notebooks_dir())
        if proc.returncode != 0:
            raise RuntimeError(f"profiling {stage} failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
        table = _stats_table(pstats.Stats(str(stats_file)), TOP)
    return {
        "how": f"cProfile of {stage} run as a script, profile {profile}",
        "cprofile_top_cumulative": table,
    }


def run(quick: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"smoke": stage_minutes("smoke"), "default": stage_minutes("default")}
    default = out["default"]
    if default.get("summary") and default["complete"]:
        out["default_pipeline_minutes"] = default["total_minutes"]
    else:
        out["default_pipeline_minutes"] = None
        out["default_pipeline_minutes_reason"] = default.get("reason") or (
            f"the default pipeline has not completed every stage ({default['stages']})"
        )
    # profile the slowest stage of the complete default run, else of the smoke run, else training
    complete = [p for p in ("default", "smoke") if out[p].get("complete")]
    partial = [p for p in ("default", "smoke") if out[p].get("slowest_stage")]
    source = (complete or partial or [None])[0]
    stage = out[source]["slowest_stage"] if source else "20_joint_training"
    profile = source or "default"
    out["profiled_stage"] = stage
    out["profiled_stage_from"] = (
        f"slowest stage of the {'complete' if source in complete else 'partial'} {source} run"
        if source
        else "no summary yet: the training stage"
    )
    try:
        if stage in TRAINING_STAGES:
            out["profile"] = profile_training(profile, stage, quick)
        elif stage == "50_table2_quality":
            out["profile"] = profile_quality(profile, quick)
        elif quick:
            out["profile"] = {"how": "not profiled in a quick run"}
        else:
            out["profile"] = profile_notebook(profile, stage)
    except (common.Unavailable, RuntimeError) as err:
        out["profile"] = {"error": str(err)}
    return out
