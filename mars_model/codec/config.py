"""The codec's one configuration dataclass (the ``codec:`` section of a YAML config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mars_model.config import dataclass_from_dict
from mars_model.errors import MarsError

#: The bit rates a user can ask for (``--kbps``).
KBPS_CHOICES = (6, 12)


@dataclass(frozen=True)
class CodecConfig:
    """Architecture and bitstream rates of EuleroDec (or of its real-valued twin).

    Args:
        algebra: ``"complex"`` (EuleroDec: complex layers end to end) or ``"real"`` (the
            baseline: the same network with real layers on stacked ``[Re, Im]`` channels,
            widths scaled by sqrt(2) so both have about the same parameter count).
        sample_rate: the codec's rate; inputs at other rates are resampled.
        n_fft, hop: STFT size and hop (Hann). ``n_fft / 2`` bins are coded (Nyquist dropped).
        compress: power-law exponent applied to STFT magnitudes (phase kept):
            ``|X|^compress * exp(i arg X)``.
        channels: encoder widths per level (complex channels; the decoder mirrors them).
        stem_freq_stride: frequency stride of the first convolution.
        strides: ``(sf, st)`` downsampling between consecutive levels.
        dilations: time dilation of the residual block at each level.
        heads: heads of the axial attention at the bottleneck.
        time_window: latent frames per time-attention window.
        latent_dim: complex latent width D (the quantizer sees 2D reals per frame).
        n_q: residual VQ stages trained (the most any rate uses).
        codebook_size: entries per codebook (2048 = 11 bits).
        ema_decay: EMA decay of the codebook updates.
        dead_code_threshold: a code whose EMA usage (assignments per step) falls below this is
            restarted from a random vector of the current batch.
    """

    algebra: str = "complex"
    sample_rate: int = 16000
    n_fft: int = 480
    hop: int = 120
    compress: float = 0.3
    channels: tuple[int, ...] = (8, 16, 32)
    stem_freq_stride: int = 4
    strides: tuple[tuple[int, int], ...] = ((2, 1), (2, 2))
    dilations: tuple[int, ...] = (1, 2, 4)
    heads: int = 4
    time_window: int = 16
    latent_dim: int = 32
    n_q: int = 16
    codebook_size: int = 2048
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.002

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "codec") -> CodecConfig:
        cfg = dataclass_from_dict(cls, raw, where)
        cfg.check(where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, where: str = "codec") -> None:
        if self.algebra not in ("complex", "real"):
            raise MarsError(f"{where}.algebra must be 'complex' or 'real', got {self.algebra!r}")
        if len(self.strides) != len(self.channels) - 1 or len(self.dilations) != len(self.channels):
            raise MarsError(
                f"{where}: strides need len(channels) - 1 entries, dilations len(channels)"
            )
        if self.n_fft % 2 or self.n_fft < 2 * self.hop:
            raise MarsError(f"{where}: n_fft must be even and at least twice the hop")
        if self.freq_bins % self.freq_stride:
            raise MarsError(
                f"{where}: {self.freq_bins} bins are not divisible by the frequency strides"
            )
        if self.codebook_size & (self.codebook_size - 1):
            raise MarsError(
                f"{where}.codebook_size must be a power of two, got {self.codebook_size}"
            )
        for kbps in KBPS_CHOICES:
            if not 1 <= self.stages_for(kbps) <= self.n_q:
                raise MarsError(
                    f"{where}: {kbps} kbps needs {self.stages_for(kbps)} stages, n_q is {self.n_q}"
                )

    @property
    def freq_bins(self) -> int:
        """Coded STFT bins (Nyquist dropped)."""
        return self.n_fft // 2

    @property
    def freq_stride(self) -> int:
        total = self.stem_freq_stride
        for sf, _ in self.strides:
            total *= sf
        return total

    @property
    def time_stride(self) -> int:
        total = 1
        for _, st in self.strides:
            total *= st
        return total

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per latent frame (``hop * time_stride``)."""
        return self.hop * self.time_stride

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.samples_per_frame

    @property
    def bits_per_code(self) -> int:
        return self.codebook_size.bit_length() - 1

    def stages_for(self, kbps: int) -> int:
        """RVQ stages used at ``kbps``: the most whose payload stays at or under the rate.

        ``bitrate = frame_rate * stages * bits_per_code``.
        """
        return int(kbps * 1000 // (self.frame_rate * self.bits_per_code))

    def payload_bitrate(self, kbps: int) -> float:
        """Bits per second of the packed indices at ``kbps`` (the header is extra)."""
        return self.frame_rate * self.stages_for(kbps) * self.bits_per_code
