"""The NSynth-style note set: a real (small) build with FluidSynth, its layout, splits and errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mars_model.data.build import FamilyMap, split_of
from mars_model.data.noteset import NoteSet
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


def test_family_map_covers_all_eleven_families():
    family_map = FamilyMap.load()
    assert len(family_map.families) == 11
    assert {p.family for p in family_map.programs.values()} == set(family_map.families)


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
    proc = cli("dataset", "build", "-o", str(tmp_path), "--programs", "118")
    assert_one_line_error(proc, "118", "no NSynth family")


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
