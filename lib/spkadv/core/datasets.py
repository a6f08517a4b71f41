"""What training reads: the utterances (in memory or read from disk crop by crop), the random crops
of each step, and the speaker centroids a centroid attack target aims at.

Item ``k`` of :class:`CropDataset` depends only on (seed, k), and :class:`StepSampler` hands step
``s`` fixed item numbers, so a run resumed from a checkpoint sees the same batches as an
uninterrupted one, and a run reading its crops from disk the same batches as one holding the
utterances in memory (``TRAIN_DATA``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio
from spkadv.base.fileio import atomic_path
from spkadv.data import centroids as centroid_math
from spkadv.data.utterances import TRAIN_DATA_MODES, DiskUtterances, Utterances, as_utterances


class CropDataset(Dataset):
    """Item ``k`` is a random crop chosen by ``default_rng([seed, k])`` (zero padded if short), with
    the index of the utterance it was cut from.

    ``waves``: a list of 16 kHz float32 arrays, or a :class:`DiskUtterances` (the same crops, read
    from the files)."""

    def __init__(
        self, waves: Sequence[np.ndarray] | Utterances, crop_samples: int, seed: int
    ) -> None:
        self.utterances = as_utterances(waves)
        if not len(self.utterances):
            raise ValueError("no training audio: the train subset of the manifest is empty")
        self.crop, self.seed = crop_samples, seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, k])
        index = int(rng.integers(len(self.utterances)))
        return torch.from_numpy(self.utterances.crop(index, self.crop, rng)), index


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


def train_audio(
    paths: Sequence[str | os.PathLike],
    limit: int = 0,
    mode: str = "memory",
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> list[np.ndarray] | DiskUtterances:
    """The training utterances (the first ``limit`` when > 0) as training takes them.

    ``mode`` "memory": every utterance read into a list (:func:`load_train_waves`); "disk": a
    :class:`DiskUtterances` holding only paths and lengths, each crop read from its file (memory
    independent of the corpus size; lengths and speaker centroids cached under ``cache_dir``).
    Both give training the same crops."""
    if mode not in TRAIN_DATA_MODES:
        raise ValueError(f"TRAIN_DATA must be one of {TRAIN_DATA_MODES}, got {mode!r}")
    if limit < 0:
        raise ValueError(f"TRAIN_UTTERANCES must be >= 0 (0: all), got {limit}")
    if mode == "memory":
        return load_train_waves(paths, limit, progress)
    paths = list(paths)[:limit] if limit > 0 else list(paths)
    return DiskUtterances(paths, cache_dir=cache_dir, progress=progress)


def state_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's class and every state tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for key, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        flat = tensor.reshape(
            -1
        )  # a 0-dim tensor (BatchNorm's num_batches_tracked) has no byte view
        digest.update(flat.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def centroid_key(
    encoder: torch.nn.Module,
    waves: Sequence[np.ndarray] | Utterances,
    speakers: Sequence[str],
    max_seconds: float,
) -> str:
    """What :func:`speaker_centroids` depends on, as a sha256: the encoder's weights, the speakers,
    ``max_seconds`` and the samples embedded (each wave's first ``max_seconds``; from disk these
    are read, one utterance at a time, and give the key of the same waves in memory)."""
    utterances = as_utterances(waves)
    digest = hashlib.sha256(
        json.dumps(
            [state_digest(encoder), list(speakers), float(max_seconds)], default=str
        ).encode()
    )
    limit = int(max_seconds * SAMPLE_RATE)
    for i in range(len(utterances)):
        piece = np.ascontiguousarray(utterances.read(i, 0, limit))
        digest.update(f"{piece.dtype}:{piece.shape}".encode())
        digest.update(piece)
    return digest.hexdigest()


def speaker_centroids(
    encoder: torch.nn.Module,
    waves: Sequence[np.ndarray] | Utterances,
    speakers: Sequence[str],
    device: torch.device,
    max_seconds: float = 4.0,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean unit embedding per speaker (utterances cut to ``max_seconds``) and each wave's row.

    Cached by content (:func:`centroid_key`): in this process (a study resumes training several
    times) and, with ``cache_dir`` (by default a :class:`DiskUtterances`' own ``cache_dir``), in
    ``cache_dir/centroids/<key>.pt`` for later runs. From disk the utterances are read and
    embedded one at a time, never all held."""
    utterances = as_utterances(waves)
    if cache_dir is None:
        cache_dir = getattr(utterances, "cache_dir", None)
    key = centroid_key(encoder, utterances, speakers, max_seconds)
    stored = None if cache_dir is None else Path(cache_dir) / "centroids" / f"{key}.pt"
    if key not in _CENTROID_CACHE and stored is not None and stored.is_file():
        try:
            state = torch.load(stored, map_location="cpu", weights_only=True)
            _CENTROID_CACHE[key] = (state["centroids"], state["rows"])
        except (OSError, RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError):
            pass  # damaged: compute again
    if key not in _CENTROID_CACHE:
        limit = int(max_seconds * SAMPLE_RATE)
        embeddings = []
        with torch.no_grad():
            for i in range(len(utterances)):
                piece = torch.from_numpy(np.asarray(utterances.read(i, 0, limit)))
                embeddings.append(
                    centroid_math.unit(encoder.embed(piece.to(device).unsqueeze(0))).cpu()
                )
        units = torch.cat(embeddings) if embeddings else torch.zeros(0, 0)
        _, centroids, rows = centroid_math.speaker_centroids(units, speakers)
        _CENTROID_CACHE[key] = (centroids, rows)
        if stored is not None:
            with atomic_path(stored) as tmp:
                torch.save({"centroids": centroids, "rows": rows}, tmp)
    centroids, rows = _CENTROID_CACHE[key]
    return centroids.to(device), rows.to(device)


_CENTROID_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
