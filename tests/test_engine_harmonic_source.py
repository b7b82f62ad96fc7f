"""The test instrument: ``HarmonicNoteSource``, a deterministic additive synth with the NoteSource surface.

It is not the model and does not pretend to be: it makes NSynth-shaped notes (4 s at
16 kHz, key held 3 s, then a 1 s release) from a few harmonics, so engine and render tests
can check pitch, timing and level against known ground truth. The GM program changes the
brightness, the velocity the level, and the seed the harmonics' phases (so seeds matter).

Drum kits (instruments 128 and up, 128 + the kit's program) get a struck one-shot instead: a
3 ms noise click (a sharp, easily found onset) and a decaying tone whose frequency and decay
time depend on the key (an open hi-hat or a long whistle rings, a closed hi-hat is short),
louder with velocity. ``drum_kit_source`` lists every GM program and every kit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from mars_model.api import NoteRequest, NoteSource
from mars_model.errors import MarsError


class HarmonicNoteSource:
    """Additive test instrument implementing :class:`mars_model.api.NoteSource`.

    Args:
        sample_rate: rate of the generated notes (16 kHz like the model).
        seconds: note length; the key is released at ``held`` seconds.
        harmonics: number of partials.
        instruments: if given, the only GM programs (and kits, 128 + kit) it makes (others
            raise MarsError, as the MARS NoteGenerator does for programs it was not trained on).
    """

    model_id = "harmonic-test-source-v1"
    pitch_range = (21, 108)

    def __init__(self, sample_rate: int = 16000, seconds: float = 4.0, held: float = 3.0,
                 harmonics: int = 6, instruments: tuple[int, ...] | None = None) -> None:  # fmt: skip
        if instruments is not None:
            self.instruments = instruments
        self.sample_rate = sample_rate
        self.seconds = seconds
        self.held = held
        self.harmonics = harmonics
        self.calls: list[int] = []  # batch sizes seen, so tests can check batching and caching
        self.requests: list[NoteRequest] = []  # every request, so tests can check what was asked for

    def generate(self, requests: Sequence[NoteRequest]) -> np.ndarray:
        """Make the notes: float32 ``[len(requests), seconds * sample_rate]``."""
        known = getattr(self, "instruments", None)
        for request in requests:
            if known is not None and not set(request.instrument_weights()) <= set(known):
                raise MarsError(f"instrument(s) {sorted(request.instrument_weights())} not in this source")
        self.calls.append(len(requests))
        self.requests.extend(requests)
        n = int(self.seconds * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        out = np.zeros((len(requests), n), np.float32)
        attack = np.minimum(t / 0.005, 1.0)
        release = np.where(t < self.held, 1.0, np.exp(-(t - self.held) / 0.12))
        envelope = attack * (0.8 + 0.2 * np.exp(-t / 0.5)) * release
        for row, request in enumerate(requests):
            f0 = 440.0 * 2 ** ((request.pitch - 69) / 12)
            program = min(request.instrument_weights(), key=lambda p: -request.instrument_weights()[p])
            if program >= 128:
                out[row] = drum_hit(program, request, t)
                continue
            rolloff = 1.0 + (program % 8) / 4.0
            digest = hashlib.sha1(f"{request.cache_key()}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            wave = np.zeros(n)
            for h in range(1, self.harmonics + 1):
                if f0 * h >= self.sample_rate / 2 * 0.9:
                    break
                phase = rng.uniform(0, 2 * np.pi)
                wave += np.sin(2 * np.pi * f0 * h * t + phase) / h**rolloff
            level = 0.5 * (request.velocity / 127.0)
            out[row] = (level * envelope * wave / np.max(np.abs(wave) + 1e-9)).astype(np.float32)
        return out


#: Decay time constants (s) of the test kit's tones; other keys decay in 0.12 s.
DRUM_DECAY = {35: 0.3, 36: 0.3, 38: 0.15, 42: 0.04, 44: 0.05, 46: 0.9, 49: 1.2, 57: 1.2, 72: 1.5, 74: 0.8,
              81: 1.0, 83: 0.8}  # fmt: skip


def drum_hit(instrument: int, request: NoteRequest, t: np.ndarray) -> np.ndarray:
    """One struck test drum: a click and a decaying tone set by the key (and a little by the kit)."""
    key = request.pitch
    rng = np.random.default_rng(int.from_bytes(hashlib.sha1(request.cache_key().encode()).digest()[:8], "little"))
    click = rng.uniform(-1.0, 1.0, t.shape[0]) * np.exp(-t / 0.003)
    f0 = 80.0 + (key - 27) * 25.0 + (instrument - 128) * 3.0
    tone = 0.6 * np.sin(2 * np.pi * f0 * t) * np.exp(-t / DRUM_DECAY.get(key, 0.12))
    return (0.6 * request.velocity / 127.0 * (click + tone)).astype(np.float32)


def drum_kit_source() -> HarmonicNoteSource:
    """The test instrument listing every GM program and every drum kit (a model that makes drums)."""
    from engine.midi.drum_kits import DrumKits

    return HarmonicNoteSource(instruments=tuple(range(128)) + tuple(sorted(DrumKits.load().instruments)))


def test_harmonic_source_is_a_note_source_with_the_right_shape():
    source = HarmonicNoteSource()
    assert isinstance(source, NoteSource)
    notes = source.generate([NoteRequest(0, 60, 100), NoteRequest(0, 72, 25)])
    assert notes.shape == (2, 64000) and notes.dtype == np.float32
    assert np.abs(notes[0]).max() > np.abs(notes[1]).max()  # velocity sets the level


def test_harmonic_source_pitch_is_right():
    note = HarmonicNoteSource().generate([NoteRequest(0, 69, 100)])[0]
    spectrum = np.abs(np.fft.rfft(note[:16000]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # 1 Hz bins over 1 s


def test_harmonic_source_seed_changes_phases_only():
    source = HarmonicNoteSource()
    a, b, c = source.generate([NoteRequest(0, 60, 100, seed=1), NoteRequest(0, 60, 100, seed=1),
                               NoteRequest(0, 60, 100, seed=2)])  # fmt: skip
    assert np.array_equal(a, b) and not np.array_equal(a, c)
