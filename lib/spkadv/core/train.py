"""Training of the SSED generator alone (L_SSED, eq. 4) or jointly with the removal module (L, eq. 9).

Random crops drawn deterministically from (seed, sample index) (:mod:`spkadv.core.datasets`), so a
run resumed from a checkpoint sees the same batches as an uninterrupted one and reaches the same
final step. Checkpoints hold the modules, the optimizer state, the step, the loss history and the
elapsed time; they are written atomically every ``checkpoint_every`` steps and at every epoch end,
and are loaded with ``torch.load(weights_only=True)`` (no code runs from a checkpoint).

CUDA when available (bf16 autocast, pinned memory, data-loader workers), CPU otherwise; several
processes / GPUs with DistributedDataParallel through :mod:`spkadv.core.train_script`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import atomic_path
from spkadv.base.precision import cpu_bf16_enabled
from spkadv.core import train_runtime as runtime
from spkadv.core.datasets import CropDataset, StepSampler, speaker_centroids
from spkadv.core.losses import LossWeights, compute_losses
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.core.removal_phase import init_removal_from_generator, removal_step
from spkadv.data.centroids import unit
from spkadv.encoders.speaker import default_device

CHECKPOINT_NAME = "last.pt"
LOG = logging.getLogger(__name__)  # a line per checkpoint: step, steps and crops per second
ATTACK_TARGETS = ("utterance", "centroid")
REMOVAL_LR_SCHEDULES = ("constant", "cosine")


class CheckpointError(RuntimeError):
    """A checkpoint is corrupted, truncated or belongs to another configuration."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (primitives only, stored in checkpoints)."""

    model: SSEDConfig = dataclasses.field(default_factory=SSEDConfig)
    weights: LossWeights = dataclasses.field(default_factory=LossWeights)
    joint: bool = True  # train F_R with L (eq. 9); False: F_P alone with L_SSED (eq. 4)
    rpt_to_generator: bool = (
        True  # L_rpt's gradients also reach F_P (literal eq. 9); False: F_R only
    )
    eps: float = 0.05  # attack intensity (eq. 1 and 5)
    lr: float = 1.0e-4  # Adam learning rate
    steps: int = 100  # optimisation steps in total
    batch_size: int = 8  # crops per step and process
    crop_seconds: float = 2.0
    warm_start_steps: int = 0  # first steps without the saliency map (SSAE's warm start)
    quality_ramp_steps: int = 0  # β grows linearly from 0 over these steps (attack warm-up)
    grad_clip: float = 0.0  # max gradient norm (0 = off)
    checkpoint_every: int = 50  # steps between checkpoints (also at every epoch end)
    seed: int = 0
    removal_steps: int = 0  # joint only: extra steps after `steps`, F_P frozen, F_R alone on L_rpt
    removal_init_from_generator: bool = False  # start that phase from F_P's weights, n negated
    removal_fresh_optimizer: bool = (
        False  # that phase starts Adam afresh (joint-phase moments dropped)
    )
    removal_lr_schedule: str = "constant"  # that phase's lr: constant | cosine (decays to 0)
    attack_target: str = (
        "utterance"  # eq. 2 against the clean utterance (paper) | its speaker centroid
    )
    code_sigma: float = 0.0  # model.code_film: std of the random per-example codes seen in training
    cpu_bf16: bool = False  # bf16 autocast of the forward passes on CPU too, where the CPU has native bf16 (CUDA always uses it)

    def __post_init__(self) -> None:
        if self.removal_steps < 0:
            raise ValueError(f"removal_steps={self.removal_steps} must be >= 0")
        if self.removal_steps and not self.joint:
            raise ValueError("removal_steps > 0 needs joint=True (there is no F_R to fine-tune)")
        if self.removal_lr_schedule not in REMOVAL_LR_SCHEDULES:
            raise ValueError(
                f"removal_lr_schedule={self.removal_lr_schedule!r}; "
                f"choose one of {REMOVAL_LR_SCHEDULES}"
            )
        if self.attack_target not in ATTACK_TARGETS:
            raise ValueError(
                f"attack_target={self.attack_target!r}; choose one of {ATTACK_TARGETS}"
            )
        if self.code_sigma < 0:
            raise ValueError(f"code_sigma={self.code_sigma} must be >= 0")

    @property
    def total_steps(self) -> int:
        """Joint (or SSED) steps plus the removal fine-tuning steps."""
        return self.steps + self.removal_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        data["model"] = SSEDConfig.from_dict(data["model"])
        data["weights"] = LossWeights(**data["weights"])
        return cls(**data)

    @property
    def crop_samples(self) -> int:
        return int(round(self.crop_seconds * SAMPLE_RATE))


