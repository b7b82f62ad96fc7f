"""Live play's control side without an audio device: the decisions, the audio callback object, the
generation worker's priorities and batching, the sample swap, and MIDI byte parsing.

The audio callback (:class:`BlockRenderer`) is called here the way sounddevice calls it, with
real status flags, into arrays shaped like sounddevice's; notes come from the test instrument.
"""

from __future__ import annotations

import threading
import time
import tracemalloc

import mido
import numpy as np
import pytest
from test_engine_harmonic_source import HarmonicNoteSource

from engine.drivers.midi_in import MidiInput
from engine.live.control import DEFAULT_BUCKET, LiveControl
from engine.live.events import LiveEvent
from engine.live.generation import GenerationWorker, InProcessNoteMaker
from engine.live.renderer import BlockRenderer
from engine.midi.program_map import ProgramMap
from engine.note_cache import NoteCache, NoteKey
from engine.preset import find_preset
from engine.synth import Patch, Synth, VoiceState, prepare_note
from engine.synth.effects import EffectsSettings
from mars_model.api import NoteRequest, velocity_bucket

RATE = 16000
BLOCK = 256


class Flags:
    """sounddevice's CallbackFlags as the callback reads it (the real class needs PortAudio)."""

    def __init__(self, underflow: bool = False) -> None:
        self.output_underflow = underflow


def note(pitch: int, velocity: int = 100):
    wave = HarmonicNoteSource().generate([NoteRequest(0, pitch, velocity)])[0]
    return prepare_note(wave, 16000, RATE, pitch)


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
    return float(np.argmax(spectrum)) * RATE / audio.shape[0]


class Rig:
    """A LiveControl wired to a real BlockRenderer and Synth; requests are recorded, not generated."""

    def __init__(self, preset: str = "drawbar_organ", effects: EffectsSettings | None = None) -> None:
        self.synth = Synth(RATE, 16, BLOCK, 0.5, effects)
        self.renderer = BlockRenderer(self.synth)
        self.requests: list[tuple[int, NoteKey]] = []
        self.preset = find_preset(preset)
        self.control = LiveControl(self.renderer, ProgramMap.load(fixed=preset),
                                   lambda p, key, priority, rank: self.requests.append((priority, key)))  # fmt: skip
        self.identity = self.preset.identity()

    def key(self, pitch: int, velocity: int = 100) -> NoteKey:
        return NoteKey(self.identity, pitch, velocity_bucket(velocity))

    def ready(self, pitch: int, velocity: int = 100) -> None:
        self.control.note_ready(self.key(pitch, velocity), note(pitch, velocity))

    def play(self, seconds: float) -> np.ndarray:
        frames = int(seconds * RATE)
        out = np.zeros((frames, 2), np.float32)
        for start in range(0, frames, BLOCK):
            n = min(BLOCK, frames - start)
            self.renderer(out[start : start + n], n, None, Flags())
        return out.sum(axis=1)


def on(pitch: int, velocity: int = 100, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)


def off(pitch: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=pitch, channel=channel)


def test_a_ready_note_plays_at_once_and_asks_for_its_neighbours_first():
    rig = Rig()
    rig.ready(69)
    rig.control.midi(on(69))
    audio = rig.play(0.3)
    assert rig.control.stats.exact == 1
    assert dominant_hz(audio[800:]) == pytest.approx(440, abs=5)
    priorities: dict[int, int] = {}
    for priority, key in rig.requests:  # the worker keeps the most urgent request for a note
        if key.bucket == DEFAULT_BUCKET:
            priorities[key.pitch] = min(priority, priorities.get(key.pitch, 9))
    assert priorities[69] == 0 and priorities[68] == priorities[70] == priorities[71] == 1
    assert priorities[60] == 3  # the rest of the range, in the background


def test_a_missing_note_plays_the_nearest_ready_pitch_transposed_then_crossfades_to_the_exact_one():
    rig = Rig()
    rig.ready(67)
    rig.control.midi(on(69))
    assert rig.control.stats.fallback == 1
    before = rig.play(0.3)
    assert dominant_hz(before[800:]) == pytest.approx(440, abs=5)  # 67 transposed up 2 semitones
    voice = next(v for v in rig.synth.voices if v.state == VoiceState.HELD)
    assert voice.sample.root_pitch == 67
    rig.ready(69)  # the exact note lands
    after = rig.play(0.3)
    held = [v for v in rig.synth.voices if v.state == VoiceState.HELD]
    assert len(held) == 1 and held[0].sample.root_pitch == 69 and held[0].rate == 1.0
    assert rig.control.stats.swaps == 1 and rig.synth.active_voices == 1
    assert dominant_hz(after[2000:]) == pytest.approx(440, abs=5)
    # No click: the crossfade keeps the level and the sample-to-sample steps those of a steady tone.
    joined = np.concatenate([before, after])
    steps = np.abs(np.diff(joined[4000:]))
    assert steps.max() < 3 * np.percentile(steps, 99.9)
    rms_before = np.sqrt(np.mean(before[-1600:] ** 2))
    rms_after = np.sqrt(np.mean(after[1600:3200] ** 2))
    assert rms_after == pytest.approx(rms_before, rel=0.25)


