"""Residual vector quantization with EMA codebooks, usage tracking and dead-code restarts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EMACodebook(nn.Module):
    """One codebook of ``size`` vectors of ``dim`` reals, learned by EMA k-means (no gradient).

    ``usage`` is the EMA of assignments per step for each code; a code whose usage falls
    under ``dead_threshold`` is restarted from a random vector of the current batch.
    """

    def __init__(
        self, size: int, dim: int, decay: float = 0.99, dead_threshold: float = 0.002
    ) -> None:
        super().__init__()
        self.size, self.dim, self.decay, self.dead_threshold = size, dim, decay, dead_threshold
        self.register_buffer("embed", torch.randn(size, dim) * 0.01)
        self.register_buffer("embed_sum", self.embed.clone())
        self.register_buffer("usage", torch.ones(size))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, dim]`` -> ``[N]`` indices of the nearest codes (squared Euclidean)."""
        dist = (
            x.pow(2).sum(1, keepdim=True) - 2 * x @ self.embed.t() + self.embed.pow(2).sum(1)[None]
        )
        return dist.argmin(dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """``[...]`` indices -> ``[..., dim]`` vectors."""
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def _sample(self, x: torch.Tensor, n: int) -> torch.Tensor:
        idx = torch.randint(0, x.shape[0], (n,), device=x.device)
        return x[idx] + 1e-3 * x.std() * torch.randn(n, self.dim, device=x.device)

    @torch.no_grad()
    def update(self, x: torch.Tensor, codes: torch.Tensor | None) -> None:
        """EMA step on the batch ``x`` ``[N, dim]`` with its assignments ``codes`` ``[N]``.

        The first call (``codes`` may be ``None``) initialises the codes from batch vectors.
        """
        if not bool(self.initialised):
            self.embed.copy_(self._sample(x, self.size))
            self.usage.fill_(x.shape[0] / self.size)
            self.embed_sum.copy_(self.embed * self.usage[:, None])
            self.initialised.fill_(True)
            return
        onehot = F.one_hot(codes, self.size).type(x.dtype)  # [N, size]
        counts = onehot.sum(0)
        sums = onehot.t() @ x
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.embed.copy_(self.embed_sum / self.usage.clamp_min(1e-8)[:, None])
        dead = self.usage < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            fresh = self._sample(x, n_dead)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.broadcast(fresh, 0)
            self.embed[dead] = fresh
            self.usage[dead] = x.shape[0] / self.size
            self.embed_sum[dead] = fresh * self.usage[dead][:, None]
            self.restarts.add_(n_dead)


class ResidualVectorQuantizer(nn.Module):
    """``n_q`` codebooks applied in turn to what the previous ones left.

    ``x`` ``[B, D, T]`` -> quantized ``[B, D, T]`` (sum of the first ``n`` stages' codes),
    codes ``[B, n, T]``. Gradients pass straight through to the encoder; the codebooks move
    by EMA in training mode.
    """

    def __init__(self, dim: int, n_q: int, codebook_size: int, decay: float = 0.99,
                 dead_threshold: float = 0.002) -> None:  # fmt: skip
        super().__init__()
        self.dim, self.n_q, self.codebook_size = dim, n_q, codebook_size
        self.codebooks = nn.ModuleList(
            EMACodebook(codebook_size, dim, decay, dead_threshold) for _ in range(n_q)
        )

    def forward(
        self, x: torch.Tensor, n: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize with the first ``n`` stages (all by default).

        Returns:
            quantized ``[B, D, T]`` (straight-through), codes ``[B, n, T]`` (int64) and the
            commitment loss (mean squared distance of ``x`` to its quantization, scalar).
        """
        n = n or self.n_q
        b, d, t = x.shape
        flat = x.detach().permute(0, 2, 1).reshape(-1, d)
        residual, quantized, codes = flat, torch.zeros_like(flat), []
        for book in self.codebooks[:n]:
            if self.training and not bool(book.initialised):
                book.update(residual, None)
            idx = book.nearest(residual)
            q = book.lookup(idx)
            if (
                self.training
            ):  # EMA step after the lookup: this batch used the codebook it was assigned with
                book.update(residual, idx)
            quantized = quantized + q
            residual = residual - q
            codes.append(idx)
        quantized = quantized.reshape(b, t, d).permute(0, 2, 1)
        commit = F.mse_loss(x, quantized)
        return (
            x + (quantized - x).detach(),
            torch.stack(codes, 1).reshape(b, t, n).permute(0, 2, 1),
            commit,
        )

    def encode(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``[B, D, T]`` -> codes ``[B, n, T]`` (int64)."""
        return self.forward(x, n)[1]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, n, T]`` -> quantized latents ``[B, D, T]`` (any ``n <= n_q``)."""
        out = 0
        for i in range(codes.shape[1]):
            out = out + self.codebooks[i].lookup(codes[:, i])  # [B, T, D]
        return out.permute(0, 2, 1)

    def usage_fraction(self, min_usage: float | None = None) -> torch.Tensor:
        """``[n_q]`` fraction of each codebook's codes in use (EMA usage above ``min_usage``)."""
        out = []
        for book in self.codebooks:
            threshold = book.dead_threshold * 5 if min_usage is None else min_usage
            out.append((book.usage > threshold).float().mean())
        return torch.stack(out)