def config_from_params(
    params: dict[str, Any], steps_key: str, warm_key: str, joint: bool
) -> TrainConfig:
    """Build a :class:`TrainConfig` from a notebook's / profile's UPPER_CASE parameters."""
    model = SSEDConfig(
        width=params["MODEL_WIDTH"],
        stages=params["MODEL_STAGES"],
        res_blocks=params["MODEL_RES_BLOCKS"],
        dilation_base=params["MODEL_DILATION_BASE"],
        spectral_norm=params["MODEL_SPECTRAL_NORM"],
        mask_norm=params["MODEL_MASK_NORM"],
        norm=params["MODEL_NORM"],
        level_scaled=params["MODEL_LEVEL_SCALED"],
        input_norm=params["MODEL_INPUT_NORM"],
        level_window=params["MODEL_LEVEL_WINDOW"],
        level_floor=params["MODEL_LEVEL_FLOOR"],
        embed_dim=params.get("MODEL_EMBED_DIM", 0),
        code_film=params.get("MODEL_CODE_FILM", False),
        code_segment_seconds=params.get("MODEL_CODE_SEGMENT_SECONDS", 0.0),
        mask_init=params.get("MODEL_MASK_INIT", 0.0),
    )
    weights = LossWeights(
        alpha=params["LOSS_ALPHA"],
        beta=params["LOSS_BETA"],
        gamma=params["LOSS_GAMMA"],
        theta=params["LOSS_THETA"],
        norm=params["LOSS_NORM"],
        quality=params.get("LOSS_QUALITY", "eq3"),
        snr_target_db=params.get("SNR_TARGET_DB", 30.0),
        attack_margin=params.get("ATTACK_MARGIN", 1.0),
        rpt=params.get("RPT_FORM", "eq8"),
    )
    return TrainConfig(
        model=model,
        weights=weights,
        joint=joint,
        rpt_to_generator=params.get("RPT_TO_GENERATOR", True),
        eps=params["EPS"],
        lr=params["LEARNING_RATE"],
        steps=params[steps_key],
        batch_size=params["BATCH_SIZE"],
        crop_seconds=params["CROP_SECONDS"],
        warm_start_steps=params[warm_key],
        quality_ramp_steps=params["QUALITY_RAMP_STEPS"],
        grad_clip=params["GRAD_CLIP"],
        checkpoint_every=params["CHECKPOINT_EVERY"],
        seed=params["SEED"],
        removal_steps=params.get("REMOVAL_FINETUNE_STEPS", 0) if joint else 0,
        removal_init_from_generator=params.get("REMOVAL_INIT_FROM_GENERATOR", False)
        if joint
        else False,
        removal_fresh_optimizer=params.get("REMOVAL_FRESH_OPTIMIZER", False) if joint else False,
        removal_lr_schedule=params.get("REMOVAL_LR_SCHEDULE", "constant") if joint else "constant",
        attack_target=params.get("ATTACK_TARGET", "utterance"),
        code_sigma=params.get("CODE_SIGMA", 0.0),
        cpu_bf16=params.get("CPU_BF16", False),
    )


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint without executing code; a damaged file raises :class:`CheckpointError`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / garbage files
        raise CheckpointError(
            f"{path}: corrupted or truncated checkpoint ({type(err).__name__}: {err}); "
            "delete it to start training again from the previous one or from scratch"
        ) from err
    if not isinstance(state, dict) or "step" not in state or "generator" not in state:
        raise CheckpointError(f"{path}: not a spkadv training checkpoint (keys: {list(state)[:8]})")
    return state


@dataclasses.dataclass
class TrainResult:
    generator: SSEDGenerator
    removal: RemovalModule | None
    history: list[dict[str, float]]
    steps: int
    minutes: float
    resumed_from: int
    steps_per_s: float = 0.0  # this call's mean, its first step left out (SpeedMeter)
    crops_per_s: float = 0.0


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if hasattr(module, "module") else module


