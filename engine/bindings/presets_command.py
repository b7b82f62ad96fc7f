"""``mars-synth presets``: list the installed presets, one per line, name first."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``presets`` options."""
    parser.add_argument("--dir", type=Path, metavar="DIR",
                        help="list the presets of DIR instead of the installed ones (validates them)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Print ``name  instrument  description`` lines."""
    from engine.preset import load_presets

    presets = load_presets(args.dir)
    width = max((len(name) for name in presets), default=0)
    for name, preset in presets.items():
        instrument = preset.instrument
        if isinstance(instrument, int):
            conditioning = f"GM {instrument}"
        else:
            conditioning = "morph " + "+".join(f"{w:g}*GM {p}" for p, w in instrument.items())
        print(f"{name:<{width}}  {conditioning:<24}  {preset.description}".rstrip())
    return 0
