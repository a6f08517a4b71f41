"""Item stream: peak memory of ``spkadv protect`` and ``spkadv restore`` on files of 60 s, 10 min and
2 hours (the command streams files block by block, so memory should not grow with the length).

Test files are 16-bit WAV written in blocks (real speech tiled when a corpus is there). Each
length runs in a fresh process: the model is loaded and a 1 s file processed first (imports, thread
pool, allocator), then the peak resident memory during each command above the resident memory just
before it is read from ``/proc/self/status`` (VmHWM reset with ``clear_refs``). The process's total
peak (torch's libraries alone are about 0.7 GB resident) is recorded beside it. The 2-hour file
is only protected (restore runs the same block-by-block path, measured at 60 s and 10 min). Each
length's row is saved in ``runs/bench/stream_rows/`` as soon as it is measured and reused by a
later run of the same code and model, so an interrupted run loses only the length in progress;
``SPKADV_BENCH_STREAM_TIMEOUT_S`` bounds each length's run (default 4 hours).

The peak above the baseline moves by up to about 25 MiB between fresh processes on the same file
(glibc keeps a varying amount of freed heap between blocks; three repeats gave 57, 59 and 84 MiB for
60 s and 58, 74 and 73 MiB for 10 min). Lengths below an hour therefore run ``REPEATS`` times, each in a fresh process, and the
row's peak is the median, with every repeat's peak kept beside it.

A last row protects a 60 s file with the model's own code steps (one process): the code
optimisation's CAM++ backward on 20 s pieces sets the peak of a real protection.

The two shorter lengths run again with ``--low-memory`` (``spkadv.base.allocator``: glibc's mmap and
trim thresholds fixed at 1 MiB, so freed large buffers go back to the system at once), for its
peaks, their ratio and its cost in wall time.

A model with per-utterance codes (the trained default model) protects the files of every length
with the zero code (no optimisation pass) unless ``SPKADV_BENCH_CODE_STEPS`` sets a step count for
the benchmark's copy of the model: at 0.6-1.6 CPU s per audio second the pass would dominate the
time of the 10-min and 2-hour files (over an hour on a 2-core CPU), not their memory. The memory of
a real protection, the code pass included, is measured once on 60 s with the model's own
``code_steps`` (the code-pass row).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from spkadv.core import modelfile

from benchmarks import common

LENGTHS = (60.0, 600.0, 7200.0)
QUICK_LENGTHS = (10.0, 100.0)
MEM_TARGET_RATIO = 1.2
MEM_TARGET_2H_MB = 300.0
LONG_PROTECT_ONLY_S = 3600.0  # from this length only protect (restore streams the same way)
REPEATS = 3  # fresh processes per length below LONG_PROTECT_ONLY_S (median peak)
LOW_MEMORY = ("--low-memory",)  # the option measured beside the default at the two shorter lengths


def write_long_file(path: Path, seconds: float, block_seconds: float = 60.0) -> str:
    """A 16 kHz 16-bit WAV of ``seconds``, written block by block; returns the audio's source."""
    import soundfile as sf

    base, source = common.speech_signal(min(seconds, block_seconds))
    remaining = int(round(seconds * common.SAMPLE_RATE))
    with sf.SoundFile(str(path), "w", common.SAMPLE_RATE, 1, subtype="PCM_16") as fh:
        while remaining > 0:
            fh.write(base[: min(remaining, len(base))])
            remaining -= len(base)
    return source


