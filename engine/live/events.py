"""The plain data objects live play passes between threads: input events and audio commands."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from engine.midi.dispatch import NoteStart
from engine.synth.sample import NoteSample


@dataclass(frozen=True)
class LiveEvent:
    """One thing that happened at an input, for the control thread.

    Attributes:
        kind: ``"midi"`` (``payload`` is a mido channel message), ``"note_ready"``
            (``payload`` is ``(NoteKey, NoteSample)``), ``"disconnect"`` (``payload`` is the
            source name whose notes must end), or an OSC command name (``"preset"``,
            ``"morph"``, ``"param"``, ``"panic"``, ``"fnote"``, ``"note_id_off"``).
        payload: what the kind needs.
        source: who sent it (a MIDI port name, ``"osc"``), so a vanished device's notes can be released.
        received: ``time.monotonic()`` when it arrived (for latency statistics).
        due: ``time.monotonic()`` at which it should sound (OSC bundle timetags), or ``None`` for now.
    """

    kind: str
    payload: Any = None
    source: str = ""
    received: float = field(default_factory=time.monotonic)
    due: float | None = None


#: AudioCommand kinds.
MIDI, SWAP, PANIC, GAIN, EFFECT = 0, 1, 2, 3, 4


class AudioCommand:
    """One instruction for the audio callback, prepared entirely by the control thread.

    Attributes:
        kind: :data:`MIDI` (apply ``message`` with ``start``), :data:`SWAP` (crossfade
            ``channel``/``key`` to ``sample``), :data:`PANIC` (silence everything, pedals up),
            :data:`GAIN` (master gain ``value``), :data:`EFFECT` (effect parameter ``message``,
            one of :data:`engine.synth.synth.EFFECT_PARAMS`, to ``value``).
        frame: the output frame at which it applies (timed commands), or -1 for "as soon as possible".
        received: ``time.monotonic()`` of the input event (for latency statistics).
    """

    __slots__ = ("kind", "frame", "message", "start", "channel", "key", "sample", "value", "received")

    def __init__(self, kind: int, frame: int = -1, message: Any = None, start: NoteStart | None = None,
                 channel: int = 0, key: int = 0, sample: NoteSample | None = None, value: float = 0.0,
                 received: float = 0.0) -> None:  # fmt: skip
        self.kind, self.frame, self.message, self.start = kind, frame, message, start
        self.channel, self.key, self.sample, self.value = channel, key, sample, value
        self.received = received

    def __repr__(self) -> str:
        names = {MIDI: "MIDI", SWAP: "SWAP", PANIC: "PANIC", GAIN: "GAIN", EFFECT: "EFFECT"}
        if self.kind == MIDI:
            detail = self.message
        elif self.kind == EFFECT:
            detail = f"{self.message}={self.value}"
        else:
            detail = f"ch={self.channel} key={self.key} value={self.value}"
        return f"AudioCommand({names.get(self.kind, self.kind)}, frame={self.frame}, {detail})"
