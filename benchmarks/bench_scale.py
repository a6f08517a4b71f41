"""Scale of training data read from disk (``TRAIN_DATA: "disk"``): the loader's peak memory and
crops per second for corpora of N = 1 000, 10 000 and 100 000 utterances.

    python -m benchmarks.bench_scale                  # N = 1 000, 10 000, 100 000
    python -m benchmarks.bench_scale --quick          # N = 200, 2 000
    python -m benchmarks.bench_scale --sizes 1000,10000
    python -m benchmarks.run_all --only scale         # the same, recorded in runs/bench/results.json

Corpus: N real FLAC files (16 kHz, 16-bit, as LibriSpeech), 0.5-2 s of a tone with noise, under
``runs/cache/bench_scale/`` with one manifest per N (the first N rows of one corpus). They are
written once and reused: a few hundred distinct clips are encoded, and each file is a copy of one
of them (file i holds clip i mod 256), written by a thread pool.

Loader: what training runs (``spkadv.core.datasets.train_audio(..., "disk")``, ``CropDataset``,
``StepSampler``, a ``DataLoader`` with 2 forked workers) at the paper profile's ``BATCH_SIZE`` and
``CROP_SECONDS`` (params/paper.yaml), in a fresh process per N. Crops longer than a file are
zero padded, so every crop here reads a whole (<= 2 s) file.

Memory: the peak, while the manifest is read, the file lengths listed and the batches drawn, of
the resident memory of the measuring process (RSS) plus the private memory of its loader workers
(USS: Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup), sampled every 20 ms. A forked
worker shares its parent's pages until it writes them; its USS is what it added. (PSS would split
shared library pages with every other process on the machine, so it moves with what else runs;
the summed RSS, which counts shared pages once per process, is recorded beside it.) Target: the
peak grows <= 1.2x from 1 000 to 100 000 rows.

Speed: crops per second over the batches after the first (which holds the workers' start-up);
the files were just written or read, so they come from the page cache. Target: at least the
crops one GPU training step at the paper's batch consumes per second, the step time estimated
from FLOPs (:func:`gpu_step_estimate`; stated in the output).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import bench_paper_estimate, common

SIZES, QUICK_SIZES = (1_000, 10_000, 100_000), (200, 2_000)
BATCHES, QUICK_BATCHES = 200, 20
WORKERS = 2
CLIPS = 256  # distinct audio clips; file i is a copy of clip i % CLIPS
MIN_SECONDS, MAX_SECONDS = 0.5, 2.0
FILES_PER_FOLDER = 1000
CORPUS_VERSION = "v1"
SAMPLE_EVERY_S = 0.02
MEM_RATIO_TARGET = 1.2
# the GPU assumptions of the paper-profile estimate (benchmarks/bench_paper_estimate.py), so that
# both items speak of the same GPU
GPU_PEAK_TFLOPS = bench_paper_estimate.H100_BF16_DENSE_TFLOPS
GPU_UTILISATION = bench_paper_estimate.UTILISATION


# -- the corpus -----------------------------------------------------------------------------------
def corpus_dir() -> Path:
    from spkadv.base.config import runs_root

    return runs_root() / "cache" / "bench_scale" / CORPUS_VERSION


def _clips(seed: int = 0) -> list[bytes]:
    """``CLIPS`` distinct FLAC files (bytes): a tone with noise, 0.5-2 s at 16 kHz."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(CLIPS):
        n = int(rng.uniform(MIN_SECONDS, MAX_SECONDS) * common.SAMPLE_RATE)
        t = np.arange(n) / common.SAMPLE_RATE
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(n)
        buffer = io.BytesIO()
        sf.write(buffer, x.astype(np.float32), common.SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        out.append(buffer.getvalue())
    return out


def _path(folder: Path, i: int) -> Path:
    return folder / "audio" / f"{i // FILES_PER_FOLDER:04d}" / f"u{i:07d}.flac"


def build_corpus(count: int, folder: Path | None = None) -> Path:
    """At least ``count`` files in ``folder`` (written once; more are added when asked for)."""
    import soundfile as sf

    folder = folder or corpus_dir()
    stamp = folder / "files.json"
    done = json.loads(stamp.read_text())["count"] if stamp.is_file() else 0
    if done >= count:
        return folder
    clips = _clips()
    for d in range(done // FILES_PER_FOLDER, (count - 1) // FILES_PER_FOLDER + 1):
        (folder / "audio" / f"{d:04d}").mkdir(parents=True, exist_ok=True)

    def write(i: int) -> None:
        _path(folder, i).write_bytes(clips[i % CLIPS])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(done, count), chunksize=256))
    seconds = [sf.info(io.BytesIO(c)).duration for c in clips]
    (folder / "durations.json").write_text(json.dumps(seconds))
    stamp.write_text(json.dumps({"count": count}))  # after the files: a partial run redoes them
    return folder


