"""Shared helpers of the benchmarks: fresh worker processes, peak memory, timing, test audio and
the default protection model.

Every item is a module ``benchmarks.bench_<item>`` with ``run(quick: bool) -> dict``. A missing
piece of the library (a module another engineer has not committed yet, an asset that is not
fetched) raises :class:`Unavailable`, which ``run_all`` records with its reason instead of crashing.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULT_TAG = "BENCH_RESULT "
SAMPLE_RATE = 16_000
SHARED_CORPUS_ENV = "SPKADV_SPEECHOCEAN762"  # an extracted speechocean762 selection (manifest.tsv)


class Unavailable(RuntimeError):
    """A benchmark cannot run because a piece it measures is missing; the message names it."""


def require(module: str, what: str) -> Any:
    """Import ``module`` or raise :class:`Unavailable` naming what is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Unavailable(f"{module} is not available ({err}); needed for {what}") from err


def results_dir() -> Path:
    """``runs/bench/`` (under ``SPKADV_RUNS`` when set)."""
    from spkadv.base.config import runs_root

    path = runs_root() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- timing and memory ----------------------------------------------------------------------------
def best_time(fn: Callable[[], Any], repeat: int = 3, warmup: int = 1) -> float:
    """Smallest wall time of ``repeat`` calls (after ``warmup`` untimed calls), in seconds.

    The minimum is the least noisy estimate on a shared machine: noise only ever adds time.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    """Resident set size of this process now, MiB."""
    kb = _status_kb("VmRSS")
    return (kb or 0) / 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process (since the last reset where supported), MiB."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kb = kb // 1024 if sys.platform == "darwin" else kb
    return kb / 1024


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so that a
    later peak-RSS reading is not hidden by memory an earlier call freed but the allocator kept."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads), seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_peak(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn`` once; return (its result, seconds, peak RSS above the RSS before the call in MiB).

    The CPU time of the call is left in ``measure_peak.last_cpu_seconds``: on a shared machine it
    is far less disturbed by other processes than the wall time.
    """
    release_free_memory()
    resettable = reset_peak_rss()
    before = current_rss_mb()
    peak_before = peak_rss_mb()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    measure_peak.last_cpu_seconds = cpu_seconds() - cpu0
    peak = peak_rss_mb()
    if not resettable and peak <= peak_before:  # the earlier peak hides this one
        return out, seconds, float("nan")
    return out, seconds, max(0.0, peak - before)


