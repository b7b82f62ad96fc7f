"""Spectral front end: exact inversion, documented normalisation, and Griffin-Lim behaviour."""

import math

import pytest
import torch

from mars_model.spectral import (
    SpectralConfig,
    SpectralFrontEnd,
    log_spectral_distance,
    spectral_convergence,
)

FRONT = SpectralFrontEnd()
SR = FRONT.config.sample_rate


def harmonic_note(f0=220.0, seconds=4.0, partials=6, seed=0):
    """A decaying harmonic tone with a little noise: a stand-in for a plucked note."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    wave = sum(torch.sin(2 * math.pi * f0 * k * t + k) / k for k in range(1, partials + 1))
    wave = wave * torch.exp(-t * 1.5) * 0.3 + 1e-3 * torch.randn(t.shape, generator=gen)
    return wave.float()


def test_default_sizes_divide_for_cmx():
    cfg = SpectralConfig()
    assert cfg.shape == (512, 256)
    assert cfg.padded_samples >= cfg.n_samples
    spec = FRONT.stft(torch.zeros(3, cfg.n_samples))
    assert spec.shape == (3, 512, 256) and spec.is_complex()


def test_stft_istft_is_near_perfect():
    wave = harmonic_note()[None]
    back = FRONT.istft(FRONT.stft(wave))
    assert back.shape == wave.shape
    # Only the dropped Nyquist bin is lost; the notes carry essentially nothing there.
    assert (back - wave).abs().max() < 1e-4


def test_unit_sine_peaks_at_zero_db():
    t = torch.arange(SR * 4) / SR
    spec = FRONT.stft(torch.sin(2 * math.pi * 1000.0 * t))  # 1000 Hz sits exactly on bin 64
    mag = spec.abs()[:, 20:200]
    assert mag.max().item() == pytest.approx(1.0, abs=0.01)
    assert FRONT.magnitude_to_log(mag).max().item() == pytest.approx(1.0, abs=0.01)


def test_log_magnitude_round_trip_and_floor():
    mag = torch.tensor([1e-7, 1e-5, 1e-3, 0.5, 1.0])
    logmag = FRONT.magnitude_to_log(mag)
    assert logmag[0] == logmag[1] == pytest.approx(-1.0)  # below the -100 dB floor
    assert torch.allclose(FRONT.log_to_magnitude(logmag)[1:], mag[1:], rtol=1e-4)


def test_griffin_lim_improves_with_iterations_and_momentum_helps():
    wave = torch.stack([harmonic_note(220.0), harmonic_note(330.0, seed=1)])
    mag = FRONT.stft(wave).abs()

    def sc(n_iter, momentum):
        estimate = FRONT.griffin_lim(mag, n_iter=n_iter, momentum=momentum, seed=0)
        return spectral_convergence(mag, FRONT.stft(estimate).abs()).mean().item()

    assert sc(32, 0.99) < sc(8, 0.99) < sc(0, 0.99)
    assert sc(16, 0.99) < sc(16, 0.0)
    assert sc(32, 0.99) < 0.2


def test_griffin_lim_is_batched_and_seeded():
    mag = FRONT.stft(torch.stack([harmonic_note(220.0), harmonic_note(440.0)])).abs()
    together = FRONT.griffin_lim(mag, n_iter=4, seed=3)
    assert torch.equal(together, FRONT.griffin_lim(mag, n_iter=4, seed=3))
    alone = FRONT.griffin_lim(mag[1:], n_iter=4, seed=3)
    # Same seed, same shape of phase draw -> item 0 agrees; item 1 got another draw: only shapes.
    assert alone.shape == (1, SR * 4) and together.shape == (2, SR * 4)


def test_griffin_lim_rejects_bad_momentum():
    with pytest.raises(ValueError, match="momentum"):
        FRONT.griffin_lim(torch.ones(1, 512, 256), momentum=1.0)


def test_metrics_on_known_inputs():
    mag = FRONT.stft(harmonic_note()[None]).abs()
    assert spectral_convergence(mag, mag).item() == 0.0
    assert log_spectral_distance(mag, mag).item() == 0.0
    doubled = log_spectral_distance(mag.clamp_min(1e-2), 2 * mag.clamp_min(1e-2)).item()
    assert doubled == pytest.approx(20 * math.log10(2), rel=1e-3)


# -- initial phase for Griffin-Lim -------------------------------------------------------
# A 1 s configuration keeps these fast; the algorithms do not depend on the note length.
SHORT = SpectralFrontEnd(SpectralConfig(n_samples=SR))


def steady_harmonic_note(f0: float, partials: int = 8) -> torch.Tensor:
    """``[N]`` 1 s of constant-amplitude harmonics, no vibrato, 1/k amplitudes."""
    t = torch.arange(SR, dtype=torch.float64) / SR
    wave = sum(torch.sin(2 * math.pi * f0 * k * t + 0.7 * k) / k for k in range(1, partials + 1))
    return (0.2 * wave).float()


def decaying_note(f0: float, seed: int = 0) -> torch.Tensor:
    """``[N]`` 1 s plucked-like note: sharp attack, exponential decay, a little noise."""
    return harmonic_note(f0, seconds=1.0, partials=8, seed=seed)


def short_sc(mag: torch.Tensor, wave: torch.Tensor) -> float:
    return spectral_convergence(mag, SHORT.stft(wave).abs()).mean().item()


def reference_griffin_lim(mag, n_iter, momentum, phase):
    """The textbook loop on the public stft/istft, to check the fast path against."""
    spec = torch.polar(torch.ones_like(phase), phase)
    previous = torch.zeros_like(spec)
    for _ in range(n_iter):
        rebuilt = SHORT.stft(SHORT.istft(mag * spec, length=SHORT.config.padded_samples))
        accelerated = rebuilt + momentum * (rebuilt - previous)
        previous = rebuilt
        spec = accelerated / accelerated.abs().clamp_min(1e-12)
    return SHORT.istft(mag * spec)


@pytest.mark.parametrize("momentum", [0.0, 0.99])
def test_fast_griffin_lim_matches_the_textbook_loop(momentum):
    mag = SHORT.stft(torch.stack([decaying_note(220.0), decaying_note(523.0, seed=1)])).abs()
    phase = SHORT.initial_phase(mag, init="random", seed=5)
    fast = SHORT.griffin_lim(mag, n_iter=3, momentum=momentum, seed=5, init="random")
    slow = reference_griffin_lim(mag, 3, momentum, phase)
    assert fast.shape == slow.shape == (2, SR)
    assert (fast - slow).abs().max() < 1e-4


@pytest.mark.parametrize("make_note", [steady_harmonic_note, decaying_note])
@pytest.mark.parametrize("n_iter", [0, 2, 4])
def test_phase_locked_start_beats_random_at_equal_iterations(make_note, n_iter):
    mag = SHORT.stft(torch.stack([make_note(196.0), make_note(311.0)])).abs()
    locked = short_sc(mag, SHORT.griffin_lim(mag, n_iter=n_iter, init="phase-locked"))
    random = short_sc(mag, SHORT.griffin_lim(mag, n_iter=n_iter, init="random", seed=0))
    assert locked < 0.5 * random  # measured: ~0.03-0.08 against ~0.26-0.65


def test_phase_locked_start_alone_rebuilds_a_steady_sine():
    # 1234.5 Hz falls between bins: the parabolic interpolation must find it.
    t = torch.arange(SR) / SR
    mag = SHORT.stft(0.5 * torch.sin(2 * math.pi * 1234.5 * t)).abs()[None]
    wave = SHORT.griffin_lim(mag, n_iter=0)
    assert short_sc(mag, wave) < 0.1  # a random start scores ~0.65 here


def test_phase_locked_is_batched_deterministic_and_shaped():
    mag = SHORT.stft(torch.stack([decaying_note(147.0), steady_harmonic_note(440.0)])).abs()
    phase = SHORT.initial_phase(mag)
    assert phase.shape == mag.shape == (2, 512, 64) and phase.dtype == torch.float32
    assert torch.equal(SHORT.initial_phase(mag[1]), phase[1])
    together = SHORT.griffin_lim(mag, n_iter=3)
    assert torch.equal(together, SHORT.griffin_lim(mag, n_iter=3))
    alone = torch.cat([SHORT.griffin_lim(mag[i : i + 1], n_iter=3) for i in range(2)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert SHORT.griffin_lim(mag[0], n_iter=1).shape == (SR,)
    assert SHORT.griffin_lim(mag, n_iter=1, length=1000).shape == (2, 1000)


def test_random_start_without_seed_is_the_old_zero_phase():
    mag = SHORT.stft(decaying_note(262.0)[None]).abs()
    zeros = SHORT.griffin_lim(mag, n_iter=2, init="zeros")
    assert torch.equal(SHORT.griffin_lim(mag, n_iter=2, init="random", seed=None), zeros)
    assert not torch.equal(SHORT.griffin_lim(mag, n_iter=2, init="random", seed=1), zeros)


def test_griffin_lim_rejects_bad_init_and_iterations():
    with pytest.raises(ValueError, match="phase-locked"):
        SHORT.griffin_lim(torch.ones(1, 512, 64), init="pghi")
    with pytest.raises(ValueError, match="n_iter"):
        SHORT.griffin_lim(torch.ones(1, 512, 64), n_iter=-1)
