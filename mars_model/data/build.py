"""Build an NSynth-style note set by rendering General MIDI programs with FluidSynth.

Each note is 4 s at 16 kHz mono 16-bit: the key is held 3 s and released for 1 s
(NSynth's protocol). Notes are rendered by the FluidSynth command-line program, one
process per chunk of notes of one program, at 48 kHz (so FluidSynth's own sample
interpolation stays well above the band we keep) and resampled to 16 kHz with soxr.
Each note gets a 5 s slot in the MIDI file and an all-sound-off at 4 s, so no tail
leaks into the next note.

Splits hold out whole (instrument, pitch) conditions: a stable hash of
``instrument_str:pitch`` puts each condition in ``test``, ``valid`` or ``train`` for
every velocity, so a model can be judged on conditions it never saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from mars_model.errors import MarsError

SAMPLE_RATE = 16000
RENDER_RATE = 48000
NOTE_SECONDS = 4.0
HOLD_SECONDS = 3.0
SLOT_SECONDS = 5.0
DEFAULT_VELOCITIES = (25, 50, 75, 100, 127)
DEFAULT_GAIN = 1.0
# A note whose peak stays below this (dBFS) is dropped as silent.
SILENCE_PEAK_DBFS = -60.0
NOTES_PER_PROCESS = 64
SPLITS = ("train", "valid", "test")

SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)


@dataclass(frozen=True)
class ProgramInfo:
    """What the family map says about one GM program."""

    program: int
    family: str
    family_index: int
    source: str
    source_index: int
    pitch_range: tuple[int, int]

    @property
    def instrument_str(self) -> str:
        """NSynth-style instrument name, e.g. ``keyboard_acoustic_000``."""
        return f"{self.family}_{self.source}_{self.program:03d}"


@dataclass(frozen=True)
class FamilyMap:
    """The GM-program -> NSynth-family table (``gm_families.yaml``)."""

    families: tuple[str, ...]
    sources: tuple[str, ...]
    programs: dict[int, ProgramInfo]

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> FamilyMap:
        """Load the table shipped with mars_model, or one given by ``path``."""
        if path is None:
            text = resources.files("mars_model.data").joinpath("gm_families.yaml").read_text()
            where = "gm_families.yaml"
        else:
            where = str(path)
            try:
                text = Path(path).read_text()
            except OSError as err:
                raise MarsError(f"cannot read family map {where}: {err.strerror}") from None
        raw = yaml.safe_load(text)
        families, sources = tuple(raw["families"]), tuple(raw["sources"])
        programs: dict[int, ProgramInfo] = {}
        for entry in raw["programs"]:
            if entry["family"] not in families or entry["source"] not in sources:
                raise MarsError(f"{where}: unknown family/source in {entry}")
            lo, hi = entry["pitches"]
            for program in range(entry["first"], entry["last"] + 1):
                programs[program] = ProgramInfo(
                    program=program,
                    family=entry["family"],
                    family_index=families.index(entry["family"]),
                    source=entry["source"],
                    source_index=sources.index(entry["source"]),
                    pitch_range=(int(lo), int(hi)),
                )
        return cls(families, sources, programs)


@dataclass(frozen=True)
class BuildPlan:
    """What to render.

    Args:
        soundfont: path of the ``.sf2``/``.sf3`` file.
        programs: GM programs (0-based); each must be in the family map.
        pitch_range: optional ``(lo, hi)`` MIDI pitches, intersected with each program's range.
        velocities: MIDI velocities, each rendered for every pitch.
        test_percent, valid_percent: share of (instrument, pitch) conditions held out.
        gain: FluidSynth master gain.
    """

    soundfont: Path
    programs: tuple[int, ...]
    pitch_range: tuple[int, int] | None = None
    velocities: tuple[int, ...] = DEFAULT_VELOCITIES
    test_percent: float = 10.0
    valid_percent: float = 10.0
    gain: float = DEFAULT_GAIN


@dataclass
class BuildReport:
    """Counts and timing of a finished build."""

    notes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    dropped_silent: int = 0
    clipped: int = 0
    seconds: float = 0.0
    bytes_on_disk: int = 0

    def summary(self) -> str:
        per_split = ", ".join(f"{k} {v}" for k, v in self.notes.items())
        return (
            f"{sum(self.notes.values())} notes ({per_split}); {self.dropped_silent} silent dropped; "
            f"{self.bytes_on_disk / 1e6:.0f} MB; {self.seconds / 60:.1f} min"
        )


def default_soundfont() -> Path:
    """Debian's FluidR3_GM when installed, else TimGM6mb; raises if neither is present."""
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise MarsError(
        "no SoundFont found: install Debian's fluid-soundfont-gm (or timgm6mb-soundfont), "
        "or pass --soundfont FILE.sf2"
    )


