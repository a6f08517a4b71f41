"""GPU check of the paper profile's training step: a few hundred steps of ``spkadv.core.train.train``
with params/paper.yaml's F_P, F_R, losses, batch and crop on one GPU (bf16 autocast, as training
runs on CUDA), then the measured step time and the paper profile's training hours it implies.

    python -m benchmarks.gpu_check                          # 300 steps after 20 warm-up steps
    python -m benchmarks.gpu_check --compile inductor       # the same with torch.compile
    python -m benchmarks.gpu_check --compile inductor:reduce-overhead --steps 500

The encoder is the paper's ECAPA-TDNN when its weights load (``SPKADV_ECAPA_DIR`` or the Hugging
Face hub), else the same architecture with random weights (the same FLOPs; ``--encoder`` picks).
The crops come from seeded noise held in memory, so the loader does not limit the step (the
loader's own rate is ``benchmarks/bench_scale.py``'s). Writes ``runs/bench/gpu_check.json`` and
prints one line per figure; the figure to carry into docs/paper_scale.md is ``step_s``.
Without CUDA it refuses (``--device cpu`` runs the same code for a check of the script itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import bench_paper_estimate as estimate
from benchmarks import common


def load_encoder(name: str, device):
    """``random-ecapa``, ``auto`` (ECAPA's weights, else random-ecapa) or any spkadv encoder name."""
    from spkadv.encoders import speaker
    from spkadv.encoders.frozen import EncoderError

    if name == "random-ecapa":
        return estimate.random_ecapa().to(device), "ECAPA-TDNN architecture, random weights"
    if name == "auto":
        try:
            return speaker.load("ecapa", device), "ECAPA-TDNN (spkrec-ecapa-voxceleb)"
        except EncoderError as err:
            print(f"note: {str(err).splitlines()[0][:160]}; using random weights", file=sys.stderr)
            return estimate.random_ecapa().to(device), "ECAPA-TDNN architecture, random weights"
    return speaker.load(name, device), name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--steps", type=int, default=300, help="timed steps (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed first steps (default 20)")
    parser.add_argument("--batch", type=int, help="crops per step (default: the profile's, 16)")
    parser.add_argument("--crop", type=float, help="crop seconds (default: the profile's, 3.0)")
    parser.add_argument("--encoder", default="auto", help="auto | random-ecapa | ecapa | NAME")
    parser.add_argument(
        "--compile", metavar="BACKEND", help="torch.compile: BACKEND or inductor:MODE"
    )
    parser.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN autotuning on")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    parser.add_argument("--out", type=Path, help="JSON output (default runs/bench/gpu_check.json)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")

    import numpy as np
    import torch
    from spkadv.core.train import train

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU "
            "machine, or pass --device cpu to check the script itself",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    config = estimate.paper_config(joint=True)
    config = dataclasses.replace(
        config,
        steps=args.warmup + args.steps,
        batch_size=args.batch or config.batch_size,
        crop_seconds=args.crop or config.crop_seconds,
        checkpoint_every=10**9,
    )
    encoder, encoder_name = load_encoder(args.encoder, device)
    rng = np.random.default_rng(0)
    waves = [
        (0.1 * rng.standard_normal(config.crop_samples * 2)).astype(np.float32) for _ in range(64)
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # the checkpoint at the last step goes here
        result = train(
            config, waves, encoder, tmp, progress=False, device=device,
            compile_backend=args.compile,
        )  # fmt: skip
    wall = time.perf_counter() - started
    timed = [h["step_s"] for h in result.history[args.warmup :]]
    step_s = statistics.median(timed)
    paper_steps = sum(int(n) for n in estimate.paper_steps().values())
    figures = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "encoder": encoder_name,
        "compile": args.compile or "off",
        "cudnn_benchmark": args.cudnn_benchmark,
        "batch_size": config.batch_size,
        "crop_seconds": config.crop_seconds,
        "warmup_steps": args.warmup,
        "timed_steps": len(timed),
        "step_s": step_s,
        "step_s_mean": statistics.fmean(timed),
        "crops_per_s": config.batch_size / step_s,
        "first_step_s": result.history[0]["step_s"],
        "wall_s": wall,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
        "paper_training_steps": paper_steps,
        "paper_hours_1gpu_at_this_step": step_s * paper_steps / 3600,
        "paper_hours_8gpu_at_this_step": step_s
        * paper_steps
        / estimate.GPUS
        / estimate.DDP_EFFICIENCY
        / 3600,
        "note": "stages 10, 20 and 60's training steps, each timed as a joint step (an SSED step "
        "is cheaper); 8 GPUs at the assumed DDP efficiency of benchmarks/bench_paper_estimate.py",
    }
    out = args.out or common.results_dir() / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
