"""Run-time parts of training that do not change what a step computes: the random training codes
of a resumed run, ``torch.compile`` of the networks, and the speed in the training log.

- :func:`training_codes`: the per-step random codes of ``code_sigma`` training. Step ``s`` gets the
  ``s``-th draw of one seeded generator, also when a run resumes at step ``s`` (the draws of the
  steps before are replayed), so an interrupted and resumed run equals an uninterrupted one.
- :func:`compile_networks`: optional ``torch.compile`` of F_P, F_R and the encoder's ``embed``
  (off by default; an unknown backend or a Python that dynamo does not support is refused with
  the reason). Compilation changes kernels, not the arithmetic's definition: results agree with
  eager mode to rounding.
- :func:`pack_history`: the history in a checkpoint as tensors (fast to save and load at 527 000
  steps).
- :class:`SpeedMeter`: steps and crops per second over a sliding window of steps (the first step
  of a call, which carries start-up and compilation, is left out of the averages).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

CODE_SEED_OFFSET = 7919  # the code generator's seed is the run's seed plus this
COMPILE_BACKENDS_HINT = "inductor (torch's default), aot_eager, eager (tracing only)"
INDUCTOR_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def code_stream(
    sigma: float, shape: tuple[int, ...], seed: int, first_step: int
) -> Iterator[torch.Tensor]:
    """``sigma * N(0, 1)`` codes of ``shape``, one per step from ``first_step`` on, drawn from a
    generator seeded with ``seed + CODE_SEED_OFFSET`` after replaying the draws of steps
    ``0 .. first_step - 1`` (the same stream as a run started at step 0)."""
    if first_step < 0:
        raise ValueError(f"first_step={first_step} must be >= 0")
    rng = torch.Generator().manual_seed(seed + CODE_SEED_OFFSET)
    for _ in range(first_step):
        torch.randn(shape, generator=rng)
    while True:
        yield sigma * torch.randn(shape, generator=rng)


def training_codes(config, first_step: int) -> Iterator[torch.Tensor]:
    """The codes of a :class:`~spkadv.core.train.TrainConfig`'s steps from ``first_step`` on (one
    ``(batch, [segments,] code_dim)`` tensor per step); empty when the model takes no code or
    ``code_sigma`` is 0."""
    code_dim = config.model.code_dim
    if not code_dim or config.code_sigma <= 0:
        return iter(())
    shape: tuple[int, ...] = (config.batch_size, code_dim)
    if config.model.code_segment_samples:
        segments = config.model.code_segments(config.crop_samples)
        shape = (config.batch_size, segments, code_dim)
    return code_stream(config.code_sigma, shape, config.seed, first_step)


def check_compile_backend(spec: str) -> tuple[str, str | None]:
    """``(backend, mode)`` of ``spec`` (``backend`` or ``inductor:<mode>``, e.g.
    ``inductor:reduce-overhead`` for CUDA graphs) if ``torch.compile`` can use it here; a
    :class:`ValueError` saying why not."""
    import torch._dynamo  # torch's compiler front end: imported only when compilation is asked for

    backend, _, mode = spec.partition(":")
    if mode and (backend != "inductor" or mode not in INDUCTOR_MODES):
        raise ValueError(
            f"torch.compile {spec!r}: a mode is given as inductor:<mode>, one of {INDUCTOR_MODES}"
        )

    if not torch._dynamo.is_dynamo_supported():
        raise ValueError(
            "torch.compile is not supported by this Python / torch build; train without compilation"
        )
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ValueError(
            f"unknown torch.compile backend {backend!r}; use one of {sorted(known)} "
            f"({COMPILE_BACKENDS_HINT})"
        )
    return backend, mode or None


def compile_networks(
    spec: str, generator: torch.nn.Module, removal: torch.nn.Module | None, embed: Callable
) -> tuple[Callable, Callable | None, Callable]:
    """``torch.compile`` of F_P, F_R (possibly DDP-wrapped) and the encoder's embed function
    (``spec`` as in :func:`check_compile_backend`)."""
    backend, mode = check_compile_backend(spec)
    gen = torch.compile(generator, backend=backend, mode=mode)
    rem = torch.compile(removal, backend=backend, mode=mode) if removal is not None else None
    return gen, rem, torch.compile(embed, backend=backend, mode=mode)


def pack_history(history: list[dict[str, float]]) -> dict[str, list]:
    """The training history as a checkpoint holds it: runs of records with the same keys, each a
    float64 tensor (one row per record), so that 527 000 steps save and load in a fraction of a
    second instead of pickling millions of floats. :func:`unpack_history` gives it back exactly
    (integer entries such as ``step`` stay integers)."""
    keys, ints, rows = [], [], []
    start = 0
    for i in range(1, len(history) + 1):
        if i == len(history) or history[i].keys() != history[start].keys():
            block, names = history[start:i], list(history[start])
            columns = [np.fromiter((r[k] for r in block), np.float64, len(block)) for k in names]
            keys.append(names)
            ints.append(
                [
                    k
                    for k, col in zip(names, columns, strict=True)
                    if type(block[0][k]) is int and np.array_equal(col, np.round(col))
                ]
            )
            rows.append(torch.from_numpy(np.stack(columns, axis=1)))
            start = i
    return {"keys": keys, "int_keys": ints, "rows": rows}


def unpack_history(packed: dict[str, list] | list[dict[str, float]]) -> list[dict[str, float]]:
    """The records :func:`pack_history` packed (a checkpoint's plain list is taken as it is)."""
    if isinstance(packed, list):  # checkpoints written before the history was packed
        return list(packed)
    history = []
    for names, ints, rows in zip(packed["keys"], packed["int_keys"], packed["rows"], strict=True):
        whole = set(ints)
        for row in rows.tolist():
            history.append(
                {k: int(v) if k in whole else v for k, v in zip(names, row, strict=True)}
            )
    return history


class SpeedMeter:
    """Steps and crops per second of a training call (``crops_per_step``: batch times processes)."""

    def __init__(self, crops_per_step: int, window: int = 50) -> None:
        if crops_per_step < 1 or window < 1:
            raise ValueError(f"crops_per_step={crops_per_step} and window={window} must be >= 1")
        self.crops_per_step = crops_per_step
        self.recent: collections.deque[float] = collections.deque(maxlen=window)
        self.last = time.perf_counter()
        self.ticks, self.total_s = 0, 0.0

    def tick(self) -> dict[str, float]:
        """Mark the end of a step; its wall time and the window's rates (for the history)."""
        now = time.perf_counter()
        step_s, self.last = now - self.last, now
        self.ticks += 1
        if self.ticks > 1:  # the first step holds start-up (and compilation): not a rate
            self.recent.append(step_s)
            self.total_s += step_s
        rate, crops = self.window_rates()
        return {"step_s": step_s, "steps_per_s": rate, "crops_per_s": crops}

    def window_rates(self) -> tuple[float, float]:
        """Steps and crops per second over the window (0 before the second step)."""
        total = sum(self.recent)
        rate = len(self.recent) / total if total > 0 else 0.0
        return rate, rate * self.crops_per_step

    @property
    def steps_per_s(self) -> float:
        """Mean over every step of the call but the first (0 with fewer than two steps)."""
        return (self.ticks - 1) / self.total_s if self.ticks > 1 and self.total_s > 0 else 0.0

    @property
    def crops_per_s(self) -> float:
        return self.steps_per_s * self.crops_per_step
