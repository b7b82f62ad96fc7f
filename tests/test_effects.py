"""The reverb and the chorus, alone and in the synth: decay time, what CC91/CC93 do, stereo,
real-time safety (no allocation, no denormal slowdown, no NaN) and the live parameters.

Notes come from the test instrument (``HarmonicNoteSource``). Decay times are measured as a
listener's meter would: Schroeder backward integration of the tail, a line fitted to the
energy decay curve between -5 and -35 dB, extrapolated to 60 dB.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
from test_engine_harmonic_source import HarmonicNoteSource

from engine.synth import Patch, Synth, prepare_note
from engine.synth.effects import DRY, Chorus, EffectsSettings, Reverb, decay_time, impulse_response
from mars_model.api import NoteRequest
from mars_model.errors import MarsError

RATE = 16000
BLOCK = 256


@pytest.fixture(scope="module")
def note60() -> dict[int, object]:
    wave = HarmonicNoteSource().generate([NoteRequest(0, 60, 100)])[0]
    return {rate: prepare_note(wave, 16000, rate, 60) for rate in (16000, 48000)}


def play(note, effects: EffectsSettings | None, seconds: float, ccs=(), held: float = 0.1, rate: int = RATE,
         block: int = BLOCK) -> np.ndarray:  # fmt: skip
    """A staccato note on channel 0 after ``ccs`` (control, value), rendered for ``seconds``."""
    synth = Synth(rate, 8, block, 0.5, effects=effects)
    for control, value in ccs:
        synth.control_change(0, control, value)
    synth.note_on(0, 60, 100, note, Patch(release=0.05))
    out = np.zeros((2, int(seconds * rate)), np.float32)
    buffer = np.zeros((2, block), np.float32)
    off = int(held * rate)
    now = 0
    while now < out.shape[1]:
        n = min(block, out.shape[1] - now, off - now if now < off else block)
        synth.render(buffer, n)
        out[:, now : now + n] = buffer[:, :n]
        now += n
        if now == off:
            synth.note_off(0, 60)
    return out


# ---------------------------------------------------------------------------------- the reverb alone


@pytest.mark.parametrize("seconds", [0.5, 1.8, 4.0])
def test_reverb_decays_in_its_set_time_at_every_frequency_without_damping(seconds):
    ir = impulse_response(Reverb(48000, 512, time=seconds, damping=0.0), 1.2 * seconds + 0.3)
    assert decay_time(ir, 48000) == pytest.approx(seconds, rel=0.03)
    for band in ((350, 700), (1400, 2800), (5600, 11200)):
        assert decay_time(ir, 48000, band) == pytest.approx(seconds, rel=0.05), band


def test_damping_shortens_the_highs_and_keeps_the_lows():
    ir = impulse_response(Reverb(48000, 512, time=1.8, damping=1.0), 2.5)
    low, mid, high = (decay_time(ir, 48000, band) for band in ((350, 700), (2800, 5600), (7000, 10000)))
    assert low == pytest.approx(1.8, rel=0.05)
    assert high < 0.75 * low and mid < low  # highs die sooner, like a real hall's air and walls
    assert high < mid


def test_reverb_time_can_change_between_blocks():
    reverb = Reverb(16000, 256, time=3.0, damping=0.0)
    reverb.set_time(0.8)
    assert decay_time(impulse_response(reverb, 1.3), 16000) == pytest.approx(0.8, rel=0.05)


def test_left_and_right_are_uncorrelated_and_width_0_is_mono():
    wide = impulse_response(Reverb(48000, 512, time=1.5), 1.0)[:, 2400:]  # after the first 50 ms
    assert abs(np.corrcoef(wide[0], wide[1])[0, 1]) < 0.1
    narrow = impulse_response(Reverb(48000, 512, time=1.5, width=0.0), 1.0)[:, 2400:]
    assert np.corrcoef(narrow[0], narrow[1])[0, 1] > 0.999


def test_the_onset_is_dense_not_a_flutter():
    ir = impulse_response(Reverb(48000, 512, time=1.5), 0.2)
    assert not ir[:, : int(0.02 * 48000)].any()  # the pre-delay
    early = np.abs(ir[0, int(0.02 * 48000) : int(0.06 * 48000)])  # the diffuser alone: 512 echoes in 40 ms
    assert np.count_nonzero(early > early.max() * 0.01) > 300


@pytest.mark.parametrize("block", [128, 1000, 4096])
def test_block_size_does_not_change_the_sound(block):
    reference = impulse_response(Reverb(16000, 4096, time=1.0), 1.0, block=4096)
    other = impulse_response(Reverb(16000, 4096, time=1.0), 1.0, block=block)
    np.testing.assert_allclose(other, reference, atol=1e-6)


# ---------------------------------------------------------------------------------- real-time safety


@pytest.mark.parametrize("effect", ["reverb", "chorus"])
def test_process_allocates_no_arrays(effect):
    rng = np.random.default_rng(0)
    fx = Reverb(48000, 4096) if effect == "reverb" else Chorus(48000, 4096)
    send = (rng.standard_normal((2, 4096)) * 0.1).astype(np.float32)
    out = np.zeros((2, 4096), np.float32)
    sizes = [128, 4096, 1000, 37, 128, 2048]
    for n in sizes:  # warm up: each block length lays out its gather index once
        fx.process(send, out, n)
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for repeat in range(20):
        for n in sizes:
            fx.level = 0.5 + 0.25 * (repeat % 2)  # level ramps too
            fx.process(send if repeat % 5 else None, out, n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak - baseline < 8 * 1024  # a temporary block buffer would be >= 16 KiB; Python objects stay below


def test_a_long_silence_leaves_no_denormals_no_nan_and_no_slowdown():
    block = 512
    rng = np.random.default_rng(1)
    burst = (rng.standard_normal((2, block)) * 0.5).astype(np.float32)
    zeros = np.zeros((2, block), np.float32)
    out = np.zeros((2, block), np.float32)
    aged = Reverb(16000, block, time=2.0)
    for _ in range(20):
        aged.process(burst, out, block)
    for _ in range(int(60 * 16000 / block)):  # a minute of silence fed as zeros (a muted channel)
        aged.process(zeros, out, block)
    assert aged.idle and np.isfinite(out).all()
    tiny = np.finfo(np.float32).tiny
    for rows in (*aged._diffusers, aged._lines):
        values = np.abs(rows.rows)
        assert not np.any((values > 0) & (values < tiny))  # no subnormal left in any line
    fresh = Reverb(16000, block, time=2.0)

    def seconds_per_block(reverb: Reverb) -> float:
        started = time.perf_counter()
        for _ in range(30):
            reverb.process(burst, out, block)
        return (time.perf_counter() - started) / 30

    aged_times, fresh_times = [], []
    for _ in range(7):  # interleaved, best of seven: the machine may be busy
        aged_times.append(seconds_per_block(aged))
        fresh_times.append(seconds_per_block(fresh))
    assert min(aged_times) < 4.0 * min(fresh_times)  # denormal arithmetic is 10-100x slower
    assert np.isfinite(out).all()


def test_an_idle_reverb_costs_nothing_and_wakes_on_input():
    reverb = Reverb(16000, 256)
    out = np.zeros((2, 256), np.float32)
    reverb.process(None, out, 256)
    assert reverb.idle and not out.any()
    send = np.zeros((2, 256), np.float32)
    send[:, 0] = 1.0
    for _ in range(40):
        reverb.process(send, out, 256)
        send[:] = 0.0
    assert not reverb.idle and np.abs(out).max() > 1e-4


# ---------------------------------------------------------------------------------- in the synth: CC91, CC93


def test_a_staccato_note_with_cc91_127_rings_on_for_the_set_time(note60):
    effects = EffectsSettings(reverb_time=1.5, reverb_damping=0.0, chorus_level=0.0)
    dry = play(note60[RATE], DRY, 3.0)
    wet = play(note60[RATE], effects, 3.0, ccs=[(91, 127)])
    dry_end = int(np.flatnonzero(np.abs(dry).max(axis=0) > 0)[-1]) + 1
    assert dry_end < 0.3 * RATE  # the note and its release are over by then
    tail = wet[:, dry_end:]
    assert np.abs(tail[:, int(0.5 * RATE) :]).max() > 1e-3  # still audible half a second later
    assert decay_time(tail, RATE) == pytest.approx(1.5, rel=0.1)


def test_cc91_0_ends_with_the_dry_note_bit_for_bit(note60):
    dry = play(note60[RATE], DRY, 1.5)
    wet = play(note60[RATE], EffectsSettings(), 1.5, ccs=[(91, 0)])
    assert np.array_equal(wet, dry)


def test_the_default_send_is_general_midi_2s_40(note60):
    dry = play(note60[RATE], DRY, 1.5)
    default = play(note60[RATE], EffectsSettings(), 1.5)
    full = play(note60[RATE], EffectsSettings(), 1.5, ccs=[(91, 127)])
    tail = slice(int(0.4 * RATE), None)
    ratio = np.sqrt(np.sum(np.square(default[:, tail] - dry[:, tail], dtype=np.float64))
                    / np.sum(np.square(full[:, tail] - dry[:, tail], dtype=np.float64)))  # fmt: skip
    assert ratio == pytest.approx(40 / 127, rel=0.02)


def test_chorus_changes_the_signal_only_when_sent(note60):
    no_reverb = EffectsSettings(reverb_level=0.0)
    dry = play(note60[RATE], DRY, 1.0, held=0.8)
    assert np.array_equal(play(note60[RATE], no_reverb, 1.0, held=0.8), dry)  # CC93 is 0 at power-on
    chorused = play(note60[RATE], no_reverb, 1.0, ccs=[(93, 127)], held=0.8)
    difference = chorused - dry
    assert np.sqrt(np.mean(np.square(difference[:, 2000:12000]))) > 0.3 * np.sqrt(np.mean(np.square(dry[:, 2000:12000])))
    assert np.abs(chorused).max() < 1.0


def test_effect_levels_of_0_are_off_bit_for_bit(note60):
    dry = play(note60[RATE], DRY, 1.0)
    assert np.array_equal(play(note60[RATE], EffectsSettings(reverb_level=0.0, chorus_level=0.0), 1.0,
                               ccs=[(91, 127), (93, 127)]), dry)  # fmt: skip


def test_cc121_keeps_the_sends_and_reset_restores_the_power_on_values(note60):
    synth = Synth(RATE, 4, BLOCK, effects=EffectsSettings())
    assert (synth.channels[3].reverb_send, synth.channels[3].chorus_send) == (40, 0)
    synth.control_change(3, 91, 100)
    synth.control_change(3, 93, 70)
    synth.control_change(3, 121, 0)
    assert (synth.channels[3].reverb_send, synth.channels[3].chorus_send) == (100, 70)
    synth.reset()
    assert (synth.channels[3].reverb_send, synth.channels[3].chorus_send) == (40, 0)


def test_changing_a_send_mid_note_ramps_without_a_click(note60):
    synth = Synth(RATE, 4, BLOCK, effects=EffectsSettings(reverb_level=0.0))
    synth.note_on(0, 60, 100, note60[RATE], Patch())
    block = np.zeros((2, BLOCK), np.float32)
    chunks = []
    for index in range(40):
        if index == 20:
            synth.control_change(0, 93, 127)
        synth.render(block)
        chunks.append(block[0].copy())
    y = np.concatenate(chunks)
    jumps = np.abs(np.diff(y))
    assert jumps[20 * BLOCK - 4 : 20 * BLOCK + 4].max() < 3 * np.percentile(jumps[: 20 * BLOCK], 99.9)


@pytest.mark.parametrize("block", [BLOCK, 32])  # (32: the voices' 3 ms fade spans blocks, and sends nothing)
def test_all_sound_off_fades_the_tails_within_a_block(note60, block):
    synth = Synth(RATE, 4, block, effects=EffectsSettings())
    synth.control_change(0, 91, 127)
    synth.control_change(0, 93, 127)
    synth.note_on(0, 60, 100, note60[RATE], Patch())
    out = np.zeros((2, block), np.float32)
    for _ in range(20 * BLOCK // block):
        synth.render(out)
    synth.all_sound_off()
    synth.render(out)
    if block * 1000 // RATE > 5:  # a block longer than the voices' fade: all of it fades in the block
        assert np.abs(out[:, -4:]).max() < 0.1 * np.abs(out[:, :4]).max()
    for _ in range(int(0.005 * RATE) // block + 1):
        synth.render(out)
    synth.render(out)
    assert not synth.busy and not out.any()


def test_render_with_effects_allocates_no_arrays(note60):
    frames = 4096
    synth = Synth(RATE, 16, frames, effects=EffectsSettings())
    synth.control_change(1, 91, 100)  # a second send group
    synth.control_change(2, 93, 90)  # the chorus too
    for channel, key in ((0, 60), (0, 64), (1, 67), (2, 72)):
        synth.note_on(channel, key, 100, note60[RATE], Patch())
    block = np.zeros((2, frames), np.float32)
    for n in (frames, 1000, 128):
        synth.render(block, n)
    synth.control_change(0, 91, 10)  # a send ramp inside the measured blocks
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for repeat in range(5):
        synth.set_effect("reverb_time", 1.5 + repeat)  # as the audio callback applies /mars/param/reverb_time
        synth.set_effect("reverb", 0.8 + 0.1 * repeat)
        for n in (frames, 1000, 128):
            synth.render(block, n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak - baseline < frames * 4


def test_live_parameters_set_levels_and_time():
    synth = Synth(RATE, 4, BLOCK, effects=EffectsSettings())
    synth.set_effect("reverb", 0.25)
    synth.set_effect("chorus", 0.0)
    synth.set_effect("reverb_time", 3.0)
    assert (synth.reverb.level, synth.chorus.level, synth.reverb.time) == (0.25, 0.0, 3.0)
    with pytest.raises(ValueError, match="unknown effect parameter"):
        synth.set_effect("flanger", 1.0)
    with pytest.raises(ValueError, match="no effects"):
        Synth(RATE, 4, BLOCK).set_effect("reverb", 1.0)


def test_settings_are_checked():
    EffectsSettings().check()
    for bad, words in ((dict(reverb_level=-1), "reverb level"), (dict(reverb_time=0.0), "reverb time"),
                       (dict(reverb_damping=2), "damping"), (dict(chorus_level=9), "chorus level")):  # fmt: skip
        with pytest.raises(MarsError, match=words):
            EffectsSettings(**bad).check()
