"""CMX (channel multiplexing): a lossless reshape of a spectrogram into fewer pixels and more channels.

``multiplex`` is space-to-depth over (frequency, time): each ``rf x rt`` tile of the
input becomes one pixel with ``rf * rt`` channels, so neighbouring bins and frames land
in neighbouring channels (a chessboard of phases across the channel axis). It is a pure
permutation of elements, so ``demultiplex(multiplex(x))`` equals ``x`` bit for bit, in
any dtype.

Channel order of the output: channel ``c * rf * rt + i * rt + j`` holds input channel
``c`` at frequency offset ``i`` and time offset ``j`` of each tile.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check_factors(factors: Sequence[int]) -> tuple[int, int]:
    if len(factors) != 2 or any(not isinstance(f, int) or f < 1 for f in factors):
        raise ValueError(
            f"CMX factors must be two positive integers (rf, rt), got {tuple(factors)}"
        )
    return int(factors[0]), int(factors[1])


def multiplex(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Fold ``rf x rt`` tiles of frequency and time into channels.

    Args:
        x: ``[B, C, F, T]`` tensor of any dtype.
        factors: ``(rf, rt)``; ``rf`` must divide ``F`` and ``rt`` must divide ``T``.
    Returns:
        ``[B, C * rf * rt, F / rf, T / rt]``.
    Raises:
        ValueError: if ``x`` is not 4-D or the factors do not divide its shape.
    """
    rf, rt = _check_factors(factors)
    if x.dim() != 4:
        raise ValueError(f"CMX expects a [B, C, F, T] tensor, got shape {tuple(x.shape)}")
    b, c, f, t = x.shape
    if f % rf or t % rt:
        raise ValueError(
            f"CMX factors (rf={rf}, rt={rt}) do not divide the spectrogram shape "
            f"[B={b}, C={c}, F={f}, T={t}]: F must be a multiple of rf and T of rt"
        )
    tiles = x.reshape(b, c, f // rf, rf, t // rt, rt)
    return tiles.permute(0, 1, 3, 5, 2, 4).reshape(b, c * rf * rt, f // rf, t // rt)


def demultiplex(y: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Exact inverse of :func:`multiplex`.

    Args:
        y: ``[B, C * rf * rt, F', T']`` tensor.
        factors: the ``(rf, rt)`` used to multiplex.
    Returns:
        ``[B, C, F' * rf, T' * rt]``.
    Raises:
        ValueError: if ``y`` is not 4-D or its channels are not a multiple of ``rf * rt``.
    """
    rf, rt = _check_factors(factors)
    if y.dim() != 4:
        raise ValueError(f"CMX expects a [B, C, F, T] tensor, got shape {tuple(y.shape)}")
    b, cm, f, t = y.shape
    if cm % (rf * rt):
        raise ValueError(
            f"cannot demultiplex shape [B={b}, C={cm}, F={f}, T={t}] with factors "
            f"(rf={rf}, rt={rt}): channels must be a multiple of rf*rt={rf * rt}"
        )
    c = cm // (rf * rt)
    tiles = y.reshape(b, c, rf, rt, f, t)
    return tiles.permute(0, 1, 4, 2, 5, 3).reshape(b, c, f * rf, t * rt)
