"""Complex layers against references written with plain complex arithmetic (numpy loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mars_model.complex_layers import (
    Cardioid,
    ComplexAxialAttention,
    ComplexConv,
    ComplexConvTranspose,
    ComplexGroupNorm,
    ModReLU,
    stack_complex,
    unstack_complex,
)


def _weights(layer) -> np.ndarray:
    return (layer.weight_real + 1j * layer.weight_imag).detach().numpy().astype(np.complex128)


def _bias(layer) -> np.ndarray:
    b = layer.bias.detach().double().numpy()
    half = len(b) // 2
    return b[:half] + 1j * b[half:]


def _rand_complex(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


@pytest.mark.parametrize(
    "stride,padding,dilation",
    [((1, 1), (1, 1), (1, 1)), ((2, 1), (1, 2), (1, 2)), ((3, 2), (0, 1), (1, 1))],
)
def test_conv2d_matches_direct_complex_sum(stride, padding, dilation):
    torch.manual_seed(0)
    layer = ComplexConv(3, 4, (3, 3), stride, padding, dilation)
    with torch.no_grad():
        layer.bias.normal_()
    z = _rand_complex(2, 3, 7, 6)
    got = layer(z).detach().numpy()
    w, b = _weights(layer), _bias(layer)
    x = np.pad(
        z.numpy().astype(np.complex128), ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2)
    )
    out_h = (x.shape[2] - dilation[0] * 2 - 1) // stride[0] + 1
    out_w = (x.shape[3] - dilation[1] * 2 - 1) // stride[1] + 1
    ref = np.zeros((2, 4, out_h, out_w), dtype=np.complex128)
    for n in range(2):
        for o in range(4):
            for i in range(out_h):
                for j in range(out_w):
                    acc = b[o]
                    for c in range(3):
                        for ki in range(3):
                            for kj in range(3):
                                acc += (
                                    w[o, c, ki, kj]
                                    * x[
                                        n,
                                        c,
                                        i * stride[0] + ki * dilation[0],
                                        j * stride[1] + kj * dilation[1],
                                    ]
                                )
                    ref[n, o, i, j] = acc
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_conv1d_matches_direct_complex_sum():
    torch.manual_seed(1)
    layer = ComplexConv(2, 3, 3, padding=1, dims=1)
    z = _rand_complex(1, 2, 5)
    got = layer(z).detach().numpy()[0]
    w, b = _weights(layer), _bias(layer)
    x = np.pad(z.numpy()[0].astype(np.complex128), ((0, 0), (1, 1)))
    ref = np.array(
        [
            [
                b[o] + sum(w[o, c, k] * x[c, t + k] for c in range(2) for k in range(3))
                for t in range(5)
            ]
            for o in range(3)
        ]
    )
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stride,padding", [((2, 1), (1, 1)), ((4, 2), (2, 1))])
def test_transposed_conv_matches_direct_scatter(stride, padding):
    torch.manual_seed(2)
    kernel = (2 * stride[0], 2 * stride[1] if stride[1] > 1 else 3)
    layer = ComplexConvTranspose(3, 2, kernel, stride, padding)
    z = _rand_complex(1, 3, 4, 5)
    got = layer(z).detach().numpy()[0]
    w, b = _weights(layer), _bias(layer)  # w: [in, out, kh, kw]
    x = z.numpy()[0].astype(np.complex128)
    full_h, full_w = (4 - 1) * stride[0] + kernel[0], (5 - 1) * stride[1] + kernel[1]
    full = np.zeros((2, full_h, full_w), dtype=np.complex128)
    for c in range(3):
        for i in range(4):
            for j in range(5):
                for o in range(2):
                    full[
                        o,
                        i * stride[0] : i * stride[0] + kernel[0],
                        j * stride[1] : j * stride[1] + kernel[1],
                    ] += w[c, o] * x[c, i, j]
    ref = (
        full[:, padding[0] : full_h - padding[0], padding[1] : full_w - padding[1]]
        + b[:, None, None]
    )
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_stacked_and_complex_inputs_agree():
    torch.manual_seed(3)
    z = _rand_complex(2, 4, 6, 5)
    for layer in (ComplexConv(4, 4, 3, padding=1), ComplexGroupNorm(2, 4), ModReLU(4), Cardioid(),
                  ComplexAxialAttention(4, 2, "freq"), ComplexAxialAttention(4, 2, "time", window=2)):  # fmt: skip
        a = layer(z)
        b = unstack_complex(layer(stack_complex(z)))
        assert a.is_complex()
        torch.testing.assert_close(a, b)


def test_group_norm_whitens_to_identity_covariance():
    # strongly correlated, offset real and imaginary parts
    g = torch.Generator().manual_seed(4)
    base = torch.randn(3, 8, 10, 12, generator=g)
    z = torch.complex(3 * base + 1.0, 2 * base + 0.5 * torch.randn(3, 8, 10, 12, generator=g) - 2.0)
    out = ComplexGroupNorm(2, 8, affine=False)(z)
    groups = out.reshape(3, 2, -1)
    xr, xi = groups.real.double(), groups.imag.double()
    for stat, want in ((xr.mean(-1), 0.0), (xi.mean(-1), 0.0), ((xr * xr).mean(-1), 1.0),
                       ((xi * xi).mean(-1), 1.0), ((xr * xi).mean(-1), 0.0)):  # fmt: skip
        torch.testing.assert_close(stat, torch.full_like(stat, want), atol=2e-3, rtol=0)


def test_group_norm_affine_starts_at_unit_power():
    z = _rand_complex(2, 4, 8, 8, seed=5) * 7 + 3
    out = ComplexGroupNorm(4, 4)(z)
    power = (out.abs() ** 2).mean().item()
    assert abs(power - 1.0) < 1e-2


def test_modrelu_and_cardioid_match_their_formulas():
    z = _rand_complex(2, 3, 4, seed=6)
    act = ModReLU(3, init_bias=-0.7)
    mod = z.abs()
    ref = torch.where(mod - 0.7 > 0, (mod - 0.7) / mod, torch.zeros_like(mod)) * z
    torch.testing.assert_close(act(z), ref, atol=1e-5, rtol=1e-5)
    ref_c = 0.5 * (1 + torch.cos(torch.angle(z))) * z
    torch.testing.assert_close(Cardioid()(z), ref_c, atol=1e-5, rtol=1e-5)
    real_axis = torch.tensor([[2.0 + 0j, -2.0 + 0j]])
    torch.testing.assert_close(
        Cardioid()(real_axis), torch.tensor([[2.0 + 0j, 0j]]), atol=1e-6, rtol=0
    )


def _reference_attention(layer: ComplexAxialAttention, seq: np.ndarray) -> np.ndarray:
    """Plain complex attention over the last axis of ``seq`` ``[C, L]`` (after the layer's norm)."""
    c, length = seq.shape
    h, d = layer.heads, c // layer.heads
    wqkv = _weights(layer.qkv)[:, :, 0]
    q, k, v = np.split(wqkv @ seq, 3, axis=0)
    out = np.zeros((c, length), dtype=np.complex128)
    for head in range(h):
        rows = slice(head * d, (head + 1) * d)
        scores = np.real(q[rows].T @ np.conj(k[rows])) / np.sqrt(d)  # [L, L]: Re(q_i . conj(k_j))
        weights = np.exp(scores - scores.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        out[rows] = v[rows] @ weights.T
    return _weights(layer.out)[:, :, 0] @ out + _bias(layer.out)[:, None]


@pytest.mark.parametrize("axis,window", [("freq", 0), ("time", 0), ("time", 3)])
def test_axial_attention_matches_plain_complex_attention(axis, window):
    torch.manual_seed(7)
    layer = ComplexAxialAttention(4, heads=2, axis=axis, window=window)
    with torch.no_grad():
        layer.out.weight_real.mul_(10)
        layer.out.bias.normal_()
    z = _rand_complex(1, 4, 5, 7, seed=8)
    got = layer(z).detach().numpy()[0]
    normed = layer.norm(z).detach().numpy()[0].astype(np.complex128)
    ref = z.numpy()[0].astype(np.complex128).copy()
    if axis == "freq":
        for t in range(7):
            ref[:, :, t] += _reference_attention(layer, normed[:, :, t])
    else:
        w = window or 7
        for f in range(5):
            for start in range(0, 7, w):  # the last window is partial: padded frames are masked
                ref[:, f, start : start + w] += _reference_attention(
                    layer, normed[:, f, start : start + w]
                )
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_gradients_reach_real_and_imaginary_weights():
    layer = ComplexConv(2, 2, 3, padding=1)
    z = _rand_complex(1, 2, 4, 4, seed=9)
    loss = layer(z).abs().pow(2).sum()
    loss.backward()
    assert layer.weight_real.grad.abs().sum() > 0 and layer.weight_imag.grad.abs().sum() > 0
    # Wirtinger: for L = sum |Wz|^2, dL/dWr + i dL/dWi = 2 * sum (Wz) conj(z) (the conj-Wirtinger gradient x2)
    w = _weights(layer)
    x = np.pad(z.detach().numpy()[0].astype(np.complex128), ((0, 0), (1, 1), (1, 1)))
    y = layer(z).detach().numpy()[0].astype(np.complex128)
    ref = np.zeros_like(w)
    for o in range(2):
        for c in range(2):
            for ki in range(3):
                for kj in range(3):
                    ref[o, c, ki, kj] = 2 * np.sum(y[o] * np.conj(x[c, ki : ki + 4, kj : kj + 4]))
    grad = (layer.weight_real.grad + 1j * layer.weight_imag.grad).numpy().astype(np.complex128)
    np.testing.assert_allclose(grad, ref, rtol=1e-3, atol=1e-3)
