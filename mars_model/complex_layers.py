"""Complex-valued layers (EuleroDec style): convolutions, whitening norm, activations, axial attention.

Every layer takes either a ``torch.complex64`` tensor ``[B, C, ...]`` or the same values
*stacked* as a real tensor ``[B, 2C, ...]`` (the C real parts, then the C imaginary parts)
and returns the same kind it was given. Networks keep the stacked form between layers:
it is the same arithmetic without a conversion per layer (on CPU the conversions cost
more than the convolutions). The parameters are real pairs (``weight_real``,
``weight_imag``), so optimizers see plain real tensors and autograd applies the
Wirtinger calculus for us (for a real loss ``L`` of a complex ``z``, the gradient torch
stores is ``dL/d(conj z)``, the steepest-ascent direction).

Convolutions run as one real convolution on the stacked ``[Re; Im]`` channels with the
block weight ``[[Wr, -Wi], [Wi, Wr]]``: the same arithmetic as the four real
convolutions of ``(Wr + iWi)(xr + ixi)``, in one call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def stack_complex(z: torch.Tensor) -> torch.Tensor:
    """``[B, C, ...]`` complex -> ``[B, 2C, ...]`` real (real parts, then imaginary parts)."""
    return torch.cat([z.real, z.imag], dim=1)


def unstack_complex(x: torch.Tensor) -> torch.Tensor:
    """``[B, 2C, ...]`` real -> ``[B, C, ...]`` complex (inverse of :func:`stack_complex`)."""
    real, imag = x.chunk(2, dim=1)
    return torch.complex(real.contiguous(), imag.contiguous())


def _as_stacked(z: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(stacked real tensor, whether the input was complex)``."""
    return (stack_complex(z), True) if z.is_complex() else (z, False)


def _restore(x: torch.Tensor, was_complex: bool) -> torch.Tensor:
    return unstack_complex(x) if was_complex else x


def _block_weight(
    w_real: torch.Tensor, w_imag: torch.Tensor, transposed: bool = False
) -> torch.Tensor:
    """The real weight that multiplies stacked ``[Re; Im]`` channels like ``Wr + iWi``.

    Conv weights are ``[out, in, ...]``: rows are outputs. Transposed-conv weights are
    ``[in, out, ...]``: the block matrix is transposed accordingly.
    """
    if not transposed:
        top = torch.cat([w_real, -w_imag], dim=1)
        bottom = torch.cat([w_imag, w_real], dim=1)
    else:
        top = torch.cat([w_real, w_imag], dim=1)
        bottom = torch.cat([-w_imag, w_real], dim=1)
    return torch.cat([top, bottom], dim=0)


def _complex_init(shape: tuple[int, ...], fan_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rayleigh-modulus, uniform-phase init with ``E|w|^2 = 1 / fan_in`` (Trabelsi et al. 2018)."""
    sigma = 1.0 / math.sqrt(2.0 * fan_in)
    modulus = _rayleigh(shape, sigma)
    phase = torch.rand(shape) * 2 * math.pi - math.pi
    return modulus * torch.cos(phase), modulus * torch.sin(phase)


def _rayleigh(shape: tuple[int, ...], sigma: float) -> torch.Tensor:
    u = torch.rand(shape).clamp_min(1e-12)
    return sigma * torch.sqrt(-2.0 * torch.log(u))


class ComplexConv(nn.Module):
    """Complex N-d convolution (N = 1 or 2).

    Input ``[B, C_in, *S]`` complex -> output ``[B, C_out, *S']`` complex, with
    ``y = sum_k (Wr + iWi)[k] x[s + k] + b`` and ``S'`` as for the real convolution with the
    same ``stride``/``padding``/``dilation``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, ...], stride=1, padding=0,
                 dilation=1, dims: int = 2, bias: bool = True) -> None:  # fmt: skip
        super().__init__()
        kernel = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
        self.dims, self.stride, self.padding, self.dilation = dims, stride, padding, dilation
        fan_in = c_in * math.prod(kernel)
        w_real, w_imag = _complex_init((c_out, c_in, *kernel), fan_in)
        self.weight_real, self.weight_imag = nn.Parameter(w_real), nn.Parameter(w_imag)
        self.bias = nn.Parameter(torch.zeros(2 * c_out)) if bias else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d if self.dims == 2 else F.conv1d
        x, was_complex = _as_stacked(z)
        weight = _block_weight(self.weight_real, self.weight_imag)
        return _restore(
            conv(x, weight, self.bias, self.stride, self.padding, self.dilation), was_complex
        )


