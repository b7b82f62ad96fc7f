"""Reading Standard MIDI Files (mido) into channel messages stamped with the output sample they fall on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mars_model.errors import MarsError

#: Files longer than this (at their own tempo) are refused unless the caller allows more.
DEFAULT_MAX_SECONDS = 3600.0
_CHANNEL_TYPES = {"note_on", "note_off", "control_change", "program_change", "pitchwheel"}


@dataclass(frozen=True)
class TimedMessage:
    """A channel message and the output sample it starts on.

    Attributes:
        sample: frame index at the output rate (sample-accurate: ticks are converted with
            the exact tempo map, not by summing rounded deltas).
        message: a ``mido.Message`` (``note_on``, ``note_off``, ``control_change``,
            ``program_change`` or ``pitchwheel``).
    """

    sample: int
    message: object

    def __str__(self) -> str:
        return f"@{self.sample} {self.message}"


@dataclass
class MidiScore:
    """A MIDI file as timed channel messages.

    Attributes:
        messages: in playing order (file order for equal times).
        end_sample: where the file ends (its last event, end-of-track included).
        sample_rate: the rate the sample stamps are in.
        tempo_changes: how many ``set_tempo`` events the file has.
        path: the file read.
    """

    messages: list[TimedMessage]
    end_sample: int
    sample_rate: int
    tempo_changes: int = 0
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """The file's length in seconds."""
        return self.end_sample / self.sample_rate

    @property
    def note_count(self) -> int:
        """Note-ons with velocity > 0."""
        return sum(1 for t in self.messages if t.message.type == "note_on" and t.message.velocity > 0)


def _open(path: Path):
    import mido

    if not path.exists():
        raise MarsError(f"{path}: no such file; give the path of a .mid file")
    if path.is_dir():
        raise MarsError(f"{path} is a directory; give the path of a .mid file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise MarsError(f"cannot read {path}: {err.strerror}") from None
    if size == 0:
        raise MarsError(f"{path} is empty (0 bytes); it is not a MIDI file")
    try:
        return mido.MidiFile(str(path))
    except PermissionError as err:
        raise MarsError(f"cannot read {path}: {err.strerror}") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MarsError(f"{path} is not a valid MIDI file ({detail}); it may be truncated or corrupt") from None


def _seconds_per_tick(midi) -> tuple[float | None, int]:
    """(fixed seconds per tick for SMPTE time division or None, ticks per beat)."""
    division = int(midi.ticks_per_beat) & 0xFFFF  # mido reads it as a signed 16-bit number
    if division & 0x8000:  # SMPTE: negative frames per second in the high byte, ticks per frame in the low
        fps = 256 - (division >> 8)
        ticks_per_frame = division & 0xFF
        if fps not in (24, 25, 29, 30) or ticks_per_frame == 0:
            raise MarsError(f"{midi.filename}: invalid SMPTE time division {division:#06x}")
        return 1.0 / ((29.97 if fps == 29 else fps) * ticks_per_frame), 0
    if division <= 0:
        raise MarsError(f"{midi.filename}: invalid time division {division} ticks per beat; the file is corrupt")
    return None, division


def read_midi_file(path: Path | str, sample_rate: int, max_seconds: float = DEFAULT_MAX_SECONDS) -> MidiScore:
    """Read a type 0 or type 1 MIDI file.

    Tracks are merged by absolute tick; ``set_tempo`` events (in any track, as type 1 files
    keep them in the first) change the tempo from their tick on. Messages at the same tick
    keep file order, so a controller placed before a note-on applies to it.

    Args:
        path: the ``.mid`` file.
        sample_rate: output rate; message times are frame indices at this rate.
        max_seconds: refuse files longer than this (an absurd tempo can stretch a file to days).
    Raises:
        MarsError: missing, empty, truncated or corrupt file; type 2 file; invalid time
            division; a file longer than ``max_seconds``.
    """

    path = Path(path)
    midi = _open(path)
    if midi.type == 2:
        raise MarsError(f"{path} is a type 2 MIDI file (independent sequences), which is not supported; "
                        "save it as type 0 or 1")  # fmt: skip
    smpte, ticks_per_beat = _seconds_per_tick(midi)
    tempo = 500000  # microseconds per beat until the first set_tempo (120 bpm)
    seconds_at_change, tick_at_change, tick = 0.0, 0, 0  # tick: the last message's, for the end
    messages: list[TimedMessage] = []
    tempo_changes = 0
    warnings: list[str] = []

    def seconds_at(t: int) -> float:
        if smpte is not None:
            return t * smpte
        return seconds_at_change + (t - tick_at_change) * tempo / (1e6 * ticks_per_beat)

    for tick, message in _merged(midi.tracks):
        if message.type == "set_tempo":
            if smpte is None:
                seconds_at_change, tick_at_change = seconds_at(tick), tick
                if message.tempo <= 0:
                    warnings.append(f"tempo {message.tempo} us/beat at tick {tick} ignored (must be > 0)")
                else:
                    tempo = message.tempo
            tempo_changes += 1
            continue
        if message.type not in _CHANNEL_TYPES:
            continue
        now = seconds_at(tick)
        if now > max_seconds:
            raise MarsError(_too_long(path, now, max_seconds))
        messages.append(TimedMessage(int(round(now * sample_rate)), message))
    end = seconds_at(tick)
    if end > max_seconds:
        raise MarsError(_too_long(path, end, max_seconds))
    return MidiScore(messages, int(round(end * sample_rate)), sample_rate, tempo_changes, path, warnings)


def _merged(tracks) -> list:
    """``(absolute tick, message)`` of every track, by tick; ties keep track order, then file
    order (as ``mido.merge_tracks``, which copies every message to rewrite its delta time: a
    third of a dense file's reading time)."""
    stamped = []
    for number, track in enumerate(tracks):
        tick = 0
        for index, message in enumerate(track):
            tick += message.time
            stamped.append((tick, number, index, message))
    stamped.sort(key=lambda item: item[:3])
    return [(tick, message) for tick, _, _, message in stamped]


def _too_long(path: Path, seconds: float, limit: float) -> str:
    return (f"{path} lasts more than {seconds:.0f} s at its own tempo (limit {limit:.0f} s); "
            "its tempo or timing is probably corrupt (raise the limit with --max-duration)")  # fmt: skip
