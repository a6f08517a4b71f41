"""The embedded synthetic multi-speaker corpus: flite voices turned into many pseudo-speakers.

Every utterance starts as a sentence read by one of Debian flite's voices (awb, rms, slt, kal16:
recordings of real CMU speakers). WORLD (pyworld) analyses it into F0, spectral envelope and
aperiodicity, and each pseudo-speaker re-synthesises it with its own

- F0 level and range (mean and spread of log-F0), and speaking rate (frame-rate stretch);
- vocal-tract length (a frequency warp of the spectral envelope: > 1 moves formants up);
- voice quality (extra aperiodicity above 1 kHz) and a small channel colouring (spectral tilt and
  one peaking EQ band).

Gender is set by construction (male speakers get a median F0 of 85-150 Hz and, from the female base
voice, a longer vocal tract; female speakers 165-260 Hz and, from male base voices, a shorter one).
Candidates are over-generated; the caller embeds them with a speaker encoder and
:func:`select_speakers` drops near-duplicate voices before the final eval and train speakers are
chosen. The held-out dev speakers (``dev_speakers_per_gender``) come after that choice, from
candidates of their own (their own seed streams for the voices and the sentence choice; they read
the sentences already analysed for the other candidates), and :func:`select_dev_speakers` keeps
them apart from every eval and train voice: asking for dev speakers leaves the eval and train
speakers and their audio as they are. Everything is seeded: the same configuration gives the same
audio, bit for bit, for any number of worker processes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import save_audio
from spkadv.data.download import progress_disabled
from spkadv.data.voices import (
    SynthError,
    VoiceSpec,
    check_synthesizer,
    make_specs,
    select_dev_speakers,
    select_speakers,
    sentence_pool,
)

FRAME_PERIOD_MS = 5.0
FFT_SIZE = 1024
TARGET_RMS_DBFS = -24.0


def _pyworld():
    """Import pyworld without its pkg_resources deprecation warning (once per worker process)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        import pyworld

    return pyworld


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Sizes and seed of the synthetic corpus (see the profile keys SYNTH_*)."""

    eval_speakers_per_gender: int = 20
    train_speakers_per_gender: int = 20
    dev_speakers_per_gender: int = 0  # held-out dev speakers, chosen after eval and train
    utterances_per_speaker: int = 12
    candidates_per_gender: int = 46
    base_voices: tuple[str, ...] = ("awb", "rms", "slt", "kal16")
    base_reuse: int = 6  # how many pseudo-speakers share one analysed base utterance (on average)
    min_seconds: float = 2.0
    max_seconds: float = 8.0
    screen_utterances: int = 4  # utterances per candidate embedded by the duplicate filter
    duplicate_cosine: float = 0.94  # centroid cosine above which a candidate is a near-duplicate
    seed: int = 0
    workers: int = 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Short hash of every setting that changes the audio or the speaker choice."""
        data = self.to_dict()
        data.pop("workers")  # the output does not depend on it
        if not data["dev_speakers_per_gender"]:
            del data["dev_speakers_per_gender"]  # corpora built before dev speakers keep their hash
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- WORLD


