"""The codec's complex STFT: Hann ``n_fft``/``hop`` at the codec rate, magnitudes power-law compressed.

Not :mod:`mars_model.spectral`'s front end: the codec wants a frame rate that gives whole
RVQ stages at 6 and 12 kbps (hop 120 and a time stride of 2 give 66.67 latent frames/s,
733.3 bit/s per 11-bit stage: 8 stages = 5.87 kbps, 16 stages = 11.73 kbps) and the
complex values, not a log-magnitude.
"""

from __future__ import annotations

import torch

from mars_model.codec.config import CodecConfig


class CodecSTFT(torch.nn.Module):
    """Waveform <-> compressed complex spectrum.

    ``analysis``: ``[B, L]`` (L a multiple of the hop) -> ``[B, F, T]`` complex with
    ``F = n_fft / 2`` (Nyquist dropped) and ``T = L / hop + 1`` (centred frames);
    ``synthesis`` inverts it exactly (up to float error) when nothing was changed.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.n_fft, self.hop, self.power = config.n_fft, config.hop, config.compress
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)
        # unit gain for a full-scale sine: divide by sum(window) / 2
        self.scale = float(config.n_fft) / 4.0

    def frames(self, length: int) -> int:
        """STFT frames for ``length`` samples (a multiple of the hop)."""
        return length // self.hop + 1

    def analysis(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` real -> ``[B, F, T]`` complex, ``|.|`` compressed by ``compress``."""
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)[:, :-1] / self.scale  # fmt: skip
        return compress(spec, self.power)

    def synthesis(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """``[B, F, T]`` compressed complex -> ``[B, length]`` real."""
        spec = expand(spec, self.power) * self.scale
        spec = torch.cat([spec, spec.new_zeros(spec.shape[0], 1, spec.shape[2])], dim=1)
        return torch.istft(
            spec, self.n_fft, self.hop, window=self.window, center=True, length=length
        )


def compress(spec: torch.Tensor, power: float, eps: float = 1e-7) -> torch.Tensor:
    """``|X|^power * X / |X|``: compress the modulus, keep the phase. Complex in, complex out."""
    modulus = torch.sqrt(spec.real**2 + spec.imag**2 + eps**2)
    return spec * modulus ** (power - 1)


def expand(spec: torch.Tensor, power: float, eps: float = 1e-7) -> torch.Tensor:
    """Inverse of :func:`compress`: ``|Y|^(1/power) * Y / |Y|``."""
    modulus = torch.sqrt(spec.real**2 + spec.imag**2 + eps**2)
    return spec * modulus ** (1.0 / power - 1)
