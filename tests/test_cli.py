"""The command line: every planned subcommand is listed; unbuilt ones say so honestly."""

import subprocess
import sys

from engine.bindings.cli import SUBCOMMANDS, Subcommand, main

PLANNED = ["render", "play", "note", "presets", "devices", "dataset", "codec", "eval"]


def test_help_lists_every_planned_subcommand():
    proc = subprocess.run([sys.executable, "-m", "engine.bindings.cli", "--help"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0
    for name in PLANNED:
        assert f"    {name} " in proc.stdout


def test_every_planned_subcommand_is_built():
    assert {s.name for s in SUBCOMMANDS if s.module} >= set(PLANNED)


def test_an_unbuilt_subcommand_says_so_and_fails(monkeypatch, capsys):
    from engine.bindings import cli

    monkeypatch.setattr(cli, "SUBCOMMANDS", SUBCOMMANDS + (Subcommand("export", "export a model", None, 9),))
    code = main(["export"])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert err == "mars-synth export: not built yet (tracked in issue #9)"


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
