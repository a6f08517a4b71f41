"""The black-box study: what of the protection carries over to an encoder the code never saw.

The profile's trained model protects a fixed subset of held-out dev speakers (``STUDY_SUBSET``, see
:func:`spkadv.studies.study.subset_rows`) under a few protect-time settings
(``VARIANTS``-style dicts: code optimisation steps, random offsets in that optimisation). Each
protected set is scored with the white-box encoder and with a black-box one (all pairs, as in the
attack study), beside Gaussian noise of the same power (``gn``). To see *where* the perturbation
acts, :func:`band_snr` gives its SNR per mel band, and :func:`feature_change` how much it moves
the two kinds of features the encoders read: CAM++ reads mean-normalised log-mel fbanks, GE2E
(resemblyzer) a linear-power mel spectrogram; :func:`shaped_noise` makes noise of one power in
different shapes (flat or following the speech level, above or below 2 kHz), to ask which kind of
change an encoder is sensitive to at all. :func:`pgd_set` bounds what transfer can give at one power:
per-utterance PGD on the white box (no generator), scored on the black box. :func:`train_surrogate`
gives the settings with ``surrogate_weight`` their second white box, trained once on the train
speakers and cached; :func:`protect_settings` turns such a setting into what :func:`protect_set`
takes and what its cache key is made of.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from tqdm.auto import tqdm

from spkadv import SAMPLE_RATE
from spkadv.audio.io import load_audio, save_audio
from spkadv.audio.purify import _wave
from spkadv.base.fileio import write_text
from spkadv.base.threads import process_map
from spkadv.core import modelfile, protect
from spkadv.core.models import local_level
from spkadv.encoders import surrogate
from spkadv.encoders.speaker import kaldi_fbank
from spkadv.evaluation import conditions
from spkadv.evaluation.attacks import pgd

MEL_BANDS = 40  # bands of the linear-power mel spectrogram (GE2E's input: 25 ms / 10 ms, 40 mels)


def _cache_key(what, utt_ids: Sequence[str], settings: dict) -> str:
    """12 hex digits of sha256 over (what made the set, the subset, the settings) as sorted JSON."""
    blob = json.dumps([what, list(utt_ids), settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def variant_key(model: modelfile.ProtectionModel, utt_ids: Sequence[str], settings: dict) -> str:
    """Cache key of one protected set: model, subset and protect-time settings."""
    return _cache_key(model.fingerprint, utt_ids, settings)


def protect_set(
    model: modelfile.ProtectionModel,
    rows,
    folder: Path,
    settings: dict[str, Any],
    workers: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Protect ``rows`` (``utt_id``, ``path``) with ``settings`` (``code_steps``, ``code_shift``;
    ``code_surrogates``: surrogate encoders joining the white box in the code's loss, see
    :meth:`spkadv.core.modelfile.ProtectionModel.code_encoder`; ``lowpass_hz``: the probe of
    :func:`lowpass_map`) into ``folder/adv`` (and matched noise into ``folder/gn``); utterances with
    both files written are kept, so an interrupted run continues. Returns the adv paths in
    ``rows``' order."""
    known = ("code_steps", "code_shift", "code_surrogates", "lowpass_hz")
    unknown = set(settings) - set(known)
    if unknown:
        raise ValueError(
            f"unknown protect-time settings {sorted(unknown)}: expected {', '.join(known)}"
        )
    folders = {"adv": folder / "adv", "gn": folder / "gn"}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    done = [all((f / f"{u}.wav").exists() for f in folders.values()) for u in rows["utt_id"]]
    todo = rows[[not d for d in done]]
    if len(todo):
        meta = dict(model.meta)
        model.meta.update(settings)  # protection_code reads the code settings from here
        try:
            if settings.get("lowpass_hz"):
                _protect_lowpass(
                    model, todo, folders, float(settings["lowpass_hz"]), workers, progress
                )
            else:
                conditions.write_conditions(
                    model, todo, folders, progress=progress, workers=workers
                )
        finally:
            model.meta.clear()
            model.meta.update(meta)
    return [folders["adv"] / f"{u}.wav" for u in rows["utt_id"]]


