"""Item paper_estimate: the estimated wall time of the paper profile's training (params/paper.yaml)
on one GPU and on 8 with DistributedDataParallel, from FLOPs. Not a measurement on a GPU.

    python -m benchmarks.run_all --only paper_estimate    # runs/bench/paper_estimate.json, results.json
    python -m benchmarks.bench_paper_estimate             # the same, printed

How:
- FLOPs of one training step are counted with ``torch.utils.flop_counter.FlopCounterMode`` around
  ``spkadv.core.train.train`` itself for one step on the CPU: the paper profile's F_P, F_R, losses
  and optimiser, and the ECAPA-TDNN architecture of ``speechbrain/spkrec-ecapa-voxceleb`` with
  random weights (the same shapes as the checkpoint; FLOPs do not depend on the weights). Forward
  and backward are counted as they run (F_P and F_R: weight and input gradients; the frozen
  encoder: input gradients only), not assumed. The count is for ``COUNT_BATCH`` crop(s) of the
  profile's ``CROP_SECONDS``; every operation is per crop, so a step of ``BATCH_SIZE`` crops is
  that times ``BATCH_SIZE / COUNT_BATCH``. ``--quick`` counts a 0.25 s crop and scales it to the
  crop length (approximate).
- Steps: the profile's ``SSED_STEPS`` (stage 10), ``JOINT_STEPS`` (stage 20) and
  ``OTHER_MODEL_JOINT_STEPS`` (stage 60's second model), each 527 000 = 30 epochs of LibriSpeech
  960 h at 16 crops per step, an epoch being one crop per training utterance (281 241) as the
  training loop counts it.
- Time: FLOPs / (GPU peak x assumed sustained utilisation). One H100 SXM: 989.4 TFLOP/s dense bf16
  peak (NVIDIA's datasheet; the loop runs under bf16 autocast on CUDA); utilisation assumed 35 %
  (``UTILISATION``) and, as a pessimistic bound, 10 % (``UTILISATION_LOW``): the networks are 1-D
  convolutions of 32-1024 channels, and FlopCounterMode does not count element-wise work (instance
  norm, activations, the filterbank's FFT), which is memory-bound on a GPU. 8 GPUs: the same crops
  in 1/8 of the steps per process (per-process batch 16, ``--steps`` / 8), at an assumed DDP
  scaling efficiency of 90 % (``DDP_EFFICIENCY``; the gradients of F_P and F_R are about 4 M
  values, a small all-reduce).
- Not included: data preparation, the eval-set protection and stages 30-60's scoring (Whisper
  large-v3 over the protected eval sets), the attackers of stage 60 (40 000 small steps).

``benchmarks/gpu_check.py`` measures the step time on a GPU when one is at hand; its figure
replaces ``paper_step_s_1gpu`` here.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from typing import Any

from benchmarks import common

H100_BF16_DENSE_TFLOPS = 989.4  # H100 SXM5, dense (no sparsity) bf16 tensor-core peak
UTILISATION = 0.35  # assumed sustained share of that peak (model FLOPs utilisation)
UTILISATION_LOW = 0.10  # pessimistic bound of the same
DDP_EFFICIENCY = 0.90  # assumed throughput of 8 GPUs relative to 8 x one GPU
HOST_US_PER_OP = 8.0  # assumed host time per tensor operation in eager PyTorch (dispatch + launch)
GPUS = 8
LIBRISPEECH_960H_UTTERANCES = (
    281_241  # train-clean-100 28 539 + train-clean-360 104 014 + train-other-500 148 688
)
COUNT_BATCH = 1
QUICK_COUNT_SECONDS = (
    0.25  # --quick: FLOPs of a 0.25 s crop scaled to the crop (operations do not depend on it)
)
STAGES = (
    ("10_ssed_baseline", "SSED_STEPS", False),
    ("20_joint_training", "JOINT_STEPS", True),
    ("60_other_model", "OTHER_MODEL_JOINT_STEPS", True),
)


def random_ecapa():
    """ECAPA-TDNN with spkrec-ecapa-voxceleb's sizes and seeded random weights (FLOPs only)."""
    common.require("speechbrain", "the ECAPA-TDNN architecture (speechbrain)")
    from spkadv.encoders.ecapa import random_ecapa as build

    return build(0)


