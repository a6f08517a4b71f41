"""bfloat16 inference of a protection model on CPU (``spkadv protect/restore --bf16``).

:func:`bf16_model` returns a copy of a :class:`~spkadv.core.modelfile.ProtectionModel` whose networks run
under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and hand back float32 noise and mask, so
that :func:`spkadv.core.protect.protect` and :func:`spkadv.core.protect.restore` work on it unchanged (the
input is added in float32 as before). CPUs with AMX-BF16 or AVX512-BF16 run the convolutions
faster; elsewhere bf16 may be slower. The output differs from float32 inference by bf16 rounding
of the perturbation (about 3 significant digits); ``benchmarks/bench_bf16.py`` measures speed and
quality (SNR of the restored signal, embedding similarity, PESQ) against float32. Off by default.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch


class AutocastBF16(torch.nn.Module):
    """Runs a noise/mask network under CPU bf16 autocast; returns float32 tensors."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def __getattr__(self, name: str):
        try:  # parameters, buffers and submodules (``inner``)
            return super().__getattr__(name)
        except AttributeError:  # everything else (config, alignment, receptive_field) from inner
            inner = self.__dict__.get("_modules", {}).get("inner")
            if inner is None:
                raise
            return getattr(inner, name)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.inner(x, *args, **kwargs)
        if isinstance(out, tuple):
            return tuple(t.float() for t in out)
        return out.float()


def bf16_available() -> bool:
    """Whether this CPU has native bf16 arithmetic (AMX-BF16 or AVX512-BF16) per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


ENV_CPU_BF16 = "SPKADV_CPU_BF16"  # "force": CPU bf16 autocast even without native bf16


def cpu_bf16_enabled(requested: bool, log: bool = False) -> bool:
    """Whether a requested CPU bf16 autocast is used: only where the CPU has native bf16
    (:func:`bf16_available`), since emulated bf16 is several times slower than float32 (a training
    step of the speechocean762 profile on an AVX2-only CPU, 2 threads: 6.7 s against 1.5 s).
    ``SPKADV_CPU_BF16=force`` uses it anyway. ``log``: say so on stderr when a request is turned
    down."""
    if not requested:
        return False
    if bf16_available() or os.environ.get(ENV_CPU_BF16, "").lower() == "force":
        return True
    if log:
        print(
            "note: CPU bf16 was asked for, but this CPU has no native bf16 (AMX-BF16 or AVX512-BF16); "
            f"running in float32, which is faster here ({ENV_CPU_BF16}=force to use bf16 anyway)",
            file=sys.stderr,
        )
    return False


def bf16_model(model):
    """A copy of ``model`` (a ProtectionModel) that runs its networks in bf16 on CPU."""
    if isinstance(model.generator, AutocastBF16):
        return model
    removal = None if model.removal is None else AutocastBF16(model.removal)
    return dataclasses.replace(model, generator=AutocastBF16(model.generator), removal=removal)
