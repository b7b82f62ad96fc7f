"""General MIDI drums: channel 10 plays drum kits through the kit table, one-shots, chokes, warnings.

Drum notes come from the test instrument's struck one-shots (``drum_hit``: a 3 ms click and a
key-dependent decaying tone, louder with velocity) from a source that lists every kit, and
are measured in the rendered audio. A source that lists no kits (as the shipped model)
leaves channel 10 silent with one warning.
"""

from __future__ import annotations

import mido
import numpy as np
import pytest
from test_engine_harmonic_source import DRUM_DECAY, HarmonicNoteSource, drum_kit_source
from test_render import cc, note, write_midi

from engine.midi.drum_kits import DrumKits
from engine.midi.program_map import ProgramMap
from engine.render import RenderSettings, render_to_array
from engine.synth.effects import DRY
from mars_model.api import NoteRequest

RATE = 48000
TICK = 1 / 960  # seconds per tick at 120 bpm and 480 ticks per beat
DRUMS = 9  # channel 10, 0-based


def render(path, source, **kw):
    kw.setdefault("tail", 2.0)
    return render_to_array(path, RenderSettings(sample_rate=RATE, progress=False, effects=DRY, **kw), source)


def program(tick, number, ch=DRUMS):
    return [(tick, mido.Message("program_change", program=number, channel=ch))]


def energy(audio, start_s, end_s) -> float:
    part = audio[:, int(start_s * RATE) : int(end_s * RATE)].astype(np.float64)
    return float(np.sum(part * part))


def onset(audio, expected_s, search_s=0.02) -> float:
    """Seconds from ``expected_s`` to the onset found within +/- ``search_s``: the first sample where
    the first difference (the click; the decaying tones barely move it) passes a quarter of its
    largest value in the window."""
    mono = audio.sum(axis=0).astype(np.float64)
    lo = int((expected_s - search_s) * RATE)
    diff = np.abs(np.diff(mono[lo : int((expected_s + search_s) * RATE)]))
    first = int(np.flatnonzero(diff > 0.25 * diff.max())[0])
    return (lo + first + 1) / RATE - expected_s


@pytest.fixture
def kits_source():
    return drum_kit_source()


# A bar and a half at 120 bpm in eighths (240 ticks = 0.25 s) from 0.5 s: (tick, key, velocity).
PATTERN = [(480 + tick, key, vel) for tick, key, vel in [
    (0, 36, 110), (0, 42, 80), (240, 42, 70), (480, 38, 100), (480, 42, 80), (720, 46, 90),
    (960, 42, 80), (960, 36, 120), (1200, 44, 60), (1440, 38, 127), (1440, 42, 85), (1680, 45, 90),
    (1800, 47, 95), (1920, 49, 127), (1920, 36, 100), (2160, 50, 80), (2400, 49, 60), (2640, 49, 100),
]]  # fmt: skip


def test_a_drum_pattern_renders_every_hit_on_time(tmp_path, kits_source):
    events = [e for tick, key, vel in PATTERN for e in note(tick, 60, key, vel, ch=DRUMS)]
    audio, report = render(write_midi(tmp_path / "beat.mid", events), kits_source)
    assert not [w for w in report.warnings if "drum" in w], report.warnings
    assert report.notes == len(PATTERN) and report.skipped_notes == 0
    for tick in sorted({tick for tick, _, _ in PATTERN}):
        assert abs(onset(audio, tick * TICK)) <= 0.003, (tick, onset(audio, tick * TICK))
    # The notes were asked of the Standard kit at their drum keys.
    assert {(r.instrument, r.pitch) for r in kits_source.requests} == {(128, key) for _, key, _ in PATTERN}