def paper_config(joint: bool):
    """The paper profile's training configuration of stage 10 (``joint=False``) or 20."""
    from spkadv.base.config import load_profile
    from spkadv.core.train import config_from_params

    prefix = "JOINT" if joint else "SSED"
    return config_from_params(
        load_profile("paper"), f"{prefix}_STEPS", f"{prefix}_WARM_START_STEPS", joint
    )


def paper_steps() -> dict[str, int]:
    """Training steps of each stage of the paper profile (``STAGES``)."""
    from spkadv.base.config import load_profile

    params = load_profile("paper")
    return {stage: int(params[key]) for stage, key, _ in STAGES}


class OpCounter:
    """Counts the tensor operations dispatched (each a kernel launch, or host work, on a GPU);
    views and allocations, which launch nothing, are left out."""

    SKIP = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "resize_"}

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self
        self.count = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if not func.is_view and func.overloadpacket.__name__ not in OpCounter.SKIP:
                    outer.count += 1
                return func(*args, **(kwargs or {}))

        self.mode = Mode()


def count_step(config, encoder, crop_seconds: float, batch: int = COUNT_BATCH) -> tuple[int, int]:
    """FLOPs and tensor operations of one step of ``spkadv.core.train.train`` (forward, backward,
    optimiser) for ``batch`` crops of ``crop_seconds``, counted on the CPU as the CUDA path runs
    it: bf16 autocast (its casts are operations too) and Adam's multi-tensor (foreach) update.
    A two-step run minus a one-step run: model set-up is left out."""
    import functools
    import os
    from unittest import mock

    import numpy as np
    import torch
    from spkadv.base.precision import ENV_CPU_BF16
    from spkadv.core.train import train
    from torch.utils.flop_counter import FlopCounterMode

    config = dataclasses.replace(
        config, batch_size=batch, crop_seconds=crop_seconds, checkpoint_every=10**9, cpu_bf16=True
    )
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(config.crop_samples + 1600)).astype(np.float32)]
    adam = functools.partial(torch.optim.Adam, foreach=True)
    counts = []
    with mock.patch.dict(os.environ, {ENV_CPU_BF16: "force"}), mock.patch("torch.optim.Adam", adam):
        for steps in (1, 2):
            flops, ops = FlopCounterMode(display=False), OpCounter()
            with tempfile.TemporaryDirectory() as tmp, flops, ops.mode:
                cpu = torch.device("cpu")
                train(
                    dataclasses.replace(config, steps=steps), waves, encoder, tmp, False, device=cpu
                )
            counts.append((int(flops.get_total_flops()), ops.count))
    return counts[1][0] - counts[0][0], counts[1][1] - counts[0][1]


def forward_flops(module, x) -> int:
    """FLOPs of one forward pass (no gradients)."""
    from benchmarks.bench_flops import count_flops

    return count_flops(module, x)


def step_seconds(tflop: float, ops: int) -> dict[str, float]:
    """A step's GPU time from its FLOPs and its host time from its operations: the central
    estimate overlaps them (the larger), the pessimistic one adds them at the low utilisation."""
    flop_s = tflop / (H100_BF16_DENSE_TFLOPS * UTILISATION)
    host_s = ops * HOST_US_PER_OP / 1e6
    return {
        "flop_s": flop_s,
        "host_s": host_s,
        "step_s": max(flop_s, host_s),
        "step_s_pessimistic": tflop / (H100_BF16_DENSE_TFLOPS * UTILISATION_LOW) + host_s,
    }


