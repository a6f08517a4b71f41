"""Item busy: a pipeline stage on a busy machine. CAM++ embedding of 8 × 5 s batches (what
10_ssed_baseline does for the evaluation set) in batches/s, alone and beside one busy
single-threaded process (a Python spin loop started by the benchmark), for three settings:

* ``torch_default``: torch's own defaults (one thread per core, OpenMP threads spin while idle),
* ``passive_wait``: torch's thread count with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep),
* ``one_thread``: ``OMP_NUM_THREADS=1``,
* ``spkadv_policy``: ``spkadv.base.threads.configure()`` before torch starts (passive waiting, threads
  from the cores free at start), as the ``spkadv`` command and the pipeline's kernels do.

A second workload, a float32 joint-training step of the default model (batch 4 × 1 s, CAM++ white
box; ``bench_train.direct_joint_step``, the step the bf16 item times; steps/s), is measured for ``passive_wait``, ``spkadv_policy`` and ``one_thread``: many small
parallel regions, where sleeping idle threads pay a wake-up each time (``train_policy_speedup``:
the policy's steps/s over passive waiting's, alone).

Each measurement runs in a fresh process (the waiting policy is read once, when torch starts its
thread pool) at the benchmark's own priority, with the busy process at the same priority. The
slowdown is batches/s alone divided by batches/s beside the busy process; conditions alternate
so that slow drifts of the background load hit both. The machine is not otherwise idle: the load
average and the busy cores (``/proc/stat``) are recorded with every figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

SETTINGS = ("torch_default", "passive_wait", "one_thread", "spkadv_policy")
TARGET_SLOWDOWN = 2.5
BATCH, UTT_SECONDS = 8, 5.0
MEASURE_SECONDS, QUICK_MEASURE_SECONDS = 20.0, 6.0
SPIN = "import time\nwhile True:\n    pass\n"
CLEARED = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "SPKADV_THREADS",
    "GOMP_SPINCOUNT",
)


TRAIN_SETTINGS = ("passive_wait", "spkadv_policy", "one_thread")


def work_rate(setting: str, seconds: float, workload: str = "embed") -> dict[str, Any]:
    """Worker (its own process, env prepared by :func:`_launch`): CAM++ batches per second, or
    training steps per second for ``workload="train"`` (both under ``batches_per_s``)."""
    plan = None
    if setting == "spkadv_policy":
        from spkadv.base import threads

        plan = threads.configure()
    import numpy as np
    import torch
    from spkadv.base import threads

    load_before = os.getloadavg()
    busy_before, _ = threads.busy_cores()
    if workload == "train":
        from benchmarks.bench_train import direct_joint_step

        work, config, _, audio = direct_joint_step()
        source = f"batch {config.batch_size} x {config.crop_seconds:g} s ({audio})"
    else:
        encoders = common.require("spkadv.encoders.speaker", "CAM++ embedding")
        encoder = encoders.load("campplus", device="cpu")
        x, source = common.speech_signal(BATCH * UTT_SECONDS)
        batch = torch.from_numpy(np.ascontiguousarray(x.reshape(BATCH, -1)))

        def work() -> None:
            with torch.inference_mode():
                encoder.embed(batch)

    work()  # warm-up
    count, t0 = 0, time.perf_counter()
    while True:
        work()
        count += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and count >= 2:
            break
    return {
        "setting": setting,
        "workload": workload,
        "batches_per_s": count / elapsed,
        "batches": count,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: spin, then sleep)"),
        "policy": None if plan is None else plan.describe(),
        "load_average_1min": load_before[0],
        "busy_cores_before": busy_before,
        "audio": source,
    }


def _launch(setting: str, seconds: float, workload: str = "embed") -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    if setting == "one_thread":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if setting == "passive_wait":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["TQDM_DISABLE"] = "1"
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    code = (
        "import json, sys\nfrom benchmarks import bench_busy\n"
        f"print('{common.RESULT_TAG}' + json.dumps(bench_busy.work_rate({setting!r}, {seconds}, {workload!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=900
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(common.RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-2000:]
        if "Unavailable:" in tail:
            raise common.Unavailable(tail.split("Unavailable:")[-1].strip().splitlines()[0])
        raise RuntimeError(f"worker {setting} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len(common.RESULT_TAG) :])


def measure(setting: str, busy: bool, seconds: float, workload: str = "embed") -> dict[str, Any]:
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        if spinner is not None:
            time.sleep(1.0)  # running before the worker looks at the free cores
        row = _launch(setting, seconds, workload)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    row["beside_busy_process"] = busy
    return row


def run(quick: bool = False) -> dict[str, Any]:
    common.require("spkadv.base.threads", "the thread policy")
    seconds = QUICK_MEASURE_SECONDS if quick else MEASURE_SECONDS
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "stage": f"CAM++ embedding, {BATCH} x {UTT_SECONDS:g} s per batch",
        "cores": os.cpu_count(),
        "priority_nice": os.nice(0),
        "measure_seconds": seconds,
    }
    for setting in SETTINGS:
        pair = {}
        for busy in (False, True):
            row = measure(setting, busy, seconds)
            rows.append(row)
            pair[busy] = row
            print(
                f"  {setting:<14} {'beside a busy process' if busy else 'alone':<22} "
                f"{row['batches_per_s']:.2f} batches/s, {row['threads']} thread(s), "
                f"load {row['load_average_1min']:.2f}, {row['busy_cores_before']:.1f} cores busy before",
                flush=True,
            )
        out[f"slowdown_{setting}"] = pair[False]["batches_per_s"] / pair[True]["batches_per_s"]
    for setting in TRAIN_SETTINGS:
        for busy in (False, True):
            row = measure(setting, busy, seconds, "train")
            rows.append(row)
            where = "beside" if busy else "alone"
            out[f"train_steps_per_s_{setting}_{where}"] = row["batches_per_s"]
            print(
                f"  train step, {setting:<14} {'beside a busy process' if busy else 'alone':<22} "
                f"{1 / row['batches_per_s']:.2f} s/step, {row['threads']} thread(s), "
                f"{row['omp_wait_policy']}, {row['busy_cores_before']:.1f} cores busy before",
                flush=True,
            )
    out["train_policy_speedup"] = (
        out["train_steps_per_s_spkadv_policy_alone"] / out["train_steps_per_s_passive_wait_alone"]
    )
    out["train_slowdown_spkadv_policy"] = (
        out["train_steps_per_s_spkadv_policy_alone"] / out["train_steps_per_s_spkadv_policy_beside"]
    )
    out["rows"] = rows
    out["busy_machine_slowdown"] = out["slowdown_spkadv_policy"]
    out["busy_machine_slowdown_target"] = TARGET_SLOWDOWN
    return out
