"""Spectral front end: STFT, normalised log-magnitude, and vocoders (Griffin-Lim, inverse STFT).

Conventions (all shapes batch-first)::

    waveform            [B, N]          N = config.n_samples (4 s at 16 kHz = 64000)
    complex spectrogram [B, F, T]       F = n_fft/2 bins (Nyquist dropped), T = n_frames
    log spectrogram     [B, F, T]       float, roughly in [-1, 1]

Normalisation constants (documented once, used everywhere):

* Magnitudes are divided by ``sum(window) / 2`` so a full-scale sine (amplitude 1)
  peaks at magnitude 1.0 = 0 dB.
* ``db = 20 * log10(max(mag, 10 ** (DB_FLOOR / 20)))`` with ``DB_FLOOR = -100`` dB.
* ``x = db / DB_SCALE + 1`` with ``DB_SCALE = 50`` maps [-100 dB, 0 dB] to [-1, 1].

The waveform is zero-padded from ``n_samples`` to ``(n_frames - 1) * hop`` so that a
centred STFT has exactly ``n_frames`` frames (256 for the default), a size that
CMX factors divide. The Nyquist bin is dropped (NSynth notes carry almost no
energy there) and restored as zeros on the way back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DB_FLOOR = -100.0
DB_SCALE = 50.0


@dataclass(frozen=True)
class SpectralConfig:
    """Sizes of the spectral front end.

    Args:
        sample_rate: audio rate in Hz (NSynth: 16000).
        n_fft: FFT size; the spectrogram keeps ``n_fft // 2`` bins.
        hop: hop size in samples.
        n_samples: length of one note in samples (4 s at 16 kHz).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 256
    n_samples: int = 64000

    def __post_init__(self) -> None:
        if self.n_fft % 2 or self.n_fft <= 0:
            raise ValueError(f"n_fft must be a positive even number, got {self.n_fft}")
        if self.hop <= 0 or self.hop > self.n_fft:
            raise ValueError(f"hop must be in 1..n_fft ({self.n_fft}), got {self.hop}")

    @property
    def n_bins(self) -> int:
        """Frequency bins kept (Nyquist dropped)."""
        return self.n_fft // 2

    @property
    def n_frames(self) -> int:
        """Frames per note: the smallest multiple of 8 covering ``n_samples`` (256 by default)."""
        frames = self.n_samples // self.hop + 1
        return -(-frames // 8) * 8

    @property
    def padded_samples(self) -> int:
        """Waveform length that gives exactly ``n_frames`` centred frames."""
        return (self.n_frames - 1) * self.hop

    @property
    def shape(self) -> tuple[int, int]:
        """``(F, T)`` of one spectrogram."""
        return self.n_bins, self.n_frames


class SpectralFrontEnd:
    """STFT analysis and synthesis for one :class:`SpectralConfig`.

    The window is cached per device/dtype; all methods accept batches.
    """

    def __init__(self, config: SpectralConfig | None = None) -> None:
        self.config = config or SpectralConfig()
        self._windows: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def window(self, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (torch.device(device), dtype)
        if key not in self._windows:
            self._windows[key] = torch.hann_window(self.config.n_fft, dtype=dtype, device=device)
        return self._windows[key]

    @property
    def magnitude_scale(self) -> float:
        """Divisor that makes a unit sine peak at magnitude 1 (``sum(hann) / 2``)."""
        return self.config.n_fft / 4.0

    # -- analysis -------------------------------------------------------------------------
    def _fit_length(self, wave: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        n = wave.shape[-1]
        if n > cfg.padded_samples:
            wave = wave[..., : cfg.padded_samples]
        elif n < cfg.padded_samples:
            wave = torch.nn.functional.pad(wave, (0, cfg.padded_samples - n))
        return wave

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """Complex spectrogram, magnitude-normalised.

        Args:
            wave: ``[B, N]`` or ``[N]`` float waveform; padded or cut to the note length.
        Returns:
            ``[B, F, T]`` complex tensor (``[F, T]`` for 1-D input).
        """
        squeeze = wave.dim() == 1
        wave = self._fit_length(wave if not squeeze else wave[None])
        spec = torch.stft(
            wave,
            self.config.n_fft,
            hop_length=self.config.hop,
            window=self.window(wave.device, wave.dtype),
            center=True,
            return_complex=True,
        )
        spec = spec[:, : self.config.n_bins] / self.magnitude_scale
        return spec[0] if squeeze else spec

    def istft(self, spec: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Inverse of :meth:`stft`.

        Args:
            spec: ``[B, F, T]`` complex (magnitude-normalised as by :meth:`stft`).
            length: output samples; defaults to ``config.n_samples``.
        Returns:
            ``[B, length]`` waveform.
        """
        squeeze = spec.dim() == 2
        if squeeze:
            spec = spec[None]
        spec = torch.nn.functional.pad(spec * self.magnitude_scale, (0, 0, 0, 1))  # Nyquist = 0
        real_dtype = spec.real.dtype
        wave = torch.istft(
            spec,
            self.config.n_fft,
            hop_length=self.config.hop,
            window=self.window(spec.device, real_dtype),
            center=True,
            length=self.config.padded_samples,
        )
        wave = wave[:, : length or self.config.n_samples]
        return wave[0] if squeeze else wave

    # -- log magnitude --------------------------------------------------------------------
    @staticmethod
    def magnitude_to_log(mag: torch.Tensor) -> torch.Tensor:
        """Normalised log-magnitude (see module docstring). Same shape as ``mag``."""
        floor = 10.0 ** (DB_FLOOR / 20.0)
        return 20.0 * torch.log10(mag.clamp_min(floor)) / DB_SCALE + 1.0

    @staticmethod
    def log_to_magnitude(logspec: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`magnitude_to_log` (values below the floor come back as the floor)."""
        db = (logspec.clamp_min(-1.0) - 1.0) * DB_SCALE
        return 10.0 ** (db / 20.0)

    def log_spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` waveform -> ``[B, F, T]`` normalised log-magnitude."""
        return self.magnitude_to_log(self.stft(wave).abs())

    # -- vocoders -------------------------------------------------------------------------
    def griffin_lim(
        self,
        mag: torch.Tensor,
        n_iter: int = 32,
        momentum: float = 0.99,
        seed: int | None = 0,
        length: int | None = None,
    ) -> torch.Tensor:
        """Reconstruct a waveform from magnitudes with (fast) Griffin-Lim.

        With ``momentum > 0`` this is the accelerated variant of Perraudin, Balazs and
        Søndergaard (2013): each projection is extrapolated by ``momentum`` times its change
        since the previous iteration. ``momentum=0`` is the classic algorithm.

        Args:
            mag: ``[B, F, T]`` magnitudes (normalised as by :meth:`stft`).
            n_iter: number of projection iterations (0 returns the initial-phase estimate).
            momentum: acceleration in [0, 1).
            seed: seed of the random initial phase; ``None`` starts from zero phase.
            length: output samples; defaults to ``config.n_samples``.
        Returns:
            ``[B, length]`` waveform.
        """
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        squeeze = mag.dim() == 2
        if squeeze:
            mag = mag[None]
        mag = mag.float()
        if seed is None:
            phase = torch.ones_like(mag, dtype=torch.complex64)
        else:
            gen = torch.Generator(device="cpu").manual_seed(seed)
            angle = torch.rand(mag.shape, generator=gen) * (2 * torch.pi)
            phase = torch.polar(torch.ones_like(angle), angle).to(mag.device)
        previous = torch.zeros_like(phase)
        for _ in range(n_iter):
            rebuilt = self.stft(self.istft(mag * phase, length=self.config.padded_samples))
            accelerated = rebuilt + momentum * (rebuilt - previous) if momentum else rebuilt
            previous = rebuilt
            phase = accelerated / accelerated.abs().clamp_min(1e-12)
        wave = self.istft(mag * phase, length=length)
        return wave[0] if squeeze else wave


def spectral_convergence(target_mag: torch.Tensor, estimate_mag: torch.Tensor) -> torch.Tensor:
    """``||S - S_hat||_F / ||S||_F`` per item. Inputs ``[B, F, T]``; returns ``[B]``."""
    num = (target_mag - estimate_mag).flatten(1).norm(dim=1)
    return num / target_mag.flatten(1).norm(dim=1).clamp_min(1e-12)


def log_spectral_distance(
    target_mag: torch.Tensor, estimate_mag: torch.Tensor, floor_db: float = -80.0
) -> torch.Tensor:
    """Log-spectral distance in dB per item: RMS over bins of the dB difference, mean over frames.

    Magnitudes below ``floor_db`` are clamped so silence does not dominate.
    Inputs ``[B, F, T]``; returns ``[B]``.
    """
    floor = 10.0 ** (floor_db / 20.0)
    diff = 20.0 * (
        torch.log10(target_mag.clamp_min(floor)) - torch.log10(estimate_mag.clamp_min(floor))
    )
    return diff.pow(2).mean(dim=1).sqrt().mean(dim=1)