def train(
    config: TrainConfig,
    waves: Sequence[np.ndarray],
    encoder: torch.nn.Module,
    checkpoint_dir: str | os.PathLike,
    progress: bool = True,
    resume: bool = True,
    stop_after: int | None = None,
    device: torch.device | None = None,
    speakers: Sequence[str] | None = None,
    max_cpu_seconds: float | None = None,
    compile_backend: str | None = None,
) -> TrainResult:
    """Train F_P (and F_R when ``config.joint``) against the frozen ``encoder``.

    Args:
        waves: training utterances, 16 kHz float32: a list in memory, or a
            :class:`spkadv.data.utterances.DiskUtterances` (each crop read from its file;
            the same crops, ``TRAIN_DATA``).
        encoder: frozen speaker encoder with ``.embed(waves [B, T]) -> [B, D]``.
        checkpoint_dir: where ``last.pt`` lives; an existing one is resumed when ``resume``.
        stop_after: stop (as if interrupted) after this many steps of this call (for tests).
        speakers: speaker of each utterance (needed by ``attack_target="centroid"``).
        max_cpu_seconds: stop (as if interrupted) once the run's process CPU time, summed over
            calls (stored in the checkpoint), reaches this budget: equal-budget comparisons.
        compile_backend: ``torch.compile`` F_P, F_R and the encoder with this backend
            (``inductor``, ``inductor:reduce-overhead``; ``eager`` traces only); None: eager
            mode. Not part of the configuration: a run may resume with or without it.
    """
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    device = device or default_device()
    cuda = device.type == "cuda"
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME

    torch.manual_seed(config.seed)
    generator = SSEDGenerator(config.model).to(device)
    removal = RemovalModule(config.model).to(device) if config.joint else None
    encoder = encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    cpu_start = time.process_time()
    centroids = wave_centroid = None
    if config.attack_target == "centroid":
        if speakers is None or len(speakers) != len(waves):
            raise ValueError(
                "attack_target='centroid' needs the speaker of every training utterance"
            )
        centroids, wave_centroid = speaker_centroids(encoder, waves, speakers, device)
    params = list(generator.parameters()) + (list(removal.parameters()) if removal else [])
    optimizer = torch.optim.Adam(params, lr=config.lr)

    step, history, elapsed = 0, [], 0.0
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        try:  # through from_dict: fields added since the checkpoint was written take their defaults
            same = TrainConfig.from_dict(state["config"]) == config
        except (TypeError, ValueError):
            same = False
        if not same:
            raise CheckpointError(
                f"{ckpt_path}: written by a different training configuration; "
                "delete the checkpoints folder or restore the original parameters"
            )
        generator.load_state_dict(state["generator"])
        if removal is not None:
            removal.load_state_dict(state["removal"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed_s"]
        history = runtime.unpack_history(state["history"])
        cpu_start -= state.get("cpu_s", 0.0)
    resumed_from = step

    gen_m, rem_m = generator, removal
    if distributed:
        ids = [device.index] if cuda else None
        unused = config.warm_start_steps > 0  # the mask decoder sits idle during the warm start
        gen_m = DDP(generator, device_ids=ids, find_unused_parameters=unused)
        rem_m = (
            DDP(removal, device_ids=ids, find_unused_parameters=unused)
            if removal is not None
            else None
        )

    embed = encoder.embed
    if compile_backend:
        gen_m, rem_m, embed = runtime.compile_networks(compile_backend, gen_m, rem_m, encoder.embed)
    total = config.total_steps
    last = total if stop_after is None else min(total, step + stop_after)
    loader = DataLoader(
        CropDataset(waves, config.crop_samples, config.seed),
        batch_size=config.batch_size,
        sampler=StepSampler(step, last, config.batch_size, rank, world),
        num_workers=2 if cuda else 0,
        pin_memory=cuda,
    )
    steps_per_epoch = max(1, math.ceil(len(waves) / (config.batch_size * world)))

    bar = tqdm(total=total, initial=step, desc="training", disable=not progress or rank != 0)
    t0 = time.perf_counter()
    generator.train()
    if removal is not None:
        removal.train()
    autocast = cuda or cpu_bf16_enabled(config.cpu_bf16, log=progress and rank == 0)
    codes = runtime.training_codes(config, step)  # a resumed run continues the same stream of codes
    meter = runtime.SpeedMeter(config.batch_size * world)

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "step": step,
                "config": config.to_dict(),
                "generator": generator.state_dict(),
                "removal": removal.state_dict() if removal is not None else {},
                "optimizer": optimizer.state_dict(),
                "history": runtime.pack_history(history),
                "elapsed_s": elapsed + time.perf_counter() - t0,
                "cpu_s": time.process_time() - cpu_start,
            },
        )
        LOG.info("step %d/%d: %.3g steps/s, %.3g crops/s", step, total, *meter.window_rates())

    for x, index in loader:
        if max_cpu_seconds is not None and time.process_time() - cpu_start >= max_cpu_seconds:
            if rank == 0 and step > resumed_from:
                checkpoint()
            break
        x = x.to(device, non_blocking=cuda)
        code = next(codes, None)  # the family of perturbations F_R must learn to undo
        code = None if code is None else code.to(device)
        if step >= config.steps:  # removal fine-tuning: F_P frozen, F_R alone on L_rpt (eq. 8)
            generator.eval()
            if step == config.steps:
                if config.removal_init_from_generator:
                    init_removal_from_generator(removal, generator)
                if config.removal_fresh_optimizer:  # F_R's joint-phase moments do not carry over
                    optimizer.state.clear()
            lr = removal_lr(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            record = removal_step(config, generator, rem_m, x, optimizer, params, encoder, code)
            record["lr"] = lr
            step += 1
            record.update(step=step, **meter.tick())
            history.append(record)
            bar.update(1)
            bar.set_postfix(rpt=f"{record['rpt']:.4f}")
            if rank == 0 and (step % config.checkpoint_every == 0 or step == last):
                checkpoint()
            continue
        use_mask = step >= config.warm_start_steps
        ramp = (
            min(1.0, (step + 1) / config.quality_ramp_steps) if config.quality_ramp_steps else 1.0
        )
        weights = dataclasses.replace(config.weights, beta=config.weights.beta * ramp)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                z = embed(x)
            emb = unit(z) if config.model.embed_dim else None
            n, m = gen_m(x, use_mask=use_mask, embedding=emb, code=code)
            x_adv = x + config.eps * n * m
            z_adv = embed(x_adv)
            n_rev = m_rev = None
            if rem_m is not None:
                # Without rpt_to_generator, F_R follows F_P: no gradient of L_rpt reaches F_P
                # (measured: with it, F_P learned a trivially invertible saturated n = ±1).
                cut = (lambda t: t) if config.rpt_to_generator else (lambda t: t.detach())
                emb_rev = unit(z_adv.detach()) if config.model.embed_dim else None
                n_rev, m_rev = rem_m(cut(x_adv), use_mask=use_mask, embedding=emb_rev, code=code)
        target = z if centroids is None else centroids[wave_centroid[index.to(device)]]
        terms = compute_losses(
            target.float(), z_adv.float(), x, x_adv.float(), n.float(), m.float(), weights,
            None if n_rev is None else n_rev.float(), None if m_rev is None else m_rev.float(),
            detach_targets=not config.rpt_to_generator,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        step += 1
        with torch.no_grad():
            delta = (x_adv - x).float()
            snr = 10 * torch.log10(x.pow(2).sum() / delta.pow(2).sum().clamp_min(1e-20))
        record = {k: float(v.detach()) for k, v in terms.items()}
        record.update(step=step, snr_db=float(snr), mask_mean=float(m.detach().float().mean()))
        record.update(meter.tick())  # after float(): the step's GPU work is done
        history.append(record)
        bar.update(1)
        bar.set_postfix(
            loss=f"{record['total']:.4f}", cos=f"{record['angular']:.3f}", snr=f"{float(snr):.1f}",
            crops_s=f"{record['crops_per_s']:.1f}",
        )  # fmt: skip
        if rank == 0 and (
            step % config.checkpoint_every == 0 or step % steps_per_epoch == 0 or step == last
        ):
            checkpoint()
    bar.close()
    if distributed:
        torch.distributed.barrier()
    elapsed += time.perf_counter() - t0
    generator.eval()
    if removal is not None:
        removal.eval()
    return TrainResult(
        _unwrap(generator), removal, history, step, elapsed / 60, resumed_from,
        meter.steps_per_s, meter.crops_per_s,
    )  # fmt: skip


def removal_lr(config: TrainConfig, step: int) -> float:
    """Learning rate of removal-phase step ``step`` (counted from the first joint step)."""
    if config.removal_lr_schedule == "cosine" and config.removal_steps:
        k = step - config.steps
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * k / config.removal_steps))
    return config.lr