def test_a_closed_hi_hat_chokes_an_open_one(tmp_path, kits_source):
    open_alone = write_midi(tmp_path / "open.mid", note(0, 60, 46, ch=DRUMS) + note(480, 60, 38, 30, ch=DRUMS))
    choked = write_midi(tmp_path / "choked.mid", note(0, 60, 46, ch=DRUMS) + note(480, 60, 42, 30, ch=DRUMS))
    ringing, _ = render(open_alone, kits_source)
    cut, _ = render(choked, kits_source)
    # Before the second hit both are the same open hi-hat ...
    assert np.allclose(ringing[:, : int(0.49 * RATE)], cut[:, : int(0.49 * RATE)], atol=1e-6)
    # ... after a soft snare it rings on; after a soft closed hi-hat it is gone.
    after = (0.55, 1.2)
    assert energy(cut, *after) < 0.01 * energy(ringing, *after)
    # The choke is a fade of a few ms, not a click: what is left of the open hi-hat (the mix
    # less the closed hi-hat alone) moves no faster while it fades than while it rang.
    closed, _ = render(write_midi(tmp_path / "closed.mid", note(480, 60, 42, 30, ch=DRUMS)), kits_source)
    rest = cut[0] - closed[0]
    fading = np.abs(np.diff(rest[int(0.5 * RATE) : int(0.51 * RATE)])).max()
    assert fading <= 1.5 * np.abs(np.diff(rest[int(0.45 * RATE) : int(0.5 * RATE)])).max()
    assert np.abs(rest[int(0.51 * RATE) :]).max() < 1e-6


def test_louder_hits_are_louder(tmp_path, kits_source):
    velocities = (20, 45, 70, 100, 127)
    events = [e for i, vel in enumerate(velocities) for e in note(i * 960, 60, 49, vel, ch=DRUMS)]
    audio, _ = render(write_midi(tmp_path / "crash.mid", events), kits_source)
    levels = [energy(audio, i, i + 0.05) for i in range(len(velocities))]
    assert all(b > 1.3 * a for a, b in zip(levels, levels[1:], strict=False)), levels


@pytest.mark.parametrize("key, cut", [(36, False), (72, True)])
def test_note_off_cuts_a_long_whistle_but_not_a_kick(tmp_path, kits_source, key, cut):
    short = write_midi(tmp_path / "short.mid", note(0, 48, key, ch=DRUMS))  # key up after 50 ms
    long = write_midi(tmp_path / "long.mid", note(0, 1920, key, ch=DRUMS))  # ... after 2 s
    a, _ = render(short, kits_source)  # both run 2 s past their last note-off
    b, _ = render(long, kits_source)
    window = (0.2, 0.6)
    assert energy(b, *window) > 0.01  # the drum still sounds there when the key stays down
    if cut:
        assert energy(a, *window) < 0.05 * energy(b, *window)
    else:
        assert a.shape[1] >= 2 * RATE and np.array_equal(a[:, : 2 * RATE], b[:, : 2 * RATE])


def test_a_one_shot_plays_to_its_end_and_never_loops(tmp_path, kits_source):
    # A kick held for 6 s: a looping voice would still sound at 5 s; the one-shot ended at 4 s.
    audio, report = render(write_midi(tmp_path / "held.mid", note(0, 5760, 36, ch=DRUMS)), kits_source, tail="eot")
    assert energy(audio, 0.0, 0.3) > 0.1
    assert energy(audio, 4.1, 5.9) == 0.0
    assert not [w for w in report.warnings if "still held" in w]


def test_kit_program_change_selects_the_kit_and_variations_fall_back(tmp_path, kits_source):
    events = (program(0, 25) + note(0, 60, 36, ch=DRUMS) + note(240, 60, 54, ch=DRUMS)  # TR-808
              + program(480, 9) + note(480, 60, 36, ch=DRUMS) + note(720, 60, 49, ch=DRUMS)  # Room 1
              + note(960, 60, 39, ch=DRUMS))  # fmt: skip
    _, report = render(write_midi(tmp_path / "kits.mid", events), kits_source)
    asked = sorted((r.instrument, r.pitch) for r in kits_source.requests)
    # 808's own kick; its tambourine is Standard's; Room 1's own kick; its crash is Room's (8); its
    # clap Standard's.
    assert asked == [(128, 39), (128, 54), (136, 49), (137, 36), (153, 36)]
    assert report.notes == 5 and not report.warnings


def test_a_model_missing_a_variation_plays_the_base_kits_sound():
    kits = ProgramMap.load()
    kits.set_model_instruments([*range(128), 128, 136])  # Standard and Room only
    assert kits.choose(DRUMS, 0, 9, 36).preset.instrument == 136  # Room 1's kick -> Room's
    assert kits.choose(DRUMS, 0, 25, 36).preset.instrument == 128  # TR-808's kick -> Standard's