def check_soundfont(path: Path) -> None:
    """Raise :class:`MarsError` unless ``path`` is a readable RIFF SoundFont (sfbk)."""
    if not path.exists():
        raise MarsError(f"SoundFont {path} does not exist")
    try:
        with open(path, "rb") as handle:
            header = handle.read(12)
    except OSError as err:
        raise MarsError(f"cannot read SoundFont {path}: {err.strerror}") from None
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"sfbk":
        raise MarsError(f"{path} is not a SoundFont 2 file (no RIFF/sfbk header); is it corrupt?")


def split_of(instrument_str: str, pitch: int, test_percent: float, valid_percent: float) -> str:
    """Deterministic split of one (instrument, pitch) condition.

    A SHA-1 of ``"instrument_str:pitch"`` gives a number in [0, 100); the lowest
    ``test_percent`` go to test, the next ``valid_percent`` to valid.
    """
    digest = hashlib.sha1(f"{instrument_str}:{pitch}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64 * 100.0
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + valid_percent:
        return "valid"
    return "train"


def parse_int_list(text: str, what: str, lo: int, hi: int) -> tuple[int, ...]:
    """Parse ``"0,40,56-60"`` into sorted unique ints within [lo, hi]."""
    values: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                values.update(range(a, b + 1))
            else:
                values.add(int(part))
    except ValueError:
        raise MarsError(f"cannot read {what} {text!r}: use numbers like 0,40,56-60") from None
    bad = sorted(v for v in values if not lo <= v <= hi)
    if bad or not values:
        raise MarsError(f"{what} must be in {lo}..{hi}, got {text!r}")
    return tuple(sorted(values))


def _note_midi(program: int, notes: Sequence[tuple[int, int]], path: Path, hold_seconds: float = HOLD_SECONDS) -> None:
    """Write a MIDI file with one note per 5 s slot (key up after ``hold_seconds``), an
    all-sound-off 4 s into each slot."""
    import mido

    ticks_per_second = 960  # 480 ticks per beat at 120 bpm
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    track.append(mido.Message("program_change", program=program, time=0))
    hold = int(hold_seconds * ticks_per_second)
    release = int(NOTE_SECONDS * ticks_per_second) - hold
    gap = int((SLOT_SECONDS - NOTE_SECONDS) * ticks_per_second)
    for i, (pitch, velocity) in enumerate(notes):
        track.append(
            mido.Message("note_on", note=pitch, velocity=velocity, time=0 if i == 0 else gap)
        )
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=hold))
        track.append(mido.Message("control_change", control=120, value=0, time=release))
    track.append(mido.MetaMessage("end_of_track", time=gap))
    midi.save(path)


def render_notes(
    soundfont: Path, program: int, notes: Sequence[tuple[int, int]], gain: float = DEFAULT_GAIN,
    hold_seconds: float = HOLD_SECONDS,
) -> np.ndarray:
    """Render ``(pitch, velocity)`` notes of one GM program with the FluidSynth CLI.

    The key is held ``hold_seconds`` (the note set's 3 s unless a measurement needs another).

    Returns:
        ``[len(notes), 64000]`` float32 mono waveforms at 16 kHz.
    """
    import soundfile
    import soxr

    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None:
        raise MarsError(
            "the fluidsynth program is not installed (Debian: apt-get install fluidsynth)"
        )
    with tempfile.TemporaryDirectory(prefix="mars-render-") as tmp:
        midi_path, wav_path = Path(tmp, "notes.mid"), Path(tmp, "notes.wav")
        _note_midi(program, notes, midi_path, hold_seconds)
        cmd = [fluidsynth, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain),
               "-r", str(RENDER_RATE), "-O", "float", "-T", "wav", "-F", str(wav_path),
               str(soundfont), str(midi_path)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        problems = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
        if proc.returncode != 0 or problems or not wav_path.exists():
            detail = (problems or proc.stderr.strip().splitlines() or ["no output"])[0]
            raise MarsError(f"fluidsynth failed on {soundfont.name} program {program}: {detail}")
        audio, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="VHQ").astype(np.float32)
    slot, length = int(SLOT_SECONDS * SAMPLE_RATE), int(NOTE_SECONDS * SAMPLE_RATE)
    out = np.zeros((len(notes), length), dtype=np.float32)
    for i in range(len(notes)):
        piece = mono[i * slot : i * slot + length]
        out[i, : len(piece)] = piece
    return out


def prepare_output_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".mars-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise MarsError(f"cannot write to output directory {out_dir}: {err.strerror}") from None


