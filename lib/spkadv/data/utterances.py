"""Training utterances behind one interface: held in memory, or read from their files crop by crop.

Training asks an utterance collection for its size, each utterance's length in samples and a
crop (:mod:`spkadv.data.crops` draws the start from the length alone). :class:`MemoryUtterances`
answers from waves in memory; :class:`DiskUtterances` keeps only the paths and the lengths and
seeks into the file for each crop, so its memory does not grow with the corpus. Both give the same
samples bit for bit: a crop is read through :class:`spkadv.audio.io.AudioSource`, the reader
behind :func:`spkadv.audio.io.load_audio`.

Lengths come from the file headers (a file's sample count at 16 kHz), not from the manifest's
``duration``, which is rounded; they are cached on disk by each file's path, size and
modification time.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from spkadv.audio.io import AudioError, AudioSource, load_audio
from spkadv.base.fileio import atomic_path
from spkadv.data.crops import crop_start, padded, random_crop

TRAIN_DATA_MODES = ("memory", "disk")
OPEN_FILES = 8  # open file handles a process keeps (least recently used closed first)
LENGTHS_VERSION = "utterance-lengths-v1"


class MemoryUtterances(Sequence):
    """Waves in memory (16 kHz float32), as training reads them."""

    def __init__(self, waves: Sequence[np.ndarray]) -> None:
        self.waves = list(waves)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i):
        return self.waves[i]

    def length(self, i: int) -> int:
        return len(self.waves[i])

    def read(self, i: int, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` of utterance ``i`` (clamped to it)."""
        return self.waves[i][max(0, start) : max(0, stop)]

    def crop(self, i: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """A random ``length``-sample crop of utterance ``i`` (:func:`random_crop`)."""
        return random_crop(self.waves[i], length, rng)


class DiskUtterances(Sequence):
    """Utterances read from their files: only the paths and lengths are held.

    ``crop`` and ``read`` seek into the file and read the frames of the window asked for (files
    at 16 kHz, the corpora of every profile). A file at another sample rate is read whole and
    resampled, as :func:`load_audio` does, so that its crops equal the in-memory ones bit for
    bit; that costs one utterance of memory per read, never the corpus. ``d[i]`` is the whole
    utterance (:func:`load_audio`).

    Each process opens its own file handles, lazily, and keeps at most ``open_files`` of them: a
    handle inherited through ``fork`` (a data-loader worker) shares its file offset with the
    parent's and is never used. The object pickles without its handles (``spawn`` workers).

    Args:
        paths: audio files, any format :func:`load_audio` reads.
        lengths: each file's length in samples at 16 kHz, when known; else read from the file
            headers (:func:`utterance_lengths`, cached under ``cache_dir``).
        cache_dir: folder of the length cache (and, in :mod:`spkadv.core.datasets`, of the
            speaker-centroid cache); None: no cache.

    Raises:
        ValueError: no paths, or ``lengths`` of another size.
        AudioError: a file that is missing or unreadable, or (when read) changed since its length
            was taken.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        lengths: Sequence[int] | np.ndarray | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
        open_files: int = OPEN_FILES,
    ) -> None:
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("no training audio: the train subset of the manifest is empty")
        if open_files < 1:
            raise ValueError(f"open_files must be >= 1, got {open_files}")
        if lengths is None:
            lengths = utterance_lengths(paths, cache_dir, progress)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.shape != (len(paths),):
            raise ValueError(f"{len(self.lengths)} lengths for {len(paths)} paths")
        # one bytes array, not a list of str: forked workers touch no per-path object (no copies)
        self._paths = np.array([os.fsencode(p) for p in paths])
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.open_files = open_files
        self._pid: int | None = None
        self._open: OrderedDict[int, AudioSource] = OrderedDict()

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            raise TypeError("DiskUtterances takes one index at a time")
        return load_audio(self.path(i))

    def path(self, i: int) -> str:
        return os.fsdecode(self._paths[i])

    def length(self, i: int) -> int:
        return int(self.lengths[i])

    @property
    def index_bytes(self) -> int:
        """Memory of what is held per utterance (paths and lengths), bytes."""
        return self._paths.nbytes + self.lengths.nbytes

    def read(self, i: int, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` of utterance ``i`` (clamped to it), as ``load_audio(path)[start:stop]``."""
        start, stop = max(0, start), min(self.length(i), max(0, stop))
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        source = self._source(i)
        if source.resampled:  # windowed resampling equals whole-file only up to float rounding
            return source.read_all()[start:stop]
        return source.read(start, stop)

    def crop(self, i: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """A random ``length``-sample crop of utterance ``i``: the start drawn as for a wave in
        memory (:func:`crop_start`), then only those frames read."""
        start = crop_start(self.length(i), length, rng)
        return padded(self.read(i, start, start + length), length)

    def _source(self, i: int) -> AudioSource:
        if self._pid != os.getpid():  # a new process: handles from the parent are not ours
            self._open, self._pid = OrderedDict(), os.getpid()
        source = self._open.pop(i, None)
        if source is None:
            source = AudioSource(self.path(i))
            if len(source) != self.length(i):
                source.close()
                raise AudioError(
                    f"{self.path(i)}: {len(source)} samples, but {self.length(i)} when the "
                    "training set was listed; the file changed (restart training)"
                )
            while len(self._open) >= self.open_files:
                self._open.popitem(last=False)[1].close()
        self._open[i] = source  # most recently used last
        return source

    def close(self) -> None:
        """Close this process's file handles."""
        if self._pid == os.getpid():
            for source in self._open.values():
                source.close()
        self._open = OrderedDict()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_open=OrderedDict(), _pid=None)
        return state


Utterances = MemoryUtterances | DiskUtterances


def as_utterances(waves: Sequence[np.ndarray] | Utterances) -> Utterances:
    """``waves`` as an utterance collection (a list of arrays becomes :class:`MemoryUtterances`)."""
    if isinstance(waves, MemoryUtterances | DiskUtterances):
        return waves
    return MemoryUtterances(waves)


def _lengths_key(paths: Sequence[str]) -> str:
    digest = hashlib.sha256(LENGTHS_VERSION.encode())
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as err:
            raise AudioError(f"{path}: no such file ({err.strerror})") from err
        digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def utterance_lengths(
    paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Each file's length in samples as :func:`load_audio` returns it (16 kHz mono), read from
    the headers only. With ``cache_dir``, kept in ``cache_dir/utterance-lengths/<key>.npy``, the
    key being every file's absolute path, size and modification time (a changed file is read
    again)."""
    paths = [os.fspath(p) for p in paths]
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / "utterance-lengths" / f"{_lengths_key(paths)}.npy"
        if cache.is_file():
            try:
                lengths = np.load(cache, allow_pickle=False)
                if lengths.shape == (len(paths),):
                    return lengths.astype(np.int64)
            except (OSError, ValueError):
                pass  # damaged: read the headers again
    lengths = np.zeros(len(paths), dtype=np.int64)
    for k, path in enumerate(tqdm(paths, desc="listing train audio", disable=not progress)):
        with AudioSource(path) as source:
            lengths[k] = len(source)
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.save(fh, lengths)
    return lengths
