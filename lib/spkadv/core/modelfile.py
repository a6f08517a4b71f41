"""The protection model file.

``model.pt`` is a plain dict of tensors and primitives, loaded with
``torch.load(weights_only=True)`` so that opening it never executes code::

    {"format": "spkadv-protection-model", "version": 1, "config": {...SSEDConfig...}, "eps": 0.05,
     "generator": {state dict of F_P}, "removal": {state dict of F_R, or empty}, "meta": {...},
     "fingerprint": sha256 hex over config, eps and both state dicts}

The fingerprint identifies the model: ``spkadv protect`` writes it beside each protected file and
``spkadv restore`` refuses a file protected by another model. ``meta`` is outside the fingerprint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spkadv.base.fileio import atomic_path
from spkadv.core.conditioning import utterance_embedding
from spkadv.core.models import RemovalModule, SSEDConfig, SSEDGenerator
from spkadv.encoders import speaker as encoders
from spkadv.encoders.surrogate import EnsembleEncoder, load_surrogate

FORMAT = "spkadv-protection-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file is missing, damaged, or not a spkadv protection model."""


@dataclasses.dataclass
class ProtectionModel:
    """A loaded protection model: F_P (``generator``), F_R (``removal``, may be None), eps."""

    generator: SSEDGenerator
    removal: RemovalModule | None
    eps: float
    fingerprint: str
    config: SSEDConfig
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    _encoder: Any = dataclasses.field(default=None, repr=False, compare=False)
    _code_encoders: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def receptive_field(self) -> int:
        return self.generator.receptive_field

    @property
    def alignment(self) -> int:
        return self.generator.alignment

    @property
    def conditioned(self) -> bool:
        """True when the modules take the white-box embedding of their input utterance."""
        return self.config.embed_dim > 0

    def encoder(self) -> torch.nn.Module:
        """The white-box encoder the model was trained against (loaded once, for conditioning)."""
        if self._encoder is None:
            name = self.meta.get("encoder")
            if not name:
                raise ModelFileError("this model does not name its white-box encoder (meta)")
            device = next(self.generator.parameters()).device
            self._encoder = encoders.load(name, device)
        return self._encoder

    def code_encoder(self) -> torch.nn.Module:
        """What the per-utterance code is optimised against: the white-box encoder, joined by the
        surrogates listed in ``meta["code_surrogates"]`` when there are any (beyond the paper): each
        ``{"path": <file>, "weight": w}`` (a d-vector of :mod:`spkadv.encoders.surrogate`) or
        ``{"encoder": <name>, "weight": w}`` (an encoder of :func:`spkadv.encoders.speaker.load`,
        such as ``vfl``), weights relative to the white box's 1."""
        extra = self.meta.get("code_surrogates") or []
        if not extra:
            return self.encoder()
        key = json.dumps(extra, sort_keys=True)
        if key not in self._code_encoders:
            device = next(self.generator.parameters()).device
            try:
                members = [_code_member(item, device) for item in extra]
                weights = [1.0] + [float(item["weight"]) for item in extra]
            except (KeyError, TypeError) as err:
                raise ModelFileError(
                    f'meta["code_surrogates"] must be a list of {{"path": ..., "weight": ...}} or '
                    f'{{"encoder": ..., "weight": ...}}, got {extra!r}'
                ) from err
            self._code_encoders[key] = EnsembleEncoder([self.encoder(), *members], weights)
        return self._code_encoders[key]

    def embedding(self, x: np.ndarray) -> torch.Tensor | None:
        """Utterance embedding that conditions the modules on ``x``, or None if unconditioned."""
        if not self.conditioned:
            return None
        return utterance_embedding(self.encoder(), x)

    @property
    def overlap(self) -> int:
        """Context kept on each side of a chunk: the receptive field rounded up to the alignment."""
        return math.ceil((self.receptive_field + 1) / self.alignment) * self.alignment


def _code_member(item: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """One surrogate of ``meta["code_surrogates"]``: a d-vector file or a named encoder."""
    if ("path" in item) == ("encoder" in item):
        raise KeyError("exactly one of 'path' and 'encoder'")
    if "encoder" in item:
        return encoders.load(str(item["encoder"]), device=device)
    return load_surrogate(item["path"], device)


def _state(module: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    if module is None:
        return {}
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def compute_fingerprint(config: dict[str, Any], eps: float, generator: dict, removal: dict) -> str:
    """sha256 over the configuration, eps and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": config, "eps": eps}, sort_keys=True).encode())
    for part, state in (("generator", generator), ("removal", removal)):
        for key in sorted(state):
            tensor = state[key].detach().cpu().contiguous()
            digest.update(f"{part}.{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_model(
    path: str | os.PathLike,
    generator: SSEDGenerator,
    removal: RemovalModule | None,
    eps: float,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the model file atomically and return its path."""
    config = generator.config.to_dict()
    gen_state, rem_state = _state(generator), _state(removal)
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": config,
        "eps": float(eps),
        "generator": gen_state,
        "removal": rem_state,
        "meta": dict(meta or {}),
        "fingerprint": compute_fingerprint(config, float(eps), gen_state, rem_state),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def model_meta(
    profile: str,
    encoder: str,
    steps: int,
    code_steps: int,
    snr_target_db: float,
    code_sigma: float,
    code_dim: int,
    code_bf16: bool | None = None,
) -> dict[str, Any]:
    """The ``meta`` a training notebook stores in its model file.

    ``code_steps`` (and ``code_bf16``, left out when None) say how protect optimises the
    per-utterance code; ``code_radius`` = ``code_sigma`` √``code_dim`` bounds it to the codes seen in
    training; ``encoder`` and ``snr_target_db`` record what the model was trained against.
    """
    meta: dict[str, Any] = {
        "profile": profile,
        "steps": steps,
        "encoder": encoder,
        "code_steps": code_steps,
    }
    if code_bf16 is not None:
        meta["code_bf16"] = code_bf16
    meta["snr_target_db"] = snr_target_db
    meta["code_radius"] = code_sigma * code_dim**0.5
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> ProtectionModel:
    """Load and verify a model file (no code execution; fingerprint re-computed and checked)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{path}: model file not found; train one with notebook 20_joint_training"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, pickled code: all refused here
        raise ModelFileError(
            f"{path}: cannot read the model file ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a spkadv protection model (no format tag {FORMAT!r})")
    if state.get("version") != VERSION:
        raise ModelFileError(
            f"{path}: model format version {state.get('version')}, this spkadv reads {VERSION}"
        )
    fingerprint = compute_fingerprint(
        state["config"], state["eps"], state["generator"], state["removal"]
    )
    if fingerprint != state["fingerprint"]:
        raise ModelFileError(f"{path}: fingerprint mismatch: the file was modified or damaged")
    config = SSEDConfig.from_dict(state["config"])
    generator = SSEDGenerator(config)
    generator.load_state_dict(state["generator"])
    removal = None
    if state["removal"]:
        removal = RemovalModule(config)
        removal.load_state_dict(state["removal"])
        removal.to(device).eval()
    generator.to(device).eval()
    return ProtectionModel(
        generator, removal, float(state["eps"]), fingerprint, config, dict(state["meta"])
    )


def portable_copy(model: ProtectionModel) -> ProtectionModel:
    """What worker processes get: CPU copies of the modules, no loaded encoder."""
    return dataclasses.replace(
        model,
        generator=copy.deepcopy(model.generator).cpu(),
        removal=None if model.removal is None else copy.deepcopy(model.removal).cpu(),
        _encoder=None,
        _code_encoders={},
    )
