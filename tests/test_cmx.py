"""CMX: bit-exact round trips over random shapes and dtypes, the tile layout, and clear errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mars_model.cmx import demultiplex, multiplex

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8,
          torch.bool, torch.complex64]  # fmt: skip


def _random(shape, dtype, gen):
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, generator=gen, dtype=dtype)
    if dtype.is_floating_point:
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * 1e3
        return x.to(dtype)
    return torch.randint(0, 200, shape, generator=gen).to(dtype)


def _bits(x: torch.Tensor) -> torch.Tensor:
    """A view whose equality is bitwise (so -0.0, NaN payloads etc. count)."""
    if x.dtype.is_complex:
        x = torch.view_as_real(x)
    if x.dtype.is_floating_point:
        return x.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()])
    return x


@settings(max_examples=200, deadline=None)
@given(
    b=st.integers(1, 3), c=st.integers(1, 3), f_tiles=st.integers(1, 6), t_tiles=st.integers(1, 6),
    rf=st.integers(1, 8), rt=st.integers(1, 8), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 999),
)  # fmt: skip
def test_round_trip_is_bit_exact(b, c, f_tiles, t_tiles, rf, rt, dtype, seed):
    x = _random((b, c, f_tiles * rf, t_tiles * rt), dtype, torch.Generator().manual_seed(seed))
    y = multiplex(x, (rf, rt))
    assert y.shape == (b, c * rf * rt, f_tiles, t_tiles)
    assert y.dtype == x.dtype
    assert torch.equal(_bits(demultiplex(y, (rf, rt))), _bits(x))


def test_round_trip_keeps_nan_and_negative_zero():
    x = torch.tensor([float("nan"), -0.0, float("inf"), 1.0]).reshape(1, 1, 2, 2)
    assert torch.equal(_bits(demultiplex(multiplex(x, (2, 2)), (2, 2))), _bits(x))


def test_default_spectrogram_shape():
    x = torch.randn(2, 1, 512, 256)
    assert multiplex(x, (8, 4)).shape == (2, 32, 64, 64)


def test_tile_layout_is_space_to_depth():
    """Channel i*rt+j of output pixel (p, q) is input pixel (p*rf+i, q*rt+j)."""
    rf, rt = 4, 2
    x = torch.arange(2 * 8 * 6).reshape(1, 2, 8, 6)
    y = multiplex(x, (rf, rt))
    for c in range(2):
        for i in range(rf):
            for j in range(rt):
                assert torch.equal(y[0, c * rf * rt + i * rt + j], x[0, c, i::rf, j::rt])


def test_square_factors_match_pixel_unshuffle():
    x = torch.randn(2, 3, 12, 8)
    assert torch.equal(multiplex(x, (4, 4)), torch.nn.functional.pixel_unshuffle(x, 4))


def test_adjacent_bins_land_in_adjacent_channels_of_one_pixel():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 0] = 1.0  # frequency offset 1, time offset 0 of the first tile
    y = multiplex(x, (2, 2))
    assert y[0, 2, 0, 0] == 1.0 and y.sum() == 1.0


@pytest.mark.parametrize("shape,factors", [((1, 1, 510, 256), (8, 4)), ((2, 1, 512, 250), (8, 4))])
def test_indivisible_shape_names_shape_and_factors(shape, factors):
    with pytest.raises(ValueError) as err:
        multiplex(torch.zeros(shape), factors)
    message = str(err.value)
    assert f"rf={factors[0]}" in message and f"rt={factors[1]}" in message
    assert f"F={shape[2]}" in message and f"T={shape[3]}" in message


def test_bad_arguments():
    with pytest.raises(ValueError, match="four|\\[B, C, F, T\\]"):
        multiplex(torch.zeros(4, 4), (2, 2))
    with pytest.raises(ValueError, match="positive integers"):
        multiplex(torch.zeros(1, 1, 4, 4), (0, 2))
    with pytest.raises(ValueError, match="multiple of rf\\*rt"):
        demultiplex(torch.zeros(1, 3, 4, 4), (2, 1))
