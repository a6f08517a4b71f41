"""The SSED perturbation generator F_P and the removal module F_R (paper Fig. 2-3, eq. 1 and 5).

No code was published for SSED; this is a 1-D port of SSAE's generator (docs/protocol.md §2), with
every open choice a field of :class:`SSEDConfig` (*assumptions*, recorded in the notebooks):

- encoder: conv k7 (``width`` channels) → ReLU, then ``stages`` stride-2 convs k3 (width doubling,
  capped at ``4 * width``), then ``res_blocks`` dilated residual blocks (dilation 1, 3, 9, ...);
- two decoders of the same shape with separate weights: ``stages`` × (nearest ×2 up-sampling →
  conv k3 → ReLU), then conv k7 → one channel. The noise decoder ends in tanh (``|n| < 1``), the
  saliency-map decoder in the mask normaliser (``m`` in [0, 1]);
- ``delta = eps * n ⊙ m`` (eq. 1); with ``level_scaled`` the mask is further multiplied by the local
  RMS level of the input (an extension: the perturbation then follows the speech level, so SNR is
  bounded below by about ``-20·log10(eps)`` dB, and ``|delta| <= eps`` still holds).

The default is *local*: no instance norm and a pointwise mask normaliser (sigmoid or (tanh+1)/2), so
each output sample depends only on the input within :attr:`NoiseMaskGenerator.receptive_field`
samples. Chunked processing (``spkadv.core.protect``) then reproduces whole-file processing exactly. The
SSAE options ``mask_norm="minmax"`` (per-utterance min-max) and ``norm="instance"`` use statistics of
the whole signal and break exact chunking; ``norm="batch"`` is local in eval mode.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MASK_NORMALISERS = ("sigmoid", "tanh01", "minmax")
NORMS = ("none", "batch", "instance")


@dataclasses.dataclass(frozen=True)
class SSEDConfig:
    """Architecture of one noise&mask generator (F_P or F_R). All fields are primitives."""

    width: int = 16  # channels after the first conv
    stages: int = 3  # stride-2 down-sampling stages (and as many up-sampling stages)
    res_blocks: int = 3  # dilated residual blocks at the bottleneck
    dilation_base: int = 3  # residual block i has dilation dilation_base**i
    spectral_norm: bool = False  # spectral normalisation on every convolution (SSAE)
    mask_norm: str = "sigmoid"  # sigmoid | tanh01 | minmax (SSAE; breaks exact chunking)
    norm: str = "none"  # none | batch | instance (instance breaks exact chunking)
    level_scaled: bool = False  # multiply the mask by the local RMS level of the input
    input_norm: bool = True  # divide the network's input by its local RMS level (scale invariance)
    level_window: int = 801  # samples of the moving RMS window (odd)
    level_floor: float = 1.0e-3  # RMS floor, so that silence still gets a small perturbation
    embed_dim: int = 0  # > 0: FiLM of the bottleneck from an utterance-level embedding (learned)
    code_film: bool = False  # FiLM of the bottleneck from a per-utterance code of code_dim values
    code_segment_seconds: float = (
        0.0  # > 0: one code per segment of this length (0: one per utterance)
    )
    # in (0, 1): the mask head starts at this value everywhere (0: default init)
    mask_init: float = 0.0

    def __post_init__(self) -> None:
        if self.mask_norm not in MASK_NORMALISERS:
            raise ValueError(f"mask_norm={self.mask_norm!r}; choose one of {MASK_NORMALISERS}")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r}; choose one of {NORMS}")
        if self.width < 1 or self.stages < 0 or self.res_blocks < 0:
            raise ValueError(f"invalid sizes in {self}")
        if self.code_segment_seconds < 0:
            raise ValueError(f"code_segment_seconds must be >= 0, got {self.code_segment_seconds}")
        if self.embed_dim < 0:
            raise ValueError(f"embed_dim must be >= 0, got {self.embed_dim}")
        if self.level_window < 1 or self.level_window % 2 == 0:
            raise ValueError(f"level_window must be a positive odd number, got {self.level_window}")
        if not 0.0 <= self.mask_init < 1.0:
            raise ValueError(
                f"mask_init={self.mask_init} must lie in [0, 1): the mask's starting value "
                "(0 keeps the default initialisation)"
            )
        if self.mask_init and self.spectral_norm:
            raise ValueError(
                "mask_init zeroes the mask head's weights, which spectral_norm cannot take"
            )
        if self.mask_init and self.mask_norm == "minmax":
            raise ValueError("mask_init needs a pointwise mask normaliser (sigmoid or tanh01)")

    @property
    def code_dim(self) -> int:
        """Length of the per-utterance code (scale and shift of each bottleneck channel), or 0."""
        return 2 * _widths(self)[-1] if self.code_film else 0

    @property
    def code_segment_samples(self) -> int:
        """Samples per code segment (a multiple of the 2**stages alignment), or 0 (one code)."""
        if not self.code_segment_seconds:
            return 0
        align = 2**self.stages
        return max(align, round(self.code_segment_seconds * 16000 / align) * align)

    def code_segments(self, samples: int) -> int:
        """Code segments covering ``samples`` (1 for a per-utterance code)."""
        seg = self.code_segment_samples
        return max(1, -(-samples // seg)) if seg else 1

    @property
    def is_local(self) -> bool:
        """True when outputs depend only on the input within the receptive field."""
        return self.mask_norm != "minmax" and self.norm != "instance"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSEDConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SSEDConfig field(s) {sorted(unknown)}")
        return cls(**data)


def _conv(
    cfg: SSEDConfig, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1
) -> nn.Module:
    conv = nn.Conv1d(
        cin, cout, kernel, stride=stride, padding=dilation * (kernel - 1) // 2, dilation=dilation
    )
    if cfg.spectral_norm:
        conv = nn.utils.parametrizations.spectral_norm(conv)
    return conv


def _norm(cfg: SSEDConfig, channels: int) -> nn.Module:
    if cfg.norm == "batch":
        return nn.BatchNorm1d(channels)
    if cfg.norm == "instance":
        return nn.InstanceNorm1d(channels, affine=True)
    return nn.Identity()


class _ResBlock(nn.Module):
    def __init__(self, cfg: SSEDConfig, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(cfg, channels, channels, 3, dilation=dilation),
            _norm(cfg, channels),
            nn.ReLU(),
            _conv(cfg, channels, channels, 3),
            _norm(cfg, channels),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.body(h)


def _widths(cfg: SSEDConfig) -> list[int]:
    return [cfg.width * 2 ** min(s, 2) for s in range(cfg.stages + 1)]


class _Decoder(nn.Module):
    def __init__(self, cfg: SSEDConfig) -> None:
        super().__init__()
        widths = _widths(cfg)
        layers: list[nn.Module] = []
        for s in range(cfg.stages, 0, -1):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                _conv(cfg, widths[s], widths[s - 1], 3),
                _norm(cfg, widths[s - 1]),
                nn.ReLU(),
            ]
        layers.append(_conv(cfg, widths[0], 1, 7))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def local_level(x: torch.Tensor, window: int, floor: float) -> torch.Tensor:
    """Moving RMS of ``x`` [B, T] over an odd ``window`` of samples (zero padded), floored, capped at 1.

    Differences of float64 cumulative sums: linear in T whatever the window (a pooling over an
    801-sample window took about a third of the generator's forward time).
    """
    if window % 2 != 1:
        raise ValueError(f"the level window must be an odd number of samples, got {window}")
    half = window // 2
    csum = F.pad(x.double().pow(2), (half + 1, half)).cumsum(-1)
    power = ((csum[..., window:] - csum[..., :-window]) / window).clamp(min=0.0)
    return torch.sqrt(power.to(x.dtype) + floor**2).clamp(max=1.0)


class NoiseMaskGenerator(nn.Module):
    """Encoder E + noise decoder G_N + saliency-map decoder G_M (+ normaliser): x -> (n, m)."""

    def __init__(self, config: SSEDConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SSEDConfig()
        widths = _widths(cfg)
        enc: list[nn.Module] = [_conv(cfg, 1, widths[0], 7), _norm(cfg, widths[0]), nn.ReLU()]
        for s in range(cfg.stages):
            enc += [
                _conv(cfg, widths[s], widths[s + 1], 3, stride=2),
                _norm(cfg, widths[s + 1]),
                nn.ReLU(),
            ]
        enc += [_ResBlock(cfg, widths[-1], cfg.dilation_base**i) for i in range(cfg.res_blocks)]
        self.encoder = nn.Sequential(*enc)
        # Utterance context: a learned FiLM from an embedding of the whole utterance, zero-initialised
        # so that training starts from the unconditioned generator.
        self.film = nn.Linear(cfg.embed_dim, 2 * widths[-1]) if cfg.embed_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.noise_decoder = _Decoder(cfg)
        self.mask_decoder = _Decoder(cfg)
        for module in self.modules():  # He init keeps activations at unit scale without norm layers
            if isinstance(module, nn.Conv1d) and module.out_channels > 1:  # not the output convs
                weight = getattr(module, "parametrizations", None)
                target = weight.weight.original if weight is not None else module.weight
                nn.init.kaiming_normal_(target, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        if cfg.mask_init:
            self._init_mask_head(cfg.mask_init)

    def _init_mask_head(self, value: float) -> None:
        """Start the mask at ``value`` everywhere: zero weights and the matching bias on the mask
        decoder's output conv. With the default init the head's pre-activations are large and their
        sign follows the seed: some seeds start with the sigmoid saturated near 0 (δ ≈ 0), where
        neither loss has a gradient to leave it (the collapse seen on real speech)."""
        # a plain conv: SSEDConfig refuses mask_init with spectral_norm
        head = self.mask_decoder.net[-1]
        if self.config.mask_norm == "sigmoid":
            raw = math.log(value / (1 - value))
        else:  # tanh01
            raw = math.atanh(2 * value - 1)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(raw)

    @property
    def alignment(self) -> int:
        """Chunk starts must be multiples of this (2 ** stages) for exact chunked processing."""
        return 2**self.config.stages

    @property
    def receptive_field(self) -> int:
        """Samples of context on each side that can influence one output sample (upper bound)."""
        cfg = self.config
        radius, jump = 3, 1  # first conv k7
        for _ in range(cfg.stages):  # stride-2 conv k3
            radius += jump
            jump *= 2
        radius += jump  # rounding of the stride-2 grid
        for i in range(cfg.res_blocks):
            radius += jump * (cfg.dilation_base**i + 1)
        for _ in range(cfg.stages):  # nearest x2 (rounding) + conv k3 at the finer rate
            radius += jump
            jump //= 2
            radius += jump
        radius += 3  # last conv k7
        if cfg.level_scaled or cfg.input_norm:
            radius += cfg.level_window // 2 if cfg.input_norm else 0
            radius = max(radius, cfg.level_window // 2)
        return radius

    def _modulate(
        self,
        h: torch.Tensor,
        embedding: torch.Tensor | None,
        code: torch.Tensor | None,
        code_offset: int = 0,
    ) -> torch.Tensor:
        """Bottleneck FiLM h·(1 + scale) + shift from the embedding (learned) and the code (direct).

        A code is [B, code_dim] (one per utterance) or [B, S, code_dim] (one per segment of
        ``code_segment_samples``, indexed by absolute time: ``code_offset`` is the position of the
        input's first sample in the whole signal). Given the same vectors, chunked processing is exact.
        """
        scale = shift = None
        channels = h.shape[1]
        if self.film is not None:
            if embedding is None:
                raise ValueError("this generator is conditioned on an utterance embedding: pass it")
            scale, shift = self.film(embedding.to(h.dtype)).unsqueeze(-1).split(channels, dim=1)
        if self.config.code_film and code is not None:
            if code.shape[-1] != 2 * channels:
                raise ValueError(
                    f"code of {code.shape[-1]} values, this model takes {2 * channels}"
                )
            code = code.to(h.dtype)
            if code.ndim == 3:  # per segment: pick each bottleneck frame's segment
                if not self.config.code_segment_samples:
                    raise ValueError("this model takes one code per utterance, not per segment")
                stride = self.alignment
                per_segment = self.config.code_segment_samples // stride
                frames = code_offset // stride + torch.arange(h.shape[-1], device=h.device)
                index = (frames // per_segment).clamp(0, code.shape[1] - 1)
                grid = code[:, index, :].transpose(1, 2)  # [B, code_dim, T]
            else:
                grid = code.unsqueeze(-1)
            c_scale, c_shift = grid.split(channels, dim=1)
            scale = c_scale if scale is None else scale + c_scale
            shift = c_shift if shift is None else shift + c_shift
        if scale is None:
            return h
        return h * (1 + scale) + shift

    def forward(
        self,
        x: torch.Tensor,
        use_mask: bool = True,
        embedding: torch.Tensor | None = None,
        code: torch.Tensor | None = None,
        code_offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map waveforms [B, T] to noise n (tanh, [B, T]) and mask m ([0, 1], [B, T]).

        ``use_mask=False`` replaces the saliency map by ones (SSAE's first training stage).
        ``embedding`` [B, embed_dim] and ``code`` ([B, code_dim] or [B, segments, code_dim], see
        :meth:`_modulate`) condition the bottleneck (FiLM); a missing code means the zero code.
        """
        return self.decode(self.encode(x), use_mask, embedding, code, code_offset)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The code-independent part of :meth:`forward`: (bottleneck h, local level, length).

        Per-utterance code optimisation runs it once and only :meth:`decode` at each step.
        """
        if x.ndim != 2:
            raise ValueError(f"expected waveforms of shape [batch, samples], got {tuple(x.shape)}")
        length = x.shape[-1]
        pad = (-length) % self.alignment
        level = None
        if self.config.input_norm or self.config.level_scaled:
            level = local_level(x, self.config.level_window, self.config.level_floor)
        inp = x / level if self.config.input_norm else x
        return self.encoder(F.pad(inp, (0, pad)).unsqueeze(1)), level, length

    def decode(
        self,
        encoded: tuple[torch.Tensor, torch.Tensor | None, int],
        use_mask: bool = True,
        embedding: torch.Tensor | None = None,
        code: torch.Tensor | None = None,
        code_offset: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, m) from the output of :meth:`encode`, conditioned as in :meth:`forward`."""
        h, level, length = encoded
        h = self._modulate(h, embedding, code, code_offset)
        n = torch.tanh(self.noise_decoder(h)).squeeze(1)[..., :length]
        raw = self.mask_decoder(h).squeeze(1)[..., :length]
        if not use_mask:
            m = torch.ones_like(raw)
        elif self.config.mask_norm == "sigmoid":
            m = torch.sigmoid(raw)
        elif self.config.mask_norm == "tanh01":
            m = (torch.tanh(raw) + 1) / 2
        else:  # SSAE: per-utterance min-max of tanh
            t = torch.tanh(raw)
            lo, hi = t.amin(-1, keepdim=True), t.amax(-1, keepdim=True)
            m = (t - lo) / (hi - lo + 1e-8)
        if self.config.level_scaled:
            m = m * level
        return n, m


class SSEDGenerator(NoiseMaskGenerator):
    """F_P: generates the adversarial perturbation delta = eps * n ⊙ m (eq. 1)."""

    def perturbation(
        self, x: torch.Tensor, eps: float, use_mask: bool = True, **conditioning
    ) -> torch.Tensor:
        n, m = self(x, use_mask=use_mask, **conditioning)
        return eps * n * m


class RemovalModule(NoiseMaskGenerator):
    """F_R: predicts n' (target -n) and m' (target m) from x'; x̂ = x' + eps * n' ⊙ m' (eq. 5)."""

    def restore(self, x_adv: torch.Tensor, eps: float, **conditioning) -> torch.Tensor:
        n, m = self(x_adv, **conditioning)
        return x_adv + eps * n * m


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