# -- fresh worker processes -----------------------------------------------------------------------
def run_worker(
    target: str,
    kwargs: dict[str, Any],
    threads: int,
    timeout: float = 1800,
    nice: int = 0,
) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh Python process limited to ``threads`` threads.

    A fresh process per setting keeps thread pools, allocator caches and peak-memory counters of
    one measurement out of the next. The function returns a JSON-able dict. ``nice`` lowers the
    worker's priority (for untimed work on a shared machine).
    """
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "benchmarks.common", target, json.dumps(kwargs), str(threads)]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        if "Unavailable:" in tail:
            raise Unavailable(tail.split("Unavailable:")[-1].strip().splitlines()[0])
        raise RuntimeError(f"worker {target} {kwargs} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def _worker_main(argv: list[str]) -> int:
    target, kwargs, threads = argv[0], json.loads(argv[1]), int(argv[2])
    import torch

    torch.set_num_threads(threads)
    module_name, func_name = target.split(":")
    result = getattr(importlib.import_module(module_name), func_name)(**kwargs)
    from spkadv.base.fileio import _json_safe

    print(RESULT_TAG + json.dumps(_json_safe(result)), flush=True)
    return 0


# -- the default model ----------------------------------------------------------------------------
def trained_model_path() -> Path:
    from spkadv.base.config import stage_dir

    return stage_dir("default", "20_joint_training", create=False) / "model.pt"


def default_model(prefer_trained: bool = True):
    """The trained default model if it exists, else a freshly initialised one of the default
    profile's architecture. Returns ``(ProtectionModel, description)``.

    Timing does not depend on the weights, so a fresh model measures speed and memory equally well.
    """
    modelfile = require("spkadv.core.modelfile", "protection benchmarks")
    path = trained_model_path()
    if prefer_trained and path.is_file():
        return modelfile.load_model(path), f"trained default model {path}"
    import torch
    from spkadv.core.models import RemovalModule, SSEDGenerator

    config, eps, where = default_architecture()
    torch.manual_seed(0)
    generator, removal = SSEDGenerator(config).eval(), RemovalModule(config).eval()
    model = modelfile.ProtectionModel(generator, removal, eps, "untrained", config, {})
    return model, f"freshly initialised model, architecture from {where} ({path} not found)"


def default_architecture():
    """(SSEDConfig, eps, where it came from) of the default profile's model.

    Each ``SSEDConfig`` field ``f`` is read from the profile key ``MODEL_<F>`` (as the training
    notebooks do); fields without a key keep their defaults.
    """
    import dataclasses

    from spkadv.base.config import load_profile
    from spkadv.core.models import SSEDConfig

    params = load_profile("default")
    fields = {f.name: f"MODEL_{f.name.upper()}" for f in dataclasses.fields(SSEDConfig)}
    present = {name: params[key] for name, key in fields.items() if key in params}
    missing = sorted(key for key in fields.values() if key not in params)
    where = "params/default.yaml" + (f" (defaults for {missing})" if missing else "")
    return SSEDConfig(**present), float(params.get("EPS", 0.05)), where


def profile_train_config(profile: str = "default", prefix: str = "JOINT"):
    """The training configuration ``spkadv.core.train.config_from_params`` builds from a profile, with
    ``TrainConfig`` defaults for keys the profile lacks (listed in the returned description)."""
    from spkadv.base.config import load_profile
    from spkadv.core.losses import LossWeights
    from spkadv.core.train import TrainConfig, config_from_params

    base, weights = TrainConfig(), LossWeights()
    fallback = {
        "EPS": base.eps,
        "LEARNING_RATE": base.lr,
        f"{prefix}_STEPS": base.steps,
        f"{prefix}_WARM_START_STEPS": base.warm_start_steps,
        "BATCH_SIZE": base.batch_size,
        "CROP_SECONDS": base.crop_seconds,
        "QUALITY_RAMP_STEPS": base.quality_ramp_steps,
        "GRAD_CLIP": base.grad_clip,
        "CHECKPOINT_EVERY": base.checkpoint_every,
        "SEED": base.seed,
        "LOSS_ALPHA": weights.alpha,
        "LOSS_BETA": weights.beta,
        "LOSS_GAMMA": weights.gamma,
        "LOSS_THETA": weights.theta,
        "LOSS_NORM": weights.norm,
    }
    model, _, _ = default_architecture() if profile == "default" else (None, None, None)
    params = dict(load_profile(profile))
    missing = []
    for _ in range(len(fallback) + 20):
        try:
            config = config_from_params(
                params, f"{prefix}_STEPS", f"{prefix}_WARM_START_STEPS", prefix == "JOINT"
            )
            break
        except KeyError as err:
            key = err.args[0]
            if key.startswith("MODEL_") and model is not None:
                params[key] = getattr(model, key.removeprefix("MODEL_").lower())
            elif key in fallback:
                params[key] = fallback[key]
            else:
                raise
            missing.append(key)
    where = f"params/{profile}.yaml" + (
        f" (TrainConfig defaults for {sorted(missing)})" if missing else ""
    )
    return config, where


# -- test audio -----------------------------------------------------------------------------------
def _shared_corpus() -> Path | None:
    env = os.environ.get(SHARED_CORPUS_ENV, "").strip()
    folder = Path(env).resolve() if env else None
    return folder if folder is not None and (folder / "manifest.tsv").is_file() else None


def speech_files(count: int, subset: str = "eval") -> tuple[list[Path], str]:
    """Paths of ``count`` real speech files and a description of where they come from.

    Uses the default profile's corpus when it exists, else the speechocean762 selection named by
    ``$SPKADV_SPEECHOCEAN762``; raises :class:`Unavailable` when neither is there.
    """
    import csv

    from spkadv.base.config import stage_dir

    manifest = stage_dir("default", "00_data_prep", create=False) / "corpus" / "manifest.tsv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["subset"] == subset]
        if rows:
            return [Path(r["path"]) for r in rows[:count]], f"default corpus ({manifest})"
    folder = _shared_corpus()
    if folder is not None:
        with open(folder / "manifest.tsv", newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["subset"] == subset]
        return [folder / r["path"] for r in rows[:count]], f"speechocean762 ({folder})"
    raise Unavailable("no speech corpus: run notebook 00_data_prep for the default profile")


def speech_signal(seconds: float, seed: int = 0) -> tuple[np.ndarray, str]:
    """A waveform of ``seconds`` (real speech tiled when a corpus is there, else seeded noise).

    Processing time and memory do not depend on the content; real speech only makes the figures
    look like a user's.
    """
    n = int(round(seconds * SAMPLE_RATE))
    try:
        from spkadv.audio.io import load_audio

        paths, source = speech_files(8)
        speech = np.concatenate([load_audio(p) for p in paths])
        return np.resize(speech, n).astype(np.float32), source
    except Unavailable:
        rng = np.random.default_rng(seed)
        return (0.05 * rng.standard_normal(n)).astype(
            np.float32
        ), "seeded Gaussian noise (no corpus)"


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
