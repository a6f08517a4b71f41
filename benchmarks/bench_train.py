"""Item 4: training throughput of the default model, with each step split into data loading and
compute.

Runs the library's own training loop (``spkadv.core.train.train``) with its data loader replaced by a
subclass that times every fetch: data time is the wait for the next batch, step time the interval
between successive batch hand-overs (so it includes the optimiser step, the loss bookkeeping and
checkpoint writes). The first step (one-off allocations) is left out. On CUDA the loop uses bf16
autocast, pinned memory and loader workers, as in training proper; the same figures are reported.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from typing import Any
from unittest import mock

import numpy as np

from benchmarks import common

STEPS, QUICK_STEPS = 12, 3
QUICK_BATCH, QUICK_CROP_SECONDS = 2, 0.5


def _timed_loader_class(base):
    class TimedDataLoader(base):
        """DataLoader that records the wait for each batch and when it was handed over."""

        fetch_s: list[float] = []
        marks: list[float] = []

        def __iter__(self):
            iterator = super().__iter__()
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    TimedDataLoader.marks.append(time.perf_counter())
                    return
                t1 = time.perf_counter()
                TimedDataLoader.fetch_s.append(t1 - t0)
                TimedDataLoader.marks.append(t1)
                yield batch

    return TimedDataLoader


def default_train_config(quick: bool):
    """The default profile's joint-training configuration for a few steps, and where it came from."""
    config, where = common.profile_train_config("default", "JOINT")
    changes = {
        "steps": QUICK_STEPS if quick else STEPS,
        "warm_start_steps": 0,
        "removal_steps": 0,  # the removal fine-tuning phase has no encoder step to time
        "checkpoint_every": 10**9,
    }
    if quick:
        changes.update(batch_size=QUICK_BATCH, crop_seconds=QUICK_CROP_SECONDS)
    return dataclasses.replace(config, **changes), where


def training_waves(count: int) -> tuple[list[np.ndarray], str]:
    from spkadv.audio.io import load_audio

    try:
        paths, source = common.speech_files(count, subset="train")
        return [load_audio(p) for p in paths], source
    except common.Unavailable:
        rng = np.random.default_rng(0)
        return [
            (0.05 * rng.standard_normal(3 * common.SAMPLE_RATE)).astype(np.float32)
            for _ in range(count)
        ], "noise"


def direct_joint_step(quick: bool = False):
    """A joint-training step of the default model built directly (F_P, F_R, CAM++ white box, the
    profile's batch; no data loader): ``(step, config, where, audio)``, where ``step(bf16=False)``
    runs one forward, backward and Adam step, with CPU bf16 autocast around the networks if asked."""
    import torch
    from spkadv.core.models import RemovalModule, SSEDGenerator

    config, where = default_train_config(quick)
    encoder = common.require("spkadv.encoders.speaker", "the white-box encoder").load(
        "campplus", "cpu"
    )
    for p in encoder.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    generator, removal = SSEDGenerator(config.model), RemovalModule(config.model)
    optimizer = torch.optim.Adam([*generator.parameters(), *removal.parameters()], lr=1e-4)
    crop = int(config.crop_seconds * common.SAMPLE_RATE)
    waves, audio = training_waves(config.batch_size)
    x = torch.stack([torch.from_numpy(np.resize(w, crop)) for w in waves])

    def step(bf16: bool = False) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                z = encoder.embed(x)
            n, m = generator(x)
            x_adv = x + config.eps * n * m
            z_adv = encoder.embed(x_adv)
            n_r, m_r = removal(x_adv.detach())
        cos = torch.nn.functional.cosine_similarity(z.float(), z_adv.float(), dim=-1).mean()
        rpt = ((n_r.float() * m_r.float() + n.float() * m.float()) ** 2).mean()
        loss = cos + rpt + ((x_adv.float() - x) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, config, where, audio


def run(
    quick: bool = False, device: str | None = None, encoder_name: str = "campplus"
) -> dict[str, Any]:
    import torch

    train_mod = common.require("spkadv.core.train", "training throughput")
    encoders = common.require("spkadv.encoders.speaker", "training throughput")
    config, where = default_train_config(quick)
    device_t = torch.device(device) if device else encoders.default_device()
    try:
        encoder = encoders.load(encoder_name, device_t)
        encoder_used = encoder_name
    except Exception as err:  # asset missing: the tiny stand-in keeps the loop measurable
        print(
            f"  white-box encoder {encoder_name!r} unavailable ({err}); using random-conv",
            flush=True,
        )
        encoder, encoder_used = encoders.load("random-conv"), "random-conv (stand-in)"
    waves, audio_source = training_waves(8 if quick else 64)
    from spkadv.base.config import load_profile

    threads_before = torch.get_num_threads()
    threads = 0 if quick else int(load_profile("default").get("TRAIN_THREADS", 0))
    if threads and device_t.type == "cpu":
        torch.set_num_threads(threads)  # as the default pipeline trains
    loader_cls = _timed_loader_class(train_mod.DataLoader)
    loader_cls.fetch_s, loader_cls.marks = [], []
    threads_used = torch.get_num_threads()
    try:
        with (
            tempfile.TemporaryDirectory() as ckpt,
            mock.patch.object(train_mod, "DataLoader", loader_cls),
        ):
            train_mod.train(
                config, waves, encoder, ckpt, progress=False, resume=False, device=device_t
            )
            if device_t.type == "cuda":
                torch.cuda.synchronize()
    finally:
        torch.set_num_threads(threads_before)
    marks, fetch = loader_cls.marks, loader_cls.fetch_s
    step_s = np.diff(marks)[1:]  # interval k: from batch k handed over to batch k+1 (skip step 0)
    data_s = np.asarray(fetch[2:] + [0.0])[
        : len(step_s)
    ]  # the wait for batch k+1 inside interval k
    step_mean = float(step_s.mean())
    data_mean = float(data_s.mean())
    return {
        "device": str(device_t),
        "autocast_bf16": device_t.type == "cuda",
        "threads": threads_used,
        "config": where,
        "encoder": encoder_used,
        "audio": audio_source,
        "batch_size": config.batch_size,
        "crop_seconds": config.crop_seconds,
        "model_width": config.model.width,
        "timed_steps": len(step_s),
        "step_s": step_mean,
        "data_s": data_mean,
        "compute_s": step_mean - data_mean,
        "train_data_fraction": data_mean / step_mean,
        "samples_per_s": config.batch_size / step_mean,
        "audio_seconds_per_s": config.batch_size * config.crop_seconds / step_mean,
    }
