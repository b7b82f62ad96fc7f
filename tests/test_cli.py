"""The command line: every planned subcommand is listed; unbuilt ones say so honestly; one option name
has one meaning in every subcommand; defaults are stated; summaries go to stderr, data to stdout."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import mido
import pytest
import soundfile

from engine.bindings.cli import SUBCOMMANDS, Subcommand, build_parser, main
from mars_model.commands import model_device

PLANNED = ["render", "play", "note", "presets", "devices", "dataset", "codec", "eval"]
ROOT = Path(__file__).resolve().parents[1]
#: The subcommands that run a torch model, so take --model-device. (render loads the model only
#: for notes missing from the cache, on the CPU; codec runs its small model on the CPU.)
MODEL_COMMANDS = {"note", "play", "train", "eval", "render"}


def cli(*args, env=None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine.bindings.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=300, **kw)  # fmt: skip


def subparsers(parser: argparse.ArgumentParser, path=()):
    """Every (command path, parser) below ``parser``, nested actions (codec encode, dataset build) too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from subparsers(sub, (*path, name))


def options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_help_lists_every_planned_subcommand():
    proc = cli("--help")
    assert proc.returncode == 0
    for name in PLANNED:
        assert f"    {name} " in proc.stdout


def test_every_planned_subcommand_is_built():
    assert {s.name for s in SUBCOMMANDS if s.module} >= set(PLANNED)


def test_an_unbuilt_subcommand_says_so_and_fails(monkeypatch, capsys):
    from engine.bindings import cli as cli_module

    monkeypatch.setattr(cli_module, "SUBCOMMANDS", SUBCOMMANDS + (Subcommand("export", "export a model", None),))
    code = main(["export"])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert err == "mars-synth export: not built yet"


def test_no_command_prints_usage_on_stderr_and_exits_2():
    proc = cli()
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("usage: mars-synth") and "COMMAND" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "mars-synth: error: give a COMMAND"


def test_every_option_with_a_default_states_it_in_its_help():
    missing = []
    for path, parser in subparsers(build_parser()):
        for action in options(parser):
            if action.default in (None, False, [], argparse.SUPPRESS):
                continue
            text = (action.help or "") % {"default": action.default}
            if "default" not in text:
                missing.append(f"{' '.join(path)} {action.option_strings[-1]}")
    assert not missing, f"options whose help does not state their default: {missing}"


def test_one_meaning_per_option_name():
    """No subcommand has a bare --device; the torch device is --model-device wherever a model runs,
    parsed the same way; the audio output is play's --audio-device."""
    seen = {}
    for path, parser in subparsers(build_parser()):
        names = {opt for action in options(parser) for opt in action.option_strings}
        assert "--device" not in names, f"{' '.join(path)} still has --device"
        for action in options(parser):
            if "--model-device" in action.option_strings:
                seen[path[0]] = action
    assert set(seen) == MODEL_COMMANDS
    assert {action.type for action in seen.values()} == {model_device}
    play = dict(subparsers(build_parser()))[("play",)]
    assert any("--audio-device" in a.option_strings for a in options(play))


@pytest.mark.parametrize("argv", [
    ["note", "--preset", "grand_piano", "--pitch", "60", "-o", "x.wav", "--device", "cpu"],
    ["play", "--device", "0"],
    ["train", "codec", "--config", "c.yaml", "--run", "r", "--device", "cpu"],
    ["note", "--preset", "grand_piano", "--pitch", "60", "-o", "x.wav", "--model-device", "gpu"],
])  # fmt: skip
def test_old_device_spellings_and_bad_devices_are_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--device" in err or "--model-device" in err


def test_model_device_accepts_auto_cpu_cuda_and_an_index():
    for command in (["note", "--preset", "p", "--pitch", "60", "-o", "x.wav"], ["play"],
                    ["train", "codec", "--config", "c", "--run", "r"], ["eval", "real", "gen"]):  # fmt: skip
        for device in ("auto", "cpu", "cuda", "cuda:1"):
            assert build_parser().parse_args([*command, "--model-device", device]).model_device == device
    assert build_parser().parse_args(["play", "--audio-device", "system"]).audio_device == "system"


def test_play_duration_must_be_positive(capsys):
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["play", "--duration", bad])
    assert "--duration" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ output rate


def one_note_midi(path: Path) -> Path:
    mid = mido.MidiFile(type=0)
    mid.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=100),
                                      mido.Message("note_off", note=60, time=240)]))  # fmt: skip
    mid.save(path)
    return path


RENDER_ENV = {"MARS_SYNTH_NOTE_SOURCE": "test_engine_harmonic_source:HarmonicNoteSource"}


def test_render_below_the_notes_rate_warns_once_and_renders(tmp_path):
    out = tmp_path / "low.wav"
    proc = cli("render", str(one_note_midi(tmp_path / "one.mid")), "-o", str(out), "--sample-rate", "12345",
               "--tail", "eot", env={**RENDER_ENV, "XDG_CACHE_HOME": str(tmp_path / "xdg")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warnings == ["mars-synth render: warning: --sample-rate 12345 is below the notes' 16000 Hz; "
                        "everything above 6172 Hz (half the output rate) is cut"]  # fmt: skip
    assert soundfile.info(out).samplerate == 12345
    assert proc.stderr.strip().splitlines()[-1].startswith(f"mars-synth render: wrote {out}")


def test_render_at_or_above_the_notes_rate_does_not_warn(tmp_path):
    proc = cli("render", str(one_note_midi(tmp_path / "one.mid")), "-o", str(tmp_path / "ok.wav"),
               "--sample-rate", "16000", env={**RENDER_ENV, "XDG_CACHE_HOME": str(tmp_path / "xdg")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr


@pytest.mark.parametrize("rate", ["0", "-48000", "100000000"])
def test_render_refuses_a_nonsense_rate_in_one_line(tmp_path, capsys, monkeypatch, rate):
    monkeypatch.setenv("MARS_SYNTH_NOTE_SOURCE", RENDER_ENV["MARS_SYNTH_NOTE_SOURCE"])
    out = tmp_path / "x.wav"
    assert main(["render", str(one_note_midi(tmp_path / "one.mid")), "-o", str(out), "--sample-rate", rate]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"mars-synth render: error: --sample-rate must be 8000..192000 Hz, got {rate}"
    assert not out.exists()


def test_the_model_rate_the_engine_assumes_is_the_models():
    """render warns without loading the model, from mars_model.api's rate: it must be the model's."""
    from engine.model import default_note_rate
    from mars_model.generator import load_generator

    assert default_note_rate() == load_generator().sample_rate