def test_with_nothing_ready_a_key_waits_and_starts_when_its_preset_has_any_note():
    rig = Rig()
    rig.control.midi(on(60))
    assert rig.play(0.05).max() == 0.0  # nothing at all generated yet
    rig.ready(62)
    assert rig.control.stats.late == 1
    audio = rig.play(0.3)
    assert dominant_hz(audio[800:]) == pytest.approx(261.6, abs=5)  # 62 transposed down to 60
    rig.control.midi(off(60))
    rig.play(0.5)
    assert rig.synth.active_voices == 0


def test_a_key_released_before_anything_was_ready_never_sounds():
    rig = Rig()
    rig.control.midi(on(60))
    rig.control.midi(off(60))
    rig.ready(60)
    assert rig.play(0.2).max() == 0.0


def test_panic_silences_everything_even_under_the_pedal():
    rig = Rig()
    for pitch in (60, 64, 67):
        rig.ready(pitch)
    rig.control.midi(mido.Message("control_change", control=64, value=127))
    for pitch in (60, 64, 67):
        rig.control.midi(on(pitch))
        rig.control.midi(off(pitch))
    rig.play(0.1)
    assert rig.synth.active_voices == 3  # sustained by the pedal
    rig.control.panic()
    rig.play(0.01)
    assert rig.synth.active_voices == 0 and not rig.synth.busy
    assert np.abs(rig.play(0.05)).max() == 0.0
    rig.control.midi(on(60))  # the pedal is up after a panic
    rig.control.midi(off(60))
    rig.play(0.5)
    assert rig.synth.active_voices == 0


def test_a_disconnected_source_releases_its_notes_and_lifts_its_pedal():
    rig = Rig()
    rig.ready(60)
    rig.ready(64)
    rig.control.midi(mido.Message("control_change", control=64, value=127), source="keyboard")
    rig.control.midi(on(60), source="keyboard")
    rig.control.midi(on(64), source="other")
    rig.play(0.1)
    rig.control.disconnect("keyboard")
    rig.play(0.5)
    held = [v for v in rig.synth.voices if v.state == VoiceState.HELD]
    assert [v.key for v in held] == [64]  # the other source's note plays on


def test_transpose_and_patch_parameters_apply_to_new_notes():
    rig = Rig()
    rig.ready(72)
    rig.control.set_param("transpose", 12)
    rig.control.set_param("attack", 0.2)
    rig.control.midi(on(60))
    audio = rig.play(0.1)
    assert dominant_hz(audio[400:]) == pytest.approx(523.3, abs=8)
    voice = next(v for v in rig.synth.voices if v.state == VoiceState.HELD)
    assert voice.key == 72 and voice.level < 0.6  # still in the 0.2 s attack
    rig.control.midi(off(60))  # releases the transposed key it started
    rig.play(0.8)
    assert rig.synth.active_voices == 0


def test_timed_events_land_on_their_frame_inside_a_block():
    rig = Rig()
    rig.ready(69)
    rig.play(0.1)  # the clock runs
    frame0 = rig.renderer.frame
    due = time.monotonic() + 0.05
    rig.control.handle(LiveEvent("note", (69, 100, None), "osc", due=due))
    target = rig.renderer.frame_at(due)
    assert target > frame0 and rig.renderer.timed and not rig.renderer.immediate
    audio = rig.play(0.2)
    onset = int(np.flatnonzero(np.abs(audio) > 0)[0])
    assert onset - (target - frame0) in (0, 1)  # the note's first sample is its attack's zero


