"""Offline rendering: a MIDI file through the note cache and the engine core, on a sample clock, to WAV/FLAC.

The steps: read the file into sample-stamped messages; walk them once to learn which
preset plays each note and so which distinct notes are needed; bring those into the note
cache (disk, else generated in batches); then play the messages into a :class:`Synth`,
rendering the audio between consecutive messages in blocks, so every event lands on its
exact sample.

End of file: notes still held (no note-off, or a pedal never lifted) are released at the
file's end with a warning. ``tail`` then decides how long the output runs: ``"auto"``
until the mix - the reverb's tail included - falls below -90 dBFS (at most 30 s more),
``"eot"`` stops at the end of the file, a number of seconds renders exactly that much more.

Reverb and chorus are on by default (``settings.effects``), as in FluidSynth; each channel's
CC91 and CC93 decide how much of it they get.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.midi.dispatch import NoteStart, apply_message
from engine.midi.midifile import DEFAULT_MAX_SECONDS, MidiScore, read_midi_file
from engine.midi.program_map import ProgramMap
from engine.note_cache import CacheStats, NoteCache, NoteKey
from engine.synth.effects import EffectsSettings
from engine.synth.sample import NoteSample
from engine.synth.synth import CC_BANK_LSB, CC_BANK_MSB, Synth
from engine.synth.voice import Patch
from mars_model.api import NoteSource
from mars_model.errors import MarsError

SILENCE_DBFS = -90.0
AUTO_TAIL_MAX_SECONDS = 30.0
SAMPLE_RATES = (8000, 192000)


@dataclass
class RenderSettings:
    """Everything ``render`` can be told.

    Args:
        sample_rate: output rate in Hz (8000..192000).
        gain: master gain (linear) before the soft limiter.
        polyphony: the most voices at once.
        preset: one preset (name or ``.yaml`` path) for every channel, drums included.
        channel_map: a YAML map file (see :mod:`engine.midi.program_map`).
        tail: ``"auto"``, ``"eot"`` or seconds after the end of the file.
        seed: sampling seed for every generated note.
        cache_dir: the persistent note cache (``None``: generate everything, keep nothing).
        block_size: frames per mixing block (events split blocks, so timing does not depend on it).
        progress: show a progress bar while notes are generated.
        model_device: the torch device the model runs on (``cpu``, ``cuda``, ``cuda:N``, or
            ``auto``: CUDA when there is a GPU); it is loaded only when a note must be generated.
        max_seconds: refuse MIDI files longer than this.
        effects: the reverb and chorus (on by default; ``engine.synth.effects.DRY`` for none).
    """

    sample_rate: int = 48000
    gain: float = 0.5
    polyphony: int = 64
    preset: str | None = None
    channel_map: Path | None = None
    tail: str | float = "auto"
    seed: int = 0
    cache_dir: Path | None = None
    block_size: int = 4096
    progress: bool = True
    model_device: str = "cpu"
    max_seconds: float = DEFAULT_MAX_SECONDS
    effects: EffectsSettings = field(default_factory=EffectsSettings)

    def check(self) -> None:
        """Validate the settings (one MarsError naming the setting and what is allowed)."""
        if not SAMPLE_RATES[0] <= self.sample_rate <= SAMPLE_RATES[1]:
            raise MarsError(f"sample rate must be {SAMPLE_RATES[0]}..{SAMPLE_RATES[1]} Hz, got {self.sample_rate}")
        if not 0 < self.polyphony <= 4096:
            raise MarsError(f"polyphony must be 1..4096, got {self.polyphony}")
        if not 0 <= self.gain <= 100:
            raise MarsError(f"gain must be 0..100 (linear), got {self.gain}")
        if not (self.tail in ("auto", "eot") or (isinstance(self.tail, float | int) and 0 <= self.tail <= 3600)):
            raise MarsError(f"tail must be 'auto', 'eot' or seconds 0..3600, got {self.tail!r}")
        self.effects.check()


@dataclass
class RenderReport:
    """What a render did; :meth:`summary` is the line the CLI prints."""

    frames: int = 0
    sample_rate: int = 48000
    notes: int = 0
    skipped_notes: int = 0
    distinct_notes: int = 0
    cache: CacheStats = field(default_factory=CacheStats)
    wall_seconds: float = 0.0
    peak: float = 0.0
    peak_voices: int = 0
    steals: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Length of the output in seconds."""
        return self.frames / self.sample_rate

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio per second of wall time."""
        return self.seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def summary(self) -> str:
        """One line: duration, notes, cache hits, wall time, real-time factor."""
        return (f"{self.seconds:.2f} s of audio, {self.notes} notes ({self.distinct_notes} distinct: "
                f"{self.cache.hits} cache hits, {self.cache.generated} generated), "
                f"wall {self.wall_seconds:.2f} s, {self.realtime_factor:.1f}x real time")  # fmt: skip


@dataclass(frozen=True)
class _PlannedNote:
    key: NoteKey
    patch: Patch


def plan_notes(score: MidiScore, program_map: ProgramMap, cache: NoteCache,
               report: RenderReport) -> list[_PlannedNote | None]:  # fmt: skip
    """For each message, the note it starts (``None`` for other messages and skipped notes).

    Follows program changes and bank selects channel by channel, as the synth will. Drum
    notes play when the cache's note source makes their kit (see :meth:`NoteCache.instruments`).
    """
    program_map.set_model_instruments(cache.instruments())
    programs = [0] * 16
    bank_msb = [0] * 16
    bank_lsb = [0] * 16
    plan: list[_PlannedNote | None] = []
    unmapped: dict[int, int] = {}
    for timed in score.messages:
        msg = timed.message
        planned = None
        if msg.type == "program_change":
            programs[msg.channel] = msg.program
        elif msg.type == "control_change" and msg.control == CC_BANK_MSB:
            bank_msb[msg.channel] = msg.value
        elif msg.type == "control_change" and msg.control == CC_BANK_LSB:
            bank_lsb[msg.channel] = msg.value
        elif msg.type == "note_on" and msg.velocity > 0:
            ch = msg.channel
            bank = bank_msb[ch] * 128 + bank_lsb[ch]
            choice = program_map.choose(ch, bank, programs[ch], msg.note)
            if choice is None:
                report.skipped_notes += 1
                if ch not in program_map.channels and program_map.kit_program(ch, bank, programs[ch]) is None:
                    unmapped[programs[ch]] = unmapped.get(programs[ch], 0) + 1
            else:
                planned = _PlannedNote(cache.key(choice.preset, msg.note, msg.velocity), choice.patch)
                report.notes += 1
        plan.append(planned)
    report.warnings.extend(program_map.report())
    for program, count in sorted(unmapped.items()):
        report.warnings.append(f"skipped {count} notes of GM program {program} (the map file maps it to null)")
    return plan


def render_score(score: MidiScore, cache: NoteCache, program_map: ProgramMap, settings: RenderSettings,
                 sink: Callable[[np.ndarray], None], report: RenderReport | None = None) -> RenderReport:  # fmt: skip
    """Render a score, handing each finished block (float32 ``[2, n]``) to ``sink``.

    Args:
        score: the MIDI file, stamped at ``settings.sample_rate``.
        cache: the note cache (filled here with every note the score needs).
        program_map: channel/program -> preset.
        settings: rate, gain, polyphony, tail, block size.
        sink: receives each block; the array is reused, so copy or write it before returning.
    """
    report = RenderReport(sample_rate=settings.sample_rate) if report is None else report
    plan = plan_notes(score, program_map, cache, report)
    keys = [p.key for p in plan if p is not None]
    cache.fill(keys)
    report.distinct_notes = len(set(keys))
    report.cache = cache.stats
    # A note is prepared for playing shortly before its first use (on a second thread) and
    # let go after its last, so the render holds the notes in play, not every note of the file.
    last_use = {p.key: i for i, p in enumerate(plan) if p is not None}
    with NotePrefetch(cache, list(dict.fromkeys(keys))) as prefetch:
        _play(score, plan, last_use, cache, prefetch, settings, sink, report)
    report.warnings.extend(w for w in cache.warnings if w not in report.warnings)
    return report


#: Notes :class:`NotePrefetch` prepares ahead of the render's first use of them.
PREFETCH_AHEAD = 24


class NotePrefetch:
    """Prepares a render's notes on a background thread, in order of first use, at most
    :data:`PREFETCH_AHEAD` ahead of the render (``started(key)`` says how far it got)."""

    def __init__(self, cache: NoteCache, order: list[NoteKey]) -> None:
        self.cache, self.order = cache, order
        self.room = threading.Semaphore(PREFETCH_AHEAD)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mars-prefetch", daemon=True)

    def __enter__(self) -> NotePrefetch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.room.release(len(self.order) + 1)  # wake it if it waits for room
        self.thread.join()

    def started(self) -> None:
        """The render began playing one more distinct note: room for one more ahead."""
        self.room.release()

    def _run(self) -> None:
        for key in self.order:
            self.room.acquire()
            if self.stopped.is_set():
                return
            self.cache.prepare(key)


def _play(score: MidiScore, plan: list[_PlannedNote | None], last_use: dict[NoteKey, int], cache: NoteCache,
          prefetch: NotePrefetch, settings: RenderSettings, sink: Callable[[np.ndarray], None],
          report: RenderReport) -> None:  # fmt: skip
    synth = Synth(settings.sample_rate, settings.polyphony, settings.block_size, settings.gain, settings.effects)
    block = np.zeros((2, settings.block_size), np.float32)
    now = 0

    def advance(until: int) -> float:
        # Render up to sample `until`; returns the last block's peak.
        nonlocal now
        last_peak = 0.0
        while now < until:
            n = min(settings.block_size, until - now)
            last_peak = synth.render(block, n)
            report.peak = max(report.peak, last_peak)
            sink(block[:, :n])
            now += n
        return last_peak

    first_use: set[NoteKey] = set()
    for index, (timed, planned) in enumerate(zip(score.messages, plan, strict=True)):
        if timed.sample > now:
            advance(timed.sample)
        start = None
        if planned is not None:
            sample = cache.get(planned.key)
            gain = sample.velocity_gain(timed.message.velocity, planned.patch.velocity_sensitivity)
            start = NoteStart(sample, planned.patch, gain)
            if planned.key not in first_use:
                first_use.add(planned.key)
                prefetch.started()
            if last_use[planned.key] == index:
                cache.forget([planned.key])  # the voice keeps what it plays
        apply_message(synth, timed.message, start)
    if score.end_sample > now:
        advance(score.end_sample)
    still_held = sum(1 for v in synth.voices if v.state.name in ("HELD", "SUSTAINED") and not v.one_shot)
    if still_held:
        report.warnings.append(f"{still_held} notes were still held at the end of the file; released there")
    synth.release_all()
    if settings.tail == "eot":
        pass
    elif settings.tail == "auto":
        silence = 10 ** (SILENCE_DBFS / 20)
        limit = now + int(AUTO_TAIL_MAX_SECONDS * settings.sample_rate)
        while synth.busy and now < limit:
            if advance(min(now + settings.block_size, limit)) < silence:
                break
    else:
        advance(now + int(round(float(settings.tail) * settings.sample_rate)))
    report.frames = now
    report.peak_voices = synth.peak_voices
    report.steals = synth.steals


def play_note(note: NoteSample, patch: Patch, key: int, velocity: int, hold: float, seconds: float,
              sample_rate: int = 48000, gain: float = 0.5) -> np.ndarray:  # fmt: skip
    """One key press through the engine core, as ``render`` plays it (calibrated velocity gain,
    the patch's envelope, the mixer): key down at 0, up after ``hold`` seconds.

    Returns:
        float32 ``[2, seconds * sample_rate]``.
    """
    block = 4096
    synth = Synth(sample_rate, polyphony=4, block_size=block, gain=gain)
    synth.note_on(0, key, velocity, note, patch, note.velocity_gain(velocity, patch.velocity_sensitivity))
    total, up = int(round(seconds * sample_rate)), int(round(hold * sample_rate))
    out = np.zeros((2, total), np.float32)
    now = 0
    while now < total:
        if now == up:
            synth.note_off(0, key)
        end = min(now + block, total, up if now < up else total)
        synth.render(out[:, now:end], end - now)
        now = end
    return out


def make_cache(settings: RenderSettings, source: NoteSource | None = None) -> NoteCache:
    """The note cache a render uses: the given source, else the shipped model, loaded only on a miss."""
    from engine.model import default_model_id, default_model_instruments, default_note_source

    if source is not None:
        return NoteCache(settings.sample_rate, source, str(source.model_id), settings.seed,
                         settings.cache_dir, progress=settings.progress)  # fmt: skip
    model_id = default_model_id()
    loaded = None
    if model_id is None:
        loaded = default_note_source(settings.model_device)
        model_id = str(loaded.model_id)
    return NoteCache(settings.sample_rate, loaded or (lambda: default_note_source(settings.model_device)), model_id, settings.seed,
                     settings.cache_dir, progress=settings.progress,
                     known_instruments=None if loaded else default_model_instruments())  # fmt: skip


#: Notes per second assumed by :func:`plan_render` before any render on this machine was timed:
#: the cold dense-file benchmark on a 2-core x86-64 CPU (docs/benchmarks.md).
ASSUMED_NOTES_PER_SECOND = 20.0


@dataclass
class RenderPlan:
    """What a render of a file would do, found without loading the model (``render --dry-run``).

    Attributes:
        seconds: the file's length. notes: notes it plays. distinct: distinct notes it needs.
        cached: how many of those the note cache already holds. notes_per_second: the last
        generation speed measured on this machine with this cache (``None``: none yet).
    """

    seconds: float
    notes: int
    distinct: int
    cached: int
    notes_per_second: float | None
    warnings: list[str] = field(default_factory=list)

    @property
    def to_generate(self) -> int:
        return self.distinct - self.cached

    @property
    def estimated_seconds(self) -> float:
        """Rough time to generate the missing notes (start-up and mixing not included)."""
        return self.to_generate / (self.notes_per_second or ASSUMED_NOTES_PER_SECOND)

    def summary(self) -> str:
        """A few lines for a person."""
        speed = (f"{self.notes_per_second:.1f} notes/s, the last speed measured with this cache"
                 if self.notes_per_second else
                 f"{ASSUMED_NOTES_PER_SECOND:.0f} notes/s assumed: no render timed with this cache yet")  # fmt: skip
        lines = [f"{self.seconds:.1f} s of music, {self.notes} notes, {self.distinct} distinct: "
                 f"{self.cached} in the cache, {self.to_generate} to generate"]  # fmt: skip
        if self.to_generate:
            lines.append(f"generating them takes about {self.estimated_seconds:.0f} s ({speed})")
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def plan_render(midi_path: Path | str, settings: RenderSettings, source: NoteSource | None = None) -> RenderPlan:
    """Read a file and count the notes it needs and the cache holds; generates nothing."""
    settings.check()
    score = read_midi_file(midi_path, settings.sample_rate, settings.max_seconds)
    program_map = ProgramMap.load(settings.channel_map, settings.preset)
    cache = make_cache(settings, source)
    report = RenderReport(sample_rate=settings.sample_rate)
    keys = list(dict.fromkeys(p.key for p in plan_notes(score, program_map, cache, report) if p is not None))
    return RenderPlan(seconds=score.end_sample / settings.sample_rate, notes=report.notes, distinct=len(keys),
                      cached=sum(cache.has(key) for key in keys), notes_per_second=cache.measured_speed(),
                      warnings=score.warnings + report.warnings)  # fmt: skip


def render_to_array(midi_path: Path | str, settings: RenderSettings,
                    source: NoteSource | None = None) -> tuple[np.ndarray, RenderReport]:  # fmt: skip
    """Render a MIDI file into memory.

    Returns:
        float32 ``[2, frames]`` stereo audio and the report.
    """
    settings.check()
    started = time.perf_counter()
    score = read_midi_file(midi_path, settings.sample_rate, settings.max_seconds)
    if score.note_count == 0:
        raise MarsError(f"{midi_path} has no notes; nothing to render")
    program_map = ProgramMap.load(settings.channel_map, settings.preset)
    cache = make_cache(settings, source)
    blocks: list[np.ndarray] = []
    report = render_score(score, cache, program_map, settings, lambda b: blocks.append(b.copy()))
    report.warnings[:0] = score.warnings
    audio = np.concatenate(blocks, axis=1) if blocks else np.zeros((2, 0), np.float32)
    report.wall_seconds = time.perf_counter() - started
    return audio, report


FORMATS = {".wav": "WAV", ".flac": "FLAC"}
SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT", "pcm_16": "PCM_16", "pcm_24": "PCM_24"}


def output_format(path: Path, fmt: str | None, subtype: str | None) -> tuple[str, str]:
    """The soundfile (format, subtype) for an output path and the ``--format``/``--subtype`` options.

    The format comes from the extension unless given; the subtype defaults to 24-bit PCM.
    """
    if fmt is None:
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise MarsError(f"cannot tell the format of '{path}' from its extension; "
                            "use .wav or .flac, or give --format wav|flac")  # fmt: skip
    else:
        fmt = fmt.upper()
        if fmt not in FORMATS.values():
            raise MarsError(f"unknown format '{fmt.lower()}'; allowed: wav, flac")
    chosen = SUBTYPES.get((subtype or "24").lower())
    if chosen is None:
        raise MarsError(f"unknown subtype '{subtype}'; allowed: 16, 24, float")
    if fmt == "FLAC" and chosen == "FLOAT":
        raise MarsError("FLAC cannot hold float samples; use --subtype 16 or 24, or write a .wav")
    return fmt, chosen


def render_file(midi_path: Path | str, output_path: Path | str, settings: RenderSettings,
                source: NoteSource | None = None, fmt: str | None = None,
                subtype: str | None = None) -> RenderReport:  # fmt: skip
    """Render a MIDI file to a WAV or FLAC file, streaming blocks to disk.

    The output is opened before any note is generated, so an unwritable path fails at
    once; a failed render removes the partial file.

    Raises:
        MarsError: bad MIDI, settings, presets or map; unwritable output; no model.
    """
    import soundfile

    settings.check()
    started = time.perf_counter()
    output_path = Path(output_path)
    if output_path.is_dir():
        raise MarsError(f"{output_path} is a directory; give a file name such as {output_path / 'song.wav'}")
    file_format, file_subtype = output_format(output_path, fmt, subtype)
    score = read_midi_file(midi_path, settings.sample_rate, settings.max_seconds)
    if score.note_count == 0:
        raise MarsError(f"{midi_path} has no notes; nothing to render")
    program_map = ProgramMap.load(settings.channel_map, settings.preset)
    try:
        out = soundfile.SoundFile(str(output_path), "w", settings.sample_rate, 2, file_subtype, format=file_format)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise MarsError(f"cannot write {output_path}: {str(err).splitlines()[0]}; choose a writable path with -o") from None
    report = RenderReport(sample_rate=settings.sample_rate)
    report.warnings.extend(score.warnings)
    ok = False
    try:
        cache = make_cache(settings, source)

        # Blocks are gathered into one interleaved buffer and written in large chunks.
        chunk = np.empty((max(65536, settings.block_size), 2), np.float32)
        filled = 0

        def write(block: np.ndarray) -> None:
            nonlocal filled
            n = block.shape[1]
            if filled + n > chunk.shape[0]:
                out.write(chunk[:filled])
                filled = 0
            # Row by row: a transposed 2-D copy makes numpy loop over pairs of samples.
            chunk[filled : filled + n, 0] = block[0]
            chunk[filled : filled + n, 1] = block[1]
            filled += n

        render_score(score, cache, program_map, settings, write, report)
        out.write(chunk[:filled])
        ok = True
    finally:
        out.close()
        if not ok:
            output_path.unlink(missing_ok=True)
    report.wall_seconds = time.perf_counter() - started
    return report
