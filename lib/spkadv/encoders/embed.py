"""Cached embedding of whole audio files with a speaker encoder, in worker processes when worth it.

The cache folder of an encoder is keyed by its weights and by its code: the source of the package
modules that define its class, its base classes and the classes of its submodules (front ends such
as :func:`spkadv.encoders.speaker.kaldi_fbank` live in those modules). Changing a front end
therefore starts a new folder instead of reusing embeddings computed by the old code.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from spkadv.audio.io import load_audio
from spkadv.base import config, threads
from spkadv.base.fileio import atomic_path, sha256_file
from spkadv.encoders.frozen import SpeakerEncoder

MIN_WORKER_BATCHES = 64  # below this, starting worker processes costs more than it saves


def _source(module: str) -> bytes:
    """The source file of an imported module."""
    return Path(sys.modules[module].__file__).read_bytes()


def code_digest(encoder: torch.nn.Module) -> str:
    """12 hex digits of sha256 over the source of the package modules that compute ``encoder``'s
    embeddings: those defining its class, its base classes and the classes of its submodules."""
    classes = set(type(encoder).__mro__) | {type(m) for m in encoder.modules()}
    modules = sorted({c.__module__ for c in classes if c.__module__.partition(".")[0] == "spkadv"})
    digest = hashlib.sha256()
    for module in modules:
        digest.update(f"{module}\n".encode())
        digest.update(_source(module))
    return digest.hexdigest()[:12]


def cache_folder(encoder: SpeakerEncoder, cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir/embeddings/<encoder>-<weights hash>-<code digest>/`` (made if missing);
    ``cache_dir`` None: :func:`spkadv.base.config.cache_dir`."""
    root = config.cache_dir() if cache_dir is None else Path(cache_dir)
    tag = encoder.name.split(":")[0]  # custom:<path> -> custom; the fingerprint tells them apart
    folder = root / "embeddings" / f"{tag}-{encoder.fingerprint[:16]}-{code_digest(encoder)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def embed_files(
    encoder: SpeakerEncoder,
    paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike | None | bool = None,
    batch_size: int = 8,
    progress: bool = True,
    workers: int | None = None,
) -> np.ndarray:
    """Embed whole audio files; returns float32 (N, dim) in the order of ``paths``.

    Embeddings are cached per file under ``cache_dir/embeddings/<encoder>-<weights hash>-<code
    digest>/`` (:func:`cache_folder`) keyed by the sha256 of the file's bytes (default
    ``cache_dir``: ``spkadv.base.config.cache_dir()``; ``False`` disables the cache). Files of
    equal length are embedded together, up to ``batch_size`` at a time (no padding, so batching
    never changes an embedding).

    ``workers``: processes of one torch thread each sharing the batches (1: this process; 0: one
    per torch thread of this process when the encoder is on the CPU, worth it
    (``encoder.parallel``; not GE2E, which is fast) and at least ``MIN_WORKER_BATCHES`` batches
    are left to embed, else 1; None: ``SPKADV_EMBED_WORKERS`` (a number or ``auto`` for 0), else
    1). The pipeline sets ``SPKADV_EMBED_WORKERS=auto`` for its notebook kernels; a script that
    asks for workers must guard its top level with ``if __name__ == "__main__":`` (processes are
    spawned, and they import the main module). Utterances of different lengths
    make batches of one, whose small convolutions a second thread barely speeds up: CAM++ on 480
    default eval files took 19.6 s in two one-thread processes against 36.6 s in one two-thread
    process on the 2-core VM (``python -m benchmarks.run_all --only workers``).
    """
    folder = None if cache_dir is False else cache_folder(encoder, cache_dir)
    out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
    todo: dict[int, list[tuple[int, np.ndarray, Path | None]]] = {}
    for i, path in enumerate(
        tqdm(paths, desc=f"{encoder.name}: read", disable=not progress, leave=False)
    ):
        entry = folder / f"{sha256_file(path)}.npy" if folder else None
        if entry is not None and entry.exists():
            out[i] = np.load(entry)
            continue
        wave = load_audio(path)
        todo.setdefault(len(wave), []).append((i, wave, entry))
    batches = [
        group[j : j + batch_size]
        for group in todo.values()
        for j in range(0, len(group), batch_size)
    ]
    device = next(encoder.parameters()).device
    workers = embed_workers(workers, len(batches), device, encoder.parallel)
    bar = tqdm(total=len(batches), desc=f"{encoder.name}: embed", disable=not progress)
    waves = [[w for _, w, _ in batch] for batch in batches]
    for k, embeddings in threads.process_map(_embed_batch, waves, workers, state=encoder):
        for (i, _, entry), emb in zip(batches[k], embeddings, strict=True):
            out[i] = emb
            if entry is not None:
                with atomic_path(entry) as tmp:
                    np.save(tmp, emb)
        bar.update()
    bar.close()
    return out


def _embed_batch(encoder: SpeakerEncoder, waves: list[np.ndarray]) -> np.ndarray:
    """Equal-length waveforms embedded together: float32 (batch, dim) on the CPU."""
    with torch.no_grad():
        return encoder.embed(torch.from_numpy(np.stack(waves))).cpu().numpy().astype(np.float32)


def embed_workers(
    workers: int | None, batches: int, device: torch.device | str = "cpu", parallel: bool = True
) -> int:
    """The process count :func:`embed_files` uses for ``workers`` and ``batches`` left to embed."""
    if workers is None:
        setting = os.environ.get(threads.ENV_EMBED_WORKERS, "").strip().lower()
        if setting in ("", "1"):
            return 1
        try:
            workers = 0 if setting == "auto" else int(setting)
        except ValueError:
            raise ValueError(
                f"{threads.ENV_EMBED_WORKERS}={setting!r}: give a number of processes or auto"
            ) from None
    worth = parallel and torch.device(device).type == "cpu" and batches >= MIN_WORKER_BATCHES
    return threads.worker_count(workers, batches, parallel=worth)