@pytest.mark.parametrize("effects", [None, EffectsSettings()], ids=["dry", "effects"])
def test_the_callback_allocates_nothing_while_playing(effects):
    rig = Rig(effects=effects)
    for pitch in range(48, 72):
        rig.ready(pitch)
    rig.control.midi(mido.Message("control_change", channel=1, control=93, value=100))
    for pitch in range(48, 72, 2):
        rig.control.midi(on(pitch, channel=(pitch // 2) % 2))
    out = np.zeros((BLOCK, 2), np.float32)
    flags = Flags()
    for _ in range(20):
        rig.renderer(out, BLOCK, None, flags)
    tracemalloc.start()
    for _ in range(200):
        rig.renderer(out, BLOCK, None, flags)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 1024  # small Python objects at most; no buffers


def test_effect_parameters_reach_the_audio_thread_as_commands():
    rig = Rig(effects=EffectsSettings())
    for name, value in (("reverb", 0.25), ("chorus", 0.0), ("reverb_time", 3.5)):
        rig.control.handle(LiveEvent("param", (name, value), "osc"))
    assert rig.synth.reverb.level == 1.0  # the control thread never touches the synth
    rig.play(0.02)
    assert (rig.synth.reverb.level, rig.synth.chorus.level, rig.synth.reverb.time) == (0.25, 0.0, 3.5)


def test_underflows_are_counted_from_the_callback_flags():
    rig = Rig()
    out = np.zeros((BLOCK, 2), np.float32)
    rig.renderer(out, BLOCK, None, Flags(underflow=True))
    rig.renderer(out, BLOCK, None, Flags())
    assert rig.renderer.underflows == 1 and rig.renderer.blocks == 2


def test_replace_sample_keeps_a_long_held_note_in_its_loop():
    synth = Synth(RATE, 4, BLOCK)
    low, exact = note(57), note(60)
    synth.note_on(0, 60, 100, low, Patch(0.001, 0.3))
    out = np.zeros((2, BLOCK), np.float32)
    for _ in range(int(4.0 * RATE / BLOCK)):  # past the generated 3 s: the voice loops
        synth.render(out)
    assert synth.replace_sample(0, 60, exact) == 1
    new = next(v for v in synth.voices if v.state == VoiceState.HELD)
    assert new.in_loop and 0 <= new.pos < exact.loop_length
    tail = np.zeros(0, np.float32)
    for _ in range(20):
        synth.render(out)
        tail = np.concatenate([tail, out[0]])
    assert dominant_hz(tail[1600:]) == pytest.approx(261.6, abs=8)


def test_the_worker_generates_urgent_notes_first_and_batches_a_chord():
    source = HarmonicNoteSource()
    cache = NoteCache(RATE, source, source.model_id, 0, None, progress=False)
    got: list[NoteKey] = []
    done = threading.Event()

    def ready(key, sample):
        got.append(key)
        if len(got) == 9:
            done.set()

    worker = GenerationWorker(InProcessNoteMaker(cache), ready, urgent_batch=8, background_batch=2)
    preset = find_preset("flute")
    identity = preset.identity()
    for pitch in range(40, 46):  # background first...
        worker.request(preset, NoteKey(identity, pitch, 3), 3, pitch)
    for pitch in (60, 64, 67):  # ...then a chord is played
        worker.request(preset, NoteKey(identity, pitch, 3), 0, 0)
    worker.start()
    assert done.wait(30)
    worker.stop()
    assert {k.pitch for k in got[:3]} == {60, 64, 67}
    assert source.calls == [3, 2, 2, 2]  # the chord in one call, then the background in pairs


def test_midi_garbage_bytes_are_dropped_and_channel_messages_pass():
    received: list[mido.Message] = []
    port = MidiInput.__new__(MidiInput)  # parsing only: no port is opened
    port.on_message = lambda message, source: received.append(message)
    port.source, port.messages, port.dropped = "test", 0, 0
    port._parser = mido.Parser()
    rng = np.random.default_rng(3)
    for _ in range(2000):
        port.feed(rng.integers(0, 256, int(rng.integers(1, 8))).tolist())
    port.feed([0x90, 60, 100])
    port.feed([0xF8, 0xFE, 0x80, 60, 0])
    assert received[-2:] == [on(60), mido.Message("note_off", note=60, velocity=0)]
    assert all(hasattr(m, "channel") for m in received)


def test_a_preset_change_drops_the_old_range_and_generates_the_new_one_ahead():
    rig = Rig()
    cancelled = []
    rig.control.cancel_background = lambda: cancelled.append(True)
    flute = find_preset("flute")
    rig.requests.clear()
    rig.control.set_preset(flute)
    assert cancelled == [True]
    wanted = {key.pitch for priority, key in rig.requests if priority == 3 and key.identity == flute.identity()}
    assert wanted == set(range(21, 109))
    rig.control.midi(on(60))  # nothing ready at all yet: the key waits for the first note
    assert rig.control.stats.fallback == 0 and rig.play(0.05).max() == 0.0
