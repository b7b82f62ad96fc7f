"""pYIN pitch accuracy on synthesized tones of known pitch."""

import numpy as np
import pytest

from mars_model.eval.pitch import estimate_pitch, midi_to_hz, pyin_accuracy

RATE = 16000
PITCHES = np.array([21, 24, 28, 40, 52, 57, 64, 69, 76, 88, 100, 108])


def tone(midi: float, seconds: float = 4.0, harmonics: int = 6) -> np.ndarray:
    """A held harmonic tone (1/k partials below Nyquist) with a 1 s release, ``[N]`` float32."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = midi_to_hz(midi)
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1) if f0 * k < 7000)
    envelope = np.clip(t / 0.01, 0, 1) * np.where(t < 3.0, 1.0, np.exp(-(t - 3.0) * 8))
    return (0.3 * wave * envelope).astype(np.float32)


pytestmark = pytest.mark.slow  # librosa's pYIN compiles with numba on first use (~10 s)


def test_tones_at_their_labelled_pitch_are_all_correct():
    result = pyin_accuracy([tone(p) for p in PITCHES], PITCHES, RATE)
    assert result["accuracy"] == 1.0 and result["pitch_class_accuracy"] == 1.0
    assert result["unvoiced"] == 0
    assert result["median_abs_cents"] < 5


def test_tones_detuned_by_a_semitone_are_all_wrong():
    up = pyin_accuracy([tone(p + 1) for p in PITCHES], PITCHES, RATE)
    down = pyin_accuracy([tone(p - 1) for p in PITCHES], PITCHES, RATE)
    assert up["accuracy"] == 0.0 and down["accuracy"] == 0.0
    assert up["pitch_class_accuracy"] == 0.0 and down["pitch_class_accuracy"] == 0.0
    assert up["median_abs_cents"] == pytest.approx(100, abs=10)


def test_the_tolerance_is_fifty_cents():
    assert estimate_pitch(tone(60.3), 60).correct()  # 30 cents sharp: within
    assert not estimate_pitch(tone(60.7), 60).correct()  # 70 cents sharp: outside
    assert estimate_pitch(tone(60.3), 60).cents_off == pytest.approx(30, abs=5)


def test_an_octave_error_is_caught_and_forgiven_only_by_pitch_class():
    est = estimate_pitch(tone(72, harmonics=1), 60)  # a pure tone an octave above the label
    assert not est.correct()
    assert est.cents_off == pytest.approx(1200, abs=10)
    assert est.correct_pitch_class()
    assert not estimate_pitch(tone(61), 60).correct_pitch_class()  # a semitone is not an octave


def test_silence_is_a_miss_not_a_crash():
    est = estimate_pitch(np.zeros(4 * RATE, dtype=np.float32), 60)
    assert not est.correct() and np.isnan(est.f0_hz) and est.voiced_fraction == 0.0
