"""Run the benchmarks of issue 7 and write ``runs/bench/<item>.json`` and ``runs/bench/results.json``.

    python -m benchmarks.run_all                 # everything (``make bench``)
    python -m benchmarks.run_all --quick         # reduced sizes, a minute or two
    python -m benchmarks.run_all --only protect,pgd

Items: protect (1), pgd (2), flops (3), train (4), eval (5), pipeline (6), and the figures under
real conditions: stream (file memory), busy (a stage beside a busy process), bf16 (CPU bfloat16),
rerun (table notebooks of the default profile, warm against cold caches), workers (eval-set
protection in one process against one process per core), scale (training data read from disk:
the loader's memory and crops per second at 1 000 to 100 000 files), paper_estimate (the paper
profile's training hours on one GPU and on 8, estimated from counted FLOPs and operations),
predictor (protect cost on one thread of today's optimised code and of the predicted code refined
for k = 0, 1, 2, 5 steps, and PGD's cost to match each; needs study 95's trained predictor),
frontier (the speed / strength frontier on the default profile's eval speakers: white-box and
held-out black-box rec-adv, rec-rst and SNR(rst) against protect cost for the predicted code + k
steps, today's protection and PGD; bench_frontier.py --profile for another profile). An item
whose library piece is missing is recorded with the reason and the others still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

ITEMS = (
    "protect",
    "pgd",
    "flops",
    "train",
    "eval",
    "pipeline",
    "stream",
    "busy",
    "bf16",
    "rerun",
    "workers",
    "scale",
    "paper_estimate",
    "predictor",
    "frontier",
)

# headline figure -> (item, key in the item's JSON, target text, test on the value or None)
HEADLINE: dict[str, tuple[str, str, str, Any]] = {
    "rtf_protect_1thread": ("protect", "rtf_protect_1thread", "", None),
    "rtf_restore_1thread": ("protect", "rtf_restore_1thread", "", None),
    "rtf_protect_2threads": ("protect", "rtf_protect_2threads", "", None),
    "rtf_restore_2threads": ("protect", "rtf_restore_2threads", "", None),
    "linearity_spread": ("protect", "linearity_spread", "<= 1.2", lambda v: v <= 1.2),
    "linearity_spread_cpu_time": (
        "protect",
        "linearity_spread_cpu_time",
        "<= 1.2",
        lambda v: v <= 1.2,
    ),
    "peak_mem_ratio_600s_vs_60s": (
        "stream",
        "peak_mem_ratio_600s_vs_60s",
        "<= 1.2",
        lambda v: v <= 1.2,
    ),
    "peak_mem_mb_2h": ("stream", "peak_mem_mb_2h", "< 300", lambda v: v < 300),
    "peak_mem_ratio_600s_vs_60s_low_memory": (
        "stream",
        "peak_mem_ratio_600s_vs_60s_low_memory",
        "<= 1.2",
        lambda v: v <= 1.2,
    ),
    "low_memory_protect_time_ratio": ("stream", "low_memory_protect_time_ratio", "", None),
    "peak_mem_protect_code_60s_mb": ("stream", "peak_mem_protect_code_60s_mb", "", None),
    "peak_mem_ratio_600s_vs_60s_arrays": ("protect", "peak_mem_ratio_600s_vs_60s", "", None),
    "chunked_vs_whole_max_abs_diff": (
        "protect",
        "chunked_vs_whole_max_abs_diff",
        "<= 1e-5",
        lambda v: v <= 1e-5,
    ),
    "pgd_speed_ratio": ("pgd", "pgd_speed_ratio", ">= 50", lambda v: v >= 50),
    "generator_gflop_per_audio_second": ("flops", "generator_gflop_per_audio_second", "", None),
    "generator_gflops": ("flops", "generator_gflops", "", None),
    "gflops_ratio_vs_matmul": ("flops", "gflops_ratio_vs_matmul", "", None),
    "train_samples_per_s": ("train", "samples_per_s", "", None),
    "train_data_fraction": ("train", "train_data_fraction", "< 0.1", lambda v: v < 0.1),
    "eer_40k_trials_seconds": ("eval", "eer_40k_trials_seconds", "< 0.1", lambda v: v < 0.1),
    "embed_rtf_campplus": ("eval", "embed_rtf_campplus", "", None),
    "embed_rtf_ge2e": ("eval", "embed_rtf_ge2e", "", None),
    "asr_rtf_base": ("eval", "asr_rtf_base", "", None),
    "asr_rtf_tiny.en": ("eval", "asr_rtf_tiny.en", "", None),
    "table_rerun_speedup": ("eval", "table_rerun_speedup", ">= 10", lambda v: v >= 10),
    "table_rerun_speedup_default": (
        "rerun",
        "table_rerun_speedup_default",
        ">= 10",
        lambda v: v >= 10,
    ),
    "default_pipeline_minutes": (
        "pipeline",
        "default_pipeline_minutes",
        "<= 45",
        lambda v: v <= 45,
    ),
    "busy_machine_slowdown": ("busy", "busy_machine_slowdown", "<= 2.5", lambda v: v <= 2.5),
    "busy_machine_slowdown_torch_default": ("busy", "slowdown_torch_default", "", None),
    "train_policy_speedup": ("busy", "train_policy_speedup", "", None),
    "train_slowdown_busy": ("busy", "train_slowdown_spkadv_policy", "", None),
    "bf16_protect_speedup": ("bf16", "bf16_protect_speedup", "", None),
    "bf16_train_speedup": ("bf16", "bf16_train_speedup", "", None),
    "bf16_code_speedup": ("bf16", "bf16_code_speedup", "", None),
    "protect_workers_speedup": ("workers", "workers_speedup", "", None),
    "embed_workers_speedup": ("workers", "embed_workers_speedup", "", None),
    "loader_peak_mem_ratio_100k_vs_1k": (
        "scale",
        "loader_peak_mem_ratio_100k_vs_1k",
        "<= 1.2",
        lambda v: v <= 1.2,
    ),
    "loader_crops_per_s": ("scale", "loader_crops_per_s", ">= needed", None),
    "loader_crops_per_s_needed": ("scale", "loader_crops_per_s_needed", "", None),
    "loader_crops_per_s_margin": ("scale", "loader_crops_per_s_margin", ">= 1", lambda v: v >= 1),
    "paper_step_tflop": ("paper_estimate", "paper_step_tflop", "", None),
    "paper_step_s_1gpu_estimate": ("paper_estimate", "paper_step_s_1gpu", "", None),
    "paper_hours_1gpu_estimate": ("paper_estimate", "paper_hours_1gpu", "", None),
    "paper_hours_8gpu_estimate": ("paper_estimate", "paper_hours_8gpu", "", None),
    "paper_hours_1gpu_pessimistic": ("paper_estimate", "paper_hours_1gpu_pessimistic", "", None),
    "paper_hours_8gpu_pessimistic": ("paper_estimate", "paper_hours_8gpu_pessimistic", "", None),
    # today's protection (the model's code steps) and the predicted code + k steps, one run, 1 thread
    "protect_rtf_1thread": ("predictor", "protect_rtf_1thread", "", None),
    "protect_rtf_1thread_predictor_k0": ("predictor", "protect_rtf_1thread_predictor_k0", "", None),
    "protect_rtf_1thread_predictor_k1": ("predictor", "protect_rtf_1thread_predictor_k1", "", None),
    "protect_rtf_1thread_predictor_k2": ("predictor", "protect_rtf_1thread_predictor_k2", "", None),
    "protect_rtf_1thread_predictor_k5": ("predictor", "protect_rtf_1thread_predictor_k5", "", None),
    "pgd_speed_ratio_current": ("predictor", "pgd_speed_ratio", ">= 5", lambda v: v >= 5),
    "pgd_speed_ratio_predictor_k0": (
        "predictor",
        "pgd_speed_ratio_predictor_k0",
        ">= 5",
        lambda v: v >= 5,
    ),
    # the speed / strength frontier on the default profile's eval speakers, one thread
    "frontier_protect_rtf_current": ("frontier", "protect_rtf_1thread", "", None),
    "frontier_protect_rtf_k0": (
        "frontier",
        "protect_rtf_1thread_k0",
        "<= 0.15",
        lambda v: v <= 0.15,
    ),
    "frontier_eer_rise_fraction_fast": (
        "frontier",
        "eer_rise_fraction_fast",
        ">= 0.9 at <= 0.15",
        lambda v: v >= 0.9,
    ),
    "frontier_eer_recrst_diff_points_fast": (
        "frontier",
        "eer_recrst_diff_points_fast",
        "<= 0.5",
        lambda v: v <= 0.5,
    ),
    "frontier_snr_rst_db_fast": ("frontier", "snr_rst_db_fast", ">= 45", lambda v: v >= 45),
}
REASON_KEYS = {
    "table_rerun_speedup": "table_rerun_reason",
    "default_pipeline_minutes": "default_pipeline_minutes_reason",
    "table_rerun_speedup_default": "table_rerun_speedup_default_reason",
    "peak_mem_mb_2h": "peak_mem_mb_2h_reason",
}


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    }


def run_item(item: str, quick: bool) -> dict[str, Any]:
    """Run one item; a missing piece or a failure is recorded, not raised."""
    from benchmarks import common

    module = importlib.import_module(f"benchmarks.bench_{item}")
    t0 = time.perf_counter()
    try:
        result = module.run(quick=quick)
        result["status"] = "ok"
    except common.Unavailable as err:
        result = {"status": "unavailable", "reason": str(err)}
    except Exception as err:  # one broken item must not hide the others' figures
        result = {
            "status": "failed",
            "reason": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
    result["bench_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def headline(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The flat summary written to results.json (None plus a ``<key>_reason`` where not measured)."""
    out: dict[str, Any] = {}
    for key, (item, field, _, _) in HEADLINE.items():
        data = results.get(item)
        value = None if data is None else data.get(field)
        out[key] = value
        if value is None:
            if data is None:
                out[f"{key}_reason"] = f"item {item!r} not run (see --only)"
            elif data.get("status") != "ok":
                out[f"{key}_reason"] = f"item {item!r} {data['status']}: {data.get('reason')}"
            elif key in REASON_KEYS and data.get(REASON_KEYS[key]):
                out[f"{key}_reason"] = data[REASON_KEYS[key]]
            elif any(k.startswith(field) and k.endswith("reason") for k in data):
                out[f"{key}_reason"] = next(
                    v for k, v in data.items() if k.startswith(field) and k.endswith("reason")
                )
    scale = results.get("scale")
    if scale and scale.get("status") == "ok":  # the loader's figures at each corpus size
        out["loader_scale"] = {
            n: {k: row[k] for k in ("peak_mb", "peak_rss_mb", "crops_per_s", "listing_s")}
            for n, row in scale["per_n"].items()
        }
        out["loader_targets"] = scale["targets"]
    cuda = results.get("train_cuda")
    if cuda and cuda.get("status") == "ok":
        out["train_samples_per_s_cuda"] = cuda["samples_per_s"]
        out["train_data_fraction_cuda"] = cuda["train_data_fraction"]
    return out


