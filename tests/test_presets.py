"""Presets: the shipped ones load and cover the NSynth families; bad ones fail with one clear line;
``mars-synth presets`` lists them; a built wheel carries them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.bindings.cli import main
from engine.calibration import load_calibration
from engine.preset import find_preset, load_preset, load_presets, preset_dir
from mars_model.api import Sampling
from mars_model.errors import MarsError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_presets_cover_the_families_and_include_a_morph():
    presets = load_presets()
    assert preset_dir().resolve() == (REPO / "presets").resolve()
    assert len(presets) >= 8
    families = {p.family for p in presets.values()}
    assert len(families) >= 8
    assert all(isinstance(p.sampling, Sampling) for p in presets.values())
    morphs = [p for p in presets.values() if isinstance(p.instrument, dict)]
    assert morphs and all(len(m.instrument) == 2 for m in morphs)
    assert all(0 <= p for preset in presets.values() for p in
               ([preset.instrument] if isinstance(preset.instrument, int) else preset.instrument))  # fmt: skip


def test_preset_builds_model_requests():
    piano = find_preset("grand_piano")
    request = piano.request(60, 100, seed=7)
    assert (request.instrument, request.pitch, request.velocity, request.seed) == (0, 60, 100, 7)
    assert request.sampling == piano.sampling
    bright = piano.with_program(1)
    assert bright.instrument == 1 and bright.sampling == piano.sampling
    assert (bright.envelope.attack, bright.envelope.gain) == (piano.envelope.attack, piano.envelope.gain)


def test_a_preset_without_a_release_releases_as_its_instrument_was_measured(tmp_path):
    calibration = load_calibration()
    piano, strings = find_preset("grand_piano"), find_preset("strings")
    assert piano.release_measured and piano.patch.release == pytest.approx(calibration.release({0: 1.0}))
    # Playing a file's program, the preset takes that program's release (a cello part: the cello's).
    assert strings.with_program(42).patch.release == pytest.approx(calibration.release({42: 1.0}))
    assert calibration.release({42: 1.0}) != calibration.release({48: 1.0})
    # A release written in the file wins, for the program it plays and for every other.
    path = tmp_path / "short.yaml"
    path.write_text("instrument: 48\nenvelope: {release: 0.05}\nvelocity: {sensitivity: 0.5}\n")
    short = load_preset(path)
    assert not short.release_measured and short.with_program(42).patch.release == 0.05
    assert short.patch.velocity_sensitivity == 0.5


@pytest.mark.parametrize("text, key, allowed", [
    ("instrument: 200\n", "'instrument'", "GM program 0-127"),
    ("instrument: {0: 0.5, 300: 0.5}\n", "'instrument'", "GM programs 0-127"),
    ("description: no instrument\n", "'instrument'", "is missing"),
    ("instrument: 0\nenvelope: {attack: -1}\n", "'envelope.attack'", "must be in [0.0, 10.0]"),
    ("instrument: 0\nenvelope: {decay: 1}\n", "'envelope.decay'", "allowed: attack, one_shot, release"),
    ("instrument: 0\nsampling: {temperature: 0}\n", "'sampling.temperature'", "(0.0, 10.0]"),
    ("instrument: 0\nsampling: {top_k: 1.5}\n", "'sampling.top_k'", "integer >= 0"),
    ("instrument: 0\ncache: forever\n", "'cache'", "disk, memory"),
    ("instrument: 0\nfamily: kazoo\n", "'family'", "synth_lead"),
    ("instrument: 0\nvolume: 3\n", "'volume'", "allowed:"),
    ("instrument: 89\nstand_in: 300\n", "'stand_in'", "GM program 0-127"),
    ("instrument: 116\nenvelope: {one_shot: 1}\n", "'envelope.one_shot'", "true or false"),
    ("instrument: [0\n", "", "not valid YAML"),
])  # fmt: skip
def test_invalid_presets_name_file_key_and_what_is_allowed(tmp_path, text, key, allowed):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MarsError) as err:
        load_preset(path)
    message = str(err.value)
    assert str(path) in message and key in message and allowed in message and "\n" not in message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(MarsError, match="unknown preset 'kazoo'; known presets: .*grand_piano"):
        find_preset("kazoo")


def test_presets_command_lists_names_first_one_per_line(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(load_presets())


def test_presets_command_reports_a_bad_preset_in_one_line(tmp_path, capsys):
    (tmp_path / "broken.yaml").write_text("instrument: 999\n")
    assert main(["presets", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mars-synth presets: error: preset")


def test_a_built_wheel_carries_the_presets_and_the_calibration(tmp_path):
    """`pip install .` (not editable) must install presets/*.yaml and the playback calibration as package data."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "weights", "*.pt")
    for name in ("engine", "mars_model", "presets"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"engine/presets/{p.name}" for p in (REPO / "presets").glob("*.yaml")}
    assert shipped and shipped <= names
    assert "engine/data/playback.json" in names