@dataclass(frozen=True)
class Surrogate:
    """A surrogate encoder trained on the train speakers: the encoder, its file and training log."""

    encoder: surrogate.DVectorEncoder
    path: Path
    minutes: float  # training minutes (of the run that trained it)
    history: list[dict[str, float]]  # per logged step: loss, accuracy


def train_surrogate(
    train_rows, cfg: surrogate.SurrogateConfig, folder: Path, progress: bool = True
) -> Surrogate:
    """The surrogate of ``cfg`` trained on ``train_rows`` (``utt_id``, ``path``, ``speaker``),
    cached as ``folder/surrogate-<key>.pt`` with its log ``.json`` (key: the config and the
    utterances, :func:`spkadv.encoders.surrogate.surrogate_key`): trained once, then loaded."""
    path = Path(folder) / f"surrogate-{surrogate.surrogate_key(cfg, list(train_rows['utt_id']))}.pt"
    log_path = path.with_suffix(".json")
    if not (path.exists() and log_path.exists()):
        started = time.perf_counter()
        waves = [load_audio(p) for p in train_rows["path"]]
        trained, history = surrogate.train_surrogate(
            waves, list(train_rows["speaker"]), cfg, progress
        )
        surrogate.save_surrogate(trained, cfg, path)
        minutes = (time.perf_counter() - started) / 60
        write_text(log_path, json.dumps({"minutes": minutes, "history": history}))
    log = json.loads(log_path.read_text())
    return Surrogate(surrogate.load_surrogate(path), path, log["minutes"], log["history"])


