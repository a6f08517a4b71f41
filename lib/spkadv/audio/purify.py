"""Purification baselines and channel distortions (docs/protocol.md §4, SpeakerGuard's semantics).

A purifier takes a float waveform in [-1, 1] and returns a waveform of the same length that
tries to wash out an adversarial perturbation without knowing how it was made. The same
transforms serve as channel distortions when testing how robust restoration is.

Every transform is also reachable by a short *spec* string, ``"<kind>"`` or ``"<kind>_<param>"``,
used as the condition name in the run folders and in the profiles:

==================  ==========================================================================
``noise_25``        Gaussian noise at 25 dB SNR of the whole utterance (the paper's "an")
``quantize_256``    quantization with factor 2^8 on the int16 scale (the paper's "qt")
``median_3``        median smoothing, kernel 3, zero padding (the paper's "ms")
``downup_8000``     resample to 8000 Hz and back
``lowpass_4000``    zero-phase Butterworth low-pass at 4000 Hz
``mp3_64``          MP3 round trip at 64 kbit/s (ffmpeg + libmp3lame)
``opus_24``         Opus round trip at 24 kbit/s (ffmpeg + libopus)
``int16``           16-bit PCM storage
``none``            identity (the reference row of a robustness table)
==================  ==========================================================================
"""

from __future__ import annotations

import functools
import io
import math
import os
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfiltfilt
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio, resample, save_audio
from spkadv.base.fileio import read_json, sha256_file, write_json

INT16_SCALE = 32768.0


def _wave(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-D waveform, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what}: expected a float waveform in [-1, 1], got dtype {x.dtype}")
    return x


# --- the paper's three baselines ------------------------------------------------------------


def add_noise(x: np.ndarray, snr_db: float = 25.0, seed: int | None = 0) -> np.ndarray:
    """Add white Gaussian noise whose power is the utterance's mean power / 10^(snr_db / 10).

    The power is that of the whole utterance, silence included (as SpeakerGuard does); the noise
    is seeded so that runs repeat (SpeakerGuard's is not).
    """
    x = _wave(x, "add_noise")
    if not math.isfinite(snr_db):
        raise ValueError(f"add_noise: snr_db must be finite, got {snr_db}")
    power = float(np.mean(np.asarray(x, np.float64) ** 2))
    noise = np.random.default_rng(seed).standard_normal(x.size) * math.sqrt(
        power / 10 ** (snr_db / 10)
    )
    return (x + noise).astype(x.dtype)


def quantize(x: np.ndarray, factor: int = 256) -> np.ndarray:
    """Round to a grid of ``factor`` int16 steps: ``round(x * 32768 / factor) * factor / 32768``."""
    x = _wave(x, "quantize")
    if factor < 1:
        raise ValueError(
            f"quantize: factor must be a positive integer (the paper uses 256), got {factor}"
        )
    return (
        np.round(np.asarray(x, np.float64) * INT16_SCALE / factor) * factor / INT16_SCALE
    ).astype(x.dtype)


