"""The General MIDI map plays all 128 programs: each through its family's preset, as itself when the
model knows it, else by a stand-in with exactly one warning naming both; map files still win.

Notes come from the test instrument (``HarmonicNoteSource``), made to list every GM program
(a General MIDI model) or only the shipped model's 24. Every note of the test file has its own
pitch, so the rendered audio tells which notes sounded, and at which pitch.
"""

from __future__ import annotations

import re

import mido
import numpy as np
import pytest
from test_engine_harmonic_source import HarmonicNoteSource
from test_render import write_midi

from engine.calibration import DEFAULT_RELEASE, load_calibration
from engine.midi.program_map import GM_FAMILY_PRESETS, ProgramMap, gm_family_preset
from engine.preset import GM_ONLY_FAMILIES, load_presets
from engine.render import RenderSettings, render_to_array
from engine.synth.effects import DRY

RATE = 16000
#: The GM programs the shipped model knows (``mars_model.api.default_model_instruments()`` when this was written).
SHIPPED_PROGRAMS = (0, 4, 11, 12, 16, 19, 24, 27, 32, 33, 38, 40, 42, 48, 52, 53, 56, 60, 65, 71, 73, 75, 80, 81)
#: The presets the map gained for the programs NSynth has no family for, with the stand-in each
#: plays on a model without them (one the shipped model knows).
NEW_PRESETS = {"warm_pad": (89, 48), "atmosphere": (99, 80), "orchestra_hit": (55, 48), "timpani": (47, 32),
               "taiko_drum": (116, 12), "seashore": (122, 75)}  # fmt: skip
SPACING = 480  # ticks: one note a second (120 bpm, 480 ticks a beat = 0.5 s)


def pitch_of(program: int) -> int:
    """Each program's note in the test file: whole tones from C3, so neighbours are 2 semitones apart."""
    return 48 + 2 * (program % 24)


def program_notes(path, notes, length=SPACING, channel=0):
    """A file of one note per ``(program, pitch)``, a second apart, each after its program change."""
    events = []
    for i, (program, pitch) in enumerate(notes):
        tick = 2 * SPACING * i
        events += [(tick, mido.Message("program_change", program=program, channel=channel)),
                   (tick + 1, mido.Message("note_on", note=pitch, velocity=100, channel=channel)),
                   (tick + 1 + length, mido.Message("note_off", note=pitch, channel=channel))]  # fmt: skip
    return write_midi(path, events)


def note_source(instruments=tuple(range(128))) -> HarmonicNoteSource:
    """The test instrument as a General MIDI model (every program) or as another model; three
    partials are enough to find a note's pitch and make the 128 notes quickly."""
    return HarmonicNoteSource(harmonics=3, instruments=instruments)


def render(path, source, **kw):
    kw.setdefault("tail", "eot")
    return render_to_array(path, RenderSettings(sample_rate=RATE, progress=False, effects=DRY, **kw),
                           source)  # fmt: skip


def tone_db(mono: np.ndarray, start_s: float, pitch: int, seconds: float = 0.4) -> float:
    """Level (dB) of the partial at ``pitch``'s f0 over ``seconds`` from ``start_s`` (Hann window)."""
    part = mono[int(start_s * RATE) : int(start_s * RATE) + int(seconds * RATE)]
    t = np.arange(part.shape[0]) / RATE
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    value = np.abs(np.sum(part * np.hanning(part.shape[0]) * np.exp(-2j * np.pi * f0 * t)))
    return 20 * np.log10(value + 1e-12)


def sounded(audio: np.ndarray) -> list[int]:
    """The programs whose note sounds in the render: its f0 at least 20 dB above where it was
    just before the note (the notes before it are other pitches)."""
    mono = audio.sum(axis=0).astype(np.float64)
    return [program for program in range(128)
            if tone_db(mono, program + 0.05, pitch_of(program)) - tone_db(mono, program - 0.45, pitch_of(program)) > 20]  # fmt: skip


@pytest.fixture(scope="module")
def midi_file(tmp_path_factory):
    return program_notes(tmp_path_factory.mktemp("gm") / "every_program.mid", [(p, pitch_of(p)) for p in range(128)])


def test_the_built_in_map_sends_every_program_to_one_family_preset():
    covered = [p for first, last, _ in GM_FAMILY_PRESETS for p in range(first, last + 1)]
    assert covered == list(range(128))
    presets = load_presets()
    assert {name for _, _, name in GM_FAMILY_PRESETS} <= set(presets)
    gm = ProgramMap.load(presets=presets)
    for program in range(128):
        preset = gm.resolve(0, 0, program)
        family = presets[gm_family_preset(program)]
        assert preset.instrument == program and preset.sampling == family.sampling
        assert preset.fallback == family.instrument and preset.stand_in == family.stand_in
    assert gm_family_preset(47) == gm_family_preset(118) == "timpani" and gm_family_preset(116) == "taiko_drum"
    assert [gm_family_preset(p) for p in (55, 88, 103, 127)] == ["orchestra_hit", "warm_pad", "atmosphere", "seashore"]