def manifest_for(n: int, folder: Path | None = None) -> Path:
    """A corpus manifest of the first ``n`` files (all train rows, 100 utterances per speaker)."""
    import pandas as pd
    from spkadv.data.manifest import write_manifest

    folder = build_corpus(n, folder)
    path = folder / f"manifest-{n}.tsv"
    if path.is_file():
        return path
    seconds = json.loads((folder / "durations.json").read_text())
    ids = np.arange(n)
    frame = pd.DataFrame(
        {
            "utt_id": [f"u{i:07d}" for i in ids],
            "speaker": [f"s{i // 100:05d}" for i in ids],
            "gender": np.where(ids // 100 % 2 == 0, "F", "M"),
            "subset": "train",
            "set": "bench-scale",
            "path": [str(_path(folder, i).resolve()) for i in ids],
            "duration": [seconds[i % CLIPS] for i in ids],
            "transcript": "",
        }
    )
    return write_manifest(frame, path)


# -- memory of a process tree ---------------------------------------------------------------------
def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants (from /proc/<pid>/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


def _kb(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:  # the process ended meanwhile
        pass
    return 0


def tree_memory_mb(root: int) -> tuple[float, float, int]:
    """(RSS of ``root`` plus the USS of its descendants, summed RSS, processes), MiB."""
    pids = tree_pids(root)
    rss = [_kb(f"/proc/{p}/status", "VmRSS") for p in pids]
    uss = sum(
        _kb(f"/proc/{p}/smaps_rollup", "Private_Clean")
        + _kb(f"/proc/{p}/smaps_rollup", "Private_Dirty")
        for p in pids[1:]
    )
    return (rss[0] + uss) / 1024, sum(rss) / 1024, len(pids)


class PeakSampler:
    """Samples :func:`tree_memory_mb` of this process in a thread; keeps the peaks."""

    def __init__(self, every_s: float = SAMPLE_EVERY_S) -> None:
        self.every_s, self.mb, self.rss, self.processes = every_s, 0.0, 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        mb, rss, n = tree_memory_mb(os.getpid())
        self.mb, self.rss, self.processes = (
            max(self.mb, mb),
            max(self.rss, rss),
            max(self.processes, n),
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# -- one measurement (in a fresh process) ---------------------------------------------------------
def measure_loader(
    manifest: str, batch: int, crop_samples: int, batches: int, workers: int
) -> dict[str, Any]:
    """Peak memory and crops per second of training's disk loader over the train rows of
    ``manifest``: ``batches`` batches of ``batch`` crops with ``workers`` loader workers.

    The file lengths are read from the headers each time (no length cache): ``listing_s`` is the
    start-up cost of a corpus seen for the first time."""
    import torch
    from spkadv.core.datasets import CropDataset, StepSampler, train_audio
    from spkadv.data.manifest import read_manifest
    from torch.utils.data import DataLoader

    common.release_free_memory()
    base_mb, base_rss, _ = tree_memory_mb(os.getpid())
    with PeakSampler() as peak:
        t0 = time.perf_counter()
        frame = read_manifest(manifest)
        paths = frame.loc[frame["subset"] == "train", "path"].tolist()
        utterances = train_audio(paths, 0, "disk", progress=False)
        listing_s = time.perf_counter() - t0
        loader = DataLoader(
            CropDataset(utterances, crop_samples, seed=0),
            batch_size=batch,
            sampler=StepSampler(0, batches, batch),
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        marks = []
        t0 = time.perf_counter()
        for x, _ in loader:
            marks.append(time.perf_counter())
            assert x.shape == (batch, crop_samples) and torch.isfinite(x).all()
    timed = len(marks) - 1
    crops_per_s = timed * batch / (marks[-1] - marks[0]) if timed > 0 else float("nan")
    return {
        "rows": len(paths),
        "listing_s": listing_s,
        "first_batch_s": marks[0] - t0,
        "timed_batches": timed,
        "crops_per_s": crops_per_s,
        "peak_mb": peak.mb,
        "peak_rss_mb": peak.rss,
        "baseline_mb": base_mb,
        "baseline_rss_mb": base_rss,
        "peak_above_baseline_mb": peak.mb - base_mb,
        "processes": peak.processes,
        "index_mb": utterances.index_bytes / 2**20,
    }


# -- the GPU step it must keep up with ------------------------------------------------------------
def gpu_step_estimate(batch: int, crop_samples: int) -> dict[str, Any]:
    """FLOPs of one joint training step of the paper profile's model, and the step time of an
    H100 sustaining ``GPU_UTILISATION`` of its dense bf16 peak.

    Forward FLOPs are counted (``bench_flops.count_flops``) on one crop and scaled by the batch:
    F_P(x), F_R(x'), and ECAPA-TDNN (the paper's white box, its architecture with untrained weights:
    FLOPs do not depend on them) on x and x'. Training costs 3x the forward for F_P and F_R
    (forward, input and weight gradients), 2x for ECAPA on x' (forward and input gradient; its
    weights are frozen) and 1x for ECAPA on x (no gradient)."""
    import torch
    from spkadv.core.models import RemovalModule, SSEDGenerator

    from benchmarks.bench_flops import count_flops

    config, where = common.profile_train_config("paper", "JOINT")
    x = torch.zeros(1, crop_samples)
    torch.manual_seed(0)
    fp = count_flops(SSEDGenerator(config.model).eval(), x)
    fr = count_flops(RemovalModule(config.model).eval(), x)
    try:
        from spkadv.encoders.ecapa import random_ecapa

        encoder = random_ecapa(0)
        enc = count_flops(encoder, x)
        encoder_name = "ECAPA-TDNN (speechbrain architecture, random weights)"
    except ImportError as err:
        raise common.Unavailable(f"speechbrain is needed to count ECAPA's FLOPs ({err})") from err
    step_flops = batch * (3 * fp + 3 * fr + 2 * enc + enc)
    sustained = GPU_PEAK_TFLOPS * 1e12 * GPU_UTILISATION
    step_s = step_flops / sustained
    return {
        "train_config": where,
        "batch": batch,
        "crop_samples": crop_samples,
        "generator_gflop_per_crop": fp / 1e9,
        "removal_gflop_per_crop": fr / 1e9,
        "encoder": encoder_name,
        "encoder_gflop_per_crop": enc / 1e9,
        "step_tflop": step_flops / 1e12,
        "assumed_gpu": f"one H100 at {GPU_UTILISATION:.0%} of {GPU_PEAK_TFLOPS:.0f} TFLOP/s "
        "dense bf16 (datasheet peak; utilisation assumed)",
        "gpu_step_s": step_s,
        "crops_per_s_needed": batch / step_s,
        "how": "FLOPs of F_P, F_R (3x forward) and ECAPA on x' (2x) and x (1x) per crop, "
        "counted with torch's FlopCounterMode, times the batch, over the sustained throughput",
        "caveat": "the arithmetic alone: benchmarks/bench_paper_estimate.py finds eager steps bound by the "
        "host's per-operation time (about 6x longer), so the crops needed per second are fewer; "
        "convolutions of 32-128 channels (F_P, F_R) seldom sustain that share of the peak, so "
        "the real step is likely slower and the crops needed per second fewer: an upper bound",
    }


# -- the item -------------------------------------------------------------------------------------
def _label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def run(
    quick: bool = False,
    sizes: Sequence[int] | None = None,
    batches: int | None = None,
    workers: int = WORKERS,
    estimate: bool = True,
    folder: str | os.PathLike | None = None,
    fresh_process: bool = True,
) -> dict[str, Any]:
    """Measure each N in a fresh process (``fresh_process``; else in this one, for tests); the
    headline figures compare the largest and smallest N (``loader_peak_mem_ratio_100k_vs_1k``
    only when both 1 000 and 100 000 were measured)."""
    from spkadv.base.config import load_profile

    sizes = sorted(sizes or (QUICK_SIZES if quick else SIZES))
    if len(sizes) < 2 or sizes[0] < 1:
        raise ValueError(f"need two or more sizes >= 1, got {sizes}")
    batches = batches or (QUICK_BATCHES if quick else BATCHES)
    if batches < 2:
        raise ValueError(f"batches must be >= 2 (the first is not timed), got {batches}")
    params = load_profile("paper")
    batch = int(params["BATCH_SIZE"])
    crop_samples = int(round(float(params["CROP_SECONDS"]) * common.SAMPLE_RATE))
    folder = Path(folder) if folder else corpus_dir()
    t0 = time.perf_counter()
    build_corpus(sizes[-1], folder)
    out: dict[str, Any] = {
        "sizes": sizes,
        "batch": batch,
        "crop_seconds": crop_samples / common.SAMPLE_RATE,
        "batches": batches,
        "workers": workers,
        "corpus": f"{folder} (FLAC 16 kHz, {MIN_SECONDS}-{MAX_SECONDS} s, {CLIPS} distinct clips)",
        "corpus_build_s": time.perf_counter() - t0,
        "memory_measure": "peak of the measuring process's RSS plus its loader workers' USS "
        "(/proc/<pid>/status and smaps_rollup, sampled every 20 ms); summed RSS beside it",
        "page_cache": "warm: the files were just written or read",
        "per_n": {},
    }
    for n in sizes:
        manifest = manifest_for(n, folder)
        kwargs = {
            "manifest": str(manifest),
            "batch": batch,
            "crop_samples": crop_samples,
            "batches": batches,
            "workers": workers,
        }
        if fresh_process:
            row = common.run_worker("benchmarks.bench_scale:measure_loader", kwargs, threads=1)
        else:
            row = measure_loader(**kwargs)
        out["per_n"][str(n)] = row
        print(f"  N={n:>7}: peak {row['peak_mb']:.0f} MiB (RSS {row['peak_rss_mb']:.0f}), "
              f"{row['crops_per_s']:.0f} crops/s, listing {row['listing_s']:.1f} s", flush=True)  # fmt: skip
    small, large = out["per_n"][str(sizes[0])], out["per_n"][str(sizes[-1])]
    ratio = large["peak_mb"] / small["peak_mb"]
    out["loader_peak_mem_ratio"] = ratio
    out["loader_peak_mem_ratio_sizes"] = f"{sizes[-1]} vs {sizes[0]} rows"
    out["loader_peak_mem_ratio_rss"] = large["peak_rss_mb"] / small["peak_rss_mb"]
    full = sizes[0] == 1_000 and sizes[-1] == 100_000
    out["loader_peak_mem_ratio_100k_vs_1k"] = ratio if full else None
    if not full:
        out["loader_peak_mem_ratio_100k_vs_1k_reason"] = (
            f"sizes {sizes} (quick or custom): see loader_peak_mem_ratio "
            f"({sizes[-1]} vs {sizes[0]} rows)"
        )
    out["loader_crops_per_s"] = large["crops_per_s"]
    out["loader_crops_per_s_rows"] = sizes[-1]
    for n in sizes:
        out[f"loader_peak_mb_{_label(n)}"] = out["per_n"][str(n)]["peak_mb"]
        out[f"loader_crops_per_s_{_label(n)}"] = out["per_n"][str(n)]["crops_per_s"]
    out["targets"] = {
        "loader_peak_mem_ratio": {
            "value": ratio,
            "target": f"<= {MEM_RATIO_TARGET} ({out['loader_peak_mem_ratio_sizes']})",
            "met": ratio <= MEM_RATIO_TARGET,
        }
    }
    if estimate:
        gpu = gpu_step_estimate(batch, crop_samples)
        out["gpu_step_estimate"] = gpu
        need = gpu["crops_per_s_needed"]
        out["loader_crops_per_s_needed"] = need
        out["loader_crops_per_s_margin"] = large["crops_per_s"] / need
        out["targets"]["loader_crops_per_s"] = {
            "value": large["crops_per_s"],
            "target": f">= {need:.0f} (batch {batch} per estimated GPU step of "
            f"{gpu['gpu_step_s'] * 1e3:.1f} ms: {gpu['assumed_gpu']})",
            "met": large["crops_per_s"] >= need,
        }
    return out


def report(out: dict[str, Any]) -> str:
    lines = [f"{'rows':>8}  {'peak MiB':>12}  {'peak RSS MiB':>12}  {'crops/s':>8}  listing s"]
    for n, row in out["per_n"].items():
        lines.append(f"{int(n):>8}  {row['peak_mb']:>12.0f}  {row['peak_rss_mb']:>12.0f}  "
                     f"{row['crops_per_s']:>8.0f}  {row['listing_s']:.1f}")  # fmt: skip
    ratio = out["loader_peak_mem_ratio_100k_vs_1k"]
    lines.append(
        "loader_peak_mem_ratio_100k_vs_1k: "
        + (
            f"{ratio:.3f}"
            if ratio is not None
            else f"n/a ({out.get('loader_peak_mem_ratio_100k_vs_1k_reason')})"
        )
    )
    need = out.get("loader_crops_per_s_needed")
    lines.append(
        f"loader_crops_per_s: {out['loader_crops_per_s']:.0f} at {out['loader_crops_per_s_rows']} rows, "
        f"{out['workers']} workers (needed: "
        + (f"{need:.0f})" if need is not None else "not estimated)")
    )
    for name, t in out["targets"].items():
        lines.append(f"{name}: {t['value']:.3g} (target {t['target']}): met {t['met']}")
    if "gpu_step_estimate" in out:
        gpu = out["gpu_step_estimate"]
        lines.append(f"GPU step: {gpu['step_tflop']:.2f} TFLOP -> {gpu['gpu_step_s'] * 1e3:.1f} ms "
                     f"on {gpu['assumed_gpu']}; {gpu['how']}")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_SIZES}")
    parser.add_argument("--sizes", help="comma-separated N (default 1000,10000,100000)")
    parser.add_argument("--batches", type=int, help=f"batches per N (default {BATCHES})")
    parser.add_argument("--workers", type=int, default=WORKERS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    os.environ.setdefault("TQDM_DISABLE", "1")
    from spkadv.base.fileio import write_json

    out = run(args.quick, sizes, args.batches, args.workers) | {"quick": args.quick}
    path = write_json(common.results_dir() / "scale.json", out)
    print(report(out))
    print(f"written: {path} (python -m benchmarks.run_all --only scale also records results.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
