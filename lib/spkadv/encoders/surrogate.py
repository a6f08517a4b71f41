"""A speaker encoder trained here, as a second white box for the per-utterance code.

Adversarial perturbations carry over to an unseen encoder better when they are optimised against
several encoders at once (an ensemble of surrogates). Only one speaker encoder ships offline
besides the black box (CAM++, the white box), so this module trains a small one on the profile's
*train* speakers: a d-vector of the GE2E family (Wan et al., 2018: an LSTM over 40-band mel
frames of 1.6 s partial windows, the utterance embedding the mean of the L2-normalised partial
embeddings), with GE2E's mel filters and pooling but its own size, weights and training data, and by
default log-compressed mel input and a linear output (GE2E: linear mel power, ReLU output; that
combination did not learn here). Trained with a cosine softmax (optionally with an additive margin)
over the train speakers on random 1.6 s crops.

:class:`EnsembleEncoder` joins encoders into one whose cosine is the weighted mean of theirs, so
the code optimisation (:func:`spkadv.core.conditioning.optimise_code`) takes it unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import atomic_path, sha256_file
from spkadv.data.crops import random_crop
from spkadv.encoders.frozen import SpeakerEncoder
from spkadv.encoders.ge2e import GE2EEncoder


@dataclasses.dataclass(frozen=True)
class SurrogateConfig:
    """Size and training of the surrogate d-vector (beyond the paper)."""

    hidden: int = 128  # LSTM units per layer (GE2E: 256)
    layers: int = 2  # LSTM layers (GE2E: 3)
    dim: int = 128  # embedding size (GE2E: 256)
    steps: int = 3000  # training steps
    batch: int = 32  # crops per step
    crop_seconds: float = 1.6  # crop length (GE2E's partial window)
    lr: float = 3.0e-3  # Adam learning rate
    scale: float = 10.0  # cosine-softmax scale
    margin: float = 0.0  # additive margin of that softmax (0: plain cosine softmax)
    log_mel: bool = True  # log(mel + 1e-6) input (GE2E: linear mel power, too slow to train here)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "dim", "steps", "batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"surrogate {name} must be >= 1, got {getattr(self, name)}")
        if not self.crop_seconds >= 1.0:
            raise ValueError(
                f"surrogate crop_seconds must be >= 1.0 (a partial window is 1.6 s), got {self.crop_seconds}"
            )
        if not (self.lr > 0 and self.scale > 0 and 0 <= self.margin < 1):
            raise ValueError(
                f"surrogate needs lr > 0, scale > 0 and 0 <= margin < 1; got {self.lr}, {self.scale}, {self.margin}"
            )


class _Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x + 1e-6)


class DVectorEncoder(GE2EEncoder):
    """GE2E-family d-vector of any size: the GE2E front end and pooling, weights of our own, and a
    linear projection (no ReLU) to the embedding."""

    def __init__(
        self,
        hidden: int,
        layers: int,
        dim: int,
        name: str = "dvector",
        fingerprint: str = "",
        log_mel: bool = True,
    ):
        SpeakerEncoder.__init__(self)
        self.lstm = nn.LSTM(40, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)
        self.mel = nn.Sequential(self.front_end(), _Log()) if log_mel else self.front_end()
        self.name, self.dim, self.fingerprint = name, dim, fingerprint

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Linear, without GE2E's ReLU: with the margin softmax, a ReLU output let every unit die
        (all-zero embeddings, no learning) in a first GE2E-sized run on speechocean762."""
        return self.linear(hidden)


class EnsembleEncoder(nn.Module):
    """Encoders joined into one: ``embed`` is the concatenation of sqrt(w_i) · unit z_i over
    sqrt(sum w), a unit vector whose cosine with another such vector is sum w_i cos_i / sum w_i."""

    def __init__(self, encoders: Sequence[nn.Module], weights: Sequence[float]):
        super().__init__()
        if len(encoders) != len(weights) or not encoders:
            raise ValueError(
                "EnsembleEncoder needs one weight per encoder, and at least one encoder"
            )
        if any(not (float(w) > 0 and math.isfinite(float(w))) for w in weights):
            raise ValueError(f"ensemble weights must be finite and > 0, got {list(weights)}")
        self.encoders = nn.ModuleList(encoders)
        total = float(sum(weights))
        self.scales = [math.sqrt(float(w) / total) for w in weights]
        self.name = "+".join(getattr(e, "name", "?") for e in encoders)
        self.dim = sum(int(getattr(e, "dim", 0)) for e in encoders)

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        parts = [
            s * F.normalize(e.embed(waves).float(), dim=-1)
            for e, s in zip(self.encoders, self.scales, strict=True)
        ]
        return torch.cat(parts, dim=-1)