def cli_memory(
    path: str,
    model_path: str,
    warm_path: str,
    commands: tuple[str, ...] = ("protect", "restore"),
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Worker: wall time and peak memory of ``spkadv protect`` then ``spkadv restore`` on ``path``
    (``extra``: more options for both commands, such as ``--low-memory``)."""
    import soundfile as sf
    import torch
    from spkadv.cli import main as cli

    out = Path(path).with_suffix(".adv.wav")
    rst = Path(path).with_suffix(".rst.wav")
    warm_adv, warm_rst = (
        Path(warm_path).with_suffix(".adv.wav"),
        Path(warm_path).with_suffix(".rst.wav"),
    )
    for name, src, dst in (("protect", warm_path, warm_adv), ("restore", warm_adv, warm_rst)):
        args = [name, str(src), "-o", str(dst), "--model", model_path, "--quiet", "--overwrite"]
        if cli.main([*args, *extra]) != 0:  # warm-up: imports, thread pool, allocator
            raise RuntimeError(f"spkadv {' '.join(args)} failed")
    result: dict[str, Any] = {
        "seconds": sf.info(path).frames / common.SAMPLE_RATE,
        "threads": torch.get_num_threads(),
    }
    for name, src, dst in (("protect", path, out), ("restore", out, rst)):
        if name not in commands:
            continue
        args = [name, str(src), "-o", str(dst), "--model", model_path, "--quiet", "--overwrite"]
        args += list(extra)
        common.release_free_memory()
        baseline = common.current_rss_mb()
        code, seconds, peak = common.measure_peak(lambda args=args: cli.main(args))
        if code != 0:
            raise RuntimeError(f"spkadv {' '.join(args)} exited with {code}")
        result.update(
            {
                f"{name}_s": seconds,
                f"{name}_cpu_s": common.measure_peak.last_cpu_seconds,
                f"rtf_{name}": seconds / result["seconds"],
                f"peak_mem_{name}_mb": peak,
                f"rss_before_{name}_mb": baseline,
                f"peak_rss_total_{name}_mb": common.peak_rss_mb(),
            }
        )
    for f in (out, rst):
        f.unlink(missing_ok=True)
    result["commands"] = list(commands)
    result["extra"] = list(extra)
    result["peak_mem_mb"] = max(result[f"peak_mem_{c}_mb"] for c in commands)
    result["peak_rss_total_mb"] = max(result[f"peak_rss_total_{c}_mb"] for c in commands)
    return result


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from repeated fresh-process runs of a length: the run with the median peak, with
    every run's peaks (``peak_mem_<command>_mb_runs``) beside it."""
    if len(runs) == 1:
        return runs[0]
    order = sorted(range(len(runs)), key=lambda i: runs[i]["peak_mem_mb"])
    row = dict(runs[order[len(runs) // 2]])
    for command in row["commands"]:
        key = f"peak_mem_{command}_mb"
        row[f"{key}_runs"] = [r[key] for r in runs]
    row["peak_mem_mb_runs"] = [r["peak_mem_mb"] for r in runs]
    row["repeats"] = len(runs)
    return row


def code_pass_memory(model, folder: Path, warm: Path, digest: str, saved: Path) -> dict[str, Any]:
    """``spkadv protect`` of a 60 s file with the model's own code steps (one fresh process): the
    per-utterance code is optimised on 20 s pieces, CAM++ forward and backward, which sets the
    peak of a real protection (the rows above use the zero code)."""
    from spkadv.core import modelfile

    steps = int(model.meta["code_steps"])
    row_file = saved / f"60s_code{steps}.json"
    if row_file.exists():
        row = json.loads(row_file.read_text(encoding="utf-8"))
        if row.get("code_digest") == digest:
            print("  60 s with the code: row of an earlier run of the same code reused", flush=True)
            return row
    model_path = folder / "model_code.pt"
    modelfile.save_model(model_path, model.generator, model.removal, model.eps, dict(model.meta))
    path = folder / "speech_code_60s.wav"
    write_long_file(path, 60.0)
    try:
        row = common.run_worker(
            "benchmarks.bench_stream:cli_memory",
            {
                "path": str(path),
                "model_path": str(model_path),
                "warm_path": str(warm),
                "commands": ("protect",),
            },
            1,
        )
    finally:
        path.unlink(missing_ok=True)
    row.update(code_steps=steps, code_digest=digest)
    row_file.write_text(json.dumps(row), encoding="utf-8")
    print(
        f"  spkadv protect on 60 s with {steps} code steps: peak +{row['peak_mem_protect_mb']:.0f} MiB "
        f"above {row['rss_before_protect_mb']:.0f} MiB, {row['protect_s']:.1f} s",
        flush=True,
    )
    return row


def _ratio_range(short: dict[str, Any], long: dict[str, Any]) -> list[float]:
    """The longer file's peak over the shorter one's over all pairs of repeats (smallest, largest)."""
    short_runs = short.get("peak_mem_mb_runs", [short["peak_mem_mb"]])
    long_runs = long.get("peak_mem_mb_runs", [long["peak_mem_mb"]])
    return [min(long_runs) / max(short_runs), max(long_runs) / min(short_runs)]


def code_digest() -> str:
    """sha256 of the code a row measures (the command, streaming, protect, models)."""
    import hashlib

    from spkadv.base.config import project_root

    digest = hashlib.sha256()
    lib = project_root() / "lib" / "spkadv"
    for name in ("cli/main", "cli/process", "audio/streaming", "audio/io", "core/protect",
                 "core/models", "base/allocator"):  # fmt: skip
        digest.update((lib / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


def length_code_steps(env) -> tuple[int, str]:
    """Code steps of the length rows and why: ``SPKADV_BENCH_CODE_STEPS`` if set, else 0."""
    value = env.get("SPKADV_BENCH_CODE_STEPS", "").strip()
    if not value:
        return 0, "the zero code; SPKADV_BENCH_CODE_STEPS=N for N steps"
    try:
        steps = int(value)
    except ValueError:
        raise ValueError(
            f"SPKADV_BENCH_CODE_STEPS={value!r}: expected a whole number of code steps (0: the zero code)"
        ) from None
    if steps < 0:
        raise ValueError(f"SPKADV_BENCH_CODE_STEPS={steps}: expected 0 or more code steps")
    return steps, "SPKADV_BENCH_CODE_STEPS"


def run(quick: bool = False) -> dict[str, Any]:
    common.require("spkadv.audio.streaming", "file streaming")

    lengths = QUICK_LENGTHS if quick else LENGTHS
    model, description = common.default_model()
    rows, unfinished = [], {}
    with tempfile.TemporaryDirectory(prefix="spkadv-bench-stream-") as tmp:
        folder = Path(tmp)
        model_path = folder / "model.pt"
        meta = dict(model.meta)
        if model.config.code_film:
            meta["code_steps"], why = length_code_steps(os.environ)
            description += f" (code_steps {meta['code_steps']}: {why})"
        modelfile.save_model(model_path, model.generator, model.removal, model.eps, meta)
        warm = folder / "warm.wav"
        write_long_file(warm, 1.0)
        saved = common.results_dir() / "stream_rows"
        saved.mkdir(exist_ok=True)
        digest = code_digest()
        # the default allocator at every length, then --low-memory at the two shorter ones
        jobs = [(s, ()) for s in lengths] + [(s, LOW_MEMORY) for s in lengths[:2]]
        for seconds, extra in jobs:
            suffix = "".join(f"_{e.strip('-').replace('-', '_')}" for e in extra)
            row_file = saved / f"{seconds:g}s{suffix}.json"
            repeats = 1 if seconds >= LONG_PROTECT_ONLY_S or quick else REPEATS
            if row_file.exists():  # kept from an interrupted run of the same code and model
                row = json.loads(row_file.read_text(encoding="utf-8"))
                if (
                    row.get("code_digest") == digest
                    and row.get("model") == description
                    and row.get("repeats", 1) == repeats
                ):
                    rows.append(row)
                    print(
                        f"  {seconds:g} s: row of an earlier run of the same code reused",
                        flush=True,
                    )
                    continue
            path = folder / f"speech_{seconds:g}s.wav"
            source = write_long_file(path, seconds)
            commands = ("protect",) if seconds >= LONG_PROTECT_ONLY_S else ("protect", "restore")
            budget = float(os.environ.get("SPKADV_BENCH_STREAM_TIMEOUT_S", 4 * 3600))
            try:
                row = median_row(
                    [
                        common.run_worker(
                            "benchmarks.bench_stream:cli_memory",
                            {
                                "path": str(path),
                                "model_path": str(model_path),
                                "warm_path": str(warm),
                                "commands": commands,
                                "extra": extra,
                            },
                            1,
                            timeout=budget,
                        )
                        for _ in range(repeats)
                    ]
                )
            except subprocess.TimeoutExpired:
                unfinished[seconds] = (
                    f"{seconds:g} s file not finished within {budget:g} s "
                    f"(SPKADV_BENCH_STREAM_TIMEOUT_S; load average {os.getloadavg()[0]:.1f})"
                )
                print(f"  {unfinished[seconds]}", flush=True)
                continue
            finally:
                path.unlink(missing_ok=True)
            row.update(audio=source, model=description, code_digest=digest)
            row["load_average_1min_after"] = os.getloadavg()[0]
            row_file.write_text(json.dumps(row), encoding="utf-8")
            rows.append(row)
            print(
                f"  spkadv protect/restore{' '.join(('', *extra))} on {seconds:g} s: peak +{row['peak_mem_protect_mb']:.0f} / "
                f"+{row.get('peak_mem_restore_mb', float('nan')):.0f} MiB above {row['rss_before_protect_mb']:.0f} MiB "
                f"(total peak {row['peak_rss_total_mb']:.0f} MiB), RTF {row['rtf_protect']:.4f} / "
                f"{row.get('rtf_restore', float('nan')):.4f}",
                flush=True,
            )
        code_pass = None
        if not quick and model.config.code_film and int(model.meta.get("code_steps", 0)) > 0:
            code_pass = code_pass_memory(model, folder, warm, digest, saved)
    by_len = {r["seconds"]: r for r in rows if not r.get("extra")}
    low = {r["seconds"]: r for r in rows if r.get("extra")}
    short, long = by_len[lengths[0]], by_len[lengths[1]]
    out: dict[str, Any] = {
        "model": description,
        "rows": rows,
        "peak_mem_ratio_600s_vs_60s": long["peak_mem_mb"] / short["peak_mem_mb"],
        "peak_mem_ratio_lengths_s": [lengths[1], lengths[0]],
        "peak_mem_ratio_target": MEM_TARGET_RATIO,
        "peak_mem_ratio_range": _ratio_range(short, long),
        "peak_mem_definition": "peak resident memory during the command above the resident "
        "memory just before it (the model and libraries loaded), MiB",
    }
    if lengths[0] in low and lengths[1] in low:  # spkadv protect|restore --low-memory
        s_low, l_low = low[lengths[0]], low[lengths[1]]
        out.update(
            {
                "peak_mem_ratio_600s_vs_60s_low_memory": l_low["peak_mem_mb"]
                / s_low["peak_mem_mb"],
                "peak_mem_ratio_range_low_memory": _ratio_range(s_low, l_low),
                "peak_mem_low_memory_mb": [s_low["peak_mem_mb"], l_low["peak_mem_mb"]],
                # wall time of protect with --low-memory over without, on the longer file
                "low_memory_protect_time_ratio": l_low["protect_s"] / long["protect_s"],
            }
        )
    if code_pass is not None:
        out["code_pass_60s"] = code_pass
        out["peak_mem_protect_code_60s_mb"] = code_pass["peak_mem_protect_mb"]
    if 7200.0 in by_len:
        out["peak_mem_mb_2h"] = by_len[7200.0]["peak_mem_mb"]
        out["peak_rss_total_mb_2h"] = by_len[7200.0]["peak_rss_total_mb"]
        out["rtf_protect_2h"] = by_len[7200.0]["rtf_protect"]
    else:
        out["peak_mem_mb_2h"] = None
        out["peak_mem_mb_2h_reason"] = unfinished.get(
            7200.0, "not measured in a quick run (2-hour file)"
        )
    return out
