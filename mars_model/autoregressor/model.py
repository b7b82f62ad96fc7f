"""Next-scale prediction (VAR style) over the tokenizer's scale pyramid, conditioned by adaptive layer norm.

Sequence layout for scales ``(h_1, w_1) .. (h_K, w_K)``::

    positions  [ scale 1 | scale 2 ............ | ... | scale K ]
    input      [ start   | down(f_hat_1) tokens | ... | down(f_hat_{K-1}) ]
    target     [ idx_1   | idx_2                | ... | idx_K ]

The start token is the condition embedding; the input of scale k > 1 is the running
quantized latent after scales < k, area-downsampled to scale k's grid (teacher forcing
in training, the model's own samples at inference). Attention is block-causal: a token
sees every token of its own and of coarser scales. All tokens of a scale are predicted
in parallel, so generation takes K steps; with a KV cache each step only runs the new
scale's tokens, and every step has a fixed shape.

Conditioning: ``c = instrument + pitch + velocity`` embeddings (instrument may be a
weighted mix: timbre morphing). Every block modulates its layer norms with a scale,
shift and gate computed from ``c`` (adaptive layer norm). For classifier-free guidance
``c`` is replaced by a learned null embedding with probability ``cond_dropout`` in
training, and at inference ``logits = cond + g * (cond - uncond)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mars_model.config import dataclass_from_dict
from mars_model.modules import Linear, batch_invariant_matmul

N_VELOCITY_BUCKETS = 5


@dataclass(frozen=True)
class ARConfig:
    """Architecture of the autoregressor (the ``autoregressor:`` section of a YAML config).

    Args:
        dim: transformer width.
        depth: number of blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden size / ``dim``.
        dropout: attention and MLP dropout in training.
        cond_dropout: probability of replacing the condition by the null one (CFG).
        n_instruments: size of the instrument table (GM programs: 128).
        n_pitches: size of the pitch table (MIDI: 128).
    """

    dim: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    cond_dropout: float = 0.1
    n_instruments: int = 128
    n_pitches: int = 128

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "autoregressor") -> ARConfig:
        cfg = dataclass_from_dict(cls, raw, where)
        if cfg.dim % cfg.heads:
            from mars_model.errors import MarsError

            raise MarsError(f"{where}.dim ({cfg.dim}) must be a multiple of heads ({cfg.heads})")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Condition(nn.Module):
    """Instrument (or a weighted mix), pitch and velocity -> ``[B, dim]`` condition vector."""

    def __init__(self, cfg: ARConfig) -> None:
        super().__init__()
        self.instrument = nn.Embedding(cfg.n_instruments, cfg.dim)
        self.pitch = nn.Embedding(cfg.n_pitches, cfg.dim)
        # A smooth pitch feature (log-frequency Fourier features) lets neighbouring pitches share
        # structure, which matters for (instrument, pitch) pairs never seen in training.
        self.register_buffer("freqs", 2.0 ** torch.arange(6, dtype=torch.float32) * math.pi / 128.0)
        self.pitch_smooth = Linear(12, cfg.dim)
        self.velocity = nn.Embedding(N_VELOCITY_BUCKETS, cfg.dim)
        self.null = nn.Parameter(torch.zeros(cfg.dim))

    def forward(self, instrument_weights: torch.Tensor, pitch: torch.Tensor, velocity: torch.Tensor,
                drop: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Args:
            instrument_weights: ``[B, n_instruments]`` mixing weights (one-hot for one instrument).
            pitch: ``[B]`` MIDI pitch. velocity: ``[B]`` velocity bucket 0..4.
            drop: ``[B]`` bool, rows replaced by the null condition.
        Returns: ``[B, dim]``.
        """
        angles = pitch.float()[:, None] * self.freqs
        smooth = self.pitch_smooth(torch.cat([angles.sin(), angles.cos()], dim=1))
        c = batch_invariant_matmul(instrument_weights, self.instrument.weight) + self.pitch(pitch) + smooth + self.velocity(velocity)
        if drop is not None:
            c = torch.where(drop[:, None], self.null.expand_as(c), c)
        return c


