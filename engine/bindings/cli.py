"""The ``mars-synth`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from mars_model.errors import MarsError


@dataclass(frozen=True)
class Subcommand:
    """A subcommand: its name, one-line help, and the module implementing it.

    ``module`` is ``None`` for a subcommand that is planned but not built yet;
    running it says so and exits non-zero instead of pretending.
    """

    name: str
    help: str
    module: str | None


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("render", "render a MIDI file to WAV/FLAC with the neural synth", "engine.bindings.render_command"),
    Subcommand("play", "play live from a MIDI keyboard or a DAW over OSC", "engine.bindings.play_command"),
    Subcommand("note", "generate one note to a WAV file", "engine.bindings.note_command"),
    Subcommand("presets", "list the installed presets", "engine.bindings.presets_command"),
    Subcommand("devices", "list audio devices and MIDI ports", "engine.bindings.devices_command"),
    Subcommand(
        "dataset", "build an NSynth-style note set from a SoundFont", "mars_model.commands.dataset"
    ),
    Subcommand("codec", "encode/decode audio with the EuleroDec codec", "mars_model.commands.codec"),
    Subcommand(
        "eval", "score generated or reconstructed notes (PIS, IIS, PKID, ...)",
        "mars_model.commands.eval",
    ),
    Subcommand(
        "train",
        "train a model (tokenizer, autoregressor, codec) from a YAML config",
        "mars_model.commands.train",
    ),
)

# Exit codes: 0 ok, 1 user error (MarsError), 2 bad command line (argparse; also no command at all,
# and an optional extra a requested option needs is not installed), 3 not built yet, 130 interrupted.
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_BUILT = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="mars-synth",
        description=(
            "mars-synth: a neural synthesizer. A MARS model (multi-channel autoregression on "
            "spectrograms) generates every note; play it live or render MIDI files."
        ),
        epilog="Run 'mars-synth COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for sub in SUBCOMMANDS:
        help_text = sub.help if sub.module else f"{sub.help} (not built yet)"
        sub_parser = subparsers.add_parser(sub.name, help=help_text, description=sub.help)
        if sub.module:
            importlib.import_module(sub.module).add_arguments(sub_parser)
        sub_parser.set_defaults(_subcommand=sub)
    return parser


def _version() -> str:
    from mars_model import __version__

    return f"mars-synth {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (also used by ``sys.exit``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sub: Subcommand | None = getattr(args, "_subcommand", None)
    if sub is None:  # bare 'mars-synth': a command line error, like any other missing argument
        parser.print_help(sys.stderr)
        print("mars-synth: error: give a COMMAND", file=sys.stderr)
        return EXIT_USAGE
    if sub.module is None:
        print(f"mars-synth {sub.name}: not built yet", file=sys.stderr)
        return EXIT_NOT_BUILT
    try:
        return int(importlib.import_module(sub.module).run(args) or 0)
    except MarsError as err:
        print(f"mars-synth {sub.name}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"mars-synth {sub.name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
