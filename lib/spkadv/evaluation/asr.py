"""Speech recognition for the WER column of Table 2: Whisper through two backends, cached.

- ``faster-whisper`` (CTranslate2): ``model`` is ``"base"`` or ``"tiny.en"`` (offline weights from
  the asset store: ``whisper-base-ct2`` / ``whisper-tiny.en-ct2``), a local CTranslate2 model
  folder, or another faster-whisper model name (downloaded from the Hugging Face hub; online only).
- ``openai-whisper`` (the paper's): ``model`` is a Whisper model name (``"base"``, ``"small"``,
  ``"large-v3"``, ...; downloaded by openai-whisper into ``~/.cache/whisper``, online only) or the
  path of a local ``.pt`` checkpoint (read weights-only by openai-whisper).

Decoding (both backends): English, beam search of width 5, temperature fallback left at each
backend's default; faster-whisper runs in float32 on CPU and float16 on CUDA unless told otherwise. Transcripts are cached per audio file under
``cache_dir/transcripts/<backend>-<model>/<sha256 of the file>.txt``.

WER follows the usual Whisper evaluation: both sides go through Whisper's
``EnglishTextNormalizer`` (spelling, numbers, "Mr." -> "mister", punctuation) and the corpus-level
word error rate (total edits / total reference words, in percent) is computed with jiwer.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jiwer
import torch
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio
from spkadv.base import config
from spkadv.base.fileio import sha256_file, write_text
from spkadv.data import assets

BACKENDS = ("faster-whisper", "openai-whisper")
FASTER_WHISPER_ASSETS = {"base": "whisper-base-ct2", "tiny.en": "whisper-tiny.en-ct2"}
BEAM_SIZE = 5


class ASRError(RuntimeError):
    """An ASR model cannot be loaded; the message says what to do."""


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "SPKADV_OFFLINE")
    )


def _threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "0") or 0)


@cache
def _faster_whisper(model: str, device: str, compute_type: str) -> Any:
    from faster_whisper import WhisperModel  # heavy (CTranslate2): only when a model is loaded

    if model in FASTER_WHISPER_ASSETS:
        source = str(assets.resolve(FASTER_WHISPER_ASSETS[model]))
    elif Path(model).expanduser().is_dir():
        source = str(Path(model).expanduser())
    else:
        source = model  # a hub model name
    try:
        return WhisperModel(
            source, device=device, compute_type=compute_type, cpu_threads=_threads()
        )
    except Exception as err:
        raise ASRError(
            f"faster-whisper model {model!r} could not be loaded ({type(err).__name__}: {err}). "
            f"Offline, use {sorted(FASTER_WHISPER_ASSETS)} (pinned assets: `python -m spkadv.data.assets fetch "
            f"whisper-base-ct2`) or the path of a local CTranslate2 model folder."
        ) from err


@cache
def _openai_whisper(model: str, device: str) -> Any:
    import whisper  # heavy: only when a model is loaded

    path = Path(model).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise ASRError(f"openai-whisper checkpoint {path} not found")
        return whisper.load_model(str(path), device=device)
    if model not in whisper.available_models():
        raise ASRError(
            f"unknown openai-whisper model {model!r}; choose one of {whisper.available_models()} or a .pt path"
        )
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
    cached = any(root.glob(f"{model}.pt"))
    if not cached and _offline():
        raise ASRError(
            f"openai-whisper model {model!r} is not in {root} and downloads are disabled (HF_HUB_OFFLINE / "
            f"SPKADV_OFFLINE). Online, openai-whisper downloads it on first use; otherwise copy {model}.pt "
            f"there or pass its path. Offline alternative: ASR_BACKEND='faster-whisper', ASR_MODEL='base'."
        )
    try:
        return whisper.load_model(model, device=device)
    except Exception as err:
        raise ASRError(
            f"openai-whisper could not get model {model!r}: {type(err).__name__}: {err}"
        ) from err


def _device(device: str | None) -> str:
    return (
        device
        or os.environ.get("SPKADV_DEVICE")
        or ("cuda" if torch.cuda.is_available() else "cpu")
    )


def load_transcriber(
    backend: str = "faster-whisper",
    model: str = "base",
    device: str | None = None,
    compute_type: str | None = None,
) -> Callable:
    """A function mapping a 16 kHz float32 waveform to its transcript.

    ``compute_type`` (faster-whisper only): CTranslate2 precision, default ``float16`` on CUDA and
    ``float32`` on CPU (``int8`` is about twice as fast on CPU at a small WER cost).
    """
    device = _device(device)
    if backend == "faster-whisper":
        compute_type = compute_type or ("float16" if device.startswith("cuda") else "float32")
        fw = _faster_whisper(model, device, compute_type)
        english_only = model.endswith(".en") or not fw.model.is_multilingual

        def run(wave):
            segments, _ = fw.transcribe(
                wave, language=None if english_only else "en", beam_size=BEAM_SIZE, vad_filter=False
            )
            return "".join(s.text for s in segments).strip()

        return run
    if backend == "openai-whisper":
        ow = _openai_whisper(model, device)

        def run(wave):
            result = ow.transcribe(wave, language="en", beam_size=BEAM_SIZE, fp16=device == "cuda")
            return result["text"].strip()

        return run
    raise ASRError(f"unknown ASR backend {backend!r}; choose one of {BACKENDS}")


def _model_tag(backend: str, model: str, compute_type: str | None) -> str:
    path = Path(model).expanduser()
    if path.exists():  # local checkpoint or folder: key by its content
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256("".join(sha256_file(p) for p in files).encode()).hexdigest()[:16]
        tag = f"{backend}-local-{digest}"
    else:
        tag = f"{backend}-{model}"
    return f"{tag}-{compute_type}" if compute_type else tag


def transcribe_files(
    paths: Sequence[str | os.PathLike],
    backend: str = "faster-whisper",
    model: str = "base",
    cache_dir: str | os.PathLike | None | bool = None,
    progress: bool = True,
    stats: dict[str, float] | None = None,
    compute_type: str | None = None,
) -> list[str]:
    """Transcribe audio files (cached by the sha256 of each file, the backend and the model).

    Args:
        paths: audio files (any rate; read as 16 kHz mono).
        backend: ``"faster-whisper"`` or ``"openai-whisper"``.
        model: see the module docstring.
        cache_dir: folder of the transcript cache (default ``spkadv.base.config.cache_dir()``; False: none).
        progress: show a progress bar.
        stats: if given, filled with ``audio_seconds``, ``compute_seconds`` and ``real_time_factor``
            of the files actually transcribed (cache hits excluded).
        compute_type: faster-whisper precision (see :func:`load_transcriber`); part of the cache key
            when given.
    """
    if backend not in BACKENDS:
        raise ASRError(f"unknown ASR backend {backend!r}; choose one of {BACKENDS}")
    if backend == "faster-whisper" and compute_type is None:
        compute_type = "float16" if _device(None).startswith("cuda") else "float32"
    folder = None
    if cache_dir is not False:
        if cache_dir is None:
            cache_dir = config.cache_dir()
        folder = Path(cache_dir) / "transcripts" / _model_tag(backend, model, compute_type)
        folder.mkdir(parents=True, exist_ok=True)
    texts: list[str] = []
    transcriber = None
    audio_s = compute_s = 0.0
    for path in tqdm(paths, desc=f"ASR {backend}/{Path(model).name}", disable=not progress):
        entry = folder / f"{sha256_file(path)}.txt" if folder else None
        if entry is not None and entry.exists():
            texts.append(entry.read_text(encoding="utf-8"))
            continue
        if transcriber is None:
            transcriber = load_transcriber(backend, model, compute_type=compute_type)
        wave = load_audio(path)
        start = time.perf_counter()
        text = transcriber(wave)
        compute_s += time.perf_counter() - start
        audio_s += len(wave) / SAMPLE_RATE
        if entry is not None:
            write_text(entry, text)
        texts.append(text)
    if stats is not None:
        stats.update(
            audio_seconds=audio_s,
            compute_seconds=compute_s,
            real_time_factor=compute_s / audio_s if audio_s else float("nan"),
        )
    return texts


@cache
def _normalizer() -> Callable[[str], str]:
    from whisper.normalizers import EnglishTextNormalizer  # imports all of openai-whisper: slow

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English text normaliser (lower case, spelling, numbers, no punctuation)."""
    return _normalizer()(text)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus-level word error rate in percent after :func:`normalize_text` on both sides.

    References that normalise to nothing count their hypothesis words as insertions.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"wer: {len(refs)} references but {len(hyps)} hypotheses")
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(refs, hyps, strict=True)]
    scored = [(r, h) for r, h in pairs if r]
    extra_insertions = sum(len(h.split()) for r, h in pairs if not r)
    n_words = sum(len(r.split()) for r, _ in scored)
    if n_words == 0:
        raise ValueError("wer: the references hold no words after normalisation")
    errors = 0
    if scored:
        out = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
        errors = out.substitutions + out.deletions + out.insertions
    return 100.0 * (errors + extra_insertions) / n_words


def condition_wers(
    refs: Sequence[str],
    paths: dict[str, Sequence[str | os.PathLike]],
    backend: str = "faster-whisper",
    model: str = "base",
    cache_dir: str | os.PathLike | None | bool = None,
    progress: bool = True,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """:func:`wer` of each condition's audio (``{condition: files}``, in ``refs``' order) against
    the references, transcribed with :func:`transcribe_files`; returns the WERs and each
    condition's transcription ``stats``."""
    wers, stats = {}, {}
    for cond, files in paths.items():
        stats[cond] = {}
        hyps = transcribe_files(
            files, backend, model, cache_dir=cache_dir, progress=progress, stats=stats[cond]
        )
        wers[cond] = wer(refs, hyps)
    return wers, stats
