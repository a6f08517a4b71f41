"""Process audio files of any length in bounded memory: read a block, process it, write it.

:class:`AudioSource` reads any window of a file as 16 kHz mono float32, exactly as
:func:`spkadv.audio.io.load_audio` would return that part of the whole file: channels are averaged,
samples beyond [-1, 1] clipped, and other sample rates resampled window by window (torchaudio's
windowed sinc over the window plus enough context that the result equals whole-file resampling up
to float rounding). Windows can be read in any order and more than once, so a first pass over the
file (for instance to compute a per-file conditioning vector) costs only a second read.

:func:`process_file` cuts the file into blocks exactly as :func:`spkadv.core.protect.chunked` cuts an
array (starts aligned to the model's ``alignment``, ``overlap`` samples of context on each side),
calls a per-block function on each block with its context and writes the centre of the result.
For a 16 kHz file and a local model the written file is bit for bit the one whole-file processing
writes (tests/test_streaming.py); peak memory depends on the block size, not the file length.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from spkadv import SAMPLE_RATE
from spkadv.audio.io import MIN_SAMPLES, AudioError, _format_for, check_audio_path
from spkadv.base.fileio import atomic_path

READ_SECONDS = 30.0  # block length of plain sequential passes (blocks())
LOWPASS_FILTER_WIDTH = 6  # torchaudio.functional.resample's defaults, which load_audio uses
ROLLOFF = 0.99


class AudioSource:
    """Random-access, read-only view of an audio file as 16 kHz mono float32.

    ``len(source)`` is the number of 16 kHz samples ``load_audio`` would return; ``read(a, b)``
    returns samples ``a`` to ``b`` of it. ``peak`` is the largest absolute input sample seen so
    far (before clipping). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, sr: int = SAMPLE_RATE, allow_clipping: bool = True):
        self.path = path = check_audio_path(path)
        try:
            self._file = sf.SoundFile(str(path))
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise AudioError(
                f"{path}: not a readable audio file ({err}); supported: WAV, FLAC, OGG and other libsndfile formats"
            ) from err
        self.sr, self.file_sr = sr, self._file.samplerate
        self.channels, self.frames = self._file.channels, self._file.frames
        self.allow_clipping = allow_clipping
        self.peak = 0.0
        if self.frames < MIN_SAMPLES:
            self.close()
            raise AudioError(f"{path}: only {self.frames} sample(s); need at least {MIN_SAMPLES}")
        if self.channels > 1:
            warnings.warn(f"{path}: {self.channels} channels down-mixed to mono", stacklevel=2)
        g = math.gcd(self.file_sr, sr)
        self._orig, self._new = self.file_sr // g, sr // g  # reduced rates (torchaudio's grid)
        if self.resampled:
            width = math.ceil(
                LOWPASS_FILTER_WIDTH * self._orig / (min(self._orig, self._new) * ROLLOFF)
            )
            # input context on each side: the sinc kernel's reach plus one period, whole periods
            self._context = (math.ceil((width + self._orig) / self._orig) + 1) * self._orig
            self.length = math.ceil(self.frames * self._new / self._orig)
        else:
            self._context = 0
            self.length = self.frames

    @property
    def resampled(self) -> bool:
        return self.file_sr != self.sr

    def __len__(self) -> int:
        return self.length

    def __enter__(self) -> AudioSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _read_native(self, start: int, stop: int) -> np.ndarray:
        """Mono, clipped samples ``start:stop`` at the file's own rate (what load_audio does first)."""
        self._file.seek(start)
        data = self._file.read(stop - start, dtype="float32", always_2d=True)
        if len(data) != stop - start:
            raise AudioError(
                f"{self.path}: file ends after {start + len(data)} of {self.frames} samples (truncated)"
            )
        if not np.isfinite(data).all():
            bad = int((~np.isfinite(data)).sum())
            raise AudioError(
                f"{self.path}: {bad} NaN/Inf sample(s) after {start / self.file_sr:.1f} s; repair or re-export the file"
            )
        x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        if len(x):
            peak = float(np.abs(x).max())
            if peak > 1.0 and not self.allow_clipping:
                raise AudioError(f"{self.path}: samples reach {peak:.3f}, beyond [-1, 1]")
            if peak > self.peak:
                self.peak = peak
            if peak > 1.0:
                x = np.clip(x, -1.0, 1.0)
        return np.ascontiguousarray(x, dtype=np.float32)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` of the 16 kHz mono signal (clamped to the signal)."""
        start, stop = max(0, start), min(self.length, stop)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        if not self.resampled:
            return self._read_native(start, stop)
        from spkadv.audio.io import resample

        o, n = self._orig, self._new
        first, last = start // n, -(-stop // n)  # resampling periods that hold the window
        a = max(0, first * o - self._context)
        b = min(self.frames, last * o + self._context)
        y = resample(self._read_native(a, b), self.file_sr, self.sr)
        offset = a // o * n  # output index of input sample a (a is a multiple of o)
        return np.ascontiguousarray(y[start - offset : stop - offset], dtype=np.float32)

    def blocks(self, seconds: float = READ_SECONDS) -> Iterator[np.ndarray]:
        """The whole signal in consecutive blocks (for a first pass over the file)."""
        step = max(1, int(seconds * self.sr))
        for a in range(0, self.length, step):
            yield self.read(a, a + step)

    def warn_if_clipped(self) -> None:
        """The warning ``load_audio`` gives for samples beyond [-1, 1] (after a pass)."""
        if self.peak > 1.0:
            warnings.warn(
                f"{self.path}: samples reach {self.peak:.3f}; clipped to [-1, 1]", stacklevel=2
            )


def block_bounds(total: int, chunk: int, overlap: int, alignment: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of each block, as :func:`spkadv.core.protect.chunked` cuts ``total`` samples.

    A single block ``(0, total)`` means one pass over the whole signal.
    """
    if overlap % alignment:
        raise ValueError(f"overlap {overlap} must be a multiple of the alignment {alignment}")
    chunk = max(alignment, chunk // alignment * alignment)
    if total <= chunk + 2 * overlap:
        return [(0, total)]
    return [(a, min(total, a + chunk)) for a in range(0, total, chunk)]


class StreamResult:
    """What :func:`process_file` did: samples written and the largest absolute output sample."""

    def __init__(self, samples: int, peak_out: float, input_peak: float, blocks: int):
        self.samples, self.peak_out, self.input_peak, self.blocks = (
            samples,
            peak_out,
            input_peak,
            blocks,
        )


def process_file(
    source: AudioSource,
    dst: str | os.PathLike,
    block_fn: Callable[[np.ndarray, int], np.ndarray],
    chunk: int,
    overlap: int,
    alignment: int,
    subtype: str = "FLOAT",
    progress: bool = False,
    desc: str = "",
) -> StreamResult:
    """Write ``block_fn`` applied block by block to ``source`` into ``dst`` (atomically).

    ``block_fn(x, start)`` maps a block with its context (a float32 array starting at sample
    ``start`` of the file) to an array of the same length;
    only the block's own samples are kept, so ``block_fn`` must be local with a reach of at most
    ``overlap`` samples (a protection model with ``overlap=model.overlap``). A NaN/Inf output
    raises ``RuntimeError`` and leaves nothing at ``dst``. 16-bit output is clipped to [-1, 1]
    (``StreamResult.peak_out`` tells how far it reached).
    """
    from tqdm.auto import tqdm

    total = len(source)
    bounds = block_bounds(total, chunk, overlap, alignment)
    if len(bounds) == 1:
        overlap = 0  # one pass over the whole signal
    peak_out = 0.0
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        with sf.SoundFile(
            str(tmp),
            "w",
            samplerate=source.sr,
            channels=1,
            subtype=subtype,
            format=_format_for(dst),
        ) as out:
            for a, b in tqdm(bounds, desc=desc, disable=not progress, unit="block"):
                s, e = max(0, a - overlap), min(total, b + overlap)
                x = source.read(s, e)
                y = np.asarray(block_fn(x, s), dtype=np.float32)
                if y.shape != x.shape:
                    raise ValueError(f"block function returned shape {y.shape} for {x.shape}")
                y = y[a - s : b - s]
                if not np.isfinite(y).all():
                    raise RuntimeError(
                        f"{source.path}: the model produced NaN/Inf samples after {a / source.sr:.1f} s; nothing written"
                    )
                if len(y):
                    peak_out = max(peak_out, float(np.abs(y).max()))
                if subtype.startswith("PCM"):
                    y = np.clip(y, -1.0, 1.0)
                out.write(y)
    return StreamResult(total, peak_out, source.peak, len(bounds))
