"""Random fixed-length crops of utterances, the unit of every training batch.

One rule cuts every crop: :func:`crop_start` draws the first sample from the utterance's length
alone, so a crop can be cut from a wave in memory (:func:`random_crop`) or read from its file
(:class:`spkadv.data.utterances.DiskUtterances`) and be the same samples.
"""

from __future__ import annotations

import numpy as np


def crop_start(size: int, length: int, rng: np.random.Generator) -> int:
    """First sample of a ``length``-sample crop of a ``size``-sample utterance, drawn by ``rng``.

    An utterance no longer than ``length`` starts at 0 and draws nothing from ``rng`` (a draw
    from a single value leaves the generator untouched)."""
    return int(rng.integers(max(1, size - length + 1)))


def padded(piece: np.ndarray, length: int) -> np.ndarray:
    """``piece`` as ``length`` float32 samples, zero padded at the end."""
    crop = np.zeros(length, dtype=np.float32)
    crop[: len(piece)] = piece[:length]
    return crop


def random_crop(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` float32 samples of ``wave`` from a start drawn by ``rng`` (:func:`crop_start`),
    zero padded when the wave is shorter."""
    start = crop_start(len(wave), length, rng)
    return padded(wave[start : start + length], length)
