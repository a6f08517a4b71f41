"""What training reads: the utterances in memory, the random crops of each step, and the speaker
centroids a centroid attack target aims at.

Item ``k`` of :class:`CropDataset` depends only on (seed, k), and :class:`StepSampler` hands step
``s`` fixed item numbers, so a run resumed from a checkpoint sees the same batches as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio
from spkadv.data import centroids as centroid_math
from spkadv.data.crops import random_crop


class CropDataset(Dataset):
    """Item ``k`` is a random crop chosen by ``default_rng([seed, k])`` (zero padded if short), with
    the index of the utterance it was cut from."""

    def __init__(self, waves: Sequence[np.ndarray], crop_samples: int, seed: int) -> None:
        if not waves:
            raise ValueError("no training audio: the train subset of the manifest is empty")
        self.waves, self.crop, self.seed = list(waves), crop_samples, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, k])
        index = int(rng.integers(len(self.waves)))
        return torch.from_numpy(random_crop(self.waves[index], self.crop, rng)), index


class StepSampler(Sampler):
    """Indices for steps ``first..last-1``: step s of process r reads s*B*W + r*B + [0, B)."""

    def __init__(self, first: int, last: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.first, self.last, self.batch, self.rank, self.world = first, last, batch, rank, world

    def __iter__(self):
        for step in range(self.first, self.last):
            base = step * self.batch * self.world + self.rank * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return (self.last - self.first) * self.batch


def load_train_waves(
    paths: Sequence[str | os.PathLike], limit: int = 0, progress: bool = True
) -> list[np.ndarray]:
    """Read training utterances into memory (the first ``limit`` when > 0)."""
    paths = list(paths)[:limit] if limit > 0 else list(paths)
    return [load_audio(p) for p in tqdm(paths, desc="loading train audio", disable=not progress)]


def state_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's class and every state tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for key, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def centroid_key(
    encoder: torch.nn.Module,
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    max_seconds: float,
) -> str:
    """What :func:`speaker_centroids` depends on, as a sha256: the encoder's weights, the speakers,
    ``max_seconds`` and the samples embedded (each wave's first ``max_seconds``)."""
    digest = hashlib.sha256(
        json.dumps(
            [state_digest(encoder), list(speakers), float(max_seconds)], default=str
        ).encode()
    )
    limit = int(max_seconds * SAMPLE_RATE)
    for wave in waves:
        piece = np.ascontiguousarray(wave[:limit])
        digest.update(f"{piece.dtype}:{piece.shape}".encode())
        digest.update(piece)
    return digest.hexdigest()


def speaker_centroids(
    encoder: torch.nn.Module,
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    device: torch.device,
    max_seconds: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean unit embedding per speaker (utterances cut to ``max_seconds``) and each wave's row.

    Cached by content (:func:`centroid_key`): a study resumes training several times."""
    key = centroid_key(encoder, waves, speakers, max_seconds)
    if key not in _CENTROID_CACHE:
        limit = int(max_seconds * SAMPLE_RATE)
        embeddings = []
        with torch.no_grad():
            for wave in waves:
                piece = torch.from_numpy(np.asarray(wave[:limit]))
                embeddings.append(
                    centroid_math.unit(encoder.embed(piece.to(device).unsqueeze(0))).cpu()
                )
        units = torch.cat(embeddings) if embeddings else torch.zeros(0, 0)
        _, centroids, rows = centroid_math.speaker_centroids(units, speakers)
        _CENTROID_CACHE[key] = (centroids, rows)
    centroids, rows = _CENTROID_CACHE[key]
    return centroids.to(device), rows.to(device)


_CENTROID_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