def test_unknown_kit_unmapped_key_and_kit_on_a_melodic_channel_warn_once_each(tmp_path, kits_source):
    events = (program(0, 60) + note(0, 60, 38, ch=DRUMS) + note(240, 60, 38, ch=DRUMS)  # no kit 60: Orchestra
              + note(480, 60, 20, ch=DRUMS) + note(720, 60, 20, ch=DRUMS)  # key 20: no sound in any kit
              + cc(0, 0, 120, ch=2) + program(0, 25, ch=2)  # channel 3: GM2 rhythm bank, TR-808
              + note(960, 60, 36, ch=2) + note(1200, 60, 36, ch=2))  # fmt: skip
    audio, report = render(write_midi(tmp_path / "odd.mid", events), kits_source)
    assert report.warnings == [
        "drum kit 60 is not in FluidR3_GM's bank 128; playing Orchestra (48), the nearest base kit below it",
        "drum key 20 has no sound in kit Orchestra (48); its notes are skipped",
        "channel 3 selects drum kit TR-808 (25) with bank 120 (a rhythm bank): its keys play drums",
    ]  # fmt: skip
    assert report.notes == 4 and report.skipped_notes == 2
    assert sorted({(r.instrument, r.pitch) for r in kits_source.requests}) == [(153, 36), (176, 38)]
    assert energy(audio, 1.0, 1.1) > 0.01  # the 808 kick on channel 3 sounds


def test_without_kit_instruments_channel_10_is_skipped_with_one_warning(tmp_path):
    from mars_model.api import default_model_instruments

    shipped = default_model_instruments()  # the shipped model's list, read without torch
    assert shipped is not None and not set(shipped) & DrumKits.load().instruments
    source = HarmonicNoteSource(instruments=shipped)
    events = note(0, 240, 60) + [e for tick, key, vel in PATTERN for e in note(tick, 60, key, vel, ch=DRUMS)]
    audio, report = render(write_midi(tmp_path / "band.mid", events), source, preset=None)
    assert report.notes == 1 and report.skipped_notes == len(PATTERN)
    drum_lines = [w for w in report.warnings if "drum" in w]
    assert drum_lines == [f"skipped {len(PATTERN)} drum notes on channel 10 (the model makes no drums yet; to hear "
                          "them pitched, give the channel a preset with --map, e.g. 'channels: {10: vibraphone}')"]
    assert all(r.instrument < 128 for r in source.requests)


def test_a_map_file_can_give_channel_10_another_kit_or_a_preset(tmp_path, kits_source):
    (tmp_path / "kit.yaml").write_text('channels:\n  10: "kit:tr-808"\n  2: "kit:Jazz 1"\n')
    events = program(0, 40) + note(0, 60, 36, ch=DRUMS) + note(240, 60, 36, ch=1)  # program change ignored
    _, report = render(write_midi(tmp_path / "m.mid", events), kits_source, channel_map=tmp_path / "kit.yaml")
    assert sorted((r.instrument, r.pitch) for r in kits_source.requests) == [(153, 36), (161, 36)]
    assert not report.warnings
    (tmp_path / "bad.yaml").write_text('channels:\n  10: "kit:disco"\n')
    with pytest.raises(Exception, match=r"map .*bad.yaml: 'channels.10': unknown drum kit 'disco'"):
        ProgramMap.load(tmp_path / "bad.yaml")


def test_the_test_kit_has_the_decays_the_tests_rely_on():
    # Guards the measurements above: a ringing open hi-hat and whistle, a short closed hi-hat.
    assert DRUM_DECAY[46] > 10 * DRUM_DECAY[42] and DRUM_DECAY[72] > 1.0


# -- live play: the same channel-10 logic through LiveControl and the audio callback -------------


class LiveRig:
    """A LiveControl on the General MIDI map with a kit-making model; requests are recorded and
    the kit notes handed in by the test, as the generation worker would."""

    def __init__(self) -> None:
        from engine.live.control import LiveControl
        from engine.live.renderer import BlockRenderer
        from engine.synth import Synth

        self.synth = Synth(RATE, 16, 256, 0.5)
        self.renderer = BlockRenderer(self.synth)
        self.map = ProgramMap.load()
        self.map.set_model_instruments(drum_kit_source().instruments)
        self.requests: list[tuple[int, object]] = []
        self.control = LiveControl(self.renderer, self.map,
                                   lambda preset, key, priority, rank: self.requests.append((priority, key)))  # fmt: skip

    def ready(self, key, instrument: int = 128) -> None:
        from engine.synth import prepare_note

        wave = drum_kit_source().generate([NoteRequest(instrument, key.pitch, key.velocity)])[0]
        self.control.note_ready(key, prepare_note(wave, 16000, RATE, key.pitch))

    def play(self, seconds: float) -> np.ndarray:
        from test_live_control import Flags

        out = np.zeros((int(seconds * RATE), 2), np.float32)
        for start in range(0, out.shape[0], 256):
            n = min(256, out.shape[0] - start)
            self.renderer(out[start : start + n], n, None, Flags())
        return out.T


