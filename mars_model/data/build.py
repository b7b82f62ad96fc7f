"""Build an NSynth-style note set by rendering General MIDI programs and drum kits with FluidSynth.

Melodic programs (bank 0) follow NSynth's protocol: each note is 4 s at 16 kHz mono 16-bit,
the key held 3 s and released for 1 s. Drum kits (bank 128, played on the GM percussion
channel) are one-shots struck at the same times: each drum rings out as its sample decays,
and only a looped sound (applause) notices the key going up at 3 s. A kit renders only its
own keys; the keys where it sounds exactly like its fallback kit are that kit's notes
(``gm_families.yaml``). Notes are rendered by the FluidSynth
command-line program, one process per chunk of notes of one program or kit, at 48 kHz (so
FluidSynth's own sample interpolation stays well above the band we keep) and resampled to
16 kHz with soxr. Each note gets a 5 s slot in the MIDI file and an all-sound-off at 4 s,
so no tail leaks into the next note.

Splits hold out whole conditions, chosen by a stable hash, so a model can be judged on
conditions it never saw. Melodic programs: ``instrument_str:pitch`` puts each (instrument,
pitch) condition in ``test``, ``valid`` or ``train`` for every velocity. Kits: every key is a
different sound, so no key is held out whole; ``instrument_str:key:velocity`` holds out
single (kit, key, velocity) conditions, and only at inner velocities, so the softest and
loudest stroke of every kit piece is always trained and the held-out ones lie between.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mars_model.data.gm_map import DrumKeyMap, FamilyMap, KitInfo, ProgramInfo
from mars_model.data.soundfont import PERCUSSION_BANK, SoundFontIndex
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
class BuildPlan:
    """What to render.

    Args:
        soundfont: path of the ``.sf2``/``.sf3`` file.
        programs: GM programs (0-based, bank 0); each must be in the family map.
        kits: percussion kits (their program numbers in bank 128); each must be in the map.
        pitch_range: optional ``(lo, hi)`` MIDI pitches, intersected with each program's range
            and each kit's keys.
        velocities: MIDI velocities, each rendered for every pitch or key.
        test_percent, valid_percent: share of (instrument, pitch) conditions held out; for
            kits, the share of (kit, key, velocity) conditions at inner velocities.
        gain: FluidSynth master gain.
    """

    soundfont: Path
    programs: tuple[int, ...]
    kits: tuple[int, ...] = ()
    pitch_range: tuple[int, int] | None = None
    velocities: tuple[int, ...] = DEFAULT_VELOCITIES
    test_percent: float = 10.0
    valid_percent: float = 10.0
    gain: float = DEFAULT_GAIN


@dataclass
class BuildReport:
    """Counts and timing of a finished build."""

    notes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    families: dict[str, dict[str, int]] = field(default_factory=dict)
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


def _split_by_hash(text: str, test_percent: float, valid_percent: float) -> str:
    """A SHA-1 of ``text`` gives a number in [0, 100); the lowest ``test_percent`` go to test,
    the next ``valid_percent`` to valid, the rest to train."""
    digest = hashlib.sha1(text.encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64 * 100.0
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + valid_percent:
        return "valid"
    return "train"


def split_of(instrument_str: str, pitch: int, test_percent: float, valid_percent: float) -> str:
    """Deterministic split of one melodic (instrument, pitch) condition, by a SHA-1 of
    ``"instrument_str:pitch"``; every velocity of the condition shares it."""
    return _split_by_hash(f"{instrument_str}:{pitch}", test_percent, valid_percent)


def kit_split_of(
    instrument_str: str,
    key: int,
    velocity: int,
    velocities: Sequence[int],
    test_percent: float,
    valid_percent: float,
) -> str:
    """Deterministic split of one kit note, a (kit, key, velocity) condition.

    The softest and loudest of ``velocities`` always train, so every kit piece is heard and a
    held-out stroke lies between two trained ones; other velocities go by a SHA-1 of
    ``"instrument_str:key:velocity"``.
    """
    if velocity <= min(velocities) or velocity >= max(velocities):
        return "train"
    return _split_by_hash(f"{instrument_str}:{key}:{velocity}", test_percent, valid_percent)


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


@dataclass(frozen=True)
class NoteProtocol:
    """How one note is played: key down at 0, key up at ``hold_s``, all-sound-off at ``note_s``
    (the length kept), next note ``slot_s`` after this one's start.

    Example: ``NoteProtocol(hold_s=3.0, note_s=4.0, slot_s=5.0)`` is NSynth's.
    """

    hold_s: float
    note_s: float
    slot_s: float

    def __post_init__(self) -> None:
        if not 0 < self.hold_s <= self.note_s < self.slot_s:
            raise ValueError(f"need 0 < hold_s <= note_s < slot_s, got {self}")

    @property
    def samples(self) -> int:
        """Length of one kept note at 16 kHz."""
        return int(round(self.note_s * SAMPLE_RATE))


MELODIC = NoteProtocol(hold_s=HOLD_SECONDS, note_s=NOTE_SECONDS, slot_s=SLOT_SECONDS)
# Percussion: struck once and left to ring. The key goes up at 3 s as for melodic notes: on
# FluidR3_GM that changes nothing audible but the end of a looped sound (the Orchestra kit's
# applause, which then fades with its release instead of being cut off at 4 s), because every
# drum that still rings at 3 s is 28 dB or more under its peak by then (measured by
# tools/measure_gm_ranges.py and in docs/model-card.md). Kept as its own constant so the two
# protocols can part.
ONE_SHOT = NoteProtocol(hold_s=HOLD_SECONDS, note_s=NOTE_SECONDS, slot_s=SLOT_SECONDS)


def _note_midi(program: int, notes: Sequence[tuple[int, int]], path: Path, bank: int = 0,
               protocol: NoteProtocol = MELODIC) -> None:  # fmt: skip
    """Write a MIDI file with one note per slot and an all-sound-off ``protocol.note_s`` into it.

    Melodic programs play on channel 0 (bank 0); kits (``bank == 128``) on channel 9, the GM
    percussion channel, where FluidSynth's program change selects the kit.
    """
    import mido

    ticks_per_second = 960  # 480 ticks per beat at 120 bpm
    channel = 9 if bank == PERCUSSION_BANK else 0
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    hold = int(round(protocol.hold_s * ticks_per_second))
    release = int(round(protocol.note_s * ticks_per_second)) - hold
    gap = int(round(protocol.slot_s * ticks_per_second)) - hold - release
    for i, (pitch, velocity) in enumerate(notes):
        track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=velocity,
                                  time=0 if i == 0 else gap))  # fmt: skip
        track.append(mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=hold))
        track.append(mido.Message("control_change", channel=channel, control=120, value=0,
                                  time=release))  # fmt: skip
    track.append(mido.MetaMessage("end_of_track", time=gap))
    midi.save(path)


def render_notes(
    soundfont: Path,
    program: int,
    notes: Sequence[tuple[int, int]],
    gain: float = DEFAULT_GAIN,
    *,
    bank: int = 0,
    protocol: NoteProtocol = MELODIC,
) -> np.ndarray:
    """Render ``(pitch, velocity)`` notes of one GM program or kit with the FluidSynth CLI.

    Args:
        soundfont: the ``.sf2`` file.
        program: GM program (0-based), or the kit's program number when ``bank`` is 128.
        notes: ``(pitch, velocity)`` pairs; for a kit, pitch is the drum key.
        gain: FluidSynth master gain.
        bank: 0 for melodic programs, 128 for percussion kits.
        protocol: note timing (:data:`MELODIC` by default).
    Returns:
        ``[len(notes), protocol.samples]`` float32 mono waveforms at 16 kHz.
    """
    import soundfile
    import soxr

    fluidsynth = shutil.which("fluidsynth")
    if fluidsynth is None:
        raise MarsError(
            "the fluidsynth program is not installed (Debian: apt-get install fluidsynth)"
        )
    what = f"kit {program}" if bank == PERCUSSION_BANK else f"program {program}"
    with tempfile.TemporaryDirectory(prefix="mars-render-") as tmp:
        midi_path, wav_path = Path(tmp, "notes.mid"), Path(tmp, "notes.wav")
        _note_midi(program, notes, midi_path, bank, protocol)
        cmd = [fluidsynth, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain),
               "-r", str(RENDER_RATE), "-O", "float", "-T", "wav", "-F", str(wav_path),
               str(soundfont), str(midi_path)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        problems = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
        if proc.returncode != 0 or problems or not wav_path.exists():
            detail = (problems or proc.stderr.strip().splitlines() or ["no output"])[0]
            raise MarsError(f"fluidsynth failed on {soundfont.name} {what}: {detail}")
        audio, rate = soundfile.read(wav_path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="VHQ").astype(np.float32)
    slot, length = int(round(protocol.slot_s * SAMPLE_RATE)), protocol.samples
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


Instrument = ProgramInfo | KitInfo


def check_presets(plan: BuildPlan, index: SoundFontIndex) -> None:
    """Raise :class:`MarsError` naming the first planned program or kit the SoundFont lacks."""
    name = plan.soundfont.name
    for program in plan.programs:
        if not index.has(0, program):
            raise MarsError(
                f"GM program {program} is not in {name} (bank 0 has "
                f"{_ranges(index.programs(0)) or 'nothing'}); leave it out of --programs"
            )
    for kit in plan.kits:
        if not index.has(PERCUSSION_BANK, kit):
            raise MarsError(
                f"kit {kit} is not in {name} (bank 128 has kits "
                f"{_ranges(index.programs(PERCUSSION_BANK)) or 'none'}); leave it out of --kits"
            )


def plan_notes(plan: BuildPlan, family_map: FamilyMap) -> list[tuple[Instrument, list[tuple[int, int]]]]:
    """The (program or kit, [(pitch or key, velocity), ...]) work list: programs, then kits."""
    work: list[tuple[Instrument, list[tuple[int, int]]]] = []
    lo_cut, hi_cut = plan.pitch_range or (0, 127)
    for program in plan.programs:
        info = family_map.programs.get(program)
        if info is None:
            raise MarsError(
                f"GM program {program} is not in the family map; mapped programs: "
                f"{_ranges(sorted(family_map.programs))}"
            )
        lo, hi = max(info.pitch_range[0], lo_cut), min(info.pitch_range[1], hi_cut)
        notes = [(p, v) for p in range(lo, hi + 1) for v in plan.velocities]
        if notes:
            work.append((info, notes))
    for kit in plan.kits:
        kit_info = family_map.kits.get(kit)
        if kit_info is None:
            raise MarsError(
                f"unknown kit {kit}; the kit map has {_ranges(sorted(family_map.kits))} "
                f"(0 Standard, 8 Room, 16 Power, 24 Electronic, 25 TR-808, 32 Jazz, 40 Brush, "
                f"48 Orchestra and their variations)"
            )
        notes = [(k, v) for k in kit_info.own_keys if lo_cut <= k <= hi_cut
                 for v in plan.velocities]  # fmt: skip
        if notes:
            work.append((kit_info, notes))
    if not work:
        raise MarsError("nothing to render: the pitch range misses every chosen program's range")
    return work


def count_notes(work: Sequence[tuple[Instrument, Sequence]]) -> dict[str, dict[str, int]]:
    """Planned notes per family and per kit name (before silent notes are dropped)."""
    families: dict[str, int] = {}
    kits: dict[str, int] = {}
    for info, notes in sorted(work, key=lambda item: item[0].family_index):
        families[info.family] = families.get(info.family, 0) + len(notes)
        if isinstance(info, KitInfo):
            kits[f"{info.program} {info.name}"] = len(notes)
    return {"families": families, "kits": kits}


def _ranges(values: Iterable[int]) -> str:
    values = list(values)
    out, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None], strict=True):
        if cur != prev + 1:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = cur
    return ",".join(out)


def note_labels(info: Instrument, pitch: int, velocity: int, drums: DrumKeyMap) -> dict:
    """The ``examples.json`` fields of one note that do not depend on its audio or split.

    Melodic notes keep the fields of the first note sets unchanged and gain ``bank`` (0) and
    ``program``; kit notes get ``bank`` 128, the kit's ``program``, ``instrument`` 128 +
    program, and ``drum_kit_str``, ``drum_key_str`` (the GM/GS name of the key) and
    ``drum_exclusive_class`` (``hi-hat`` ..., or None).
    """
    note_str = f"{info.instrument_str}-{pitch:03d}-{velocity:03d}"
    fields = {
        "note_str": note_str,
        "instrument": info.instrument,
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
        "bank": info.bank,
        "program": info.program,
    }
    if isinstance(info, KitInfo):
        fields["drum_kit_str"] = info.name
        fields["drum_key_str"] = drums.name(info.program, pitch)
        fields["drum_exclusive_class"] = drums.exclusive_class(info.program, pitch)
    return fields


def split_of_note(info: Instrument, pitch: int, velocity: int, plan: BuildPlan) -> str:
    """The split of one planned note (see :func:`split_of` and :func:`kit_split_of`)."""
    if isinstance(info, KitInfo):
        return kit_split_of(info.instrument_str, pitch, velocity, plan.velocities,
                            plan.test_percent, plan.valid_percent)  # fmt: skip
    return split_of(info.instrument_str, pitch, plan.test_percent, plan.valid_percent)


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
    drums = DrumKeyMap.load()
    check_soundfont(plan.soundfont)
    check_presets(plan, SoundFontIndex.load(plan.soundfont))
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
        protocol = ONE_SHOT if isinstance(info, KitInfo) else MELODIC
        waves = render_notes(plan.soundfont, info.program, notes, plan.gain, bank=info.bank,
                             protocol=protocol)  # fmt: skip
        return info, notes, waves

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for info, notes, waves in pool.map(render, chunks):
            for (pitch, velocity), wave in zip(notes, waves, strict=True):
                peak = float(np.abs(wave).max())
                if not np.isfinite(peak) or peak < silence:
                    report.dropped_silent += 1
                    continue
                if peak >= 1.0:
                    report.clipped += 1
                split = split_of_note(info, pitch, velocity, plan)
                labels = note_labels(info, pitch, velocity, drums)
                note_str = labels["note_str"]
                path = out_dir / split / "audio" / f"{note_str}.wav"
                soundfile.write(path, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
                report.bytes_on_disk += path.stat().st_size
                examples[split][note_str] = {
                    "note": len(examples[split]),
                    **labels,
                    "peak_dbfs": round(20.0 * float(np.log10(peak)), 2),
                }
                report.notes[split] += 1
                family = report.families.setdefault(info.family, dict.fromkeys(SPLITS, 0))
                family[split] += 1
            if progress:
                progress(len(notes))

    for split in SPLITS:
        with open(out_dir / split / "examples.json", "w") as handle:
            json.dump(examples[split], handle, indent=1, sort_keys=True)
    report.seconds = time.perf_counter() - started
    manifest = {
        "soundfont": str(plan.soundfont),
        "programs": list(plan.programs),
        "kits": list(plan.kits),
        # How a player finds each key of a kit: its own note, or the fallback kit's.
        "kit_map": {
            str(kit): {"name": info.name, "keys": list(info.keys), "own_keys": list(info.own_keys),
                       "fallback": info.fallback}
            for kit in plan.kits
            for info in [family_map.kits[kit]]
        },
        "melodic_protocol": asdict(MELODIC),
        "one_shot_protocol": asdict(ONE_SHOT),
        "pitch_range": list(plan.pitch_range) if plan.pitch_range else None,
        "velocities": list(plan.velocities),
        "test_percent": plan.test_percent,
        "valid_percent": plan.valid_percent,
        "gain": plan.gain,
        "notes": report.notes,
        "notes_per_family": report.families,
        "dropped_silent": report.dropped_silent,
        "clipped": report.clipped,
        "seconds": round(report.seconds, 1),
        "bytes_on_disk": report.bytes_on_disk,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return report
