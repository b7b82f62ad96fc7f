"""Checks shared by the subcommands that write audio (``render``, ``note``), so they say the same thing."""

from __future__ import annotations

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
