"""Reading MIDI files: timing through tempo maps, track merging, and bad files as one clear error."""

from __future__ import annotations

import time
from pathlib import Path

import mido
import pytest

from engine.midi import ProgramMap, read_midi_file
from engine.preset import load_presets
from mars_model.errors import MarsError


def write_midi(path, tracks, ticks_per_beat=480, kind=1):
    """tracks: lists of (absolute tick, message)."""
    mid = mido.MidiFile(type=kind, ticks_per_beat=ticks_per_beat)
    for events in tracks:
        track = mido.MidiTrack()
        now = 0
        for tick, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(track)
    mid.save(path)
    return path


def on(note, vel=100, ch=0):
    return mido.Message("note_on", note=note, velocity=vel, channel=ch)


def tempo(bpm):
    return mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))


def test_tempo_changes_give_exact_sample_times(tmp_path):
    # 120 bpm for two beats (1 s), then 240 bpm: beat 3 is at 1.25 s, beat 4 at 1.5 s.
    path = write_midi(tmp_path / "t.mid", [
        [(0, tempo(120)), (960, tempo(240))],
        [(480, on(60)), (1440, on(62)), (1920, on(64)), (1930, on(64, 0))],
    ])  # fmt: skip
    score = read_midi_file(path, 44100)
    starts = [t.sample for t in score.messages if t.message.type == "note_on" and t.message.velocity]
    assert starts == [22050, 55125, 66150]
    assert score.tempo_changes == 2 and score.note_count == 3


def test_type_0_and_type_1_files_read_the_same(tmp_path):
    events = [(0, tempo(100)), (0, mido.Message("program_change", program=40)), (0, on(60)),
              (240, mido.Message("control_change", control=64, value=127)), (480, on(60, 0))]  # fmt: skip
    zero = read_midi_file(write_midi(tmp_path / "0.mid", [events], kind=0), 48000)
    one = read_midi_file(write_midi(tmp_path / "1.mid", [events[:1], events[1:]]), 48000)
    assert [(t.sample, str(t.message)) for t in zero.messages] == [(t.sample, str(t.message)) for t in one.messages]


def test_smpte_time_division(tmp_path):
    path = write_midi(tmp_path / "s.mid", [[(0, on(60)), (25 * 40, on(62))]], ticks_per_beat=0xE728 - 0x10000)  # -25 fps, 40 ticks/frame
    score = read_midi_file(path, 48000)
    assert [t.sample for t in score.messages] == [0, 48000]


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x01\x00\x90\x3c", "not a valid MIDI file"),
    (b"RIFF this is a WAV, not a MIDI file" * 4, "not a valid MIDI file"),
])  # fmt: skip
def test_empty_truncated_or_corrupt_files_are_one_clear_error(tmp_path, content, words):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(MarsError, match=words) as err:
        read_midi_file(path, 48000)
    assert "\n" not in str(err.value)


def test_a_truncated_real_file_is_a_clear_error(tmp_path):
    good = write_midi(tmp_path / "g.mid", [[(0, on(60)), (480, on(60, 0)), (960, on(62))]])
    data = good.read_bytes()
    cut = tmp_path / "cut.mid"
    cut.write_bytes(data[: len(data) - 7])
    with pytest.raises(MarsError, match="truncated or corrupt"):
        read_midi_file(cut, 48000)


def test_missing_file_and_type_2_file(tmp_path):
    with pytest.raises(MarsError, match="no such file"):
        read_midi_file(tmp_path / "nope.mid", 48000)
    path = write_midi(tmp_path / "2.mid", [[(0, on(60))], [(0, on(62))]], kind=2)
    with pytest.raises(MarsError, match="type 2"):
        read_midi_file(path, 48000)


def test_absurd_tempo_is_refused_quickly(tmp_path):
    # The slowest tempo MIDI allows (16.7 s per beat) over 100000 beats: about 19 days.
    path = write_midi(tmp_path / "slow.mid", [[(0, mido.MetaMessage("set_tempo", tempo=0xFFFFFF)), (0, on(60)),
                                               (480 * 100000, on(60, 0))]])  # fmt: skip
    started = time.perf_counter()
    with pytest.raises(MarsError, match="lasts more than"):
        read_midi_file(path, 48000)
    assert time.perf_counter() - started < 2