def test_the_new_presets_load_with_their_family_stand_in_and_measured_release():
    presets = load_presets()
    calibration = load_calibration()
    for name, (instrument, stand_in) in NEW_PRESETS.items():
        preset = presets[name]
        assert preset.instrument == instrument and preset.stand_in == stand_in and stand_in in SHIPPED_PROGRAMS
        assert preset.family in GM_ONLY_FAMILIES
        assert preset.release_measured
    # One-shots where FluidR3's note-off barely changes the sound; held where it stops it.
    assert {name for name, p in presets.items() if p.patch.one_shot} == {"orchestra_hit", "taiko_drum"}
    # Each program releases in its measured time when the calibration has it, else in the preset's.
    gm = ProgramMap.load(presets=presets)
    for program in range(128):
        measured = calibration.release({program: 1.0})
        family = presets[gm_family_preset(program)]
        expected = measured or calibration.release({family.instrument: 1.0}) or DEFAULT_RELEASE
        assert gm.resolve(0, 0, program).patch.release == pytest.approx(expected)


def test_a_general_midi_model_plays_every_program_as_itself(midi_file):
    gm = note_source()
    audio, report = render(midi_file, gm)
    assert (report.notes, report.skipped_notes, report.warnings) == (128, 0, [])
    assert {(int(r.instrument), r.pitch) for r in gm.requests} == {(p, pitch_of(p)) for p in range(128)}
    assert sounded(audio) == list(range(128))


def test_a_model_without_a_program_plays_its_stand_in_with_exactly_one_warning(midi_file, tmp_path):
    twice = program_notes(tmp_path / "twice.mid", [(p, 60 + i) for i, p in enumerate((89, 116, 122) * 2)])
    _, twice = render(twice, note_source(SHIPPED_PROGRAMS))  # more notes warn no more
    assert sorted(twice.warnings) == ["GM program 116 is not in this model; played with 12",
                                      "GM program 122 is not in this model; played with 75",
                                      "GM program 89 is not in this model; played with 48"]  # fmt: skip

    shipped = note_source(SHIPPED_PROGRAMS)
    audio, report = render(midi_file, shipped)
    assert (report.notes, report.skipped_notes) == (128, 0)
    named = {}
    for line in report.warnings:
        match = re.fullmatch(r"GM program (\d+) is not in this model; played with (\d+)", line)
        assert match, line
        program, stand_in = int(match[1]), int(match[2])
        assert program not in named and stand_in in SHIPPED_PROGRAMS
        named[program] = stand_in
    assert set(named) == set(range(128)) - set(SHIPPED_PROGRAMS)
    for instrument, stand_in in NEW_PRESETS.values():
        assert named[instrument] == stand_in
    for program in (90, 91, 95):  # the other pads: the pad preset's own program is unknown too
        assert named[program] == 48
    assert named[113] == named[117] == 12 and named[118] == 32 and named[127] == 75
    assert named[41] == 40 and named[1] == 0  # programs with an NSynth family: their family preset's, as before
    assert {int(r.instrument) for r in shipped.requests} <= set(SHIPPED_PROGRAMS)
    assert sounded(audio) == list(range(128))


def test_a_one_shot_rings_on_after_key_up_unless_a_stand_in_plays_it(tmp_path):
    path = program_notes(tmp_path / "taiko.mid", [(116, 60)], length=48)  # a 0.1 s note
    rings, _ = render(path, note_source(), tail=3.0)
    held, _ = render(path, note_source(SHIPPED_PROGRAMS), tail=3.0)

    def level_db(audio, start_s, end_s):
        return 10 * np.log10(np.mean(audio[:, int(start_s * RATE) : int(end_s * RATE)].astype(np.float64) ** 2) + 1e-20)

    # A one-shot plays on as if the key were still down (1.5-2.5 s: as the same note held 3 s;
    # the calibration gives the test instrument's note FluidR3's taiko decay); the marimba
    # standing in is released at key up, as the shipped model's notes always were.
    long, _ = render(program_notes(tmp_path / "taiko-held.mid", [(116, 60)], length=2880), note_source(), tail=3.0)
    assert level_db(rings, 1.5, 2.5) == pytest.approx(level_db(long, 1.5, 2.5), abs=0.1)
    assert level_db(rings, 1.5, 2.5) - level_db(held, 1.5, 2.5) > 30
    gm = ProgramMap.load()
    assert gm.choose(0, 0, 116, 60).patch.one_shot
    gm.set_model_instruments(SHIPPED_PROGRAMS)
    assert not gm.choose(0, 0, 116, 60).patch.one_shot and not gm.choose(0, 0, 55, 60).patch.one_shot
    gm.set_model_instruments(range(128))
    assert gm.choose(0, 0, 55, 60).patch.one_shot and not gm.choose(0, 0, 47, 60).patch.one_shot


def test_map_files_still_override_programs_and_channels(tmp_path):
    mapping = tmp_path / "map.yaml"
    mapping.write_text("programs:\n  89: vibraphone\n  116: null\n  47: seashore\nchannels:\n  2: flute\n")
    path = program_notes(tmp_path / "some.mid", [(89, 60), (116, 62), (47, 64), (55, 66)])
    gm = note_source()
    _, report = render(path, gm, channel_map=mapping)
    # The presets as written (their own instrument, not the file's program); the built-in map for the rest.
    assert [(int(r.instrument), r.pitch) for r in gm.requests] == [(11, 60), (122, 64), (55, 66)]
    assert (report.notes, report.skipped_notes) == (3, 1)
    assert report.warnings == ["skipped 1 notes of GM program 116 (the map file maps it to null)"]
    render(program_notes(tmp_path / "ch2.mid", [(122, 60)], channel=1), gm, channel_map=mapping)
    assert int(gm.requests[-1].instrument) == 73  # flute, whatever the channel's program says
    fixed = note_source()
    render(path, fixed, preset="timpani")
    assert {int(r.instrument) for r in fixed.requests} == {47}
