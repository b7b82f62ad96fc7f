"""Encoder and decoder of the codec, built from complex layers (EuleroDec) or real ones (the baseline).

Both algebras share one network shape; a :class:`LayerKit` supplies the layers. The
complex kit works on ``[B, C, F, T]`` complex tensors; the real kit on ``[B, C, F, T]``
real tensors whose first layer sees the stacked ``[Re, Im]`` of the spectrum. Either way
the encoder hands the quantizer real ``[B, 2D, T']`` latents and the decoder returns the
compressed complex spectrum ``[B, F, T]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mars_model.codec.config import CodecConfig
from mars_model.complex_layers import (
    ComplexAxialAttention,
    ComplexConv,
    ComplexConvTranspose,
    ComplexGroupNorm,
    ModReLU,
    axial_attend,
)


class RealAxialAttention(nn.Module):
    """The real twin of :class:`ComplexAxialAttention`: ``[B, C, F, T]`` real -> same shape."""

    def __init__(self, channels: int, heads: int = 4, axis: str = "freq", window: int = 0) -> None:
        super().__init__()
        self.heads, self.axis, self.window = heads, axis, window
        self.norm = nn.GroupNorm(1, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1, bias=False)
        self.out = nn.Conv1d(channels, channels, 1)
        with torch.no_grad():
            self.out.weight.mul_(0.1)

    def attend(self, seq: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, c, length = seq.shape
        h, d = self.heads, c // self.heads
        q, k, v = (
            x.reshape(n, h, d, length).transpose(2, 3) for x in self.qkv(seq).chunk(3, dim=1)
        )
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(mixed.transpose(2, 3).reshape(n, c, length))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + axial_attend(self.norm(x), self.axis, self.window, self.attend)


class LayerKit:
    """Factory of the layers of one algebra (``"complex"`` or ``"real"``)."""

    def __init__(self, algebra: str) -> None:
        self.complex = algebra == "complex"

    def width(self, channels: int) -> int:
        """Channels of this algebra for a complex width: real nets get ``sqrt(2)`` times as many
        (same parameter count), rounded up to a multiple of 4."""
        return channels if self.complex else 4 * math.ceil(channels * math.sqrt(2) / 4)

    def conv(self, c_in, c_out, kernel, stride=1, padding=0, dilation=1, dims=2) -> nn.Module:
        if self.complex:
            return ComplexConv(c_in, c_out, kernel, stride, padding, dilation, dims=dims)
        cls = nn.Conv2d if dims == 2 else nn.Conv1d
        return cls(c_in, c_out, kernel, stride, padding, dilation)

    def conv_transpose(self, c_in, c_out, kernel, stride, padding) -> nn.Module:
        if self.complex:
            return ComplexConvTranspose(c_in, c_out, kernel, stride, padding)
        return nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding)

    def norm(self, channels: int) -> nn.Module:
        groups = next(g for g in (4, 2, 1) if channels % g == 0)
        return (
            ComplexGroupNorm(groups, channels) if self.complex else nn.GroupNorm(groups, channels)
        )

    def act(self, channels: int) -> nn.Module:
        return ModReLU(channels) if self.complex else nn.ELU()

    def attention(self, channels: int, heads: int, axis: str, window: int) -> nn.Module:
        cls = ComplexAxialAttention if self.complex else RealAxialAttention
        return cls(channels, heads, axis, window)


class ResidualBlock(nn.Module):
    """Dilated residual block: ``x + conv1x1(act(conv3x3_dilated(act(norm(x)))))``.

    The 3x3 convolution is dilated along time by ``dilation``. ``[B, C, F, T]`` -> same.
    """

    def __init__(self, kit: LayerKit, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            kit.norm(channels), kit.act(channels),
            kit.conv(channels, channels, 3, padding=(1, dilation), dilation=(1, dilation)),
            kit.act(channels),
            kit.conv(channels, channels, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _down_kernel(stride: int) -> tuple[int, int]:
    kernel = 2 * stride - 1 if stride > 1 else 3
    return kernel, kernel // 2


class Encoder(nn.Module):
    """Compressed complex spectrum ``[B, F, T]`` -> real latents ``[B, 2D, ceil(T / time_stride)]``.

    stem conv (frequency stride) -> per level: dilated residual block, strided conv ->
    residual block, axial attention over frequency then time -> the remaining frequency
    rows are folded into channels and a 1-D conv maps them to D (complex) latents.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        kit = self.kit = LayerKit(config.algebra)
        widths = [kit.width(c) for c in config.channels]
        k, p = _down_kernel(config.stem_freq_stride)
        self.stem = kit.conv(
            1 if kit.complex else 2, widths[0], (k, 3), (config.stem_freq_stride, 1), (p, 1)
        )
        # the stacked spectrum [B, 2, F, T] is one complex channel, or two real ones
        layers: list[nn.Module] = []
        for i, (sf, st) in enumerate(config.strides):
            (kf, pf), (kt, pt) = _down_kernel(sf), _down_kernel(st)
            layers += [ResidualBlock(kit, widths[i], config.dilations[i]),
                       kit.conv(widths[i], widths[i + 1], (kf, kt), (sf, st), (pf, pt))]  # fmt: skip
        c = widths[-1]
        layers += [ResidualBlock(kit, c, config.dilations[-1]),
                   kit.attention(c, config.heads, "freq", 0),
                   kit.attention(c, config.heads, "time", config.time_window),
                   kit.norm(c), kit.act(c)]  # fmt: skip
        self.body = nn.Sequential(*layers)
        self.rows = config.freq_bins // config.freq_stride
        d = config.latent_dim if kit.complex else 2 * config.latent_dim
        self.project = kit.conv(c * self.rows, d, 3, padding=1, dims=1)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, F, T]`` complex -> ``[B, 2D, T']`` real."""
        x = torch.stack([spec.real, spec.imag], dim=1)
        h = self.body(self.stem(x))
        b, c, rows, t = h.shape
        # stacked [B, 2C, rows, T'] flattens to stacked [B, 2 * (C * rows), T']: reals stay first
        return self.project(h.reshape(b, c * rows, t))


class Decoder(nn.Module):
    """Real latents ``[B, 2D, T']`` -> compressed complex spectrum ``[B, F, T' * time_stride]``.

    The mirror of :class:`Encoder`: 1-D conv to frequency rows x channels, residual block
    and axial attention, then per level a transposed conv and a residual block, and a
    transposed-conv head back to one complex channel (two real ones for the baseline).
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        kit = self.kit = LayerKit(config.algebra)
        widths = [kit.width(c) for c in config.channels]
        c = widths[-1]
        self.rows, self.width = config.freq_bins // config.freq_stride, c
        d = config.latent_dim if kit.complex else 2 * config.latent_dim
        self.project = kit.conv(d, c * self.rows, 3, padding=1, dims=1)
        layers: list[nn.Module] = [
            ResidualBlock(kit, c, config.dilations[-1]),
            kit.attention(c, config.heads, "freq", 0),
            kit.attention(c, config.heads, "time", config.time_window),
        ]
        for i in reversed(range(len(config.strides))):
            sf, st = config.strides[i]
            kernel = (2 * sf if sf > 1 else 3, 2 * st if st > 1 else 3)
            pad = (sf // 2 if sf > 1 else 1, st // 2 if st > 1 else 1)
            layers += [kit.norm(widths[i + 1]), kit.act(widths[i + 1]),
                       kit.conv_transpose(widths[i + 1], widths[i], kernel, (sf, st), pad),
                       ResidualBlock(kit, widths[i], config.dilations[i])]  # fmt: skip
        s = config.stem_freq_stride
        layers += [kit.norm(widths[0]), kit.act(widths[0]),
                   kit.conv_transpose(widths[0], 1 if kit.complex else 2, (2 * s if s > 1 else 3, 3),
                                      (s, 1), (s // 2 if s > 1 else 1, 1))]  # fmt: skip
        self.body = nn.Sequential(*layers)
        with torch.no_grad():  # start near silence: the output is expanded by |.|^(1 / compress)
            for param in layers[-1].parameters():
                param.mul_(0.1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, 2D, T']`` real -> ``[B, F, T' * time_stride]`` complex."""
        h = self.project(latents)
        b, _, t = h.shape
        channels = 2 * self.width if self.kit.complex else self.width
        out = self.body(h.reshape(b, channels, self.rows, t))
        return torch.complex(out[:, 0], out[:, 1])
