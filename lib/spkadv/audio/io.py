"""Audio I/O: everything is read as 16 kHz mono float32 in [-1, 1] through soundfile.

Other sample rates are resampled with torchaudio, several channels are averaged (with a warning),
samples beyond [-1, 1] are clipped (with a warning), and anything unusable fails with an
:class:`AudioError` naming the file and the problem. There is one reading path,
:class:`AudioSource`: :func:`load_audio` reads a whole file through it, and
:mod:`spkadv.audio.streaming` reads windows of a file through it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import atomic_path

MIN_SAMPLES = 2
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what folder runs pick up (spkadv protect / check)
LOWPASS_FILTER_WIDTH = 6  # torchaudio.functional.resample's defaults, which resample() uses
ROLLOFF = 0.99
READ_SECONDS = 30.0  # block length of plain sequential passes (AudioSource.blocks)


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and what to do."""


def resample(x: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc) of a 1-D float array."""
    if orig_sr == target_sr:
        return x
    # lazy: the spkadv command imports this module before it sets the thread policy, which must
    # precede ``import torch`` (spkadv.base.threads); torch also slows down ``spkadv --help``
    import torch
    import torchaudio.functional as AF

    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), orig_sr, target_sr)
    return y.numpy()


def check_audio_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or :class:`AudioError` when it is missing, a folder or empty."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, expected an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    return path


class AudioSource:
    """Random-access, read-only view of an audio file as mono float32 at ``sr`` (16 kHz).

    ``len(source)`` is the number of samples :meth:`read_all` (and :func:`load_audio`) returns;
    ``read(a, b)`` returns samples ``a`` to ``b`` of it: channels averaged, samples beyond [-1, 1]
    clipped, other sample rates resampled window by window (torchaudio's windowed sinc over the
    window plus enough context that the result equals whole-file resampling up to float
    rounding). Windows can be read in any order and more than once. ``peak`` is the largest
    absolute input sample seen so far (before clipping). Use as a context manager, or call
    :meth:`close`.

    Raises:
        AudioError: missing, empty or unreadable file, fewer than ``MIN_SAMPLES`` samples; when
            reading, a truncated file, NaN/Inf samples, or (``allow_clipping=False``) samples
            beyond [-1, 1].
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
            warnings.warn(f"{path}: {self.channels} channels down-mixed to mono", stacklevel=3)
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
        """Mono, clipped samples ``start:stop`` at the file's own rate."""
        self._file.seek(start)
        data = self._file.read(stop - start, dtype="float32", always_2d=True)
        if len(data) != stop - start:
            raise AudioError(
                f"{self.path}: file ends after {start + len(data)} of {self.frames} samples (truncated)"
            )
        if not np.isfinite(data).all():
            bad = int((~np.isfinite(data)).sum())
            where = f" after {start / self.file_sr:.1f} s" if start else ""
            raise AudioError(
                f"{self.path}: {bad} NaN/Inf sample(s){where}; repair or re-export the file"
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
        """Samples ``start:stop`` of the mono signal at ``sr`` (clamped to the signal)."""
        start, stop = max(0, start), min(self.length, stop)
        if stop <= start:
            return np.zeros(0, dtype=np.float32)
        if not self.resampled:
            return self._read_native(start, stop)
        o, n = self._orig, self._new
        first, last = start // n, -(-stop // n)  # resampling periods that hold the window
        a = max(0, first * o - self._context)
        b = min(self.frames, last * o + self._context)
        y = resample(self._read_native(a, b), self.file_sr, self.sr)
        offset = a // o * n  # output index of input sample a (a is a multiple of o)
        return np.ascontiguousarray(y[start - offset : stop - offset], dtype=np.float32)

    def read_all(self) -> np.ndarray:
        """The whole signal, resampled in one pass (what :func:`load_audio` returns)."""
        x = self._read_native(0, self.frames)
        return np.ascontiguousarray(resample(x, self.file_sr, self.sr), dtype=np.float32)

    def blocks(self, seconds: float = READ_SECONDS) -> Iterator[np.ndarray]:
        """The whole signal in consecutive blocks of ``seconds`` (for a first pass over the file)."""
        step = max(1, int(seconds * self.sr))
        for a in range(0, self.length, step):
            yield self.read(a, a + step)

    def warn_if_clipped(self) -> None:
        """Warn when samples beyond [-1, 1] were read (and clipped)."""
        if self.peak > 1.0:
            warnings.warn(
                f"{self.path}: samples reach {self.peak:.3f}; clipped to [-1, 1]", stacklevel=3
            )


def load_audio(
    path: str | os.PathLike, sr: int = SAMPLE_RATE, allow_clipping: bool = True
) -> np.ndarray:
    """Read an audio file as mono float32 at ``sr`` (through :class:`AudioSource`).

    Args:
        path: any format libsndfile reads (WAV 16/24/32-bit and float, FLAC, OGG, ...).
        sr: target sample rate; other rates are resampled.
        allow_clipping: when False, samples beyond [-1, 1] raise instead of being clipped.

    Raises:
        AudioError: missing, empty, unreadable or truncated file, NaN/Inf samples, fewer than
            ``MIN_SAMPLES`` samples.
    """
    with AudioSource(path, sr, allow_clipping) as source:
        x = source.read_all()
        source.warn_if_clipped()
    return x


def save_audio(
    path: str | os.PathLike, x: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "FLOAT"
) -> Path:
    """Write a mono waveform atomically (temporary file + rename).

    Args:
        subtype: soundfile subtype, ``"FLOAT"`` (lossless for float32) or ``"PCM_16"``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"save_audio expects a 1-D waveform, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"refusing to write {path}: waveform holds NaN/Inf")
    if subtype.startswith("PCM"):
        x = np.clip(x, -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), x, sr, subtype=subtype, format=format_for(Path(path)))
    return Path(path)


def format_for(path: Path) -> str:
    """The soundfile format of an output path, from its extension (.wav, .flac or .ogg)."""
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported output extension; use .wav or .flac")
    return fmt