def test_zero_tempo_is_ignored_with_a_warning(tmp_path):
    path = write_midi(tmp_path / "z.mid", [[(0, mido.MetaMessage("set_tempo", tempo=0)), (0, on(60)),
                                            (480, on(60, 0))]])  # fmt: skip
    score = read_midi_file(path, 48000)
    assert score.messages[-1].sample == 24000 and "ignored" in score.warnings[0]


def test_general_midi_map_drums_and_overrides(tmp_path):
    presets = load_presets()
    gm = ProgramMap.load(presets=presets)
    assert gm.resolve(0, 0, 0).instrument == 0
    cello = gm.resolve(3, 0, 42)
    violin = presets["violin"]
    assert cello.instrument == 42 and cello.sampling == violin.sampling
    assert (cello.envelope.attack, cello.envelope.gain) == (violin.envelope.attack, violin.envelope.gain)
    assert gm.resolve(9, 0, 0) is None  # channel 10: drums, skipped
    assert gm.resolve(0, 0, 120).instrument == 120 and gm.resolve(0, 0, 120).sampling == presets["seashore"].sampling
    map_file = tmp_path / "map.yaml"
    map_file.write_text('programs:\n  0: vibraphone\n  "8:4": flute\n  80: null\nchannels:\n  10: choir\n  2: null\n')
    custom = ProgramMap.load(map_file, presets=presets)
    assert custom.resolve(0, 0, 0).name == "vibraphone"
    assert custom.resolve(0, 8, 4).name == "flute" and custom.resolve(0, 0, 4).instrument == 4
    assert custom.resolve(0, 0, 80) is None and custom.resolve(1, 0, 0) is None
    assert custom.resolve(9, 0, 0).name == "choir"
    fixed = ProgramMap.load(fixed="strings", presets=presets)
    assert fixed.resolve(9, 0, 0).name == "strings" and fixed.resolve(0, 0, 73).name == "strings"


@pytest.mark.parametrize("text, words", [
    ("programs:\n  0: kazoo\n", "unknown preset 'kazoo'"),
    ("channels:\n  17: strings\n", "MIDI channels 1-16"),
    ("programs:\n  300: strings\n", "GM programs 0-127"),
    ("voices: 3\n", "'programs' and/or 'channels'"),
    ("programs: [0, 1\n", "not valid YAML"),
])  # fmt: skip
def test_bad_map_files_name_the_problem(tmp_path, text, words):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(MarsError, match=words) as err:
        ProgramMap.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_examples_are_the_project_scripts_output(tmp_path):
    """examples/*.mid are written by tools/make_examples.py, byte for byte, and read back sensibly."""
    import runpy

    repo = Path(__file__).resolve().parents[1]
    script = runpy.run_path(str(repo / "tools" / "make_examples.py"))
    assert script["main"](["-o", str(tmp_path)]) == 0
    for name in ("piano_pedal.mid", "gm_band.mid"):
        assert (tmp_path / name).read_bytes() == (repo / "examples" / name).read_bytes()
    piano = read_midi_file(repo / "examples" / "piano_pedal.mid", 48000)
    band = read_midi_file(repo / "examples" / "gm_band.mid", 48000)
    kinds = {(t.message.type, getattr(t.message, "control", None)) for t in band.messages}
    assert ("control_change", 64) in {(t.message.type, getattr(t.message, "control", None)) for t in piano.messages}
    assert {("pitchwheel", None), ("program_change", None), ("control_change", 1), ("control_change", 11)} <= kinds
    assert any(t.message.channel == 9 for t in band.messages) and band.tempo_changes >= 4


def test_damaged_files_give_a_score_or_one_clear_error_never_a_crash(tmp_path):
    import random

    data = (Path(__file__).resolve().parents[1] / "examples" / "gm_band.mid").read_bytes()
    rng = random.Random(0)
    outcomes = {"read": 0, "refused": 0}
    for i in range(150):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(damaged))
            roll = rng.random()
            if roll < 0.6:
                damaged[at] = rng.randrange(256)
            elif roll < 0.8:
                del damaged[at : at + rng.randint(1, 50)]
            else:
                damaged[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
        path = tmp_path / f"damaged{i}.mid"
        path.write_bytes(bytes(damaged))
        try:
            read_midi_file(path, 48000)
            outcomes["read"] += 1
        except MarsError as err:
            assert "\n" not in str(err)
            outcomes["refused"] += 1
    assert outcomes["read"] > 0 and outcomes["refused"] > 0
