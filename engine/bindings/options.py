"""Options and checks shared by the subcommands that make sound (``render``, ``play``, ``note``), so they say the same thing."""

from __future__ import annotations

import argparse
import sys

from mars_model.errors import MarsError


def check_output_rate(rate: int) -> None:
    """Refuse an output rate no audio file should have (one MarsError line)."""
    from engine.render import SAMPLE_RATES

    low, high = SAMPLE_RATES
    if not low <= rate <= high:
        raise MarsError(f"--sample-rate must be {low}..{high} Hz, got {rate}")


def warn_if_band_cut(rate: int, note_rate: int | None, command: str) -> bool:
    """One warning line on stderr when ``rate`` cannot hold what the notes contain; True if it warned.

    The notes are made at ``note_rate`` (the model's 16 kHz: content up to 8 kHz); an output
    rate below it keeps only what lies under half the output rate.
    """
    if note_rate is None or rate >= note_rate:
        return False
    print(f"mars-synth {command}: warning: --sample-rate {rate} is below the notes' {note_rate} Hz; "
          f"everything above {rate // 2} Hz (half the output rate) is cut", file=sys.stderr, flush=True)  # fmt: skip
    return True


def add_effects_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the reverb and chorus options (``render`` and ``play``)."""
    group = parser.add_argument_group("effects", "master reverb and chorus; each channel's CC91 (power-on 40) "
                                      "and CC93 (power-on 0) set how much of it they get")  # fmt: skip
    group.add_argument("--no-reverb", action="store_true", help="no reverb (the same as --reverb-level 0)")
    group.add_argument("--no-chorus", action="store_true", help="no chorus (the same as --chorus-level 0)")
    group.add_argument("--reverb-level", type=float, default=1.0, metavar="X",
                       help="wet reverb level, 0..4 (default %(default)g; 0 is off)")  # fmt: skip
    group.add_argument("--reverb-time", type=float, default=1.8, metavar="SECONDS",
                       help="reverb time: seconds to fall 60 dB, 0.1..20 (default %(default)g, a concert hall)")  # fmt: skip
    group.add_argument("--chorus-level", type=float, default=1.0, metavar="X",
                       help="wet chorus level, 0..4 (default %(default)g; 0 is off)")  # fmt: skip


def effects_from_args(args: argparse.Namespace):
    """The :class:`engine.synth.effects.EffectsSettings` for parsed effect options (checked)."""
    from engine.synth.effects import EffectsSettings

    effects = EffectsSettings(reverb_level=0.0 if args.no_reverb else args.reverb_level, reverb_time=args.reverb_time,
                              chorus_level=0.0 if args.no_chorus else args.chorus_level)  # fmt: skip
    effects.check()
    return effects
