"""Script / torchrun entry of training: train from a profile's parameters and write the model file.

One process (CUDA when available, else CPU), or several processes / GPUs with
DistributedDataParallel::

    python -m spkadv.core.train_script --profile smoke --stage 20_joint_training
    torchrun --nproc_per_node=2 -m spkadv.core.train_script --profile smoke --stage 20_joint_training
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from spkadv.base import config as cfgmod
from spkadv.core import modelfile
from spkadv.core.datasets import train_audio
from spkadv.core.train import config_from_params, train
from spkadv.core.train_runtime import check_compile_backend
from spkadv.data.manifest import manifest_path, read_manifest
from spkadv.encoders.speaker import default_device, load


def main(argv: Sequence[str] | None = None) -> int:
    """Train from a profile's parameters and write ``model.pt`` (or ``model_ssed.pt``)."""
    parser = argparse.ArgumentParser(
        prog="python -m spkadv.core.train_script", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--profile", default="smoke", help="parameter profile name or YAML path")
    parser.add_argument(
        "--stage", default="20_joint_training", choices=["10_ssed_baseline", "20_joint_training"]
    )
    parser.add_argument(
        "--manifest", help="corpus manifest (default: the profile's data-prep output)"
    )
    parser.add_argument(
        "--encoder", help="white-box encoder (default: the profile's WHITEBOX_ENCODER)"
    )
    parser.add_argument("--out", help="output folder (default: runs/<profile>/<stage>)")
    parser.add_argument("--steps", type=int, help="override the number of steps")
    parser.add_argument(
        "--seed", type=int, help="override SEED (60_attackers' second model: OTHER_MODEL_SEED)"
    )
    parser.add_argument(
        "--compile", nargs="?", const="inductor", metavar="BACKEND",
        help="torch.compile F_P, F_R and the encoder: BACKEND or inductor:MODE (e.g. "
        "inductor:reduce-overhead for CUDA graphs); default inductor; off without the flag",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.no_progress:  # no bar: a log line per checkpoint with the speed instead
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.compile:
        try:  # refused before any audio is read
            check_compile_backend(args.compile)
        except ValueError as err:
            parser.error(str(err))

    params = cfgmod.load_profile(args.profile)
    profile = Path(args.profile).stem
    joint = args.stage == "20_joint_training"
    prefix = "JOINT" if joint else "SSED"
    config = config_from_params(params, f"{prefix}_STEPS", f"{prefix}_WARM_START_STEPS", joint)
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = default_device()
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    threads = params.get("TRAIN_THREADS", 0)
    if threads:
        torch.set_num_threads(threads)
    try:
        manifest = Path(args.manifest) if args.manifest else manifest_path(profile)
        frame = read_manifest(manifest)
        train_paths = frame.loc[frame["subset"] == "train", "path"].tolist()
        if not train_paths:
            raise SystemExit(f"{manifest}: no rows with subset == 'train'")
        rank0 = not distributed or torch.distributed.get_rank() == 0
        waves = train_audio(
            train_paths,
            params.get("TRAIN_UTTERANCES", 0),
            params.get("TRAIN_DATA", "memory"),
            progress=rank0 and not args.no_progress,
            cache_dir=cfgmod.cache_dir(profile),
        )
        encoder = load(args.encoder or params.get("WHITEBOX_ENCODER", "campplus"), device)
        out = Path(args.out) if args.out else cfgmod.stage_dir(profile, args.stage)
        result = train(
            config,
            waves,
            encoder,
            out / "checkpoints",
            progress=not args.no_progress,
            device=device,
            compile_backend=args.compile,
        )
        if rank0:
            name = "model.pt" if joint else "model_ssed.pt"
            path = modelfile.save_model(out / name, result.generator, result.removal, config.eps)
            print(
                f"trained {result.steps} steps in {result.minutes:.2f} min "
                f"({result.steps_per_s:.2f} steps/s, {result.crops_per_s:.1f} crops/s on "
                f"{device.type}); model written to {path}"
            )
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