def protect_settings(
    settings: dict[str, Any], sur: Surrogate | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what :func:`protect_set` takes, what the cache key is made of) for one setting:
    ``surrogate_weight`` w becomes ``code_surrogates`` (the surrogate's file at weight w) and, in
    the key, the weight and the surrogate's fingerprint."""
    settings = dict(settings)
    weight = settings.pop("surrogate_weight", None)
    if weight is None:
        return settings, settings
    if sur is None:
        raise ValueError("a setting with surrogate_weight needs a surrogate (train_surrogate)")
    run = {**settings, "code_surrogates": [{"path": str(sur.path), "weight": float(weight)}]}
    key = {
        **settings,
        "surrogate_weight": float(weight),
        "surrogate_sha256": sur.encoder.fingerprint,
    }
    return run, key


def pgd_key(encoder: torch.nn.Module, utt_ids: Sequence[str], settings: dict) -> str:
    """Cache key of one PGD set: the attacked encoder(s), the subset and the attack's settings."""
    members = getattr(encoder, "encoders", [encoder])
    prints = [getattr(e, "fingerprint", "") or getattr(e, "name", "?") for e in members]
    return _cache_key(prints, utt_ids, settings)


def pgd_set(
    encoder: torch.nn.Module,
    clean: Sequence[np.ndarray],
    utt_ids: Sequence[str],
    folder: Path,
    snr_db: float,
    steps: int,
    progress: bool = True,
) -> list[Path]:
    """Per-utterance PGD (:func:`spkadv.evaluation.attacks.pgd`, L2 ball at ``snr_db``, ``steps`` gradient
    steps, seeded by position) on ``encoder`` into ``folder/adv``, with Gaussian noise of each
    utterance's perturbation power in ``folder/gn``. No generator is involved: this is the
    strongest perturbation of that power the attacked encoder's gradients give, so what it does to
    another encoder bounds what any protection optimised on that encoder can carry over at that
    power. Utterances with both files written are kept (an interrupted run continues). Returns the
    adv paths in ``utt_ids``' order."""
    if len(clean) != len(utt_ids):
        raise ValueError(f"{len(clean)} waveforms but {len(utt_ids)} utterance ids")
    folders = {"adv": Path(folder) / "adv", "gn": Path(folder) / "gn"}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    todo = [
        i
        for i, u in enumerate(utt_ids)
        if not all((f / f"{u}.wav").exists() for f in folders.values())
    ]
    for i in tqdm(todo, desc=f"PGD on {getattr(encoder, 'name', '?')}", disable=not progress):
        x = np.asarray(clean[i], dtype=np.float32)
        adv = pgd(encoder, x, snr_db=snr_db, steps=steps, seed=i).x_adv
        save_audio(folders["adv"] / f"{utt_ids[i]}.wav", adv)
        save_audio(
            folders["gn"] / f"{utt_ids[i]}.wav", conditions.matched_noise(x, adv - x, 0, utt_ids[i])
        )
    return [folders["adv"] / f"{u}.wav" for u in utt_ids]


def _lowpass_kernel(cutoff_hz: float, taps: int = 101) -> torch.Tensor:
    """Windowed-sinc low-pass FIR (Hamming, unit DC gain), shaped (1, 1, taps) for conv1d."""
    if not 0 < cutoff_hz < SAMPLE_RATE / 2:
        raise ValueError(f"lowpass_hz={cutoff_hz}: expected a cutoff in (0, {SAMPLE_RATE // 2}) Hz")
    t = torch.arange(taps, dtype=torch.float32) - taps // 2
    fc = cutoff_hz / SAMPLE_RATE
    kernel = 2 * fc * torch.sinc(2 * fc * t) * torch.hamming_window(taps, periodic=False)
    return (kernel / kernel.sum()).view(1, 1, -1)


def _lowpass(signal: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """[B, T] filtered with ``kernel`` (zero phase, same length)."""
    pad = kernel.shape[-1] // 2
    return torch.nn.functional.conv1d(signal.unsqueeze(1), kernel, padding=pad).squeeze(1)


def lowpass_map(cutoff_hz: float, taps: int = 101):
    """δ → δ low-passed at ``cutoff_hz`` (windowed-sinc FIR, zero phase), rescaled per row to
    δ's power, so the SNR is unchanged: the same perturbation power moved below the cutoff."""
    kernel = _lowpass_kernel(cutoff_hz, taps)

    def apply(delta: torch.Tensor) -> torch.Tensor:
        low = _lowpass(delta, kernel)
        scale = (
            delta.pow(2).sum(-1, keepdim=True) / low.pow(2).sum(-1, keepdim=True).clamp_min(1e-20)
        ).sqrt()
        return low * scale

    return apply


NOISE_SHAPES = ("flat", "level", "high", "high_level", "low", "low_level")


def shaped_noise(
    x: np.ndarray,
    shape: str,
    snr_db: float,
    seed: int = 0,
    cutoff_hz: float = 2000.0,
    level_window: int = 801,
    level_floor: float = 1e-3,
) -> np.ndarray:
    """x plus Gaussian noise of one ``shape`` at exactly ``snr_db`` against x (whole utterance).

    Shapes, in time and frequency: ``flat`` (white, constant power: the ``gn`` condition);
    ``level`` (white times x's local RMS level, as the level-scaled perturbation is: loud where
    the speech is, nearly absent in pauses); ``high`` / ``low`` (white above / below
    ``cutoff_hz``, constant power); ``high_level`` / ``low_level`` (band-limited and level
    shaped). Asks which kind of noise an encoder is sensitive to, with no model involved.
    """
    if shape not in NOISE_SHAPES:
        raise ValueError(
            f"unknown noise shape {shape!r}: expected one of {', '.join(NOISE_SHAPES)}"
        )
    x = _wave(x, "shaped_noise").astype(np.float32)  # the purifiers' input check: 1-D, float
    if not np.isfinite(snr_db) or not np.isfinite(x).all():
        raise ValueError("shaped_noise: the SNR and every sample must be finite")
    power = float(np.mean(np.square(x, dtype=np.float64)))
    if power == 0.0:
        raise ValueError("shaped_noise needs a non-silent mono waveform (1-D, not all zeros)")
    noise = torch.from_numpy(np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32))
    if shape.startswith(("high", "low")):
        low = _lowpass(noise[None], _lowpass_kernel(cutoff_hz))[0]
        noise = low if shape.startswith("low") else noise - low
    if shape.endswith("level"):
        noise = noise * local_level(torch.from_numpy(x)[None], level_window, level_floor)[0]
    noise = noise.double().numpy()
    noise *= np.sqrt(power / 10 ** (snr_db / 10) / np.mean(noise**2))
    return (x + noise).astype(np.float32)


def _probe_one(
    model: modelfile.ProtectionModel, task: tuple[str, str, dict[str, str], float]
) -> str:
    """One utterance of the low-pass probe, ``(utt_id, path, folders, lowpass_hz)``: the code
    optimised for x + lowpass(δ), written."""
    utt, path, folders, lowpass_hz = task
    x = load_audio(path)
    delta_map = lowpass_map(lowpass_hz)
    code = protect.protection_code(model, x, delta_map=delta_map)
    delta = protect.protect(model, x, code=code) - x
    with torch.no_grad():
        low = delta_map(torch.from_numpy(np.ascontiguousarray(delta, dtype=np.float32))[None])
    adv = (x + low[0].numpy()).astype(np.float32)
    save_audio(Path(folders["adv"]) / f"{utt}.wav", adv)
    save_audio(Path(folders["gn"]) / f"{utt}.wav", conditions.matched_noise(x, adv - x, 0, utt))
    return utt


def _protect_lowpass(model, rows, folders, lowpass_hz: float, workers: int, progress: bool) -> None:
    """The ``lowpass_hz`` probe: x' = x + lowpass(δ) at δ's power, the code optimised for it
    (code settings from the model's meta, as :func:`spkadv.core.protect.protection_code` reads them).
    Not a usable protection (F_R was not trained to undo it; no restoration is measured)."""
    folders = {k: str(v) for k, v in folders.items()}
    pairs = zip(rows["utt_id"], rows["path"], strict=True)
    tasks = [(u, str(p), folders, lowpass_hz) for u, p in pairs]
    workers = conditions.resolve_workers(model, workers, len(tasks))
    state = model if workers == 1 else modelfile.portable_copy(model)  # workers: CPU copies
    bar = tqdm(total=len(tasks), desc="low-pass probe", disable=not progress)
    for _ in process_map(_probe_one, tasks, workers, state):
        bar.update()
    bar.close()


@functools.lru_cache(maxsize=1)
def _mel_transform():
    return torchaudio.transforms.MelSpectrogram(
        SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=MEL_BANDS, power=2.0
    )


def mel_power(x: np.ndarray) -> torch.Tensor:
    """The 40-band linear-power mel spectrogram of x ([bands, frames]; 25 ms / 10 ms)."""
    with torch.no_grad():
        return _mel_transform()(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))


def band_snr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SNR (dB) of x against y − x in each of ``MEL_BANDS`` mel bands, over the whole utterance."""
    signal, noise = mel_power(x).sum(-1), mel_power(y - x).sum(-1)
    return (10 * torch.log10(signal.clamp_min(1e-20) / noise.clamp_min(1e-20))).numpy()


def feature_change(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """How much y moves x's features: ``logmel``, the RMS change of CAM++'s mean-normalised
    80-band log fbank (nats); ``linmel``, the relative change ‖M(y) − M(x)‖ / ‖M(x)‖ of the
    40-band linear-power mel spectrogram (GE2E's kind of input)."""
    with torch.no_grad():
        fx = kaldi_fbank(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
        fy = kaldi_fbank(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None])
        mx, my = mel_power(x), mel_power(y)
    return {
        "logmel": float((fy - fx).pow(2).mean().sqrt()),
        "linmel": float((my - mx).norm() / mx.norm().clamp_min(1e-20)),
    }


def load_set(paths: Sequence[Path]) -> list[np.ndarray]:
    """The waveforms of ``paths``."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} protected files are missing, e.g. {missing[0]}")
    return [load_audio(p) for p in paths]
