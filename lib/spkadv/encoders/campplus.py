"""CAM++ speaker embedding network (Wang et al., "CAM++: A Fast and Efficient Network for Speaker
Verification Using Context-Aware Masking", Interspeech 2023), written from the paper.

Structure (the parameter names follow the released 3D-Speaker checkpoint so that it loads with
``strict=True``):

- FCM head: a 2-D convolution front end on the (frequency x time) fbank image, two stages of two
  residual blocks (32 channels, the first block of each stage halves the frequency axis) and a last
  strided convolution: 80 mel bins become 10, flattened to 32 x 10 = 320 channels per frame.
- an input TDNN layer (kernel 5) that halves the frame rate;
- three densely connected TDNN blocks (12, 24, 16 layers; growth rate 32; bottleneck 4 x 32;
  dilations 1, 2, 2) whose layers end in a context-aware mask: a local TDNN output multiplied by
  a sigmoid attention computed from the global mean plus 100-frame segment means
  (multi-granularity pooling); transit layers (BN-ReLU-1x1 conv) halve the channels between blocks;
- BN-ReLU, statistics pooling (mean and standard deviation over time), and a dense layer
  (1x1 conv + BN without affine) giving the 192-dim embedding.

Input: mean-normalised 80-dim Kaldi log-mel fbank, shape (batch, frames, 80).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SEGMENT_FRAMES = 100  # segment length of the CAM segment pooling (frames after the 1/2 subsampling)


class _BNReLU(nn.Module):
    def __init__(self, channels: int, affine: bool = True):
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.batchnorm(x))


class _BN(nn.Module):
    def __init__(self, channels: int, affine: bool = True):
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.batchnorm(x)


class _ResBlock2d(nn.Module):
    """Two 3x3 convs with BN; the first may stride the frequency axis; projection shortcut."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels, channels, 1, stride=(stride, 1), bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class FCM(nn.Module):
    """Front-end convolution module: (B, F, T) fbank -> (B, 32 * F / 8, T)."""

    def __init__(self, channels: int = 32, n_mels: int = 80):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(_ResBlock2d(channels, 2), _ResBlock2d(channels, 1))
        self.layer2 = nn.Sequential(_ResBlock2d(channels, 2), _ResBlock2d(channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (n_mels // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        x = self.layer2(self.layer1(x))
        x = F.relu(self.bn2(self.conv2(x)))
        return x.flatten(1, 2)


class _TDNN(nn.Module):
    """1-D conv (no bias, 'same' padding) followed by BN-ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        padding = (kernel - 1) // 2 * dilation
        self.linear = nn.Conv1d(
            c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        self.nonlinear = _BNReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


def segment_mean(x: torch.Tensor, segment: int = SEGMENT_FRAMES) -> torch.Tensor:
    """Mean over consecutive ``segment``-frame windows (last one partial), broadcast back to frames."""
    pooled = F.avg_pool1d(x, kernel_size=segment, stride=segment, ceil_mode=True)
    return pooled.repeat_interleave(segment, dim=-1)[..., : x.shape[-1]]


class _CAM(nn.Module):
    """Context-aware masking: local TDNN output times a sigmoid mask from global + segment means."""

    def __init__(self, c_in: int, c_out: int, hidden: int, kernel: int, dilation: int):
        super().__init__()
        padding = (kernel - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(
            c_in, c_out, kernel, padding=padding, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(c_in, hidden, 1)
        self.linear2 = nn.Conv1d(hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.linear_local(x)
        context = x.mean(dim=-1, keepdim=True) + segment_mean(x)
        mask = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return local * mask


class _CAMDenseLayer(nn.Module):
    """BN-ReLU, 1x1 bottleneck, BN-ReLU, CAM; its output is concatenated to its input."""

    def __init__(self, c_in: int, growth: int, bottleneck: int, kernel: int, dilation: int):
        super().__init__()
        self.nonlinear1 = _BNReLU(c_in)
        self.linear1 = nn.Conv1d(c_in, bottleneck, 1, bias=False)
        self.nonlinear2 = _BNReLU(bottleneck)
        self.cam_layer = _CAM(bottleneck, growth, bottleneck // 2, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _CAMDenseBlock(nn.ModuleDict):
    def __init__(
        self, layers: int, c_in: int, growth: int, bottleneck: int, kernel: int, dilation: int
    ):
        super().__init__()
        for i in range(layers):
            self[f"tdnnd{i + 1}"] = _CAMDenseLayer(
                c_in + i * growth, growth, bottleneck, kernel, dilation
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.values():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.nonlinear = _BNReLU(c_in)
        self.linear = nn.Conv1d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _Dense(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.linear = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.nonlinear = _BN(c_out, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1))).squeeze(-1)


def stats_pool(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the mean and (unbiased) standard deviation over time."""
    return torch.cat([x.mean(dim=-1), x.std(dim=-1)], dim=-1)


class CAMPPlus(nn.Module):
    """CAM++ embedding network: (B, frames, 80) fbank -> (B, 192) embedding."""

    def __init__(
        self,
        n_mels: int = 80,
        embedding_dim: int = 192,
        growth: int = 32,
        bn_size: int = 4,
        init_channels: int = 128,
        blocks: tuple[tuple[int, int, int], ...] = ((12, 3, 1), (24, 3, 2), (16, 3, 2)),
    ):
        super().__init__()
        self.head = FCM(n_mels=n_mels)
        xvector = nn.Module()
        xvector.tdnn = _TDNN(self.head.out_channels, init_channels, 5, stride=2)
        channels = init_channels
        for i, (layers, kernel, dilation) in enumerate(blocks, start=1):
            setattr(
                xvector,
                f"block{i}",
                _CAMDenseBlock(layers, channels, growth, bn_size * growth, kernel, dilation),
            )
            channels += layers * growth
            setattr(xvector, f"transit{i}", _Transit(channels, channels // 2))
            channels //= 2
        xvector.out_nonlinear = _BNReLU(channels)
        xvector.dense = _Dense(2 * channels, embedding_dim)
        self.xvector = xvector
        self.n_blocks = len(blocks)
        self.embedding_dim = embedding_dim

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.head(feats.transpose(1, 2))
        xv = self.xvector
        x = xv.tdnn(x)
        for i in range(1, self.n_blocks + 1):
            x = getattr(xv, f"transit{i}")(getattr(xv, f"block{i}")(x))
        x = stats_pool(xv.out_nonlinear(x))
        return xv.dense(x)