def plan_notes(
    plan: BuildPlan, family_map: FamilyMap
) -> list[tuple[ProgramInfo, list[tuple[int, int]]]]:
    """The (program, [(pitch, velocity), ...]) work list, in program order."""
    work = []
    for program in plan.programs:
        info = family_map.programs.get(program)
        if info is None:
            raise MarsError(
                f"GM program {program} has no NSynth family (pads, effects and percussion are "
                f"not rendered); mapped programs: {_ranges(sorted(family_map.programs))}"
            )
        lo, hi = info.pitch_range
        if plan.pitch_range:
            lo, hi = max(lo, plan.pitch_range[0]), min(hi, plan.pitch_range[1])
        notes = [(p, v) for p in range(lo, hi + 1) for v in plan.velocities]
        if notes:
            work.append((info, notes))
    if not work:
        raise MarsError("nothing to render: the pitch range misses every chosen program's range")
    return work


def _ranges(values: Iterable[int]) -> str:
    values = list(values)
    out, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None], strict=True):
        if cur != prev + 1:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = cur
    return ",".join(out)


def build_dataset(
    plan: BuildPlan,
    out_dir: Path,
    family_map: FamilyMap | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> BuildReport:
    """Render ``plan`` into ``out_dir/<split>/{examples.json,audio/*.wav}``.

    Args:
        plan: what to render.
        out_dir: destination; created if needed. Existing splits are replaced.
        family_map: GM -> family table (the shipped one by default).
        progress: called with the number of notes finished after each chunk.
        workers: FluidSynth processes in parallel (default: CPU count, at most 4).
    Returns:
        A :class:`BuildReport`; ``out_dir/manifest.json`` records the same.
    """
    import soundfile

    family_map = family_map or FamilyMap.load()
    check_soundfont(plan.soundfont)
    prepare_output_dir(out_dir)
    work = plan_notes(plan, family_map)
    for split in SPLITS:
        shutil.rmtree(out_dir / split, ignore_errors=True)
        (out_dir / split / "audio").mkdir(parents=True)

    chunks = [(info, notes[i : i + NOTES_PER_PROCESS])
              for info, notes in work for i in range(0, len(notes), NOTES_PER_PROCESS)]  # fmt: skip
    report = BuildReport()
    examples: dict[str, dict[str, dict]] = {s: {} for s in SPLITS}
    silence = 10.0 ** (SILENCE_PEAK_DBFS / 20.0)
    started = time.perf_counter()
    workers = workers or min(4, os.cpu_count() or 1)

    def render(chunk):
        info, notes = chunk
        return info, notes, render_notes(plan.soundfont, info.program, notes, plan.gain)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for info, notes, waves in pool.map(render, chunks):
            for (pitch, velocity), wave in zip(notes, waves, strict=True):
                peak = float(np.abs(wave).max())
                if not np.isfinite(peak) or peak < silence:
                    report.dropped_silent += 1
                    continue
                if peak >= 1.0:
                    report.clipped += 1
                split = split_of(info.instrument_str, pitch, plan.test_percent, plan.valid_percent)
                note_str = f"{info.instrument_str}-{pitch:03d}-{velocity:03d}"
                path = out_dir / split / "audio" / f"{note_str}.wav"
                soundfile.write(path, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
                report.bytes_on_disk += path.stat().st_size
                examples[split][note_str] = {
                    "note": len(examples[split]),
                    "note_str": note_str,
                    "instrument": info.program,
                    "instrument_str": info.instrument_str,
                    "instrument_family": info.family_index,
                    "instrument_family_str": info.family,
                    "instrument_source": info.source_index,
                    "instrument_source_str": info.source,
                    "pitch": pitch,
                    "velocity": velocity,
                    "sample_rate": SAMPLE_RATE,
                    "qualities": [0] * 10,
                    "qualities_str": [],
                    "peak_dbfs": round(20.0 * float(np.log10(peak)), 2),
                }
                report.notes[split] += 1
            if progress:
                progress(len(notes))

    for split in SPLITS:
        with open(out_dir / split / "examples.json", "w") as handle:
            json.dump(examples[split], handle, indent=1, sort_keys=True)
    report.seconds = time.perf_counter() - started
    manifest = {
        "soundfont": str(plan.soundfont),
        "programs": list(plan.programs),
        "pitch_range": list(plan.pitch_range) if plan.pitch_range else None,
        "velocities": list(plan.velocities),
        "test_percent": plan.test_percent,
        "valid_percent": plan.valid_percent,
        "gain": plan.gain,
        "notes": report.notes,
        "dropped_silent": report.dropped_silent,
        "clipped": report.clipped,
        "seconds": round(report.seconds, 1),
        "bytes_on_disk": report.bytes_on_disk,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return report
