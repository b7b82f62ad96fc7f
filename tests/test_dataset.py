"""The NSynth-style note set: a real (small) build with FluidSynth, its layout, splits and errors."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mars_model.data.build import FamilyMap, kit_split_of, split_of
from mars_model.data.gm_map import DrumKeyMap
from mars_model.data.noteset import NoteSet
from mars_model.data.soundfont import SoundFontIndex
from mars_model.errors import MarsError

FIELDS = {"note", "note_str", "instrument", "instrument_str", "instrument_family",
          "instrument_family_str", "instrument_source", "instrument_source_str", "pitch",
          "velocity", "sample_rate", "qualities", "qualities_str"}  # fmt: skip


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.bindings.cli", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture(scope="module")
def small_set(tmp_path_factory, timgm_soundfont) -> Path:
    out = tmp_path_factory.mktemp("notes")
    # Piano, violin, trumpet, flute; 8 pitches; two velocities; 30 % test to get several conditions.
    proc = cli("dataset", "build", "-o", str(out), "--soundfont", str(timgm_soundfont),
               "--programs", "0,40,56,73", "--pitches", "60-67", "--velocities", "50,127",
               "--test-percent", "30", "--valid-percent", "20", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def load(root: Path, split: str) -> dict:
    return json.loads((root / split / "examples.json").read_text())


def test_layout_and_fields(small_set):
    total = 0
    for split in ("train", "valid", "test"):
        examples = load(small_set, split)
        total += len(examples)
        for note_str, fields in examples.items():
            assert FIELDS <= set(fields)
            assert fields["note_str"] == note_str
            assert (
                note_str
                == f"{fields['instrument_str']}-{fields['pitch']:03d}-{fields['velocity']:03d}"
            )
            assert (small_set / split / "audio" / f"{note_str}.wav").is_file()
            assert fields["sample_rate"] == 16000
    assert total == 4 * 8 * 2
    manifest = json.loads((small_set / "manifest.json").read_text())
    assert sum(manifest["notes"].values()) == total


def test_families_follow_the_map(small_set):
    families = {f["instrument"]: f["instrument_family_str"]
                for s in ("train", "valid", "test") for f in load(small_set, s).values()}  # fmt: skip
    assert families == {0: "keyboard", 40: "string", 56: "brass", 73: "flute"}


def test_wav_format_and_content(small_set):
    examples = load(small_set, "train")
    note_str, fields = next(iter(sorted(examples.items())))
    info = soundfile.info(small_set / "train" / "audio" / f"{note_str}.wav")
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (
        16000,
        1,
        64000,
        "PCM_16",
    )
    wave, _ = soundfile.read(small_set / "train" / "audio" / f"{note_str}.wav")
    held, released_end = np.abs(wave[: 3 * 16000]).max(), np.abs(wave[-1600:]).max()
    assert held > 0.01, "the note sounds while the key is held"
    assert released_end < held, "the release decays"
    # The pitch is right: the strongest low partial sits on the note's f0 or a harmonic of it.
    f0 = 440.0 * 2 ** ((fields["pitch"] - 69) / 12)
    spectrum = np.abs(np.fft.rfft(wave[4000:20000] * np.hanning(16000)))
    peak_hz = np.argmax(spectrum[: 16000 * 2000 // 16000]) * 16000 / 16000
    assert min(abs(peak_hz - k * f0) for k in range(1, 8)) < 0.03 * f0


def test_split_rule_holds_out_whole_conditions(small_set):
    conditions = {s: {(f["instrument_str"], f["pitch"]) for f in load(small_set, s).values()}
                  for s in ("train", "valid", "test")}  # fmt: skip
    assert conditions["test"] and conditions["train"]
    assert not conditions["test"] & conditions["train"]
    assert not conditions["valid"] & conditions["train"]
    assert not conditions["valid"] & conditions["test"]
    for split, conds in conditions.items():
        for instrument, pitch in conds:
            assert split_of(instrument, pitch, 30, 20) == split


def test_every_velocity_of_a_condition_shares_its_split(small_set):
    for split in ("train", "valid", "test"):
        velocities = {}
        for f in load(small_set, split).values():
            velocities.setdefault((f["instrument"], f["pitch"]), set()).add(f["velocity"])
        assert all(v == {50, 127} for v in velocities.values())


# Today's programs as the builder labelled and split them before kits and the other GM programs
# were added (recorded with that code on this same small build): nothing may move.
TODAY_HELD_OUT = {
    "valid": [(0, 61), (0, 66), (40, 62), (40, 65), (40, 67), (56, 64), (56, 65), (73, 63),
              (73, 64), (73, 66), (73, 67)],
    "test": [(0, 62), (0, 63), (0, 64), (40, 61), (56, 61), (56, 62), (56, 63), (73, 60),
             (73, 61), (73, 65)],
}  # fmt: skip
TODAY_NOTE = {"instrument": 56, "instrument_family": 1, "instrument_family_str": "brass",
              "instrument_source": 0, "instrument_source_str": "acoustic",
              "instrument_str": "brass_acoustic_056", "note": 14,
              "note_str": "brass_acoustic_056-060-050", "pitch": 60, "qualities": [0] * 10,
              "qualities_str": [], "sample_rate": 16000, "velocity": 50}  # fmt: skip


def test_todays_programs_keep_their_labels_and_splits(small_set):
    for split, conditions in TODAY_HELD_OUT.items():
        found = {(f["instrument"], f["pitch"]) for f in load(small_set, split).values()}
        assert sorted(found) == conditions
    note = load(small_set, "train")["brass_acoustic_056-060-050"]
    assert {k: v for k, v in note.items() if k in TODAY_NOTE} == TODAY_NOTE
    assert set(note) - set(TODAY_NOTE) == {"peak_dbfs", "bank", "program"}
    assert (note["bank"], note["program"]) == (0, 56)


def test_reader_gives_spectrograms_and_conditions(small_set):
    notes = NoteSet(small_set, "train")
    item = notes[0]
    assert item["spec"].shape == (1, 512, 256)
    assert -1.0 <= item["spec"].min() and item["spec"].max() <= 1.2
    assert {"instrument", "instrument_family", "pitch", "velocity"} <= set(item)
    cache = notes.cache_path()
    assert cache.is_file()
    again = NoteSet(small_set, "train")
    assert np.array_equal(again.spectrograms()[3], notes.spectrograms()[3])


NSYNTH_FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed",
                   "string", "synth_lead", "vocal")  # fmt: skip


def test_family_map_keeps_nsynth_indices_and_covers_every_program():
    family_map = FamilyMap.load()
    assert family_map.families[:11] == NSYNTH_FAMILIES  # new families only ever appended
    assert sorted(family_map.programs) == list(range(128))
    used = {p.family for p in family_map.programs.values()} | {
        k.family for k in family_map.kits.values()}
    assert used == set(family_map.families)
    # Today's default set: the programs with an NSynth family, as before kits were added.
    assert len(family_map.nsynth_programs()) == 96
    for program, family in {0: "keyboard", 47: "percussive", 55: "orchestra_hit", 88: "synth_pad",
                            100: "synth_effect", 118: "percussive", 127: "sound_effect"}.items():  # fmt: skip
        assert family_map.programs[program].family == family


# -- bad input: one clear line, non-zero exit, no traceback ----------------------------------
def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_soundfont(tmp_path):
    proc = cli("dataset", "build", "-o", str(tmp_path / "x"), "--soundfont", "/nonexistent.sf2")
    assert_one_line_error(proc, "/nonexistent.sf2", "does not exist")


def test_garbage_soundfont(tmp_path):
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"this is not a soundfont" * 100)
    proc = cli("dataset", "build", "-o", str(tmp_path / "x"), "--soundfont", str(bad), "--quiet")
    assert_one_line_error(proc, "bad.sf2", "corrupt")


def test_truncated_soundfont(tmp_path, timgm_soundfont):
    cut = tmp_path / "cut.sf2"
    cut.write_bytes(timgm_soundfont.read_bytes()[:200_000])
    proc = cli("dataset", "build", "-o", str(tmp_path / "x"), "--soundfont", str(cut),
               "--programs", "0", "--pitches", "60-61", "--quiet")  # fmt: skip
    assert_one_line_error(proc, "cut.sf2")


def test_unwritable_output(tmp_path, timgm_soundfont):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = cli("dataset", "build", "-o", str(blocker / "out"), "--soundfont", str(timgm_soundfont),
               "--programs", "0", "--pitches", "60", "--quiet")  # fmt: skip
    assert_one_line_error(proc, "cannot write to output directory")


def test_bad_program_list(tmp_path):
    proc = cli("dataset", "build", "-o", str(tmp_path), "--programs", "0,200")
    assert_one_line_error(proc, "--programs", "0..127")
    proc = cli("dataset", "build", "-o", str(tmp_path), "--programs", "zero")
    assert_one_line_error(proc, "--programs", "0,40,56-60")


def tiny_soundfont(path: Path, presets: list[tuple[int, int, str]]) -> Path:
    """A SoundFont with the given (bank, program, name) presets and no sounds: enough for the
    preset table to be read, never rendered."""

    def chunk(ck_id: bytes, body: bytes) -> bytes:
        return ck_id + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)

    def riff_list(kind: bytes, *chunks: bytes) -> bytes:
        return chunk(b"LIST", kind + b"".join(chunks))

    phdr = b"".join(struct.pack("<20sHHHIII", name.encode(), program, bank, i, 0, 0, 0)
                    for i, (bank, program, name) in enumerate([*presets, (0, 0, "EOP")]))  # fmt: skip
    pdta = riff_list(b"pdta", chunk(b"phdr", phdr), chunk(b"pbag", b"\0" * 4 * (len(presets) + 1)),
                     chunk(b"pmod", b"\0" * 10), chunk(b"pgen", b"\0" * 4),
                     chunk(b"inst", struct.pack("<20sH", b"EOI", 0)), chunk(b"ibag", b"\0" * 4),
                     chunk(b"imod", b"\0" * 10), chunk(b"igen", b"\0" * 4),
                     chunk(b"shdr", struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0)))  # fmt: skip
    body = b"sfbk" + riff_list(b"INFO", chunk(b"ifil", struct.pack("<HH", 2, 1))) + riff_list(
        b"sdta", chunk(b"smpl", b"\0" * 92)) + pdta
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_soundfont_preset_table(tmp_path):
    sf2 = tiny_soundfont(tmp_path / "tiny.sf2", [(0, 0, "Piano"), (128, 25, "TR-808")])
    index = SoundFontIndex.load(sf2)
    assert [str(p) for p in index.presets] == ["000-000 Piano", "128-025 TR-808"]
    assert index.has(128, 25) and not index.has(0, 25)


def test_fluidr3_cuts_off_the_hi_hats_our_labels_group():
    """The SoundFont's own exclusive classes agree with the labels: FluidR3's Standard kit gives
    the three hi-hats one class, which no other key of theirs shares."""
    fluidr3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
    if not fluidr3.is_file():
        pytest.skip("needs fluid-soundfont-gm")
    zones = SoundFontIndex.load(fluidr3).zones(128, 0)
    classes = {z.keys[0]: z.exclusive_class for z in zones if z.keys[0] == z.keys[1]}
    drums = DrumKeyMap.load()
    hats = {k for k in (42, 44, 46) if drums.exclusive_class(0, k) == "hi-hat"}
    assert hats == {42, 44, 46}
    assert len({classes[k] for k in hats}) == 1 and classes[42] != 0
    assert {k for k, c in classes.items() if c == classes[42]} == hats


def test_program_or_kit_missing_in_the_soundfont(tmp_path, timgm_soundfont):
    sf2 = tiny_soundfont(tmp_path / "tiny.sf2", [(0, 0, "Piano"), (128, 0, "Standard")])
    proc = cli("dataset", "build", "-o", str(tmp_path / "x"), "--soundfont", str(sf2),
               "--programs", "0,5", "--quiet")  # fmt: skip
    assert_one_line_error(proc, "GM program 5 is not in tiny.sf2")
    # TimGM6mb has the eight GS kits but none of FluidR3's variations (Standard 1 ...).
    proc = cli("dataset", "build", "-o", str(tmp_path / "x"), "--soundfont", str(timgm_soundfont),
               "--programs", "none", "--kits", "0,1", "--quiet")  # fmt: skip
    assert_one_line_error(proc, "kit 1 is not in TimGM6mb.sf2", "0,8,16,24-25,32,40,48")


def test_unknown_kit_and_missing_output(tmp_path, timgm_soundfont):
    proc = cli("dataset", "build", "-o", str(tmp_path), "--soundfont", str(timgm_soundfont),
               "--kits", "99")  # fmt: skip
    assert_one_line_error(proc, "unknown kit 99")
    proc = cli("dataset", "build", "--kits", "0")
    assert_one_line_error(proc, "-o DIR")
    proc = cli("dataset", "build", "-o", str(tmp_path), "--kits", "0", "--no-kits")
    assert proc.returncode != 0 and "not allowed with" in proc.stderr


def test_corrupt_wav_inside_a_set(small_set, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(
        small_set / "valid", copy / "valid", ignore=shutil.ignore_patterns(".spectrograms")
    )
    victim = sorted((copy / "valid" / "audio").iterdir())[0]
    victim.write_bytes(b"RIFF\x00\x00garbage")
    proc = cli("dataset", "check", str(copy), "--splits", "valid", "--quiet")
    assert_one_line_error(proc, victim.name)
    with pytest.raises(MarsError, match="corrupt or unreadable WAV"):
        NoteSet(copy, "valid").spectrograms()


def test_set_without_examples_json(tmp_path):
    (tmp_path / "train").mkdir()
    proc = cli("dataset", "check", str(tmp_path), "--splits", "train", "--quiet")
    assert_one_line_error(proc, "examples.json")


# -- drum kits and the GM programs without an NSynth family ----------------------------------
@pytest.fixture(scope="module")
def kit_set(tmp_path_factory, timgm_soundfont) -> Path:
    out = tmp_path_factory.mktemp("kits")
    # Standard and Orchestra kits on keys 42-49 (hi-hats and toms, or timpani; a crash), three
    # velocities; and two programs new to the set, timpani and seashore, at the same pitches.
    proc = cli("dataset", "build", "-o", str(out), "--soundfont", str(timgm_soundfont),
               "--programs", "47,122", "--kits", "0,48", "--pitches", "42-49",
               "--velocities", "25,75,127", "--test-percent", "30", "--valid-percent", "30",
               "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def all_notes(root: Path) -> dict[str, tuple[str, dict]]:
    return {name: (split, fields) for split in ("train", "valid", "test")
            for name, fields in load(root, split).items()}  # fmt: skip


def test_kit_notes_are_labelled_one_shots(kit_set):
    drums = DrumKeyMap.load()
    kit_notes = {n: f for n, (_, f) in all_notes(kit_set).items() if f["bank"] == 128}
    assert {(f["program"], f["drum_kit_str"]) for f in kit_notes.values()} == {
        (0, "Standard"), (48, "Orchestra")}
    for name, f in kit_notes.items():
        assert f["instrument"] == 128 + f["program"]
        assert f["instrument_family_str"] == "percussion"
        assert f["instrument_family"] == FamilyMap.load().families.index("percussion") >= 11
        assert name == f"{f['instrument_str']}-{f['pitch']:03d}-{f['velocity']:03d}"
        assert f["drum_key_str"] == drums.name(f["program"], f["pitch"])
    standard = {f["pitch"]: f for f in kit_notes.values() if f["program"] == 0}
    orchestra = {f["pitch"]: f for f in kit_notes.values() if f["program"] == 48}
    assert (standard[42]["drum_key_str"], standard[49]["drum_key_str"]) == (
        "Closed Hi-Hat", "Crash Cymbal 1")
    assert {k: standard[k]["drum_exclusive_class"] for k in (42, 44, 46, 45, 49)} == {
        42: "hi-hat", 44: "hi-hat", 46: "hi-hat", 45: None, 49: None}
    # The Orchestra kit plays timpani where the Standard kit has hi-hats: no exclusive class.
    assert orchestra[42]["drum_key_str"] == "Timpani F#"
    assert orchestra[42]["drum_exclusive_class"] is None


def test_kit_keys_fall_back_to_the_kit_that_sounds_the_same():
    kits = FamilyMap.load().kits
    room_1, tr808 = kits[9], kits[25]
    assert room_1.source_of(35, kits).name == "Room 1"  # its own kick
    assert room_1.source_of(49, kits).name == "Room"  # Room's crash
    assert room_1.source_of(60, kits).name == "Standard"  # bongos: the same in every kit
    assert tr808.source_of(58, kits) is None  # FluidR3's TR-808 has no vibraslap
    # Every key of every kit is rendered exactly once, by the kit that owns its sound.
    assert all(kit.source_of(key, kits) is not None for kit in kits.values() for key in kit.keys)


def test_a_struck_cymbal_rings_on(kit_set):
    split, f = all_notes(kit_set)["percussion_acoustic_128-049-127"]
    wave, rate = soundfile.read(kit_set / split / "audio" / f"{f['note_str']}.wav")
    assert len(wave) == 4 * rate
    # Nothing lets the key up early: a second after the stroke the crash is still loud.
    attack, ringing = np.abs(wave[: rate // 2]).max(), np.abs(wave[rate : 2 * rate]).max()
    assert ringing > 0.05 * attack


def test_kit_splits_hold_out_inner_velocities_only(kit_set):
    held_out = set()
    for split, f in all_notes(kit_set).values():
        if f["bank"] != 128:
            continue
        assert split == kit_split_of(f["instrument_str"], f["pitch"], f["velocity"],
                                     (25, 75, 127), 30, 30)  # fmt: skip
        if f["velocity"] in (25, 127):
            assert split == "train"  # every kit piece is heard, softest and loudest
        elif split != "train":
            held_out.add(split)
    assert held_out == {"valid", "test"}


def test_new_programs_get_honest_labels(kit_set):
    families = {(f["instrument"], f["instrument_family_str"], f["instrument_str"], f["bank"])
                for _, f in all_notes(kit_set).values() if f["bank"] == 0}  # fmt: skip
    assert families == {(47, "percussive", "percussive_acoustic_047", 0),
                        (122, "sound_effect", "sound_effect_acoustic_122", 0)}  # fmt: skip
    melodic = [(s, f) for s, f in all_notes(kit_set).values() if f["bank"] == 0]
    for split, f in melodic:  # the melodic rule: whole (instrument, pitch) conditions
        assert split == split_of(f["instrument_str"], f["pitch"], 30, 30)
        assert "drum_key_str" not in f


def test_reader_filters_by_bank_and_family(kit_set, tmp_path):
    drums = NoteSet(kit_set, "train", banks=[128])
    assert set(drums.labels["bank"]) == {128}
    assert set(drums.labels["program"]) == {0, 48}
    assert "Closed Hi-Hat" in drums.labels["drum_key_str"]
    assert set(drums.conditions["instrument"]) == {128, 176}
    effects = NoteSet(kit_set, "train", families=["sound_effect"])
    assert set(effects.conditions["instrument"]) == {122}
    with pytest.raises(MarsError, match="no notes of families"):
        NoteSet(kit_set, "train", families=["vocal"])
    # A set written before these labels existed reads as melodic, program = instrument.
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "examples.json").write_text(json.dumps(
        {"a": {"instrument": 7, "instrument_family": 4, "pitch": 60, "velocity": 50}}))
    old = NoteSet(tmp_path, "train")
    assert list(old.labels["bank"]) == [0] and list(old.labels["program"]) == [7]
    assert old.labels["drum_exclusive_class"] == [None]


def test_dry_run_counts_every_family_and_kit(tmp_path, timgm_soundfont):
    proc = cli("dataset", "build", "--soundfont", str(timgm_soundfont), "--programs", "all",
               "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "128 programs, 8 kits" in proc.stdout
    for word in ("keyboard", "synth_pad", "sound_effect", "percussion", "25 TR-808", "GB of WAV"):
        assert word in proc.stdout
    assert not any(tmp_path.iterdir())