def _crops(
    waves: Sequence[np.ndarray], idx: np.ndarray, crop: int, rng: np.random.Generator
) -> torch.Tensor:
    """The crops of utterances ``idx``, in turn from ``rng`` (:func:`spkadv.data.crops.random_crop`)."""
    out = np.zeros((len(idx), crop), dtype=np.float32)
    for row, i in enumerate(idx):
        out[row] = random_crop(waves[i], crop, rng)
    return torch.from_numpy(out)


def train_surrogate(
    waves: Sequence[np.ndarray],
    speakers: Sequence[str],
    cfg: SurrogateConfig = SurrogateConfig(),
    progress: bool = False,
) -> tuple[DVectorEncoder, list[dict[str, float]]]:
    """Train a :class:`DVectorEncoder` on ``waves`` of ``speakers`` (cosine softmax with
    ``cfg.margin`` over the speakers, random crops). Seeded. Returns the frozen encoder and a history of
    ``{"step", "loss", "accuracy"}`` (training-batch accuracy, every 50 steps and the last)."""
    from tqdm.auto import tqdm

    if len(waves) != len(speakers):
        raise ValueError(f"{len(waves)} waveforms but {len(speakers)} speaker labels")
    classes = sorted(set(speakers))
    if len(classes) < 2:
        raise ValueError(
            f"a speaker encoder needs at least 2 training speakers, got {len(classes)}"
        )
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = DVectorEncoder(cfg.hidden, cfg.layers, cfg.dim, log_mel=cfg.log_mel)
    labels = torch.tensor([classes.index(s) for s in speakers])
    centres = nn.Parameter(torch.randn(len(classes), cfg.dim) * 0.01)
    params = [p for p in model.parameters() if p.requires_grad] + [centres]
    optimiser = torch.optim.Adam(params, lr=cfg.lr)
    crop = int(round(cfg.crop_seconds * SAMPLE_RATE))
    history: list[dict[str, float]] = []
    nn.Module.train(model, True)
    for step in tqdm(range(1, cfg.steps + 1), desc="surrogate", unit="step", disable=not progress):
        idx = rng.integers(0, len(waves), size=cfg.batch)
        z = model.forward(_crops(waves, idx, crop, rng))
        cos = z @ F.normalize(centres, dim=-1).T
        target = labels[torch.from_numpy(idx)]
        logits = cfg.scale * (cos - cfg.margin * F.one_hot(target, len(classes)))
        loss = F.cross_entropy(logits, target)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimiser.step()
        if step % 50 == 0 or step == cfg.steps:
            accuracy = float((cos.argmax(-1) == target).float().mean())
            history.append({"step": step, "loss": float(loss.detach()), "accuracy": accuracy})
    model._freeze()
    return model, history


def save_surrogate(model: DVectorEncoder, cfg: SurrogateConfig, path: str | os.PathLike) -> str:
    """Write the surrogate (config and weights, loadable weights-only); returns its sha256."""
    with atomic_path(path) as tmp:  # never a half-written file under the final name
        torch.save({"config": dataclasses.asdict(cfg), "state": model.state_dict()}, tmp)
    return sha256_file(path)


def load_surrogate(path: str | os.PathLike, device: str | torch.device = "cpu") -> DVectorEncoder:
    """A surrogate written by :func:`save_surrogate`, frozen, named after its file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"surrogate encoder {path} not found: train it first (notebook 93 with a surrogate variant)"
        )
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, pickled code: all refused here
        raise ValueError(
            f"{path}: cannot read the surrogate file ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict) or "config" not in obj or "state" not in obj:
        raise ValueError(
            f"{path} is not a surrogate written by spkadv.encoders.surrogate.save_surrogate"
        )
    cfg = SurrogateConfig(**obj["config"])
    model = DVectorEncoder(
        cfg.hidden,
        cfg.layers,
        cfg.dim,
        name=f"dvector:{path.name}",
        fingerprint=sha256_file(path),
        log_mel=cfg.log_mel,
    )
    try:
        model.load_state_dict(obj["state"], strict=True)
    except RuntimeError as err:  # weights of another size or front end than its config says
        raise ValueError(
            f"{path}: the weights do not match the surrogate's config ({err})"
        ) from err
    return model._freeze().to(device)


def surrogate_key(cfg: SurrogateConfig, utt_ids: Sequence[str]) -> str:
    """Cache key of a surrogate: its config and the training utterances."""
    blob = json.dumps([dataclasses.asdict(cfg), list(utt_ids)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