def hit(key: int, velocity: int = 100) -> mido.Message:
    return mido.Message("note_on", note=key, velocity=velocity, channel=DRUMS)


def test_live_drums_wait_for_their_own_note_and_choke_in_the_callback():
    import tracemalloc

    rig = LiveRig()
    rig.control.midi(hit(46))
    urgent = [key for priority, key in rig.requests if priority == 0]
    assert [(k.pitch, k.velocity) for k in urgent] == [(46, 100)]
    assert not [k for p, k in rig.requests if p == 1]  # no "neighbouring pitches": they are other drums
    rig.ready(type(urgent[0])(urgent[0].identity, 42, urgent[0].bucket))  # another drum of the kit lands
    assert energy(rig.play(0.1), 0, 0.1) == 0.0  # ... and is no stand-in: the open hi-hat waits
    rig.ready(urgent[0])
    ringing = rig.play(0.3)
    assert energy(ringing, 0.2, 0.3) > 0.01 and rig.control.stats.late == 1
    rig.control.midi(mido.Message("note_off", note=46, channel=DRUMS))  # a one-shot: rings on
    rig.control.midi(hit(42))  # the closed hi-hat is ready: it plays at once and chokes
    from test_live_control import Flags

    block, flags = np.zeros((256, 2), np.float32), Flags()
    tracemalloc.start()
    for _ in range(20):  # 0.32 s, the choke in the first block
        rig.renderer(block, 256, None, flags)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 1024  # the callback allocated no buffers while choking
    assert rig.control.stats.exact == 1
    assert energy(rig.play(0.2), 0.0, 0.2) < 0.01 * energy(ringing, 0.1, 0.3)


def test_live_kit_program_change_generates_the_kits_keys_ahead():
    rig = LiveRig()
    rig.control.midi(mido.Message("program_change", program=25, channel=DRUMS))
    ahead = {(k.pitch, k.identity.split(";")[0]) for p, k in rig.requests if p == 3}
    kit = DrumKits.load().kit(25)
    assert {pitch for pitch, _ in ahead} == set(kit.sounds)
    assert (36, "i=153:1.0000") in ahead and (54, "i=128:1.0000") in ahead


# -- mars-synth note --kit --------------------------------------------------------------------


def test_note_kit_fails_with_one_line_when_the_model_makes_no_drums(monkeypatch, tmp_path, capsys):
    from engine.bindings.cli import main

    monkeypatch.delenv("MARS_SYNTH_NOTE_SOURCE", raising=False)  # the shipped model, which lists no kit
    assert main(["note", "--kit", "standard", "--pitch", "38", "-o", str(tmp_path / "snare.wav")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mars-synth note: error: the model makes no drums yet")
    assert not (tmp_path / "snare.wav").exists()


def test_note_kit_writes_the_kits_note_when_the_model_makes_drums(monkeypatch, tmp_path, capsys):
    import soundfile

    from engine.bindings.cli import main

    monkeypatch.setenv("MARS_SYNTH_NOTE_SOURCE", "test_engine_harmonic_source:drum_kit_source")
    out = tmp_path / "kick.wav"
    assert main(["note", "--kit", "25", "--pitch", "36", "-o", str(out), "--sample-rate", "16000"]) == 0
    wave, rate = soundfile.read(out)
    expected = drum_kit_source().generate([NoteRequest(153, 36, 100)])[0]
    assert rate == 16000 and np.allclose(wave, expected, atol=1e-4)  # TR-808's own kick, as generated
    assert "TR-808 kit Bass Drum 1" in capsys.readouterr().err
    assert main(["note", "--kit", "tr-808", "--pitch", "58", "-o", str(out)]) == 1  # no vibraslap on the 808
    assert "drum key 58 has no sound in kit TR-808 (25)" in capsys.readouterr().err
