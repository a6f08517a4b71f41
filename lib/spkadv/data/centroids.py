"""Speaker centroids: the length-normalised mean of each speaker's unit embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def unit(z: torch.Tensor) -> torch.Tensor:
    """Length-normalised float32 embeddings (rows of ``z``)."""
    return F.normalize(z.float(), dim=-1)


def speaker_centroids(
    unit_embeddings: torch.Tensor | np.ndarray, speakers: Sequence[str]
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Centroid of each speaker from unit embeddings [N, D] (row i spoken by ``speakers[i]``).

    Returns the speakers in sorted order, their centroids [S, D] in that order (the normalised
    sum, hence the normalised mean, of their rows, added up in row order) and the centroid row of
    each embedding [N]. Computed on the CPU in the dtype of ``unit_embeddings``."""
    unit_embeddings = torch.as_tensor(unit_embeddings).cpu()
    names = sorted(set(speakers))
    row = {name: i for i, name in enumerate(names)}
    sums = torch.zeros(len(names), unit_embeddings.shape[-1], dtype=unit_embeddings.dtype)
    for z, speaker in zip(unit_embeddings, speakers, strict=True):
        sums[row[speaker]] += z
    rows = torch.tensor([row[s] for s in speakers])
    return names, F.normalize(sums, dim=-1), rows
