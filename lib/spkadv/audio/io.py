"""Audio I/O: everything is read as 16 kHz mono float32 in [-1, 1] through soundfile.

Other sample rates are resampled with torchaudio, several channels are averaged (with a warning),
and anything unusable fails with an :class:`AudioError` naming the file and the problem.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import atomic_path

MIN_SAMPLES = 2


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and what to do."""


def resample(x: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc) of a 1-D float array."""
    if orig_sr == target_sr:
        return x
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


def load_audio(
    path: str | os.PathLike, sr: int = SAMPLE_RATE, allow_clipping: bool = True
) -> np.ndarray:
    """Read an audio file as mono float32 at ``sr``.

    Args:
        path: any format libsndfile reads (WAV 16/24/32-bit and float, FLAC, OGG, ...).
        sr: target sample rate; other rates are resampled.
        allow_clipping: when False, samples beyond [-1, 1] raise instead of being clipped.

    Raises:
        AudioError: missing, empty, unreadable or truncated file, NaN/Inf samples, fewer than
            ``MIN_SAMPLES`` samples.
    """
    path = check_audio_path(path)
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(
            f"{path}: not a readable audio file ({err}); supported: WAV, FLAC, OGG and other libsndfile formats"
        ) from err
    if data.shape[0] < MIN_SAMPLES:
        raise AudioError(f"{path}: only {data.shape[0]} sample(s); need at least {MIN_SAMPLES}")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path}: {bad} NaN/Inf sample(s); repair or re-export the file")
    if data.shape[1] > 1:
        warnings.warn(f"{path}: {data.shape[1]} channels down-mixed to mono", stacklevel=2)
        data = data.mean(axis=1, keepdims=True)
    x = data[:, 0]
    peak = float(np.abs(x).max())
    if peak > 1.0:
        if not allow_clipping:
            raise AudioError(f"{path}: samples reach {peak:.3f}, beyond [-1, 1]")
        warnings.warn(f"{path}: samples reach {peak:.3f}; clipped to [-1, 1]", stacklevel=2)
        x = np.clip(x, -1.0, 1.0)
    if file_sr != sr:
        x = resample(x, file_sr, sr)
    return np.ascontiguousarray(x, dtype=np.float32)


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
        sf.write(str(tmp), x, sr, subtype=subtype, format=_format_for(Path(path)))
    return Path(path)


def _format_for(path: Path) -> str:
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported output extension; use .wav or .flac")
    return fmt