def format_table(summary: dict[str, Any]) -> str:
    rows = [("figure", "value", "target", "met")]
    for key, (_, _, target, test) in HEADLINE.items():
        value = summary.get(key)
        if value is None:
            shown, met = "n/a", ""
        else:
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            met = "" if test is None else ("yes" if test(value) else "NO")
        rows.append((key, shown, target, met))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    reasons = [
        f"  {k.removesuffix('_reason')}: {v}" for k, v in summary.items() if k.endswith("_reason")
    ]
    return "\n".join(lines + (["not measured:"] + reasons if reasons else []))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced sizes (a fast check that everything runs)"
    )
    parser.add_argument("--only", help=f"comma-separated items among {','.join(ITEMS)}")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the in-process items (default 1)"
    )
    args = parser.parse_args(argv)
    items = list(ITEMS)
    if args.only:
        items = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(items) - set(ITEMS))
        if unknown:
            parser.error(f"unknown item(s) {unknown}; choose among {', '.join(ITEMS)}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from spkadv.base.fileio import read_json, write_json

    from benchmarks import common

    torch.set_num_threads(args.threads)
    out_dir = common.results_dir()
    info = machine()
    print(f"benchmarks ({'quick' if args.quick else 'full'}) on {info['cpu']}, {info['cpu_count']} cores, "
          f"load {info['load_average_at_start'][0]:.2f}, torch {info['torch']}; writing {out_dir}", flush=True)  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    summary_path = out_dir / "results.json"
    if args.only and summary_path.exists():  # keep the other items' figures from an earlier run
        previous = read_json(summary_path)
        for item in ITEMS:
            if item not in items and (out_dir / f"{item}.json").exists():
                kept = read_json(out_dir / f"{item}.json")
                if kept.get("quick") == args.quick:  # never mix quick and full figures
                    results[item] = kept
        if previous.get("quick") != args.quick:
            results = {}
    for item in items:
        print(f"[{item}]", flush=True)
        results[item] = run_item(item, args.quick)
        results[item].update(quick=args.quick, machine=info)
        write_json(out_dir / f"{item}.json", results[item])
        if item == "train" and torch.cuda.is_available():
            print("[train on cuda, bf16 autocast]", flush=True)
            from benchmarks import bench_train

            try:
                results["train_cuda"] = bench_train.run(quick=args.quick, device="cuda") | {
                    "status": "ok"
                }
            except Exception as err:
                results["train_cuda"] = {
                    "status": "failed",
                    "reason": f"{type(err).__name__}: {err}",
                }
            write_json(out_dir / "train_cuda.json", results["train_cuda"])
        status = results[item]["status"]
        if status != "ok":
            print(f"  {status}: {results[item]['reason']}", flush=True)
    summary = headline(results) | {
        "quick": args.quick,
        "machine": info,
        "threads_in_process": args.threads,
    }
    summary["caveat"] = (
        "measured on a shared machine; timings are noisy"
        if info["load_average_at_start"][0] > 0.5
        else "machine quiet at start"
    )
    write_json(summary_path, summary)
    print()
    print(format_table(summary))
    print(f"\nwritten: {summary_path} and one JSON per item in {out_dir}")
    return 0 if all(results[i]["status"] != "failed" for i in items) else 1


if __name__ == "__main__":
    sys.exit(main())
