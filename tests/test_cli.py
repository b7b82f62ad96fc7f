"""The command line: every planned subcommand is listed; unbuilt ones say so honestly."""

import subprocess
import sys

import pytest

from engine.bindings.cli import SUBCOMMANDS, main

PLANNED = ["render", "play", "note", "presets", "devices", "dataset", "codec", "eval"]


def test_help_lists_every_planned_subcommand():
    proc = subprocess.run([sys.executable, "-m", "engine.bindings.cli", "--help"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0
    for name in PLANNED:
        assert f"    {name} " in proc.stdout


@pytest.mark.parametrize("sub", [s for s in SUBCOMMANDS if s.module is None], ids=lambda s: s.name)
def test_unbuilt_subcommand_says_so_and_fails(sub, capsys):
    code = main([sub.name])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "not built yet" in err


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