def estimate(seconds: dict[str, dict[str, float]], steps: dict[str, int]) -> dict[str, float]:
    """Hours on one GPU and on ``GPUS`` (the same crops: steps / GPUS per process)."""
    out: dict[str, float] = {}
    for label, key in (("", "step_s"), ("_pessimistic", "step_s_pessimistic")):
        one = sum(seconds[stage][key] * steps[stage] for stage in steps) / 3600
        eight = sum(seconds[stage][key] * math.ceil(steps[stage] / GPUS) for stage in steps) / (
            3600 * DDP_EFFICIENCY
        )
        out[f"paper_hours_1gpu{label}"] = one
        out[f"paper_hours_{GPUS}gpu{label}"] = eight
    joint = seconds["20_joint_training"]
    out["paper_step_s_1gpu"] = joint["step_s"]
    out["paper_step_s_1gpu_pessimistic"] = joint["step_s_pessimistic"]
    out["paper_step_bound"] = "host (operations)" if joint["host_s"] > joint["flop_s"] else "FLOPs"
    return out


def run(quick: bool = False) -> dict[str, Any]:
    import torch
    from spkadv.base.config import load_profile
    from spkadv.core.models import RemovalModule, SSEDGenerator, count_parameters

    params = load_profile("paper")
    batch, crop = params["BATCH_SIZE"], params["CROP_SECONDS"]
    count_seconds = QUICK_COUNT_SECONDS if quick else crop
    encoder = random_ecapa()
    counted: dict[bool, tuple[float, int]] = {}
    step_tflop, step_ops, seconds, steps = {}, {}, {}, {}
    for stage, key, joint in STAGES:
        if joint not in counted:  # per-crop FLOPs scale with the crop; operations do not
            flops, ops = count_step(paper_config(joint), encoder, count_seconds)
            counted[joint] = (flops * crop / count_seconds / COUNT_BATCH, ops)
        per_crop, ops = counted[joint]
        step_tflop[stage], step_ops[stage] = per_crop * batch / 1e12, ops
        seconds[stage] = step_seconds(step_tflop[stage], ops)
        steps[stage] = int(params[key])
    model = paper_config(True).model
    x = torch.zeros(1, int(round(count_seconds * common.SAMPLE_RATE)))
    generator = SSEDGenerator(model)
    scale = crop / count_seconds * batch / 1e12
    result: dict[str, Any] = {
        "profile": "paper",
        "counted_crop_seconds": count_seconds,
        "batch_size": batch,
        "crop_seconds": crop,
        "steps": steps,
        "epochs_per_stage": {s: n * batch / LIBRISPEECH_960H_UTTERANCES for s, n in steps.items()},
        "paper_step_tflop": step_tflop["20_joint_training"],
        "paper_step_ops": step_ops["20_joint_training"],
        "step_tflop": step_tflop,
        "step_ops": step_ops,
        "step_seconds": seconds,
        "forward_tflop_per_step": {
            "generator": forward_flops(generator, x) * scale,
            "removal": forward_flops(RemovalModule(model), x) * scale,
            "ecapa": forward_flops(encoder.embed, x) * scale,
        },
        "generator_parameters": count_parameters(generator),
        "assumptions": {
            "gpu": "H100 SXM",
            "peak_bf16_dense_tflops": H100_BF16_DENSE_TFLOPS,
            "utilisation": UTILISATION,
            "utilisation_pessimistic": UTILISATION_LOW,
            "host_us_per_op": HOST_US_PER_OP,
            "ddp_gpus": GPUS,
            "ddp_efficiency": DDP_EFFICIENCY,
            "librispeech_960h_utterances": LIBRISPEECH_960H_UTTERANCES,
            "stages": [s for s, _, _ in STAGES],
            "excluded": "data preparation, eval-set protection, scoring (stages 30-50, Whisper "
            "large-v3), stage 60's attackers",
            "eight_gpus": f"per-process batch {batch}, steps / {GPUS} (same crops, same epochs)",
        },
        "method": "FLOPs and operations of one train() step counted on the CPU; step time = "
        "max(FLOPs / (peak x utilisation), operations x host time per operation); not measured "
        "on a GPU",
    }
    result.update(estimate(seconds, steps))
    result["paper_joint_steps_8gpu"] = math.ceil(steps["20_joint_training"] / GPUS)
    return result


def main() -> int:
    import json

    result = run()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
