"""Item 1: protect + restore of the default model on CPU: real-time factor, peak memory, linearity
in length, and chunked against whole-file output.

Each (threads, length) pair runs in a fresh process: the model is loaded, one 1 s call warms the
thread pool up, then protect and restore are timed and their peak RSS above the RSS just before
the call is read from ``/proc/self/status`` (VmHWM, reset with ``clear_refs``). The input array
itself is allocated before that baseline; the output array is counted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks import common

LENGTHS = (1.0, 10.0, 60.0, 600.0)
QUICK_LENGTHS = (1.0, 4.0)
THREADS = (1, 2)
ALTERNATIVE_CHUNK_SECONDS = 5.0  # compared with the library default (see chunk_sweep)
REPEATS = {1.0: 5, 10.0: 3}  # short inputs: best of several runs; long ones once


def measure_length(
    seconds: float, chunk_seconds: float | None = None, repeats: int = 1
) -> dict[str, Any]:
    """Worker: time and peak memory of protect and restore on ``seconds`` of audio."""
    import torch
    from spkadv.core import protect

    model, source = common.default_model()
    chunk = chunk_seconds or protect.DEFAULT_CHUNK_SECONDS
    warm, _ = common.speech_signal(1.0)
    protect.restore(model, protect.protect(model, warm, chunk_seconds=chunk), chunk_seconds=chunk)
    x, audio_source = common.speech_signal(seconds)
    times_p, times_r, peaks_p, peaks_r, cpu_p, cpu_r = [], [], [], [], [], []
    for _ in range(repeats):
        y, t_p, peak_p = common.measure_peak(lambda: protect.protect(model, x, chunk_seconds=chunk))
        cpu_p.append(common.measure_peak.last_cpu_seconds)
        _, t_r, peak_r = common.measure_peak(
            lambda y=y: protect.restore(model, y, chunk_seconds=chunk)
        )
        cpu_r.append(common.measure_peak.last_cpu_seconds)
        times_p.append(t_p)
        times_r.append(t_r)
        peaks_p.append(peak_p)
        peaks_r.append(peak_r)
        del y
    return {
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "chunk_seconds": chunk,
        "protect_s": min(times_p),
        "restore_s": min(times_r),
        "protect_cpu_s": min(cpu_p),
        "restore_cpu_s": min(cpu_r),
        "rtf_protect": min(times_p) / seconds,
        "rtf_restore": min(times_r) / seconds,
        "peak_mem_protect_mb": max(peaks_p),
        "peak_mem_restore_mb": max(peaks_r),
        "peak_mem_mb": max(peaks_p + peaks_r),
        "input_mb": x.nbytes / 2**20,
        "model": source,
        "audio": audio_source,
    }


def chunk_equivalence(seconds: float, chunk_seconds: list[float]) -> dict[str, Any]:
    """Worker: max |chunked - whole-file| of protect and restore for several chunk sizes."""
    from spkadv.core import protect

    model, source = common.default_model()
    x, _ = common.speech_signal(seconds)
    whole_p = protect.protect(model, x, chunk_seconds=seconds + 1)
    whole_r = protect.restore(model, whole_p, chunk_seconds=seconds + 1)
    out: dict[str, Any] = {
        "seconds": seconds,
        "model": source,
        "local_model": model.config.is_local,
    }
    worst = 0.0
    for chunk in chunk_seconds:
        diff_p = float(np.max(np.abs(protect.protect(model, x, chunk_seconds=chunk) - whole_p)))
        diff_r = float(
            np.max(np.abs(protect.restore(model, whole_p, chunk_seconds=chunk) - whole_r))
        )
        out[f"max_abs_diff_protect_chunk{chunk:g}s"] = diff_p
        out[f"max_abs_diff_restore_chunk{chunk:g}s"] = diff_r
        worst = max(worst, diff_p, diff_r)
    out["max_abs_diff"] = worst
    return out


def chunk_sweep(seconds: float, chunk_seconds: list[float]) -> dict[str, Any]:
    """Worker: protect time, CPU user/system time and minor page faults for several chunk sizes.

    Large chunks allocate large activation buffers that the allocator maps and unmaps afresh for
    every chunk, so the kernel zeroes new pages each time (system time, page faults).
    """
    import resource

    from spkadv.core import protect

    model, _ = common.default_model()
    x, _ = common.speech_signal(seconds)
    protect.protect(model, x[: common.SAMPLE_RATE])
    rows = []
    for chunk in chunk_seconds:
        common.release_free_memory()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        protect.protect(model, x, chunk_seconds=chunk)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        rows.append(
            {
                "chunk_seconds": chunk,
                "protect_s": wall,
                "user_s": r1.ru_utime - r0.ru_utime,
                "system_s": r1.ru_stime - r0.ru_stime,
                "minor_page_faults": r1.ru_minflt - r0.ru_minflt,
            }
        )
    return {"seconds": seconds, "overlap_samples": model.overlap, "rows": rows}


def run(quick: bool = False) -> dict[str, Any]:
    """All lengths × thread counts, each in a fresh process, plus the chunking check."""
    common.require("spkadv.core.protect", "protect/restore timing")
    lengths = QUICK_LENGTHS if quick else LENGTHS
    threads_list = (1,) if quick else THREADS
    chunk = 1.0 if quick else None  # quick: small chunks so that the longest input is chunked
    rows = []
    for threads in threads_list:
        for seconds in lengths:
            kwargs = {
                "seconds": seconds,
                "chunk_seconds": chunk,
                "repeats": REPEATS.get(seconds, 1),
            }
            rows.append(
                common.run_worker("benchmarks.bench_protect:measure_length", kwargs, threads)
            )
            r = rows[-1]
            print(
                f"  protect/restore {seconds:>5g} s, {threads} thread(s): RTF {r['rtf_protect']:.4f} / "
                f"{r['rtf_restore']:.4f}, peak +{r['peak_mem_mb']:.0f} MiB",
                flush=True,
            )
    equiv_seconds = 4.0 if quick else 60.0
    equiv = common.run_worker(
        "benchmarks.bench_protect:chunk_equivalence",
        {"seconds": equiv_seconds, "chunk_seconds": [1.0] if quick else [30.0, 7.0]},
        1,
    )
    sweep = common.run_worker(
        "benchmarks.bench_protect:chunk_sweep",
        {
            "seconds": equiv_seconds,
            "chunk_seconds": [2.0, 1.0] if quick else [30.0, 10.0, 5.0, 2.0],
        },
        1,
    )
    for r in sweep["rows"]:
        print(
            f"  chunk {r['chunk_seconds']:>4g} s on {equiv_seconds:g} s: {r['protect_s']:.2f} s "
            f"(user {r['user_s']:.2f}, system {r['system_s']:.2f}), {r['minor_page_faults']} page faults",
            flush=True,
        )
    alternative = []
    if not quick:  # the same figures with smaller chunks (1 thread, 60 s and 600 s)
        for seconds in (60.0, 600.0):
            kwargs = {"seconds": seconds, "chunk_seconds": ALTERNATIVE_CHUNK_SECONDS, "repeats": 1}
            alternative.append(
                common.run_worker("benchmarks.bench_protect:measure_length", kwargs, 1)
            )
    one = [r for r in rows if r["threads"] == 1]
    # linearity: time per audio second from 10 s up (1 s is dominated by per-call overhead)
    long_rows = [r for r in one if r["seconds"] >= 10.0] if not quick else one
    per_second = [(r["protect_s"] + r["restore_s"]) / r["seconds"] for r in long_rows]
    cpu_per_second = [(r["protect_cpu_s"] + r["restore_cpu_s"]) / r["seconds"] for r in long_rows]
    ref_len = 60.0 if not quick else lengths[0]
    by_len = {r["seconds"]: r for r in one}
    summary = {
        "model": rows[0]["model"],
        "audio": rows[0]["audio"],
        "rows": rows,
        "chunk_equivalence": equiv,
        "chunk_sweep": sweep,
        "rtf_protect_1thread": by_len[max(lengths)]["rtf_protect"],
        "rtf_restore_1thread": by_len[max(lengths)]["rtf_restore"],
        "rtf_protect_2threads": next(
            (r["rtf_protect"] for r in rows if r["threads"] == 2 and r["seconds"] == max(lengths)),
            None,
        ),
        "rtf_restore_2threads": next(
            (r["rtf_restore"] for r in rows if r["threads"] == 2 and r["seconds"] == max(lengths)),
            None,
        ),
        "linearity_spread": max(per_second) / min(per_second),
        "linearity_spread_cpu_time": max(cpu_per_second) / min(cpu_per_second),
        "linearity_lengths_s": [r["seconds"] for r in long_rows],
        "peak_mem_ratio_600s_vs_60s": by_len[max(lengths)]["peak_mem_mb"]
        / by_len[ref_len]["peak_mem_mb"],
        "peak_mem_ratio_lengths_s": [max(lengths), ref_len],
        "chunked_vs_whole_max_abs_diff": equiv["max_abs_diff"],
    }
    if alternative:
        short, long = alternative
        summary[f"chunk{ALTERNATIVE_CHUNK_SECONDS:g}s"] = {
            "rows": alternative,
            "peak_mem_ratio_600s_vs_60s": long["peak_mem_mb"] / short["peak_mem_mb"],
            "time_per_second_ratio_600s_vs_60s": (long["protect_s"] + long["restore_s"])
            / 10
            / (short["protect_s"] + short["restore_s"]),
            "cpu_time_per_second_ratio_600s_vs_60s": (long["protect_cpu_s"] + long["restore_cpu_s"])
            / 10
            / (short["protect_cpu_s"] + short["restore_cpu_s"]),
        }
        print(
            f"  chunk {ALTERNATIVE_CHUNK_SECONDS:g} s: RTF 600 s {long['rtf_protect']:.4f} / "
            f"{long['rtf_restore']:.4f}, peak 60 s +{short['peak_mem_mb']:.0f} MiB, "
            f"600 s +{long['peak_mem_mb']:.0f} MiB",
            flush=True,
        )
    return summary