class Block(nn.Module):
    """Pre-norm transformer block with adaptive layer norm (scale, shift, gate from the condition)."""

    def __init__(self, cfg: ARConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = Linear(d, 3 * d)
        self.proj = Linear(d, d)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(Linear(d, hidden), nn.GELU(approximate="tanh"), Linear(hidden, d))
        self.ada = Linear(d, 6 * d)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None,
                cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        """Args:
            x: ``[B, L, dim]`` tokens. cond: ``[B, dim]`` (after SiLU).
            mask: ``[L, L_total]`` bool attention mask (True = may attend), or None for all.
            cache: per-block KV cache ``{"k", "v"}``; new keys/values are appended in place.
        Returns: ``[B, L, dim]``.
        """
        b, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + gate1 * self.proj(attn.transpose(1, 2).reshape(b, n, d))
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * F.dropout(self.mlp(h), self.dropout, self.training)


class NextScaleTransformer(nn.Module):
    """Predicts the token maps of a tokenizer's scale pyramid, coarse to fine.

    Args:
        config: the architecture.
        scales: the tokenizer's ``[(h, w), ...]``.
        latent_dim: the tokenizer's code width D (inputs of scales > 1 are ``[B, D, h, w]``).
        vocab: the tokenizer's codebook size V.
    """

    def __init__(self, config: ARConfig, scales: Sequence[tuple[int, int]], latent_dim: int,
                 vocab: int) -> None:  # fmt: skip
        super().__init__()
        self.config = config
        self.scales = [tuple(s) for s in scales]
        self.lengths = [h * w for h, w in self.scales]
        self.offsets = [sum(self.lengths[:k]) for k in range(len(self.scales) + 1)]
        self.vocab, self.latent_dim = vocab, latent_dim
        d = config.dim
        self.condition = Condition(config)
        self.word = Linear(latent_dim, d)
        self.pos = nn.Parameter(torch.randn(self.offsets[-1], d) * 0.02)
        self.level = nn.Embedding(len(self.scales), d)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.head_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.head_ada = Linear(d, 2 * d)
        self.head = Linear(d, vocab)
        levels = torch.cat([torch.full((n,), k) for k, n in enumerate(self.lengths)])
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("mask", levels[:, None] >= levels[None, :], persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for block in self.blocks:  # start every block near the identity (adaLN-zero style gates)
            nn.init.zeros_(block.ada.weight)
            nn.init.zeros_(block.ada.bias)
        nn.init.zeros_(self.head_ada.weight)
        nn.init.zeros_(self.head_ada.bias)

    @property
    def total_tokens(self) -> int:
        return self.offsets[-1]

    def embed_inputs(self, cond: torch.Tensor, scale_inputs: Sequence[torch.Tensor], first: int) -> torch.Tensor:
        """Token embeddings for scales ``first .. first + len(...) - 1``.

        Args:
            cond: ``[B, dim]`` condition (the start token of scale 0).
            scale_inputs: for each scale k >= max(first, 1) in range, ``[B, D, h_k, w_k]``.
            first: index of the first scale embedded.
        Returns: ``[B, L, dim]``.
        """
        parts = []
        inputs = iter(scale_inputs)
        k = first
        if first == 0:
            parts.append(cond[:, None])
            k = 1
        for x in inputs:
            parts.append(self.word(x.flatten(2).transpose(1, 2)))
            k += 1
        tokens = torch.cat(parts, dim=1)
        lo, hi = self.offsets[first], self.offsets[k]
        return tokens + self.pos[lo:hi] + self.level(self.levels[lo:hi])

    def head_logits(self, x: torch.Tensor, cond_act: torch.Tensor) -> torch.Tensor:
        """Output head: ``[B, L, dim]`` token states and ``[B, dim]`` SiLU(condition) -> ``[B, L, V]``."""
        shift, scale = self.head_ada(cond_act)[:, None].chunk(2, dim=-1)
        return self.head(self.head_norm(x) * (1 + scale) + shift)

    def prefix_logits(self, cond: torch.Tensor, scale_inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits of every token of the first ``len(scale_inputs) + 1`` scales, recomputed from scratch.

        Args:
            cond: ``[B, dim]`` condition (or the null condition).
            scale_inputs: ``[B, D, h_k, w_k]`` for k = 2 .. n (teacher inputs or the model's own).
        Returns: ``[B, offsets[n], V]``.
        """
        cond_act = F.silu(cond)
        x = self.embed_inputs(cond, scale_inputs, 0)
        hi = x.shape[1]
        mask = self.mask[:hi, :hi]
        for block in self.blocks:
            x = block(x, cond_act, mask)
        return self.head_logits(x, cond_act)

    def forward(self, instrument_weights: torch.Tensor, pitch: torch.Tensor, velocity: torch.Tensor,
                teacher_inputs: Sequence[torch.Tensor], drop: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Teacher-forced logits for every token of every scale.

        Args:
            instrument_weights: ``[B, n_instruments]``; pitch ``[B]``; velocity ``[B]`` (bucket).
            teacher_inputs: ``[B, D, h_k, w_k]`` for k = 2..K (from the tokenizer).
            drop: ``[B]`` bool, rows whose condition is replaced by the null one.
        Returns: ``[B, total_tokens, V]`` logits.
        """
        return self.prefix_logits(self.condition(instrument_weights, pitch, velocity, drop), teacher_inputs)

    def step(self, cond: torch.Tensor, k: int, scale_input: torch.Tensor | None,
             caches: list[dict[str, torch.Tensor]]) -> torch.Tensor:  # fmt: skip
        """One inference step with the KV cache: logits of scale ``k``.

        Args:
            cond: ``[B, dim]`` condition. k: scale index.
            scale_input: ``[B, D, h_k, w_k]`` (None for k = 0).
            caches: one dict per block, holding keys/values of scales < k; extended in place.
        Returns: ``[B, h_k * w_k, V]`` logits.
        """
        cond_act = F.silu(cond)
        x = self.embed_inputs(cond, [] if k == 0 else [scale_input], k)
        # With every coarser scale cached, a new scale's tokens see the whole cache and each
        # other (block-causal), so no mask is needed.
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, cond_act, None, cache)
        return self.head_logits(x, cond_act)


def build_autoregressor(config: ARConfig, scales: Sequence[tuple[int, int]], latent_dim: int,
                        vocab: int, seed: int = 0) -> NextScaleTransformer:  # fmt: skip
    """A freshly initialised autoregressor for a tokenizer's pyramid (deterministic for a seed)."""
    torch.manual_seed(seed)
    return NextScaleTransformer(config, scales, latent_dim, vocab)
