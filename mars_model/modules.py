"""Real-valued convolutional building blocks shared by the tokenizer and the evaluation models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: CPU BLAS multiplies a matrix of 1-3 rows on a matrix-vector path that sums in another order
#: than the blocked path taken from 4 rows up (measured with torch 2.13 on x86-64: every row
#: of a 4..8192-row product is bit-identical to the same row computed in any other such
#: product; a 1-3-row one is not). Padding small products to 4 rows makes a note's numbers
#: independent of how many notes share its batch.
MIN_GEMM_ROWS = 4


def _pad_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    flat = x.reshape(-1, x.shape[-1])
    rows = flat.shape[0]
    if rows >= MIN_GEMM_ROWS:
        return flat, rows
    return torch.cat([flat, flat.new_zeros(MIN_GEMM_ROWS - rows, flat.shape[1])]), rows


def batch_invariant_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` whose every output row is independent of the other rows. ``[..., K]`` -> ``[..., N]``."""
    flat, rows = _pad_rows(x)
    return F.linear(flat, weight, bias)[:rows].reshape(*x.shape[:-1], weight.shape[0])


def batch_invariant_matmul(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``x @ matrix`` for ``[..., K] @ [K, N]`` with rows independent of each other (see above)."""
    flat, rows = _pad_rows(x)
    return (flat @ matrix)[:rows].reshape(*x.shape[:-1], matrix.shape[1])


#: oneDNN convolves a batch of one on another path than a batch of two or more (whose per-note
#: results agree with each other bit for bit, measured as above, at 1 and 2 threads).
MIN_CONV_BATCH = 2


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose result for one input is bit-identical in any batch. ``[B, C, H, W]``.

    A single input runs as a batch of two; the input is made contiguous (NCHW) first, because
    a channels-last input (a permuted embedding, say) takes a path whose sums depend on the batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        if x.shape[0] >= MIN_CONV_BATCH:
            return super().forward(x)
        pad = x.new_zeros((MIN_CONV_BATCH - x.shape[0], *x.shape[1:]))
        return super().forward(torch.cat([x, pad]))[: x.shape[0]]


class Linear(nn.Linear):
    """``nn.Linear`` computed with :func:`batch_invariant_linear` (same parameters and state dict).

    A note generated alone, in a batch of 3 or in a batch of 16 then gets bit-identical numbers.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_invariant_linear(x, self.weight, self.bias)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels``."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(silu(norm(conv(silu(norm(x))))))``. ``[B, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(channels), nn.SiLU(), Conv2d(channels, channels, 3, padding=1),
            group_norm(channels), nn.SiLU(), Conv2d(channels, channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Downsample(nn.Module):
    """Strided conv: ``[B, C_in, H, W]`` -> ``[B, C_out, H / sh, W / sw]``."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int]) -> None:
        super().__init__()
        kernel = tuple(2 * s - 1 if s > 1 else 3 for s in stride)
        pad = tuple(k // 2 for k in kernel)
        self.conv = Conv2d(c_in, c_out, kernel, stride=stride, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest upsampling then a 3x3 conv: ``[B, C_in, H, W]`` -> ``[B, C_out, H * sh, W * sw]``."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.stride = stride
        self.conv = Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = nn.functional.interpolate(x, scale_factor=self.stride, mode="nearest")
        return self.conv(x)
