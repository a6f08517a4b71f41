"""The black-box study: what of the protection carries over to an encoder the code never saw.

The profile's trained model protects a fixed eval subset under a few protect-time settings
(``VARIANTS``-style dicts: code optimisation steps, random offsets in that optimisation). Each
protected set is scored with the white-box encoder and with a black-box one (all pairs, as in the
attack study), beside Gaussian noise of the same power (``gn``). To see *where* the perturbation
acts, :func:`band_snr` gives its SNR per mel band, and :func:`feature_change` how much it moves
the two kinds of features the encoders read: CAM++ reads mean-normalised log-mel fbanks, GE2E
(resemblyzer) a linear-power mel spectrogram.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spkadv import SAMPLE_RATE, protect
from spkadv.audio import load_audio

MEL_BANDS = 40  # bands of the linear-power mel spectrogram (GE2E's input: 25 ms / 10 ms, 40 mels)


def variant_key(model: protect.ProtectionModel, utt_ids: Sequence[str], settings: dict) -> str:
    """Cache key of one protected set: model, subset and protect-time settings."""
    blob = json.dumps([model.fingerprint, list(utt_ids), settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def protect_set(
    model: protect.ProtectionModel,
    rows,
    folder: Path,
    settings: dict[str, Any],
    workers: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Protect ``rows`` (``utt_id``, ``path``) with ``settings`` (``code_steps``, ``code_shift``)
    into ``folder/adv`` (and matched noise into ``folder/gn``); utterances already written are
    kept, so an interrupted run continues. Returns the adv paths in ``rows``' order."""
    unknown = set(settings) - {"code_steps", "code_shift"}
    if unknown:
        raise ValueError(
            f"unknown protect-time settings {sorted(unknown)}: expected code_steps, code_shift"
        )
    folders = {"adv": folder / "adv", "gn": folder / "gn"}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    todo = rows[[not (folders["adv"] / f"{u}.wav").exists() for u in rows["utt_id"]]]
    if len(todo):
        meta = dict(model.meta)
        model.meta.update(settings)
        try:
            protect.write_conditions(model, todo, folders, progress=progress, workers=workers)
        finally:
            model.meta.clear()
            model.meta.update(meta)
    return [folders["adv"] / f"{u}.wav" for u in rows["utt_id"]]


def _mel(x: np.ndarray) -> torch.Tensor:
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=MEL_BANDS, power=2.0
    )
    return mel(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))


def band_snr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SNR (dB) of x against y − x in each of ``MEL_BANDS`` mel bands, over the whole utterance."""
    signal, noise = _mel(x).sum(-1), _mel(y - x).sum(-1)
    return (10 * torch.log10(signal.clamp_min(1e-20) / noise.clamp_min(1e-20))).numpy()


def feature_change(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """How much y moves x's features: ``logmel``, the RMS change of CAM++'s mean-normalised
    80-band log fbank (nats); ``linmel``, the relative change ‖M(y) − M(x)‖ / ‖M(x)‖ of the
    40-band linear-power mel spectrogram (GE2E's kind of input)."""
    from spkadv.encoders import kaldi_fbank

    with torch.no_grad():
        fx = kaldi_fbank(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
        fy = kaldi_fbank(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))[None])
        mx, my = _mel(x), _mel(y)
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
