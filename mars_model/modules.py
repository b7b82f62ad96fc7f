"""Real-valued convolutional building blocks shared by the tokenizer and the evaluation models."""

from __future__ import annotations

import torch
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels``."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(silu(norm(conv(silu(norm(x))))))``. ``[B, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Downsample(nn.Module):
    """Strided conv: ``[B, C_in, H, W]`` -> ``[B, C_out, H / sh, W / sw]``."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int]) -> None:
        super().__init__()
        kernel = tuple(2 * s - 1 if s > 1 else 3 for s in stride)
        pad = tuple(k // 2 for k in kernel)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest upsampling then a 3x3 conv: ``[B, C_in, H, W]`` -> ``[B, C_out, H * sh, W * sw]``."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = nn.functional.interpolate(x, scale_factor=self.stride, mode="nearest")
        return self.conv(x)
