"""Multi-scale residual vector quantization with ONE codebook shared by all scales (VAR style).

For scales ``(h_1, w_1) .. (h_K, w_K)`` (coarse to fine, the last equal to the latent
grid), quantization of a latent ``f`` ``[B, D, H, W]`` goes::

    rest = f ; f_hat = 0
    for k:  r_k   = area_downsample(rest, (h_k, w_k))
            idx_k = nearest code of r_k in the shared codebook          [B, h_k, w_k]
            z_k   = refine_k(upsample(codebook[idx_k], (H, W)))         [B, D, H, W]
            f_hat += z_k ; rest -= z_k

The decoder decodes ``f_hat``. ``refine_k`` is a small 3x3 convolution blended in with
ratio 0.5 (VAR's "phi"); a few of them are shared across scales by relative position.
The straight-through estimator passes decoder gradients to the encoder; a commitment
loss pulls encoder outputs to their codes. Codebook usage is tracked with an
exponential moving average and codes unused for a while are restarted on random
residuals of the current batch (the cure for codebook collapse).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mars_model.modules import Conv2d


class Refine(nn.Module):
    """``x -> (1 - r) * x + r * conv3x3(x)``: a light correction after upsampling a scale."""

    def __init__(self, dim: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.conv = Conv2d(dim, dim, 3, padding=1)
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(1 - self.ratio) + self.conv(x).mul_(self.ratio)


class MultiScaleResidualVQ(nn.Module):
    """Quantize ``[B, D, H, W]`` latents into one token map per scale with a shared codebook.

    Args:
        dim: latent channels D.
        codebook_size: number of codes V (one codebook for every scale).
        scales: ``[(h, w), ...]`` coarse to fine; the last must be the latent grid ``(H, W)``.
        n_refine: number of refinement convolutions shared across scales.
        beta: commitment weight.
        dead_after: a code whose usage EMA falls below ``1 / (dead_after * V)`` is restarted on a
            random residual vector that the lookup actually saw (at any scale).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        scales: Sequence[tuple[int, int]],
        n_refine: int = 4,
        beta: float = 0.25,
        dead_after: float = 10.0,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.scales = [tuple(int(v) for v in s) for s in scales]
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim) / dim**0.5)
        self.refine = nn.ModuleList(Refine(dim) for _ in range(n_refine))
        self.beta, self.dead_after, self.usage_decay = beta, dead_after, usage_decay
        self.register_buffer("usage", torch.full((codebook_size,), 1.0 / codebook_size))

    @property
    def grid(self) -> tuple[int, int]:
        return self.scales[-1]

    @property
    def tokens_per_item(self) -> int:
        return sum(h * w for h, w in self.scales)

    def _refine_for(self, k: int) -> Refine:
        # Scale k uses the refinement nearest its relative position in the pyramid.
        pos = k / max(1, len(self.scales) - 1)
        return self.refine[min(len(self.refine) - 1, int(round(pos * (len(self.refine) - 1))))]

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each vector. ``x`` ``[..., D]`` -> ``[...]`` long."""
        flat = x.reshape(-1, self.dim)
        dist = (
            flat.pow(2).sum(1, keepdim=True)
            - 2 * flat @ self.codebook.t()
            + self.codebook.pow(2).sum(1)[None]
        )
        return dist.argmin(1).reshape(x.shape[:-1])

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Codes of ``idx`` ``[B, h, w]`` as ``[B, D, h, w]``."""
        return F.embedding(idx, self.codebook).permute(0, 3, 1, 2)

    def _upsample(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """Codes of scale k ``[B, D, h_k, w_k]`` -> refined contribution ``[B, D, H, W]``."""
        if tuple(z.shape[-2:]) != self.grid:
            z = F.interpolate(z, size=self.grid, mode="bicubic", align_corners=False)
        return self._refine_for(k)(z)

    @staticmethod
    def _down(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="area")

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Quantize ``f`` ``[B, D, H, W]``.

        Returns:
            ``(f_hat, indices, vq_loss)``: the straight-through quantized latent
            ``[B, D, H, W]``, one ``[B, h_k, w_k]`` index map per scale, and the
            codebook + commitment loss (a scalar).
        """
        rest, f_hat = f.detach(), torch.zeros_like(f)
        indices, loss = [], f.new_zeros(())
        counts = torch.zeros(self.codebook_size, device=f.device)
        looked_up = []
        for k, size in enumerate(self.scales):
            r_k = self._down(rest, size)
            looked_up.append(r_k.permute(0, 2, 3, 1).reshape(-1, self.dim))
            idx = self.nearest(r_k.permute(0, 2, 3, 1))
            indices.append(idx)
            counts += torch.bincount(idx.flatten(), minlength=self.codebook_size).float()
            z = self._upsample(self.embed(idx), k)
            f_hat = f_hat + z
            rest = rest - z.detach()
            loss = loss + F.mse_loss(f_hat, f.detach()) + self.beta * F.mse_loss(f, f_hat.detach())
        loss = loss / len(self.scales)
        if self.training:
            self._track_usage(counts, torch.cat(looked_up))
        return f + (f_hat - f).detach(), indices, loss

    @torch.no_grad()
    def _track_usage(self, counts: torch.Tensor, pool: torch.Tensor) -> None:
        """Update the usage EMA and restart dead codes on vectors from ``pool`` ``[N, D]``.

        ``pool`` holds what the nearest-code lookup saw at every scale: residuals, which
        shrink scale after scale. Restarting on raw latents instead would park codes where
        no fine-scale lookup ever goes.
        """
        self.usage.mul_(self.usage_decay).add_(counts / counts.sum(), alpha=1 - self.usage_decay)
        dead = self.usage < 1.0 / (self.dead_after * self.codebook_size)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(0, pool.shape[0], (n_dead,), device=pool.device)
        self.codebook.data[dead] = pool[pick] + 0.01 * pool.std() * torch.randn_like(pool[pick])
        self.usage[dead] = 1.0 / self.codebook_size

    @torch.no_grad()
    def usage_fraction(self, indices: Sequence[torch.Tensor]) -> float:
        """Share of the codebook used by ``indices`` (all scales together)."""
        used = torch.zeros(self.codebook_size, dtype=torch.bool, device=self.codebook.device)
        for idx in indices:
            used[idx.flatten()] = True
        return float(used.float().mean())

    # -- the pieces the autoregressor uses ------------------------------------------------
    def indices_to_latent(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sum the refined contributions of the given scales: ``[B, D, H, W]``."""
        f_hat = None
        for k, idx in enumerate(indices):
            z = self._upsample(self.embed(idx), k)
            f_hat = z if f_hat is None else f_hat + z
        return f_hat

    def add_scale(self, f_hat: torch.Tensor | None, k: int, idx: torch.Tensor) -> torch.Tensor:
        """Add scale ``k``'s codes ``idx`` ``[B, h_k, w_k]`` to the running latent ``f_hat``."""
        z = self._upsample(self.embed(idx), k)
        return z if f_hat is None else f_hat + z

    def next_input(self, f_hat: torch.Tensor, k: int) -> torch.Tensor:
        """The autoregressor's input for scale ``k + 1``: ``f_hat`` area-downsampled to it."""
        return self._down(f_hat, self.scales[k + 1])

    def teacher_inputs(self, indices: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Inputs of scales 2..n given the token maps of scales 1..n (teacher forcing).

        Returns ``[B, D, h_k, w_k]`` for k = 2..n (n - 1 maps; n = K in training).
        """
        inputs, f_hat = [], None
        for k in range(len(indices) - 1):
            f_hat = self.add_scale(f_hat, k, indices[k])
            inputs.append(self.next_input(f_hat, k))
        return inputs
