"""The frozen speaker-encoder interface every architecture implements, and safe weight loading.

:class:`SpeakerEncoder` maps 16 kHz waveforms (batch, samples) to (batch, dim) embeddings with
gradients flowing back to the waveform; its parameters never take gradients and it stays in eval
mode. Weights are read with ``torch.load(weights_only=True)`` or safetensors (no pickled code) and
loaded with ``strict=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from spkadv import SAMPLE_RATE

MIN_SAMPLES = 1600  # 0.1 s: shorter inputs give too few frames for the statistics pooling


class EncoderError(RuntimeError):
    """An encoder cannot be loaded or used; the message says what to do."""


class SpeakerEncoder(nn.Module):
    """Frozen speaker encoder: ``embed(waves[B, T]) -> [B, dim]``.

    Attributes:
        name: the name it was loaded under.
        dim: embedding size.
        fingerprint: sha256 of the weights (used in cache keys).
    """

    name: str = ""
    dim: int = 0
    fingerprint: str = ""
    parallel: bool = True  # embed_files may share its batches among worker processes

    def _freeze(self) -> SpeakerEncoder:
        for param in self.parameters():
            param.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> SpeakerEncoder:
        """Stay in eval mode (batch-norm statistics must not move inside a training loop)."""
        return super().train(False)

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        """Embed a batch of 16 kHz waveforms (float, (batch, samples) or (samples,))."""
        if not isinstance(waves, torch.Tensor):
            raise TypeError(f"embed expects a torch.Tensor, got {type(waves).__name__}")
        if waves.ndim == 1:
            waves = waves.unsqueeze(0)
        if waves.ndim != 2:
            raise ValueError(
                f"embed expects waves of shape (batch, samples), got {tuple(waves.shape)}"
            )
        if waves.shape[1] < MIN_SAMPLES:
            raise ValueError(
                f"{self.name}: waveforms of {waves.shape[1]} samples are too short; need at least "
                f"{MIN_SAMPLES} ({MIN_SAMPLES / SAMPLE_RATE:.1f} s at {SAMPLE_RATE} Hz)"
            )
        if not waves.is_floating_point():
            raise TypeError(f"embed expects float waveforms in [-1, 1], got dtype {waves.dtype}")
        device = next(self.parameters()).device
        return self.forward(waves.to(device=device, dtype=torch.float32))


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Load ``state`` into ``module`` with ``strict=True``, naming missing / unexpected keys."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise EncoderError(
            f"{name}: checkpoint does not match the architecture (missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''})"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise EncoderError(
            f"{name}: checkpoint shapes do not match the architecture: {err}"
        ) from err


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)`` (no code runs).

    A checkpoint dict holding ``model_state`` / ``state_dict`` / ``model`` is unwrapped.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EncoderError(
            f"{path}: cannot be read as a weights-only checkpoint ({type(err).__name__}: {err}); "
            f"save a plain state dict with torch.save(model.state_dict(), path) or safetensors"
        ) from err
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EncoderError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj
