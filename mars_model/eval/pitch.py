"""Pitch accuracy by pYIN (librosa): is a note's fundamental within ±50 cents of its label?

For each note, pYIN runs on the held part (``start_s`` .. ``start_s + duration_s``) with a
search range of ±13 semitones around the labelled pitch: wide enough to catch a semitone
detune or an octave error, narrow enough to be ~20x faster than a full-range search (a
full-range pYIN on 3 s costs about a second a note on one core). The note's estimate is
the median f0 of its voiced frames; a note with no voiced frame counts as a miss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mars_model.errors import MarsError

SEARCH_SEMITONES = 13.0


def midi_to_hz(midi: float | np.ndarray) -> float | np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


@dataclass(frozen=True)
class PitchEstimate:
    """pYIN's verdict on one note.

    Attributes:
        f0_hz: median voiced f0 (NaN when no frame was voiced).
        cents_off: ``1200 * log2(f0 / f_label)`` (NaN when unvoiced).
        voiced_fraction: share of analysed frames pYIN called voiced.
    """

    f0_hz: float
    cents_off: float
    voiced_fraction: float

    def correct(self, tolerance_cents: float = 50.0) -> bool:
        return bool(np.isfinite(self.cents_off) and abs(self.cents_off) <= tolerance_cents)

    def correct_pitch_class(self, tolerance_cents: float = 50.0) -> bool:
        """Within tolerance once whole octaves are forgiven (pYIN and organ stops disagree
        about octaves far more often than about notes)."""
        if not np.isfinite(self.cents_off):
            return False
        return bool(abs((self.cents_off + 600.0) % 1200.0 - 600.0) <= tolerance_cents)


def estimate_pitch(
    wave: np.ndarray,
    midi_pitch: int,
    sample_rate: int = 16000,
    start_s: float = 0.1,
    duration_s: float = 1.5,
) -> PitchEstimate:
    """Estimate the fundamental of one note around its labelled pitch with pYIN.

    Args:
        wave: ``[N]`` float waveform.
        midi_pitch: the labelled MIDI pitch.
        sample_rate: rate of ``wave`` in Hz.
        start_s, duration_s: the analysed span (the held part of a 4 s note).
    """
    try:
        import librosa
    except ImportError:
        raise MarsError(
            "pitch accuracy by pYIN needs librosa: pip install 'mars-synth[eval]'"
        ) from None
    segment = np.asarray(wave, dtype=np.float32)[
        int(start_s * sample_rate) : int((start_s + duration_s) * sample_rate)
    ]
    target = float(midi_to_hz(midi_pitch))
    fmin = target * 2.0 ** (-SEARCH_SEMITONES / 12.0)
    fmax = min(target * 2.0 ** (SEARCH_SEMITONES / 12.0), sample_rate / 2 * 0.95)
    # pYIN needs two periods of fmin in a frame.
    frame = 1024
    while frame < 2.2 * sample_rate / fmin:
        frame *= 2
    if len(segment) < frame or not np.any(segment):
        return PitchEstimate(float("nan"), float("nan"), 0.0)
    f0, voiced, _ = librosa.pyin(
        segment,
        fmin=fmin,
        fmax=fmax,
        sr=sample_rate,
        frame_length=frame,
        hop_length=256,
        center=False,
    )  # a fixed hop: librosa's default (frame / 4) makes the transition window wider than
    # the ±13-semitone search for the 4096-sample frames of the lowest notes
    if not voiced.any():
        return PitchEstimate(float("nan"), float("nan"), 0.0)
    f0_hz = float(np.median(f0[voiced]))
    return PitchEstimate(f0_hz, float(1200.0 * np.log2(f0_hz / target)), float(voiced.mean()))


def pyin_accuracy(
    waves, pitches: np.ndarray, sample_rate: int = 16000, tolerance_cents: float = 50.0,
    progress=None,
) -> dict:  # fmt: skip
    """Share of notes whose pYIN pitch is within ``tolerance_cents`` of the label.

    Args:
        waves: a sequence of ``[N]`` waveforms (or a callable ``i -> [N]`` waveform).
        pitches: ``[n]`` labelled MIDI pitches.
        progress: optional callable receiving 1 per note done.
    Returns:
        ``{"accuracy", "pitch_class_accuracy" (octave errors forgiven), "notes",
        "unvoiced" (notes with no voiced frame), "median_abs_cents", "correct"}`` where
        ``correct`` is the ``[n]`` boolean verdict per note.
    """
    pitches = np.asarray(pitches)
    if len(pitches) == 0:
        raise ValueError("pyin_accuracy: no notes")
    correct, correct_class, unvoiced, cents = np.zeros(len(pitches), bool), 0, 0, []
    for i, pitch in enumerate(pitches):
        wave = waves(i) if callable(waves) else waves[i]
        est = estimate_pitch(wave, int(pitch), sample_rate)
        correct[i] = est.correct(tolerance_cents)
        correct_class += est.correct_pitch_class(tolerance_cents)
        if np.isfinite(est.cents_off):
            cents.append(abs(est.cents_off))
        else:
            unvoiced += 1
        if progress:
            progress(1)
    return {
        "accuracy": float(correct.mean()),
        "pitch_class_accuracy": correct_class / len(pitches),
        "notes": len(pitches),
        "unvoiced": unvoiced,
        "median_abs_cents": float(np.median(cents)) if cents else float("nan"),
        "correct": correct,
    }
