"""The engine core on its own: voices, loops, envelopes, pedals, bends, stealing, mixer and limiter.

Notes come from the test instrument (``HarmonicNoteSource``), prepared exactly as the
note cache prepares model output.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_harmonic_source import HarmonicNoteSource

from engine.synth import NoteSample, Patch, Synth, VoiceState, prepare_note
from engine.synth.sample import GUARD, HELD_SECONDS, find_loop
from mars_model.api import NoteRequest

RATE = 16000
BLOCK = 256


@pytest.fixture(scope="module")
def notes() -> dict[int, NoteSample]:
    source = HarmonicNoteSource()
    pitches = [48, 52, 55, 57, 60, 64, 67, 69, 72]
    waves = source.generate([NoteRequest(0, p, 100) for p in pitches])
    return {p: prepare_note(w, 16000, RATE, p) for p, w in zip(pitches, waves, strict=True)}


def silent_note() -> NoteSample:
    return prepare_note(np.zeros(64000, np.float32), 16000, RATE, 60)


def run(synth: Synth, seconds: float, events=()) -> np.ndarray:
    """Render ``seconds``; ``events`` are (time_s, callable) applied at their block boundary."""
    frames = int(seconds * RATE)
    pending = sorted(events, key=lambda e: e[0])
    out = np.zeros((2, frames), np.float32)
    block = np.zeros((2, BLOCK), np.float32)
    now = 0
    while now < frames:
        while pending and pending[0][0] * RATE <= now:
            pending.pop(0)[1]()
        n = min(BLOCK, frames - now)
        if pending:
            n = max(1, min(n, int(pending[0][0] * RATE) - now))
        synth.render(block, n)
        out[:, now : now + n] = block[:, :n]
        now += n
    return out


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_loop_points_lie_in_the_held_part_and_join_smoothly(notes):
    note = notes[60]
    assert note.loop_start + note.loop_length <= HELD_SECONDS * RATE
    assert note.crossfade < note.loop_length
    # Entering the loop and wrapping around it continue the waveform without a jump.
    entry = note.loop_entry
    assert note.loop[note.loop_length - note.crossfade] == pytest.approx(note.data[entry], abs=0.02)
    assert note.loop[note.loop_length] == note.loop[0]  # cyclic guard
    start, end, crossfade = find_loop(note.data[:-GUARD], RATE)
    assert (start, end - start, crossfade) == (note.loop_start, note.loop_length, note.crossfade)


@pytest.mark.parametrize("length", [0, 10, 1008])  # empty, a few samples, a tiny test model's note
def test_short_generated_notes_still_play_and_loop(length):
    wave = np.sin(np.arange(length) * 2 * np.pi * 440 / 16000).astype(np.float32) * 0.5
    note = prepare_note(wave, 16000, 48000, 69)
    assert 0 <= note.loop_start and note.crossfade < note.loop_length <= note.length
    synth = Synth(48000, 4, 512, gain=1.0)
    synth.note_on(0, 69, 100, note, Patch())
    block = np.zeros((2, 512), np.float32)
    for _ in range(100):  # about 1 s held, far past the note's end
        synth.render(block)
        assert np.isfinite(block).all()
    assert synth.active_voices == 1


def test_a_note_held_past_the_generated_length_keeps_sounding_without_clicks(notes):
    synth = Synth(RATE, 8, BLOCK, gain=1.0)
    synth.note_on(0, 60, 100, notes[60], Patch(release=0.2))
    out = run(synth, 10.0)[0]
    held_early, held_late = rms(out[int(1.5 * RATE) : int(2.5 * RATE)]), rms(out[int(8 * RATE) : int(9 * RATE)])
    assert held_late > 0.5 * held_early  # still sounding at 8-9 s, at about the same level
    # No click: the largest step between samples while looping is no larger than before the loop.
    before = np.abs(np.diff(out[int(0.5 * RATE) : notes[60].loop_entry])).max()
    looping = np.abs(np.diff(out[notes[60].loop_entry : int(10 * RATE)])).max()
    assert looping <= 1.3 * before


def test_a_zero_length_note_still_sounds_for_the_minimum_note_length(notes):
    synth = Synth(RATE, 8, BLOCK, gain=1.0)
    synth.note_on(0, 60, 100, notes[60], Patch(attack=0.0, release=0.05))
    synth.note_off(0, 60)  # same sample, as a MIDI file can have
    out = run(synth, 0.5)[0]
    assert rms(out[: int(0.01 * RATE)]) > 0.01 and synth.active_voices == 0


def test_release_envelope_ends_the_note(notes):
    synth = Synth(RATE, 8, BLOCK, gain=1.0)
    voice = synth.note_on(0, 60, 100, notes[60], Patch(release=0.1))
    out = run(synth, 2.0, [(0.5, lambda: synth.note_off(0, 60))])[0]
    assert rms(out[int(0.3 * RATE) : int(0.5 * RATE)]) > 0.05
    assert np.abs(out[int(0.5 * RATE) + int(0.15 * RATE) :]).max() < 1e-3 * np.abs(out).max() * 10
    assert voice.state == VoiceState.FREE and synth.active_voices == 0


def test_transposition_and_pitch_bend_set_the_playback_rate(notes):
    synth = Synth(RATE, 8, BLOCK)
    voice = synth.note_on(0, 62, 100, notes[60], Patch())  # no note at 62: transposed from 60
    assert voice.rate == pytest.approx(2 ** (2 / 12))
    synth.pitch_bend(0, 8191)
    assert voice.rate == pytest.approx(2 ** ((2 + 2 * 8191 / 8192) / 12))
    for cc, value in ((101, 0), (100, 0), (6, 12), (38, 0)):  # RPN 0: bend range 12 semitones
        synth.control_change(0, cc, value)
    assert voice.rate == pytest.approx(2 ** ((2 + 12 * 8191 / 8192) / 12))
    synth.control_change(0, 121, 0)  # reset all controllers: bend back to 0
    assert voice.rate == pytest.approx(2 ** (2 / 12))


def test_sustain_pedal_holds_released_keys_until_lifted(notes):
    synth = Synth(RATE, 8, BLOCK)
    voice = synth.note_on(0, 60, 100, notes[60], Patch())
    run(synth, 0.02)  # past the 10 ms minimum note length
    synth.control_change(0, 64, 127)
    synth.note_off(0, 60)
    assert voice.state == VoiceState.SUSTAINED
    synth.control_change(0, 64, 0)
    assert voice.state == VoiceState.RELEASED


def test_sostenuto_holds_only_the_keys_down_when_pressed(notes):
    synth = Synth(RATE, 8, BLOCK)
    held = synth.note_on(0, 48, 100, notes[48], Patch())
    synth.control_change(0, 66, 127)
    later = synth.note_on(0, 64, 100, notes[64], Patch())
    run(synth, 0.02)
    synth.note_off(0, 48)
    synth.note_off(0, 64)
    assert held.state == VoiceState.SUSTAINED and later.state == VoiceState.RELEASED
    synth.control_change(0, 66, 0)
    assert held.state == VoiceState.RELEASED


def test_retrigger_releases_the_sounding_voice(notes):
    synth = Synth(RATE, 8, BLOCK)
    first = synth.note_on(0, 60, 100, notes[60], Patch())
    run(synth, 0.02)
    second = synth.note_on(0, 60, 90, notes[60], Patch())
    run(synth, 0.02)
    assert first is not second
    assert first.state == VoiceState.RELEASED and second.state == VoiceState.HELD
    synth.note_off(0, 60)
    assert second.state == VoiceState.RELEASED


def test_polyphony_limit_holds_and_steals_by_the_documented_order(notes):
    synth = Synth(RATE, polyphony=4, block_size=BLOCK)
    a = synth.note_on(0, 48, 100, notes[48], Patch(release=5.0))
    b = synth.note_on(0, 52, 100, notes[52], Patch())
    c = synth.note_on(0, 55, 100, notes[55], Patch())
    d = synth.note_on(0, 57, 100, notes[57], Patch())
    run(synth, 0.02)
    synth.control_change(0, 64, 127)
    synth.note_off(0, 57)  # d: sustained by the pedal
    synth.control_change(0, 64, 0)
    synth.control_change(0, 64, 127)  # d released by the lift, then pedal down again
    synth.note_off(0, 55)  # c: sustained
    assert (d.state, c.state) == (VoiceState.RELEASED, VoiceState.SUSTAINED)
    synth.note_on(0, 60, 100, notes[60], Patch())
    assert d.state == VoiceState.STOLEN  # released goes first
    synth.note_on(0, 64, 100, notes[64], Patch())
    assert c.state == VoiceState.STOLEN  # then sustained
    synth.note_on(0, 67, 100, notes[67], Patch())
    assert a.state == VoiceState.STOLEN and b.state == VoiceState.HELD  # then the oldest held
    assert synth.active_voices == 4 and synth.peak_voices == 4 and synth.steals == 3
    for key in (69, 72, 48, 52):
        synth.note_on(0, key, 100, notes.get(key, notes[60]), Patch())
        assert synth.active_voices <= 4
    run(synth, 0.5)
    assert sum(v.state != VoiceState.FREE for v in synth.voices) == 4


def test_equal_age_steals_the_quietest(notes):
    synth = Synth(RATE, polyphony=2, block_size=BLOCK)
    loud = synth.note_on(0, 48, 100, notes[48], Patch(), gain=1.0)
    quiet = synth.note_on(0, 52, 100, notes[52], Patch(), gain=0.1)
    loud.serial = quiet.serial  # same start (a chord)
    synth.note_on(0, 55, 100, notes[55], Patch())
    assert quiet.state == VoiceState.STOLEN and loud.state == VoiceState.HELD


def test_a_stolen_voice_fades_out_within_5_ms(notes):
    synth = Synth(RATE, polyphony=1, block_size=BLOCK, gain=1.0)
    synth.note_on(0, 60, 127, notes[60], Patch())
    steal_at = 0.5
    out = run(synth, 0.6, [(steal_at, lambda: synth.note_on(0, 64, 100, silent_note(), Patch()))])[0]
    reference = Synth(RATE, polyphony=1, block_size=BLOCK, gain=1.0)
    reference.note_on(0, 60, 127, notes[60], Patch())
    ref = run(reference, 0.6)[0]
    cut = int(steal_at * RATE)
    assert np.abs(out[cut + int(0.005 * RATE) :]).max() == 0.0  # gone within 5 ms
    fade = int(0.003 * RATE)
    expected = ref[cut : cut + fade] * (1 - np.arange(fade) / fade)  # a linear fade, not a cut
    np.testing.assert_allclose(out[cut : cut + fade], expected, atol=1e-4)


def test_all_sound_off_silences_within_5_ms_and_all_notes_off_respects_the_pedal(notes):
    synth = Synth(RATE, 8, BLOCK)
    synth.note_on(1, 60, 100, notes[60], Patch())
    synth.control_change(0, 64, 127)
    pedalled = synth.note_on(0, 64, 100, notes[64], Patch())
    synth.control_change(0, 123, 0)
    assert pedalled.state == VoiceState.SUSTAINED
    synth.control_change(1, 120, 0)
    out = run(synth, 0.1)
    assert synth.voices[0].state == VoiceState.FREE and pedalled.state == VoiceState.SUSTAINED
    assert np.abs(out).max() > 0


def test_volume_expression_and_pan(notes):
    def level(*ccs):
        synth = Synth(RATE, 4, BLOCK, gain=0.5)
        for cc, value in ccs:
            synth.control_change(0, cc, value)
        synth.note_on(0, 60, 100, notes[60], Patch())
        out = run(synth, 1.0)
        return rms(out[0, RATE // 2 :]), rms(out[1, RATE // 2 :])

    left, right = level((7, 127))
    assert left == pytest.approx(right, rel=1e-3)
    quieter = level((7, 127), (11, 64))[0]
    assert quieter / left == pytest.approx((64 / 127) ** 2, rel=0.02)
    hard_left = level((7, 127), (10, 0))
    assert hard_left[1] < 1e-6 and hard_left[0] == pytest.approx(np.sqrt(2) * left, rel=0.02)


def test_modulation_wheel_adds_vibrato(notes):
    synth = Synth(RATE, 4, BLOCK, gain=1.0)
    synth.control_change(0, 1, 127)
    synth.note_on(0, 69, 100, notes[69], Patch())
    out = run(synth, 1.0)[0]
    plain = Synth(RATE, 4, BLOCK, gain=1.0)
    plain.note_on(0, 69, 100, notes[69], Patch())
    ref = run(plain, 1.0)[0]
    assert not np.allclose(out, ref, atol=1e-3)
    assert rms(out[RATE // 2 :]) == pytest.approx(rms(ref[RATE // 2 :]), rel=0.1)  # pitch moves, not level


def test_dense_chord_never_clips(notes):
    synth = Synth(RATE, polyphony=64, block_size=BLOCK, gain=4.0)
    keys = list(notes)
    for i in range(32):
        synth.note_on(0, 40 + i, 127, notes[keys[i % len(keys)]], Patch(attack=0.0), gain=1.0)
    out = run(synth, 1.0)
    assert np.abs(out).max() < 1.0
    assert rms(out) > 0.2  # limited, not crushed to silence
    assert synth.limiter.reduction_db > 3


def test_rendering_a_block_allocates_no_arrays(notes):
    frames = 4096  # any temporary array of a block would be >= 16 KiB; Python's own objects stay far below
    synth = Synth(RATE, 16, frames)
    synth.control_change(0, 1, 100)  # vibrato path too
    for key in (48, 52, 55, 60):
        synth.note_on(0, key, 100, notes[key], Patch())
    synth.note_on(1, 64, 100, notes[64], Patch(release=10.0))
    synth.note_off(1, 64)  # a releasing voice
    synth.control_change(2, 10, 0)
    synth.note_on(2, 67, 100, notes[67], Patch(attack=1.0))  # in its attack, with a pan ramp
    block = np.zeros((2, frames), np.float32)
    synth.render(block)
    synth.control_change(2, 10, 127)
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _ in range(5):
        synth.render(block)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert synth.active_voices == 6
    assert peak - baseline < frames * 4


@pytest.mark.integration
@pytest.mark.parametrize("program", [16, 48, 73])  # organ, strings, flute: sustained, real recordings
def test_loops_of_real_instrument_notes_hold_level_without_clicks(timgm_soundfont, program):
    from mars_model.data.build import render_notes

    rate = 48000
    wave = render_notes(timgm_soundfont, program, [(60, 100)])[0]
    note = prepare_note(wave, 16000, rate, 60)
    synth = Synth(rate, 4, 1024, gain=1.0)
    synth.note_on(0, 60, 100, note, Patch())
    block = np.zeros((2, 1024), np.float32)
    chunks = []
    for _ in range(int(9 * rate / 1024)):
        synth.render(block)
        chunks.append(block[0].copy())
    y = np.concatenate(chunks)
    early, late = rms(y[int(1.5 * rate) : int(2.5 * rate)]), rms(y[int(7.5 * rate) : int(8.5 * rate)])
    assert abs(20 * np.log10(late / early)) < 3  # the held note keeps its level
    curvature = np.abs(np.diff(y, 2))
    wraps = range(note.loop_start + note.loop_length, len(y) - 64, note.loop_length)
    at_wraps = max(curvature[w - 32 : w + 32].max() for w in wraps)
    assert at_wraps <= 1.5 * np.percentile(curvature[note.loop_entry :], 99.9)  # no click at the seam


_OPS = st.lists(st.tuples(st.sampled_from(["on", "off", "cc", "bend", "render"]), st.integers(0, 3),
                          st.integers(0, 127), st.integers(1, 700)), min_size=1, max_size=60)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, polyphony=st.integers(1, 6))
def test_any_event_sequence_keeps_the_invariants(notes, ops, polyphony):
    """Whatever arrives: never more voices than allowed, finite output strictly inside (-1, 1),
    and all-sound-off silences everything within 5 ms."""
    synth = Synth(RATE, polyphony, 512, gain=3.0)
    block = np.zeros((2, 512), np.float32)
    keys = list(notes)
    for op, channel, value, frames in ops:
        if op == "on":
            synth.note_on(channel, keys[value % len(keys)], max(1, value), notes[keys[value % len(keys)]], Patch())
        elif op == "off":
            synth.note_off(channel, keys[value % len(keys)])
        elif op == "cc":
            synth.control_change(channel, [1, 7, 10, 11, 64, 66, 121, 123][value % 8], value)
        elif op == "bend":
            synth.pitch_bend(channel, value * 128 - 8192)
        else:
            peak = synth.render(block, min(frames, 512))
            assert np.isfinite(block).all() and np.abs(block).max() < 1.0 and peak < 1.0
        assert synth.active_voices <= polyphony
    synth.all_sound_off()
    synth.render(block, int(0.005 * RATE))
    synth.render(block, 64)
    assert not synth.busy and np.abs(block[:, :64]).max() == 0.0
