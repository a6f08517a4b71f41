"""Resemblyzer's GE2E LSTM d-vector (256-dim) with a torch mel front end: the embedded default's
black box (another architecture, other features, other training data than CAM++). Weights from
``resemblyzer==0.1.4`` (asset store, see :func:`spkadv.encoders.speaker.load`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from spkadv import SAMPLE_RATE
from spkadv.encoders.frozen import SpeakerEncoder, load_strict


class GE2EEncoder(SpeakerEncoder):
    """Resemblyzer's GE2E d-vector: 3-layer LSTM on 40-channel mel power frames, linear + ReLU,
    L2-normalised; an utterance embedding is the L2-normalised mean over 1.6 s partial windows.

    Front end (torch re-implementation of Resemblyzer's librosa one): volume raised (never lowered)
    to -30 dBFS, |STFT|^2 with a 400-sample periodic Hann window, hop 160, centred with reflect
    padding, 40 Slaney mel filters (Slaney norm), no log. Differences from Resemblyzer: no webrtcvad
    silence trimming (it is not differentiable and would make embed() and embed_files() disagree),
    and float32 torch STFT instead of librosa's.
    """

    parallel = False  # a file takes ~14 ms: worker start-up costs more than it saves

    partial_frames = 160  # 1.6 s
    rate = 1.3  # partial windows per second (Resemblyzer's default: about 50 % overlap)
    min_coverage = 0.75
    hop = 160
    target_dbfs = -30.0

    def __init__(self, state_dict: dict[str, torch.Tensor], fingerprint: str, name: str = "ge2e"):
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        # Resemblyzer's checkpoint also holds the GE2E loss's similarity scale/bias: not part of
        # the embedding network, dropped before the strict load.
        state = {k: v for k, v in state_dict.items() if not k.startswith("similarity_")}
        load_strict(self, state, name)  # before self.mel exists: its buffers are not weights
        self.mel = self.front_end()
        self.name, self.dim, self.fingerprint = name, 256, fingerprint
        self._freeze()

    @classmethod
    def front_end(cls) -> nn.Module:
        """Resemblyzer's front end as a torch module: 40-band Slaney mel power, 25 ms / 10 ms."""
        return torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=400,
            hop_length=cls.hop,
            n_mels=40,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
            center=True,
            pad_mode="reflect",
        )

    def partial_slices(self, n_samples: int) -> list[int]:
        """Start frames of the partial windows (Resemblyzer's ``compute_partial_slices``)."""
        n_frames = int(np.ceil((n_samples + 1) / self.hop))
        step = int(np.round((SAMPLE_RATE / self.rate) / self.hop))
        starts = list(range(0, max(1, n_frames - self.partial_frames + step + 1), step))
        coverage = (n_samples - starts[-1] * self.hop) / (self.partial_frames * self.hop)
        if coverage < self.min_coverage and len(starts) > 1:
            starts = starts[:-1]
        return starts

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """A partial window's embedding before normalisation: linear + ReLU (Resemblyzer)."""
        return F.relu(self.linear(hidden))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        rms = waves.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-12).sqrt()
        gain = (10 ** (self.target_dbfs / 20) / rms).clamp_min(1.0)
        waves = waves * gain
        starts = self.partial_slices(waves.shape[1])
        needed = (starts[-1] + self.partial_frames) * self.hop
        if needed >= waves.shape[1]:
            waves = F.pad(waves, (0, needed - waves.shape[1]))
        frames = self.mel(waves).transpose(1, 2)  # (B, n_frames, 40)
        partials = torch.stack([frames[:, s : s + self.partial_frames] for s in starts], dim=1)
        batch, n_partials = partials.shape[:2]
        _, (hidden, _) = self.lstm(partials.flatten(0, 1))
        partial_embeds = F.normalize(self.project(hidden[-1]), dim=-1)
        return F.normalize(partial_embeds.view(batch, n_partials, -1).mean(dim=1), dim=-1)
