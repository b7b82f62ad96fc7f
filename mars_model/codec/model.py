"""EuleroDec: complex STFT -> encoder -> residual VQ -> decoder -> inverse STFT, composed from its parts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mars_model.codec.config import CodecConfig
from mars_model.codec.modules import Decoder, Encoder
from mars_model.codec.quantization import ResidualVectorQuantizer
from mars_model.codec.stft import CodecSTFT
from mars_model.errors import MarsError


@dataclass
class CodecOutput:
    """What a training pass of :class:`CodecModel` computes.

    Attributes:
        recon: ``[B, L]`` the reconstructed waveform.
        spec: ``[B, F, T]`` the input's compressed complex spectrum.
        spec_hat: ``[B, F, T]`` the decoded spectrum.
        codes: ``[B, n, T']`` the RVQ codes.
        commit: the commitment loss (a scalar).
    """

    recon: torch.Tensor
    spec: torch.Tensor
    spec_hat: torch.Tensor
    codes: torch.Tensor
    commit: torch.Tensor


@dataclass(frozen=True)
class FrameSpan:
    """A chunk of latent frames: run the network on ``[run_start, run_end)``, keep ``[keep_start, keep_end)``."""

    run_start: int
    run_end: int
    keep_start: int
    keep_end: int


class CodecModel(nn.Module):
    """A spectral RVQ-VAE codec; the parts are passed in so each can be swapped and tested alone.

    Args:
        stft: waveform <-> compressed complex spectrum ``[B, F, T]``.
        encoder: ``[B, F, T]`` complex -> ``[B, D, T']`` real latents.
        quantizer: ``[B, D, T']`` -> quantized latents and codes ``[B, n, T']``.
        decoder: ``[B, D, T']`` -> ``[B, F, 2T']`` complex.
        config: the configuration the parts were built from (rates, frame sizes).
    """

    #: latent frames per chunk when coding long inputs, and the context added on each side
    #: (multiples of the time-attention window, so windows line up with an unchunked run).
    CHUNK, MARGIN = 512, 32

    def __init__(self, stft: CodecSTFT, encoder: nn.Module, quantizer: ResidualVectorQuantizer,
                 decoder: nn.Module, config: CodecConfig) -> None:  # fmt: skip
        super().__init__()
        self.stft, self.encoder, self.quantizer, self.decoder = stft, encoder, quantizer, decoder
        self.config = config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def padded_length(self, length: int) -> int:
        """``length`` rounded up to whole latent frames (``samples_per_frame``)."""
        step = self.config.samples_per_frame
        return -(-max(length, 1) // step) * step

    def latent_frames(self, length: int) -> int:
        """Latent frames (code vectors) for ``length`` samples at the codec rate."""
        return self.padded_length(length) // self.config.samples_per_frame + 1

    def _pad(self, wav: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(wav, (0, self.padded_length(wav.shape[-1]) - wav.shape[-1]))

    def forward(self, wav: torch.Tensor, n_q: int | None = None) -> CodecOutput:
        """Training pass: ``[B, L]`` waveform, ``n_q`` stages (default all) -> :class:`CodecOutput`."""
        length = wav.shape[-1]
        padded = self._pad(wav)
        spec = self.stft.analysis(padded)
        quantized, codes, commit = self.quantizer(self.encoder(spec), n_q)
        spec_hat = self.decoder(quantized)[..., : spec.shape[-1]]
        recon = self.stft.synthesis(spec_hat, padded.shape[-1])[..., :length]
        return CodecOutput(recon, spec, spec_hat, codes, commit)

    def _chunks(self, frames: int) -> Iterator[FrameSpan]:
        """The chunks that cover ``frames`` latent frames, each with ``MARGIN`` frames of context."""
        for s in range(0, frames, self.CHUNK):
            e = min(frames, s + self.CHUNK)
            yield FrameSpan(max(0, s - self.MARGIN), min(frames, e + self.MARGIN), s, e)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, n_q: int) -> torch.Tensor:
        """``[B, L]`` waveform at the codec rate -> codes ``[B, n_q, latent_frames(L)]`` (int64)."""
        if not 1 <= n_q <= self.quantizer.n_q:
            raise ValueError(f"n_q must be in 1..{self.quantizer.n_q}, got {n_q}")
        spec = self.stft.analysis(self._pad(wav))
        frames = -(-spec.shape[-1] // 2)
        latents = []
        for c in self._chunks(frames):
            z = self.encoder(spec[..., 2 * c.run_start : min(2 * c.run_end, spec.shape[-1])])
            latents.append(z[..., c.keep_start - c.run_start : c.keep_end - c.run_start])
        return self.quantizer.encode(torch.cat(latents, dim=-1), n_q)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, length: int) -> torch.Tensor:
        """Codes ``[B, n, T']`` -> waveform ``[B, length]`` at the codec rate."""
        if codes.shape[-1] != self.latent_frames(length):
            raise MarsError(f"{codes.shape[-1]} code frames do not describe {length} samples")
        quantized = self.quantizer.decode(codes)
        specs = []
        for c in self._chunks(codes.shape[-1]):
            out = self.decoder(quantized[..., c.run_start : c.run_end])
            specs.append(out[..., 2 * (c.keep_start - c.run_start) : 2 * (c.keep_end - c.run_start)])
        padded = self.padded_length(length)
        spec = torch.cat(specs, dim=-1)[..., : self.stft.frames(padded)]
        return self.stft.synthesis(spec, padded)[..., :length]


def build_codec(config: CodecConfig, seed: int = 0) -> CodecModel:
    """The codec described by ``config`` (complex EuleroDec or its real twin), initialised under ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        quantizer = ResidualVectorQuantizer(2 * config.latent_dim, config.n_q, config.codebook_size,
                                            config.ema_decay, config.dead_code_threshold)  # fmt: skip
        return CodecModel(CodecSTFT(config), Encoder(config), quantizer, Decoder(config), config)


def eulerodec_16khz(seed: int = 0) -> CodecModel:
    """EuleroDec at 16 kHz with the default configuration (complex layers, 16 x 2048-entry stages)."""
    return build_codec(CodecConfig(algebra="complex"), seed)


def real_rvqvae_16khz(seed: int = 0) -> CodecModel:
    """The real-valued RVQ-VAE baseline of about the same size as :func:`eulerodec_16khz`."""
    return build_codec(CodecConfig(algebra="real"), seed)