def median_smooth(x: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Sliding median over ``kernel`` samples with ``(kernel - 1) / 2`` zeros padded at each end."""
    x = _wave(x, "median_smooth")
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"median_smooth: kernel must be a positive odd integer, got {kernel}")
    half = (kernel - 1) // 2
    padded = np.pad(x, half, mode="constant")
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel)
    return np.median(windows, axis=1).astype(x.dtype)


# --- further purifiers ----------------------------------------------------------------------


def down_up_sample(x: np.ndarray, low_sr: int = 8000, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample to ``low_sr`` and back (removes everything above ``low_sr / 2``)."""
    x = _wave(x, "down_up_sample")
    if not 0 < low_sr:
        raise ValueError(f"down_up_sample: low_sr must be positive, got {low_sr}")
    y = resample(resample(x.astype(np.float32), sr, low_sr), low_sr, sr)
    return _fit_length(y, x.size).astype(x.dtype)


def low_pass(
    x: np.ndarray, cutoff_hz: float = 4000.0, sr: int = SAMPLE_RATE, order: int = 8
) -> np.ndarray:
    """Zero-phase Butterworth low-pass filter (forward-backward, so no delay)."""
    x = _wave(x, "low_pass")
    if not 0 < cutoff_hz < sr / 2:
        raise ValueError(f"low_pass: cutoff_hz must lie in (0, {sr / 2}), got {cutoff_hz}")
    sos = butter(order, cutoff_hz, btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, np.asarray(x, np.float64)).astype(x.dtype)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Store as 16-bit PCM and read back (what saving a WAV with the default subtype does)."""
    x = _wave(x, "to_int16")
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    return y.astype(x.dtype)


class CodecUnavailable(RuntimeError):
    """ffmpeg (or the needed encoder) is not installed."""


CODECS = {"mp3": ("libmp3lame", "mp3"), "opus": ("libopus", "ogg")}


@functools.cache
def ffmpeg_encoders() -> frozenset[str]:
    """Names of the audio encoders the installed ffmpeg offers (empty when ffmpeg is missing)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return frozenset()
    out = subprocess.run(
        [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    ).stdout
    return frozenset(
        line.split()[1]
        for line in out.splitlines()
        if line.strip().startswith("A") and len(line.split()) > 1
    )


def codec_available(codec: str) -> tuple[bool, str]:
    """Whether ``codec`` ("mp3" or "opus") can round-trip here, and why not if it cannot."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; use one of {sorted(CODECS)}")
    if shutil.which("ffmpeg") is None:
        return (
            False,
            "ffmpeg is not installed (Debian: apt-get install ffmpeg; `make setup` tries it)",
        )
    encoder = CODECS[codec][0]
    if encoder not in ffmpeg_encoders():
        return False, f"the installed ffmpeg has no {encoder} encoder"
    return True, ""


def codec_round_trip(
    x: np.ndarray, codec: str = "mp3", bitrate_kbps: int = 64, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """Encode with ffmpeg at ``bitrate_kbps`` and decode back to ``sr`` float, same length.

    Raises:
        CodecUnavailable: ffmpeg or its encoder for ``codec`` is missing.
    """
    x = _wave(x, "codec_round_trip")
    ok, why = codec_available(codec)
    if not ok:
        raise CodecUnavailable(f"{codec} round trip impossible: {why}")
    if bitrate_kbps <= 0:
        raise ValueError(f"codec_round_trip: bitrate_kbps must be positive, got {bitrate_kbps}")
    encoder, container = CODECS[codec]
    with tempfile.TemporaryDirectory(prefix="spkadv_codec_") as tmp:
        src, enc, dec = Path(tmp) / "in.wav", Path(tmp) / f"enc.{container}", Path(tmp) / "out.wav"
        sf.write(src, np.clip(x, -1.0, 1.0).astype(np.float32), sr, subtype="FLOAT")
        base = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
        for args in (
            [*base, "-i", str(src), "-c:a", encoder, "-b:a", f"{bitrate_kbps}k", str(enc)],
            [*base, "-i", str(enc), "-ar", str(sr), "-ac", "1", "-c:a", "pcm_f32le", str(dec)],
        ):
            proc = subprocess.run(args, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"ffmpeg failed ({' '.join(args)}): {proc.stderr.strip()[-500:]}"
                )
        y, _ = sf.read(dec, dtype="float32")
    return _fit_length(y, x.size).astype(x.dtype)


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if y.size >= n else np.pad(y, (0, n - y.size))


# --- specs ----------------------------------------------------------------------------------

# kind -> (function of (x, param, sr, seed), default parameter or None when it takes none)
_KINDS: dict[str, tuple[Callable[..., np.ndarray], float | None]] = {
    "none": (lambda x, p, sr, seed: x.copy(), None),
    "int16": (lambda x, p, sr, seed: to_int16(x), None),
    "noise": (lambda x, p, sr, seed: add_noise(x, p, seed), 25.0),
    "quantize": (lambda x, p, sr, seed: quantize(x, int(p)), 256),
    "median": (lambda x, p, sr, seed: median_smooth(x, int(p)), 3),
    "downup": (lambda x, p, sr, seed: down_up_sample(x, int(p), sr), 8000),
    "lowpass": (lambda x, p, sr, seed: low_pass(x, p, sr), 4000.0),
    "mp3": (lambda x, p, sr, seed: codec_round_trip(x, "mp3", int(p), sr), 64),
    "opus": (lambda x, p, sr, seed: codec_round_trip(x, "opus", int(p), sr), 24),
}

# The paper's names for its three baselines (Table 1 "rec-an", Table 2 columns an / qt / ms).
PAPER_PURIFIERS = {"an": "noise", "qt": "quantize", "ms": "median"}


def parse_spec(spec: str) -> tuple[str, float | None]:
    """``"mp3_64"`` -> ``("mp3", 64.0)``; ``"median"`` -> ``("median", 3)`` (the default)."""
    kind, _, param = spec.partition("_")
    if kind not in _KINDS:
        raise ValueError(
            f"unknown purifier/distortion {spec!r}; kinds: {', '.join(sorted(_KINDS))}"
        )
    default = _KINDS[kind][1]
    if not param:
        return kind, default
    if default is None:
        raise ValueError(f"{spec!r}: {kind!r} takes no parameter")
    try:
        return kind, float(param)
    except ValueError as err:
        raise ValueError(
            f"{spec!r}: parameter {param!r} is not a number (e.g. {kind}_{default:g})"
        ) from err


def spec_available(spec: str) -> tuple[bool, str]:
    """Whether a spec can run on this machine (codecs need ffmpeg), and why not."""
    kind, _ = parse_spec(spec)
    return codec_available(kind) if kind in CODECS else (True, "")


def purifier_specs(
    noise_snr_db: float, quant_factor: int, median_kernel: int, extras: Sequence[str] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """Notebook 30's purifiers: ``({condition: spec}, {spec: why skipped})``.

    The paper's three (``an``: noise at ``noise_snr_db``, ``qt``: quantisation by ``quant_factor``,
    ``ms``: median smoothing over ``median_kernel`` samples), then each of ``extras`` (a spec, named
    by itself) that can run here; the others are returned with the reason (a codec without ffmpeg).
    """
    purifiers = {
        "an": f"noise_{noise_snr_db}",
        "qt": f"quantize_{quant_factor}",
        "ms": f"median_{median_kernel}",
    }
    skipped = {}
    for spec in extras:
        ok, why = spec_available(spec)
        if ok:
            purifiers[spec] = spec
        else:
            skipped[spec] = why
    return purifiers, skipped


def apply(spec: str, x: np.ndarray, sr: int = SAMPLE_RATE, seed: int | None = 0) -> np.ndarray:
    """Run the transform named by ``spec`` (see the module docstring) on ``x``."""
    kind, param = parse_spec(spec)
    return _KINDS[kind][0](x, param, sr, seed)


# --- whole folders --------------------------------------------------------------------------


def utterance_seed(seed: int, utt_id: str) -> int:
    """A per-utterance seed that does not depend on processing order."""
    return zlib.crc32(f"{seed}:{utt_id}".encode())


def process_files(
    transform: Callable[[np.ndarray, int], np.ndarray],
    sources: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    key: str,
    seed: int = 0,
    progress: bool = True,
    desc: str = "",
) -> dict[str, Path]:
    """Apply ``transform(x, seed)`` to every ``utt_id -> source`` file, writing ``out_dir/<utt_id>.wav``.

    Resumable and change-aware: ``out_dir/provenance.json`` records, per utterance, the source's
    sha256 and ``key`` (describe the transform and anything it depends on, e.g. a model
    fingerprint); an output is recomputed only when it is missing or either of those changed.
    Outputs are 32-bit float WAV (no extra quantisation).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / "provenance.json"
    record = read_json(record_path) if record_path.exists() else {}
    outputs, done = {}, 0
    for utt, src in tqdm(sorted(sources.items()), desc=desc or key, disable=not progress):
        out = out_dir / f"{utt}.wav"
        stamp = {"source_sha256": sha256_file(src), "key": key, "seed": utterance_seed(seed, utt)}
        if not (out.exists() and record.get(utt) == stamp):
            x = load_audio(src)
            save_audio(out, transform(x, stamp["seed"]))
            record[utt] = stamp
            done += 1
            if done % 50 == 0:  # keep the record current so an interrupted run resumes
                write_json(record_path, record)
        outputs[utt] = out
    write_json(record_path, record)
    return outputs