class ComplexConvTranspose(nn.Module):
    """Complex N-d transposed convolution (N = 1 or 2), the adjoint-shaped twin of :class:`ComplexConv`.

    Input ``[B, C_in, *S]`` complex -> output ``[B, C_out, *S']`` complex with
    ``S' = (S - 1) * stride - 2 * padding + kernel + output_padding``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, ...], stride=1, padding=0,
                 output_padding=0, dims: int = 2, bias: bool = True) -> None:  # fmt: skip
        super().__init__()
        kernel = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
        self.dims, self.stride, self.padding, self.output_padding = (
            dims,
            stride,
            padding,
            output_padding,
        )
        stride_t = (stride,) * dims if isinstance(stride, int) else tuple(stride)
        fan_in = c_in * math.prod(kernel) // math.prod(stride_t)
        w_real, w_imag = _complex_init((c_in, c_out, *kernel), max(1, fan_in))
        self.weight_real, self.weight_imag = nn.Parameter(w_real), nn.Parameter(w_imag)
        self.bias = nn.Parameter(torch.zeros(2 * c_out)) if bias else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        conv_t = F.conv_transpose2d if self.dims == 2 else F.conv_transpose1d
        x, was_complex = _as_stacked(z)
        weight = _block_weight(self.weight_real, self.weight_imag, transposed=True)
        y = conv_t(x, weight, self.bias, self.stride, self.padding, self.output_padding)
        return _restore(y, was_complex)


def whiten_2x2(vrr: torch.Tensor, vri: torch.Tensor, vii: torch.Tensor):
    """Entries of ``V^(-1/2)`` for the symmetric positive 2x2 matrices ``V = [[vrr, vri], [vri, vii]]``.

    Closed form: with ``s = sqrt(det V)`` and ``t = sqrt(trace V + 2s)``,
    ``V^(-1/2) = [[vii + s, -vri], [-vri, vrr + s]] / (s t)``.
    """
    s = torch.sqrt((vrr * vii - vri * vri).clamp_min(1e-12))
    t = torch.sqrt(vrr + vii + 2 * s)
    inv = 1.0 / (s * t)
    return (vii + s) * inv, -vri * inv, (vrr + s) * inv


class ComplexGroupNorm(nn.Module):
    """Complex group norm with 2x2 whitening (Trabelsi et al.'s complex BN, per sample and group).

    For each sample and group of channels, the complex values are centred and their
    real/imaginary covariance is whitened to the identity (``V^(-1/2)``), then an affine
    ``[[g_rr, g_ri], [g_ri, g_ii]] x + beta`` per channel (initialised to ``I / sqrt(2)``, so
    that ``E|z|^2 = 1``). Statistics are per sample, so training and inference agree and
    batch size 1 works. ``[B, C, *S]`` complex -> same shape.
    """

    def __init__(self, groups: int, channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels ({channels}) must be divisible by groups ({groups})")
        self.groups, self.eps, self.affine = groups, eps, affine
        if affine:
            self.gamma_rr = nn.Parameter(torch.full((channels,), 1 / math.sqrt(2)))
            self.gamma_ii = nn.Parameter(torch.full((channels,), 1 / math.sqrt(2)))
            self.gamma_ri = nn.Parameter(torch.zeros(channels))
            self.beta = nn.Parameter(torch.zeros(2, channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x, was_complex = _as_stacked(z)
        b, c2 = x.shape[:2]
        c, spatial = c2 // 2, x.shape[2:]
        g = x.reshape(b, 2, self.groups, -1)
        g = g - g.mean(-1, keepdim=True)
        xr, xi = g[:, 0], g[:, 1]
        vrr = (xr * xr).mean(-1, keepdim=True) + self.eps
        vii = (xi * xi).mean(-1, keepdim=True) + self.eps
        vri = (xr * xi).mean(-1, keepdim=True)
        wrr, wri, wii = whiten_2x2(vrr, vri, vii)
        yr = (wrr * xr + wri * xi).reshape(b, c, *spatial)
        yi = (wri * xr + wii * xi).reshape(b, c, *spatial)
        if self.affine:
            shape = (1, c) + (1,) * len(spatial)
            grr, gri, gii = (p.view(shape) for p in (self.gamma_rr, self.gamma_ri, self.gamma_ii))
            yr, yi = (
                grr * yr + gri * yi + self.beta[0].view(shape),
                gri * yr + gii * yi + self.beta[1].view(shape),
            )
        return _restore(torch.cat([yr, yi], dim=1), was_complex)


class ModReLU(nn.Module):
    """modReLU (Arjovsky et al. 2016): ``relu(|z| + b) * z / |z|`` with a learned bias per channel.

    Keeps the phase, thresholds the modulus. ``[B, C, *S]`` complex -> same shape.
    """

    def __init__(self, channels: int, init_bias: float = -0.1, eps: float = 1e-6) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.full((channels,), init_bias))
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x, was_complex = _as_stacked(z)
        pair = x.unflatten(1, (2, -1))  # [B, 2, C, ...] view
        modulus = torch.sqrt(pair.pow(2).sum(1) + self.eps**2)  # [B, C, ...]
        bias = self.bias.view(1, -1, *([1] * (x.dim() - 2)))
        scale = torch.relu(modulus + bias) / modulus
        return _restore((pair * scale.unsqueeze(1)).flatten(1, 2), was_complex)


class Cardioid(nn.Module):
    """Cardioid activation (Virtue et al. 2017): ``0.5 * (1 + cos(arg z)) * z``.

    Passes positive-real values, zeroes negative-real ones, scales by phase in between.
    ``[B, C, *S]`` complex -> same shape.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x, was_complex = _as_stacked(z)
        pair = x.unflatten(1, (2, -1))  # [B, 2, C, ...] view
        modulus = torch.sqrt(pair.pow(2).sum(1) + self.eps**2)
        scale = 0.5 * (1 + pair[:, 0] / modulus)
        return _restore((pair * scale.unsqueeze(1)).flatten(1, 2), was_complex)


def axial_attend(x: torch.Tensor, axis: str, window: int, attend) -> torch.Tensor:
    """Run ``attend`` along one axis of ``x`` ``[B, C, F, T]``; returns the same shape (no residual).

    ``axis="freq"``: one sequence per frame over frequency. ``axis="time"``: sequences of
    ``window`` frames (0 = all), the last window zero-padded and its padding masked.
    ``attend`` maps ``[N, C, L]`` (and an optional ``[N, 1, 1, L]`` key mask) to ``[N, C, L]``.
    Shared by the complex and the real-valued axial attention.
    """
    b, c, f, t = x.shape
    if axis == "freq":
        seq = x.permute(0, 3, 1, 2).reshape(b * t, c, f)
        return attend(seq).reshape(b, t, c, f).permute(0, 2, 3, 1)
    w = window or t
    pad = (-t) % w
    if pad:
        x = F.pad(x, (0, pad))
    nw = (t + pad) // w
    seq = x.reshape(b, c, f, nw, w).permute(0, 2, 3, 1, 4).reshape(b * f * nw, c, w)
    mask = None
    if pad:  # padded frames are never attended to
        valid = torch.arange(nw * w, device=x.device).reshape(nw, w) < t
        mask = valid.view(1, 1, nw, 1, 1, w).expand(b, f, nw, 1, 1, w).reshape(b * f * nw, 1, 1, w)
    y = attend(seq, mask).reshape(b, f, nw, c, w).permute(0, 3, 1, 2, 4).reshape(b, c, f, nw * w)
    return y[..., :t]


class ComplexAxialAttention(nn.Module):
    """Multi-head complex self-attention along one axis (frequency or time) of ``[B, C, F, T]``.

    Queries, keys and values are complex linear maps of the channels. The score of a pair
    is ``Re(q . conj(k)) / sqrt(d)`` (real, so softmax applies), the weights mix the
    complex values, and a complex output projection is added residually:
    ``z + W_o softmax(Re(Q K^H) / sqrt(d)) V``.

    Args:
        channels: ``C`` (divisible by ``heads``).
        heads: attention heads.
        axis: ``"freq"`` (sequences along F, one per time frame) or ``"time"`` (along T, one per bin).
        window: for ``"time"``, attend within non-overlapping windows of this many frames
            (0 = the whole axis); keeps long files and short training crops consistent.
    """

    def __init__(self, channels: int, heads: int = 4, axis: str = "freq", window: int = 0) -> None:
        super().__init__()
        if axis not in ("freq", "time"):
            raise ValueError(f"axis must be 'freq' or 'time', got {axis!r}")
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.axis, self.window = heads, axis, window
        self.norm = ComplexGroupNorm(1, channels)
        self.qkv = ComplexConv(channels, 3 * channels, 1, dims=1, bias=False)
        self.out = ComplexConv(channels, channels, 1, dims=1)
        with torch.no_grad():
            self.out.weight_real.mul_(0.1)
            self.out.weight_imag.mul_(0.1)

    def attend(self, seq: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over sequences: ``[N, C, L]`` complex -> ``[N, C, L]`` complex (no residual).

        ``mask``: optional ``[N, 1, 1, L]`` bool, ``True`` where a key may be attended.
        """
        seq, was_complex = _as_stacked(seq)
        n, c2, length = seq.shape
        c = c2 // 2
        h, d = self.heads, c // self.heads
        # stacked qkv: [N, 2 (re/im), 3 (q/k/v), h, d, L]
        qkv = self.qkv(seq).reshape(n, 2, 3, h, d, length)
        # [N, h, L, 2d] real per q/k/v: Re(q . conj(k)) is the real dot product of [Re, Im] vectors.
        q, k, v = (
            qkv[:, :, j].permute(0, 2, 4, 1, 3).reshape(n, h, length, 2 * d) for j in range(3)
        )
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(d))
        out = mixed.reshape(n, h, length, 2, d).permute(0, 3, 1, 4, 2).reshape(n, c2, length)
        return _restore(self.out(out), was_complex)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, C, F, T]`` complex (or ``[B, 2C, F, T]`` stacked) -> the same shape and kind."""
        x, was_complex = _as_stacked(z)
        out = x + self._mix(self.norm(x))
        return _restore(out, was_complex)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        return axial_attend(x, self.axis, self.window, self.attend)  # x: [B, 2C stacked, F, T]