def _flite(text: str, voice: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        result = subprocess.run(
            ["flite", "-voice", voice, "-t", text + ".", "-o", str(wav)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 or not wav.exists():
            raise SynthError(f"flite -voice {voice} failed on {text!r}: {result.stderr.strip()}")
        x, sr = sf.read(str(wav), dtype="float64")
    if sr != SAMPLE_RATE:
        raise SynthError(
            f"flite voice {voice} writes {sr} Hz; use a 16 kHz voice (awb, rms, slt, kal16)"
        )
    return x


def analyse_base(text: str, voice: str, out_path: Path) -> float:
    """Read ``text`` with a flite voice, analyse it with WORLD, store F0/envelope/aperiodicity.

    Returns the duration in seconds. The analysis is cached in ``out_path`` (npz, float32).
    """
    pw = _pyworld()

    if out_path.exists():
        with np.load(out_path) as data:
            return float(data["duration"])
    x = _flite(text, voice)
    f0, t = pw.dio(x, SAMPLE_RATE, frame_period=FRAME_PERIOD_MS)
    f0 = pw.stonemask(x, f0, t, SAMPLE_RATE)
    sp = pw.cheaptrick(x, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)
    ap = pw.d4c(x, f0, t, SAMPLE_RATE, fft_size=FFT_SIZE)
    duration = len(x) / SAMPLE_RATE
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        f0=f0.astype(np.float32),
        sp=sp.astype(np.float32),
        ap=ap.astype(np.float32),
        duration=duration,
    )
    os.replace(tmp, out_path)
    return duration


def transform(f0: np.ndarray, sp: np.ndarray, ap: np.ndarray, spec: VoiceSpec, base_median: float):
    """Apply a pseudo-speaker's F0, rate, vocal-tract, voice-quality and channel changes."""
    n = len(f0)
    n_out = max(2, int(round(n / spec.rate)))
    idx = np.minimum((np.arange(n_out) * spec.rate).astype(int), n - 1)
    f0, sp, ap = f0[idx].astype(np.float64), sp[idx].astype(np.float64), ap[idx].astype(np.float64)

    voiced = f0 > 0
    log_mid = math.log(base_median)
    f0_new = np.zeros_like(f0)
    f0_new[voiced] = np.exp(
        math.log(spec.f0_median_hz) + spec.f0_range * (np.log(f0[voiced]) - log_mid)
    )
    f0_new = np.clip(f0_new, 0.0, 500.0)

    bins = np.arange(sp.shape[1], dtype=np.float64)
    src = np.clip(bins / spec.warp, 0, sp.shape[1] - 1)  # sp_new(f) = sp(f / warp)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, sp.shape[1] - 1)
    frac = src - lo
    log_sp = np.log(np.maximum(sp, 1e-16))
    sp_new = np.exp(log_sp[:, lo] * (1 - frac) + log_sp[:, hi] * frac)

    freqs = bins * SAMPLE_RATE / FFT_SIZE
    octaves = np.log2(np.maximum(freqs, 50.0) / 1000.0)
    eq = spec.eq_db * np.exp(-0.5 * (np.log2(np.maximum(freqs, 50.0) / spec.eq_hz) / 0.5) ** 2)
    gain_db = spec.tilt_db_per_octave * octaves + eq
    sp_new *= 10.0 ** (gain_db / 10.0)  # the envelope is a power spectrum

    weight = np.clip((freqs - 1000.0) / 3000.0, 0.0, 1.0) * spec.breath
    ap_new = np.clip(ap + weight * (1.0 - ap), 0.0, 1.0)
    return f0_new, np.ascontiguousarray(sp_new), np.ascontiguousarray(ap_new)


def synthesize_utterance(
    base_path: Path, spec: VoiceSpec, base_median: float, out_path: Path
) -> float:
    """Re-synthesise one analysed base utterance as ``spec``; returns the output duration (s)."""
    pw = _pyworld()

    if out_path.exists():
        return sf.info(str(out_path)).duration
    with np.load(base_path) as data:
        f0, sp, ap = data["f0"], data["sp"], data["ap"]
    f0, sp, ap = transform(f0, sp, ap, spec, base_median)
    # Synthesis with half the FFT size (every other bin of the smooth envelope) is twice as fast.
    sp, ap = np.ascontiguousarray(sp[:, ::2]), np.ascontiguousarray(ap[:, ::2])
    y = pw.synthesize(f0, sp, ap, SAMPLE_RATE, frame_period=FRAME_PERIOD_MS)
    rms = float(np.sqrt(np.mean(y**2))) + 1e-12
    y = y * (10 ** (TARGET_RMS_DBFS / 20) / rms)
    peak = float(np.abs(y).max())
    if peak > 0.95:
        y *= 0.95 / peak
    save_audio(out_path, y.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return len(y) / SAMPLE_RATE


def _analyse_task(args):
    text, voice, path = args
    return analyse_base(text, voice, Path(path))


def _median_f0(path: Path) -> np.ndarray:
    with np.load(path) as data:
        f0 = data["f0"]
    return f0[f0 > 0]


def _speaker_task(args):
    spec, items, base_median, audio_dir = args
    durations = []
    for utt_id, base_path in items:
        durations.append(
            synthesize_utterance(
                Path(base_path), spec, base_median, Path(audio_dir) / spec.speaker / f"{utt_id}.wav"
            )
        )
    return durations


def _run(fn, tasks, workers: int, desc: str, progress: bool):
    if workers <= 1 or len(tasks) <= 1:
        return [fn(t) for t in tqdm(tasks, desc=desc, disable=progress_disabled(progress))]
    with ProcessPoolExecutor(max_workers=min(workers, 2), mp_context=get_context("fork")) as pool:
        return list(
            tqdm(
                pool.map(fn, tasks, chunksize=1),
                total=len(tasks),
                desc=desc,
                disable=progress_disabled(progress),
            )
        )


# ----------------------------------------------------------------------------- corpus


def generate_candidates(
    config: SynthConfig, out_dir: Path, progress: bool = True, dev: bool = False
) -> pd.DataFrame:
    """Synthesise every candidate pseudo-speaker's utterances under ``out_dir/audio``.

    ``dev``: the dev candidates instead (:func:`spkadv.data.voices.make_specs`); they read the
    sentences analysed for the other candidates (reused from ``out_dir/.work``), drawn with a seed
    stream of their own.

    Returns a manifest-like table (utt_id, speaker, gender, path, duration, transcript, base).
    Existing audio files are kept (resume).
    """
    check_synthesizer(config.base_voices)
    specs = make_specs(config)
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    rng = np.random.default_rng([config.seed, 23, 1] if dev else [config.seed, 23])

    # Each base voice reads its own share of the sentence pool; its pseudo-speakers draw from it.
    per_voice = {v: [s for s in specs if s.base == v] for v in config.base_voices}
    need = {
        v: math.ceil(len(s) * config.utterances_per_speaker / config.base_reuse)
        for v, s in per_voice.items()
    }
    need = {v: max(n, 2 * config.utterances_per_speaker) for v, n in need.items()}
    pool = sentence_pool(sum(need.values()), config.seed)
    tasks, offset = [], 0
    voice_sentences: dict[str, list[int]] = {}
    for voice in config.base_voices:
        voice_sentences[voice] = list(range(offset, offset + need[voice]))
        tasks += [
            (pool[k], voice, str(work / voice / f"{k:05d}.npz")) for k in voice_sentences[voice]
        ]
        offset += need[voice]
    durations = _run(_analyse_task, tasks, config.workers, "flite + WORLD analysis", progress)
    base_duration = {Path(t[2]): d for t, d in zip(tasks, durations, strict=True)}
    base_median = {
        v: float(np.median(np.concatenate([_median_f0(work / v / f"{k:05d}.npz") for k in ks])))
        for v, ks in voice_sentences.items()
    }

    if dev:
        specs = make_specs(config, dev=True)
    speaker_tasks, rows = [], []
    for spec in specs:
        # Sentences whose stretched duration stays within [min_seconds, max_seconds].
        ok = [
            k
            for k in voice_sentences[spec.base]
            if config.min_seconds + 0.1
            <= base_duration[work / spec.base / f"{k:05d}.npz"] / spec.rate
            <= config.max_seconds - 0.1
        ]
        if len(ok) < config.utterances_per_speaker:
            raise SynthError(
                f"{spec.speaker}: only {len(ok)} sentences of voice {spec.base} fit {config.min_seconds}-{config.max_seconds} s; "
                "raise SYNTH_BASE_REUSE's pool or lower SYNTH_UTTERANCES_PER_SPEAKER"
            )
        chosen = sorted(rng.choice(ok, size=config.utterances_per_speaker, replace=False).tolist())
        items = []
        for j, k in enumerate(chosen):
            utt_id = f"{spec.speaker}_{j:03d}"
            items.append((utt_id, str(work / spec.base / f"{k:05d}.npz")))
            rows.append(
                {
                    "utt_id": utt_id,
                    "speaker": spec.speaker,
                    "gender": spec.gender,
                    "path": str((out_dir / "audio" / spec.speaker / f"{utt_id}.wav").resolve()),
                    "transcript": pool[k],
                    "base": spec.base,
                }
            )
        speaker_tasks.append((spec, items, base_median[spec.base], str(out_dir / "audio")))
    durs = _run(_speaker_task, speaker_tasks, config.workers, "pseudo-speakers", progress)
    table = pd.DataFrame(rows)
    table["duration"] = [d for ds in durs for d in ds]
    return table


def build_corpus(
    config: SynthConfig,
    out_dir: str | os.PathLike,
    embed_fn: Callable[[list[str]], np.ndarray] | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Generate candidates, drop near-duplicates, keep the chosen speakers' audio; then, with
    ``config.dev_speakers_per_gender``, the dev speakers (:func:`select_dev_speakers`).

    Args:
        config: corpus sizes and seed.
        out_dir: corpus folder (``audio/<speaker>/<utt>.wav`` is written there).
        embed_fn: maps a list of audio paths to an [N, D] embedding array (the white-box speaker
            encoder); None skips the duplicate filter (tests, or no encoder available).

    Returns (manifest DataFrame in the project's columns, rows eval, train, dev; info dict).
    """
    out_dir = Path(out_dir)

    def screened(table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray | None]:
        rows = table.groupby("speaker", sort=False).head(config.screen_utterances)
        rows = rows.reset_index(drop=True)
        return rows, None if embed_fn is None else np.asarray(embed_fn(rows["path"].tolist()))

    table = generate_candidates(config, out_dir, progress=progress)
    screen, embeddings = screened(table)
    roles, info = select_speakers(screen, embeddings, config)
    if config.dev_speakers_per_gender > 0:
        dev_table = generate_candidates(config, out_dir, progress=progress, dev=True)
        dev_screen, dev_embeddings = screened(dev_table)
        kept = screen["speaker"].isin(roles).to_numpy()
        dev_roles, dev_info = select_dev_speakers(
            dev_screen, dev_embeddings, screen[kept],
            None if embeddings is None else embeddings[kept], config,
        )  # fmt: skip
        roles.update(dev_roles)
        info.update(dev_info)
        table = pd.concat([table, dev_table], ignore_index=True)
    keep = table["speaker"].isin(roles)
    for speaker in sorted(set(table.loc[~keep, "speaker"])):
        shutil.rmtree(out_dir / "audio" / speaker, ignore_errors=True)
    shutil.rmtree(out_dir / ".work", ignore_errors=True)
    manifest = table[keep].copy()
    manifest["subset"] = manifest["speaker"].map(roles)
    manifest["set"] = "synthetic"
    info["base_voice_of_speaker"] = manifest.groupby("speaker")["base"].first().to_dict()
    manifest["rank"] = manifest["subset"].map({"eval": 0, "train": 1, "dev": 2})
    manifest = manifest.drop(columns="base").sort_values(
        ["rank", "gender", "speaker", "utt_id"], kind="stable"
    )
    return manifest.drop(columns="rank").reset_index(drop=True), info
