"""The tokenizer: CMX spectrogram image -> conv encoder -> multi-scale residual VQ -> conv decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mars_model.cmx import demultiplex, multiplex
from mars_model.config import dataclass_from_dict
from mars_model.modules import (
    Conv2d,
    Downsample,
    Linear,
    ResBlock,
    Upsample,
    batch_invariant_matmul,
    group_norm,
)
from mars_model.spectral import SpectralConfig
from mars_model.tokenizer.quantizer import MultiScaleResidualVQ


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
        pitch_prior: feed a harmonic comb of the note's pitch (see :func:`harmonic_comb`) to the
            encoder and the decoder's last level, so tokens need not carry harmonic positions.
            Encoding and decoding then need the pitch.
        instrument_prior: condition the decoder (not the encoder, so tokens are unchanged) on
            the note's instrument: an embedding of its GM program (or a weighted mix of
            programs, as the autoregressor takes) scales and shifts the features after every
            residual block. Decoding then needs the instrument.
        n_instruments: rows of the instrument prior's table: GM programs 0-127, then drum kits
            (``mars_model.api.FIRST_KIT`` + kit program); as many as the autoregressor's.
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
    pitch_prior: bool = False
    instrument_prior: bool = False
    n_instruments: int = 128
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


def harmonic_comb(pitch: torch.Tensor, spectral: SpectralConfig, width_bins: float = 1.0) -> torch.Tensor:
    """A spectrogram-shaped comb with Gaussian bumps at every harmonic of each pitch's f0.

    Args:
        pitch: ``[B]`` MIDI pitches (float or int).
        spectral: the front end's sizes.
        width_bins: standard deviation of each bump, in bins.
    Returns:
        ``[B, 1, F, T]`` in [0, 1], constant over time.
    """
    f0 = 440.0 * 2.0 ** ((pitch.float() - 69.0) / 12.0)
    bin_hz = spectral.sample_rate / spectral.n_fft
    bins = torch.arange(spectral.n_bins, device=pitch.device, dtype=torch.float32)
    # Distance of each bin to its nearest harmonic (in bins), harmonics k >= 1 only.
    spacing = (f0 / bin_hz)[:, None]
    k = torch.clamp(torch.round(bins[None] / spacing), min=1.0)
    dist = bins[None] - k * spacing
    comb = torch.exp(-0.5 * (dist / width_bins) ** 2)
    return comb[:, None, :, None].expand(-1, 1, -1, spectral.n_frames)


class Encoder(nn.Module):
    """``[B, C_cmx (x2 with the pitch prior), F', T']`` -> ``[B, D, H, W]``."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch = cfg.channels
        c_in = cfg.cmx[0] * cfg.cmx[1] * (2 if cfg.pitch_prior else 1)
        layers: list[nn.Module] = [Conv2d(c_in, ch[0], 3, padding=1)]
        for i, width in enumerate(ch):
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            if i < len(cfg.strides):
                layers.append(Downsample(width, ch[i + 1], cfg.strides[i]))
        layers += [group_norm(ch[-1]), nn.SiLU(), Conv2d(ch[-1], cfg.latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def instrument_weights(instrument: torch.Tensor, n: int) -> torch.Tensor:
    """``[B]`` instruments -> one-hot ``[B, n]``; ``[B, m]`` mixing weights over instruments
    ``0..m-1`` -> ``[B, n]``, padded with zeros (an autoregressor with a smaller table) or cut
    (a larger one: instruments this decoder has no row for add nothing)."""
    if instrument.dim() == 1:  # (an index past the table: a zero row, as for cut weights)
        return nn.functional.one_hot(instrument.long().clamp(max=n), n + 1)[:, :n].float()
    return nn.functional.pad(instrument.float(), (0, n - instrument.shape[1]))


class FiLM(nn.Module):
    """``h * (1 + scale(e)) + shift(e)`` per channel; zero-initialised, so it starts as the identity."""

    def __init__(self, embed_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = Linear(embed_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(e)[:, :, None, None].to(h.dtype).chunk(2, dim=1)
        return h * (1 + scale) + shift


class Decoder(nn.Module):
    """``[B, D, H, W]`` -> ``[B, C_cmx, F', T']`` (mirror of :class:`Encoder`).

    With the pitch prior, the CMX-multiplexed harmonic comb is projected and added at the
    last level, followed by one more residual block that mixes it in. With the instrument
    prior, a :class:`FiLM` of the instrument's embedding follows every residual block.
    """

    EMBED_DIM = 64

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch = cfg.channels[::-1]
        strides = cfg.strides[::-1]
        c_cmx = cfg.cmx[0] * cfg.cmx[1]
        layers: list[nn.Module] = [Conv2d(cfg.latent_dim, ch[0], 3, padding=1)]
        for i, width in enumerate(ch):
            layers += [ResBlock(width) for _ in range(cfg.res_blocks)]
            if i < len(strides):
                layers.append(Upsample(width, ch[i + 1], strides[i]))
        self.net = nn.Sequential(*layers)
        self.prior = Conv2d(c_cmx, ch[-1], 3, padding=1) if cfg.pitch_prior else None
        self.mix = ResBlock(ch[-1]) if cfg.pitch_prior else nn.Identity()
        self.out = nn.Sequential(group_norm(ch[-1]), nn.SiLU(), Conv2d(ch[-1], c_cmx, 3, padding=1))
        self.instrument: nn.Embedding | None = None
        if cfg.instrument_prior:
            self.instrument = nn.Embedding(cfg.n_instruments, self.EMBED_DIM)
            blocks = [m.body[-1].out_channels for m in [*self.net, self.mix] if isinstance(m, ResBlock)]
            self.film = nn.ModuleList(FiLM(self.EMBED_DIM, width) for width in blocks)

    def forward(self, z: torch.Tensor, comb: torch.Tensor | None = None,
                instrument: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """``instrument``: ``[B, n_instruments]`` mixing weights (instrument prior only)."""
        films, e = None, None
        if self.instrument is not None:  # one FiLM per residual block, in order
            films, e = iter(self.film), batch_invariant_matmul(instrument.to(self.instrument.weight.dtype), self.instrument.weight)
        h = z
        for layer in self.net:
            h = layer(h)
            if films is not None and isinstance(layer, ResBlock):
                h = next(films)(h, e)
        if self.prior is not None:  # the pitch prior, mixed in by one more residual block
            h = self.mix(h + self.prior(comb))
            if films is not None:
                h = next(films)(h, e)
        return self.out(h)


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
        self.frozen: tuple[str, ...] = ()  # parts a fine-tune keeps fixed (always in eval mode)

    def train(self, mode: bool = True) -> Tokenizer:
        super().train(mode)
        for name in self.frozen:  # a frozen quantizer must not restart codes or track usage
            getattr(self, name).eval()
        return self

    def _comb(self, pitch: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The multiplexed harmonic comb ``[B, C_cmx, F', T']`` (None without the prior)."""
        if not self.config.pitch_prior:
            return None
        if pitch is None or len(pitch) != batch:
            from mars_model.errors import MarsError

            raise MarsError("this tokenizer has a pitch prior: pass the notes' pitches ([B] MIDI)")
        return multiplex(harmonic_comb(pitch, self.config.spectral), self.config.cmx)

    def _instrument(self, instrument: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """``[B, n_instruments]`` instrument weights (None without the instrument prior)."""
        if not self.config.instrument_prior:
            return None
        if instrument is None or len(instrument) != batch:
            from mars_model.errors import MarsError

            raise MarsError("this tokenizer has an instrument prior: pass the notes' instruments "
                            "([B] instruments or [B, n] weights)")  # fmt: skip
        return instrument_weights(instrument, self.config.n_instruments)

    def encode_latent(self, spec: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1, F, T]`` log-spectrogram (and ``[B]`` pitches) -> continuous latent ``[B, D, H, W]``."""
        x = multiplex(spec, self.config.cmx)
        comb = self._comb(pitch, len(spec))
        return self.encoder(x if comb is None else torch.cat([x, comb], dim=1))

    def decode_latent(self, f_hat: torch.Tensor, pitch: torch.Tensor | None = None,
                      instrument: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Latent ``[B, D, H, W]`` (and ``[B]`` pitches, instruments) -> ``[B, 1, F, T]`` log-spectrogram."""
        n = len(f_hat)
        out = self.decoder(f_hat, self._comb(pitch, n), self._instrument(instrument, n))
        return demultiplex(out, self.config.cmx)

    def forward(self, spec: torch.Tensor, pitch: torch.Tensor | None = None, instrument: torch.Tensor | None = None):
        """Reconstruct ``spec`` ``[B, 1, F, T]``; returns ``(recon, indices per scale, vq_loss)``."""
        codes_fixed = {"encoder", "quantizer"} <= set(self.frozen)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not codes_fixed):
            f_hat, indices, vq_loss = self.quantizer(self.encode_latent(spec, pitch))
        return self.decode_latent(f_hat, pitch, instrument), indices, vq_loss

    @torch.no_grad()
    def encode(self, spec: torch.Tensor, pitch: torch.Tensor | None = None) -> list[torch.Tensor]:
        """``[B, 1, F, T]`` -> token maps ``[B, h_k, w_k]`` for every scale."""
        _, indices, _ = self.quantizer(self.encode_latent(spec, pitch))
        return indices

    @torch.no_grad()
    def decode(self, indices: Sequence[torch.Tensor], pitch: torch.Tensor | None = None,
               instrument: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Token maps of all scales -> ``[B, 1, F, T]`` log-spectrogram."""
        return self.decode_latent(self.quantizer.indices_to_latent(indices), pitch, instrument)


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
