"""Random fixed-length crops of utterances, the unit of every training batch."""

from __future__ import annotations

import numpy as np


def random_crop(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` float32 samples of ``wave`` from a start drawn by ``rng``, zero padded when the
    wave is shorter. A wave no longer than ``length`` is taken whole from its first sample and
    draws nothing from ``rng`` (a draw from a single value leaves the generator untouched)."""
    start = int(rng.integers(max(1, len(wave) - length + 1)))
    crop = np.zeros(length, dtype=np.float32)
    piece = wave[start : start + length]
    crop[: len(piece)] = piece
    return crop
