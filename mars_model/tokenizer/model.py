"""The tokenizer: CMX spectrogram image -> conv encoder -> multi-scale residual VQ -> conv decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mars_model.cmx import demultiplex, multiplex
from mars_model.modules import Downsample, ResBlock, Upsample, group_norm
from mars_model.spectral import SpectralConfig
from mars_model.tokenizer.quantizer import MultiScaleResidualVQ
from mars_model.training import dataclass_from_dict


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of the tokenizer (the ``tokenizer:`` section of a YAML config).

    Args:
        cmx: CMX factors ``(rf, rt)``; ``(1, 1)`` works on the full spectrogram (the ablation).
        channels: encoder widths per level, first to last (the decoder mirrors them).
        strides: downsampling ``(sf, st)`` between consecutive levels (len(channels) - 1 items).
        res_blocks: residual blocks per level.
        latent_dim: D, the width of the latent and of each code.
        codebook_size: V, codes in the one shared codebook.
        scales: token-map sizes ``(h, w)`` coarse to fine; the last equals the latent grid.
        n_refine: refinement convolutions shared across scales.
        beta: commitment weight.
    """

    cmx: tuple[int, int] = (16, 8)
    channels: tuple[int, ...] = (96, 128, 160)
    strides: tuple[tuple[int, int], ...] = ((2, 2), (1, 2))
    res_blocks: int = 1
    latent_dim: int = 32
    codebook_size: int = 1024
    scales: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (4, 2), (6, 3), (8, 4), (12, 6), (16, 8))
    n_refine: int = 4
    beta: float = 0.25
    spectral: SpectralConfig = field(default_factory=SpectralConfig)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "tokenizer") -> TokenizerConfig:
        raw = dict(raw or {})
        spectral = dataclass_from_dict(SpectralConfig, raw.pop("spectral", None), f"{where}.spectral")
        cfg = dataclass_from_dict(cls, raw, where)
        cfg = cls(**{**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "spectral": spectral})
        cfg.check(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def latent_grid(self) -> tuple[int, int]:
        f, t = self.spectral.shape
        h, w = f // self.cmx[0], t // self.cmx[1]
        for sh, sw in self.strides:
            h, w = h // sh, w // sw
        return h, w

    def check(self, where: str = "tokenizer") -> None:
        from mars_model.errors import MarsError

        f, t = self.spectral.shape
        if f % self.cmx[0] or t % self.cmx[1]:
            raise MarsError(f"{where}.cmx {self.cmx} does not divide the spectrogram {f}x{t}")
        if len(self.strides) != len(self.channels) - 1:
            raise MarsError(f"{where}.strides needs {len(self.channels) - 1} entries, one per level change")
        if tuple(self.scales[-1]) != self.latent_grid:
            raise MarsError(f"{where}.scales must end at the latent grid {self.latent_grid}, got {self.scales[-1]}")


class Encoder(nn.Module):
    """``[B, C_cmx, F', T']`` -> ``[B, D, H, W]``."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.cmx[0] * cfg.cmx[1], ch[0], 3, padding=1)]
        for i, width in enumerate(ch):
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            if i < len(cfg.strides):
                layers.append(Downsample(width, ch[i + 1], cfg.strides[i]))
        layers += [group_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """``[B, D, H, W]`` -> ``[B, C_cmx, F', T']`` (mirror of :class:`Encoder`)."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch = cfg.channels[::-1]
        strides = cfg.strides[::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_dim, ch[0], 3, padding=1)]
        for i, width in enumerate(ch):
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            if i < len(strides):
                layers.append(Upsample(width, ch[i + 1], strides[i]))
        layers += [group_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.cmx[0] * cfg.cmx[1], 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Tokenizer(nn.Module):
    """Log-spectrogram <-> multi-scale token maps.

    Args:
        config: the architecture.
        encoder, decoder, quantizer: the parts (built from ``config`` by :func:`build_tokenizer`).
    """

    def __init__(self, config: TokenizerConfig, encoder: nn.Module, quantizer: MultiScaleResidualVQ,
                 decoder: nn.Module) -> None:  # fmt: skip
        super().__init__()
        self.config, self.encoder, self.quantizer, self.decoder = config, encoder, quantizer, decoder

    def encode_latent(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, 1, F, T]`` log-spectrogram -> continuous latent ``[B, D, H, W]``."""
        return self.encoder(multiplex(spec, self.config.cmx))

    def decode_latent(self, f_hat: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, D, H, W]`` -> ``[B, 1, F, T]`` log-spectrogram."""
        return demultiplex(self.decoder(f_hat), self.config.cmx)

    def forward(self, spec: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Reconstruct ``spec`` ``[B, 1, F, T]``; returns ``(recon, indices per scale, vq_loss)``."""
        f_hat, indices, vq_loss = self.quantizer(self.encode_latent(spec))
        return self.decode_latent(f_hat), indices, vq_loss

    @torch.no_grad()
    def encode(self, spec: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 1, F, T]`` -> token maps ``[B, h_k, w_k]`` for every scale."""
        _, indices, _ = self.quantizer(self.encode_latent(spec))
        return indices

    @torch.no_grad()
    def decode(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Token maps of all scales -> ``[B, 1, F, T]`` log-spectrogram."""
        return self.decode_latent(self.quantizer.indices_to_latent(indices))


def build_tokenizer(config: TokenizerConfig, seed: int = 0) -> Tokenizer:
    """Build a freshly initialised tokenizer for ``config`` (deterministic for a seed)."""
    torch.manual_seed(seed)
    config.check()
    return Tokenizer(
        config,
        Encoder(config),
        MultiScaleResidualVQ(config.latent_dim, config.codebook_size, config.scales, config.n_refine,
                             config.beta),  # fmt: skip
        Decoder(config),
    )
