"""Applying MIDI channel messages (mido) to a :class:`Synth`: the one mapping shared by render and live play."""

from __future__ import annotations

from dataclasses import dataclass

from engine.synth.sample import NoteSample
from engine.synth.synth import Synth
from engine.synth.voice import Patch


@dataclass(frozen=True)
class NoteStart:
    """What a note-on needs besides the message: the prepared note, the preset's patch, and the
    note's gain (velocity curve, see :func:`engine.synth.voice.velocity_gain`)."""

    sample: NoteSample
    patch: Patch
    gain: float = 1.0


def apply_message(synth: Synth, message, start: NoteStart | None = None) -> None:
    """Apply one channel message to ``synth``.

    Args:
        message: a ``mido.Message``: ``note_on`` (velocity 0 = note-off), ``note_off``,
            ``control_change``, ``pitchwheel`` or ``program_change``; others are ignored.
        start: for a note-on with velocity > 0, the note to play; ``None`` skips the note
            (e.g. an unmapped drum note) while still honouring its note-off later.
    """
    kind = message.type
    if kind == "note_on" and message.velocity > 0:
        if start is not None:
            synth.note_on(message.channel, message.note, message.velocity, start.sample, start.patch, start.gain)
    elif kind in ("note_off", "note_on"):
        synth.note_off(message.channel, message.note)
    elif kind == "control_change":
        synth.control_change(message.channel, message.control, message.value)
    elif kind == "pitchwheel":
        synth.pitch_bend(message.channel, message.pitch)
    elif kind == "program_change":
        synth.program_change(message.channel, message.program)
