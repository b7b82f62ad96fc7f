"""Measure the real instruments' levels and releases: writes the playback calibration (engine/data/playback.json).

    nice -n 10 python -m tools.calibrate_playback                      # every GM program and drum kit
    python -m tools.calibrate_playback --programs 0,40-42 -o /tmp/p.json   # a few programs
    python -m tools.calibrate_playback --programs 12,13 --update           # re-measure two in the shipped file
    python -m tools.calibrate_playback --kits all --update                 # re-measure the drum kits

The notes are rendered exactly as the note set's (``mars-synth dataset build``: FluidR3_GM
through the FluidSynth CLI, 3 s held and 1 s of release, at 16 kHz, the note set's gain
and velocities), and only the pitches of the **train** split are measured; held-out pitches
are interpolated from their neighbours when the engine reads the file. For each note:
level (K-weighted power of the first second, :func:`engine.synth.loudness.level_db`),
attack (to -3 dB of the peak) and release (to -60 dB after key up); every third pitch, the
held part's envelope at velocity 100 (50 ms frames, dB re the level) and the brightness
(spectral centroid below 8 kHz of the first second) at every velocity. A program's release and
attack are the medians over its notes at velocity 75 and above (quiet notes reach the
noise floor too early for a good fit). Silent notes (peak under -60 dBFS, as the note set
drops them) are left out.

Drum kits are rendered as the note set's one-shots (bank 128 on the percussion channel,
struck and left to ring), each kit on its *own* keys only (its other keys play the fallback
kit's notes, in FluidSynth as in the engine), at the train split's (kit, key, velocity)
conditions: every key at 25 and 127, the inner velocities unless held out. Only the level
is kept: a drum's decay is its sample's, and FluidR3 scales it with velocity without
changing its shape (``--kit-report`` measures that, and what interpolating the held-out
velocities costs, from the held-out notes, which only the report sees).

The file is one line of JSON; each program's envelope rows are kept as base64 of
little-endian int16 tenths of a dB (``db16``), a few milliseconds of the engine's start-up
instead of the most of it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.calibration import (
    CALIBRATION_FILE,
    ENVELOPE_FRAME_SECONDS,
    ENVELOPE_FRAMES,
    Calibration,
    KitCalibration,
    ProgramCalibration,  # fmt: skip
    fill_kit_levels,
    kit_shape,
    load_calibration,
    velocity_curve,
)
from engine.synth.loudness import (
    attack_seconds,
    centroid_hz,
    envelope_db,
    level_db,
    release_seconds,
)
from mars_model.data.build import (
    HOLD_SECONDS,
    NOTE_SECONDS,
    NOTES_PER_PROCESS,
    ONE_SHOT,
    SAMPLE_RATE,
    SILENCE_PEAK_DBFS,
    SLOT_SECONDS,
    BuildPlan,
    FamilyMap,
    NoteProtocol,
    default_soundfont,
    kit_split_of,
    parse_int_list,  # fmt: skip
    plan_notes,
    render_notes,
    split_of,
)
from mars_model.data.gm_map import KitInfo, ProgramInfo
from mars_model.data.soundfont import PERCUSSION_BANK
from mars_model.errors import MarsError

#: Notes below this velocity do not vote on the program's release and attack.
ENVELOPE_MIN_VELOCITY = 75
#: Key-up time of the extra notes that measure the release of programs silent at 3 s.
SHORT_HOLD_SECONDS = 0.3
#: The held part's envelope is kept for notes of this velocity, every few measured pitches.
ENVELOPE_VELOCITY = 100
ENVELOPE_PITCH_STEP = 3

Measures = tuple[float, float, "float | None", "np.ndarray | None", float]


def audible_notes(soundfont: Path, program: int, notes: list[tuple[int, int]], protocol: NoteProtocol,
                  bank: int = 0) -> Iterator[tuple[tuple[int, int], np.ndarray]]:  # fmt: skip
    """Render ``notes`` of one program (or kit, ``bank`` 128) in the note set's chunks and yield
    ``((pitch, velocity), wave)`` for each that is not silent (as the note set drops them)."""
    silence = 10 ** (SILENCE_PEAK_DBFS / 20)
    for first in range(0, len(notes), NOTES_PER_PROCESS):
        chunk = notes[first : first + NOTES_PER_PROCESS]
        waves = render_notes(soundfont, program, chunk, protocol=protocol, bank=bank)
        for note, wave in zip(chunk, waves, strict=True):
            if float(np.abs(wave).max()) >= silence:
                yield note, wave


def measure_program(soundfont: Path, program: int, notes: list[tuple[int, int]],
                    hold: float = HOLD_SECONDS) -> dict[tuple[int, int], Measures]:  # fmt: skip
    """Render and measure notes of one program, the key held ``hold`` seconds:
    ``(pitch, velocity) -> (level, attack, release, envelope, centroid)``, the envelope (dB re
    level, 50 ms frames of the held part) for velocity :data:`ENVELOPE_VELOCITY` only."""
    out: dict[tuple[int, int], Measures] = {}
    protocol = NoteProtocol(hold_s=hold, note_s=NOTE_SECONDS, slot_s=SLOT_SECONDS)
    for note, wave in audible_notes(soundfont, program, notes, protocol):
        level = level_db(wave, SAMPLE_RATE)
        envelope = None
        if note[1] == ENVELOPE_VELOCITY:
            envelope = envelope_db(wave, SAMPLE_RATE, ENVELOPE_FRAME_SECONDS)[:ENVELOPE_FRAMES] - level
        out[note] = (level, attack_seconds(wave, SAMPLE_RATE), release_seconds(wave, SAMPLE_RATE, hold), envelope,
                     centroid_hz(wave, SAMPLE_RATE))  # fmt: skip
    return out


def kit_notes(soundfont: Path, kit: KitInfo, notes: list[tuple[int, int]]) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """The kit's audible ``(key, velocity)`` notes, rendered as the note set's one-shots."""
    return audible_notes(soundfont, kit.program, notes, ONE_SHOT, bank=PERCUSSION_BANK)


def kit_calibration(kit: int, levels: dict[tuple[int, int], float], velocities: np.ndarray) -> KitCalibration | None:
    """A kit's measured ``(key, velocity) -> level``, as the file keeps it (NaN where not measured)."""
    keys = sorted({key for key, _ in levels})
    if not keys:
        return None
    table = np.array([[levels.get((key, int(v)), np.nan) for v in velocities] for key in keys])
    return KitCalibration(kit, np.asarray(keys), table)


def _median_release(results: dict[tuple[int, int], Measures]) -> float | None:
    releases = [r[2] for (_, v), r in results.items() if v >= ENVELOPE_MIN_VELOCITY and r[2] is not None]
    return statistics.median(releases) if releases else None


def calibrate(programs: tuple[int, ...], soundfont: Path, workers: int, progress: bool = True,
              keep: Calibration | None = None, kits: tuple[int, ...] = (),
              kit_report: KitReport | None = None) -> Calibration:  # fmt: skip
    """Measure ``programs`` and drum ``kits`` (train split) into a :class:`Calibration`, adding
    them to the programs and kits of ``keep`` (replacing those measured again). With a
    ``kit_report``, the kits' held-out notes are rendered too and fill the report (the
    calibration never sees them)."""
    from tqdm import tqdm

    plan = BuildPlan(soundfont=soundfont, programs=programs, kits=kits)
    velocities = np.asarray(plan.velocities)
    work = [(info, notes if kit_report is not None and isinstance(info, KitInfo)
             else [(p, v) for p, v in notes if _train(info, p, v, plan)])
            for info, notes in plan_notes(plan, FamilyMap.load())]  # fmt: skip
    bar = tqdm(total=sum(len(n) for _, n in work), unit="note", desc="measuring real notes", disable=not progress,
               file=sys.stderr)  # fmt: skip
    measured: dict[int, ProgramCalibration] = dict(keep.programs) if keep is not None else {}
    measured_kits: dict[int, KitCalibration] = dict(keep.kits) if keep is not None else {}

    def run(item):
        info, notes = item
        if isinstance(info, KitInfo):
            waves = dict(kit_notes(soundfont, info, notes))
            levels = {note: level_db(wave, SAMPLE_RATE) for note, wave in waves.items()}
            if kit_report is not None:
                kit_report.add(info, waves, levels, plan)
            return info, notes, {(k, v): level for (k, v), level in levels.items() if _train(info, k, v, plan)}, None
        result = measure_program(soundfont, info.program, notes)
        release = _median_release(result)
        if release is None:  # died away before key up: release some notes early instead
            short = [(p, v) for p, v in notes[:: 3 * len(velocities)] for v in velocities if v >= ENVELOPE_MIN_VELOCITY]
            release = _median_release(measure_program(soundfont, info.program, short, SHORT_HOLD_SECONDS))
        return info, notes, result, release

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for info, notes, result, release in pool.map(run, work):
            bar.update(len(notes))
            if isinstance(info, KitInfo):
                kit = kit_calibration(info.program, result, velocities)
                if kit is not None:
                    measured_kits[info.program] = kit
                continue
            program = info.program
            pitches = sorted({p for p, _ in result if all((p, v) in result for v in velocities)})
            if not pitches:
                continue
            levels = np.array([[result[(p, v)][0] for v in velocities] for p in pitches])
            loud = [r for (p, v), r in result.items() if v >= ENVELOPE_MIN_VELOCITY]
            attack = statistics.median(r[1] for r in loud) if loud else None
            shaped = [p for p in pitches if result[(p, ENVELOPE_VELOCITY)][3] is not None
                      and result[(p, ENVELOPE_VELOCITY)][3].shape[0] == ENVELOPE_FRAMES][::ENVELOPE_PITCH_STEP]  # fmt: skip
            envelopes = np.array([result[(p, ENVELOPE_VELOCITY)][3] for p in shaped]) if shaped else None
            centroids = np.array([[result[(p, v)][4] for v in velocities] for p in shaped]) if shaped else None
            measured[program] = ProgramCalibration(program, np.asarray(pitches), levels, release, attack,
                                                   np.asarray(shaped) if shaped else None, envelopes, centroids)  # fmt: skip
    bar.close()
    if not measured:
        raise MarsError("no program gave a measurable note")
    if programs or keep is None:
        generic = np.median(np.concatenate([c.levels for c in measured.values()], axis=0), axis=0)
    else:  # only kits measured: the melodic part stays exactly as it was
        generic = keep.generic
    source = (f"{soundfont.name} rendered as the note set (train split, {len(measured)} programs and "
              f"{len(measured_kits)} drum kits; release of programs silent at key up from notes released after "
              f"{SHORT_HOLD_SECONDS} s); made by python -m tools.calibrate_playback")  # fmt: skip
    return Calibration(velocities, measured, generic, source, kits=measured_kits)


def _train(info: ProgramInfo | KitInfo, pitch: int, velocity: int, plan: BuildPlan) -> bool:
    """Whether the note set puts this note in its train split (melodic: by pitch; kits: by key and velocity)."""
    if isinstance(info, KitInfo):
        split = kit_split_of(info.instrument_str, pitch, velocity, plan.velocities, plan.test_percent, plan.valid_percent)
    else:
        split = split_of(info.instrument_str, pitch, plan.test_percent, plan.valid_percent)
    return split == "train"


@dataclass
class KitReport:
    """What a kit's level curve leaves out, from every velocity of the kits' own keys (the
    held-out conditions too; the calibration never sees them): the error of a held-out
    velocity's level as the engine fills it from the train split's (:func:`fill_kit_levels`),
    the largest step of the curves, the change of a drum's decay shape with velocity (50 ms
    frames of its first second, dB re its level, against velocity 127's, over the frames within
    30 dB of that note's loudest), and the change of its brightness (spectral centroid at 127
    over that at 25)."""

    velocities: tuple[int, ...] = ()
    measured: list[np.ndarray] = field(default_factory=list)
    train: list[np.ndarray] = field(default_factory=list)
    shapes: list[float] = field(default_factory=list)
    brightness: list[float] = field(default_factory=list)

    def add(self, kit: KitInfo, waves: dict[tuple[int, int], np.ndarray], levels: dict[tuple[int, int], float],
            plan: BuildPlan) -> None:  # fmt: skip
        """Measure one kit's notes (every velocity of its own keys)."""
        velocities = self.velocities = tuple(int(v) for v in plan.velocities)
        loudest, softest = velocities[-1], velocities[0]
        for key in kit.own_keys:
            row = np.array([levels.get((key, v), np.nan) for v in velocities])
            self.measured.append(row)
            self.train.append(np.where([_train(kit, key, v, plan) for v in velocities], row, np.nan))
            if (key, loudest) not in waves:
                continue
            reference = envelope_db(waves[(key, loudest)][:SAMPLE_RATE], SAMPLE_RATE, ENVELOPE_FRAME_SECONDS)
            frames = reference > reference.max() - 30.0
            reference -= levels[(key, loudest)]
            for v in velocities[:-1]:
                if (key, v) in waves:
                    shape = envelope_db(waves[(key, v)][:SAMPLE_RATE], SAMPLE_RATE, ENVELOPE_FRAME_SECONDS) - levels[(key, v)]
                    self.shapes.append(float(np.abs(shape - reference)[frames].max()))
            if (key, softest) in waves:
                self.brightness.append(centroid_hz(waves[(key, loudest)], SAMPLE_RATE) / centroid_hz(waves[(key, softest)], SAMPLE_RATE))

    def __str__(self) -> str:
        if not self.measured:
            return "no kit measured"
        velocities = np.asarray(self.velocities)
        train = np.array(self.train).reshape(-1, velocities.shape[0])
        measured = np.array(self.measured).reshape(-1, velocities.shape[0])
        shape = kit_shape(train)
        errors, line_errors, steps = [], [], []
        for row, truth in zip(train, measured, strict=True):
            if np.isnan(row).all():
                continue
            steps.append(float(np.diff(velocity_curve(velocities, fill_kit_levels(row, shape))[1:]).max()))
            held = np.isnan(row) & np.isfinite(truth)
            errors += list(np.abs(fill_kit_levels(row, shape) - truth)[held])
            line_errors += list(np.abs(fill_kit_levels(row, np.zeros_like(shape)) - truth)[held])

        def spread(values: list[float], unit: str) -> str:
            if not values:
                return "none"
            q = np.percentile(values, [50, 95, 100])
            return f"median {q[0]:.2f}{unit}, 95th percentile {q[1]:.2f}{unit}, largest {q[2]:.2f}{unit} ({len(values)})"

        return "\n".join([
            f"kits' velocity shape (dB re {velocities[-1]}): " + ", ".join(f"{v}: {x:.1f}" for v, x in zip(velocities, shape, strict=True)),
            f"level of a held-out velocity, filled vs measured: {spread(errors, ' dB')}",
            f"  (a straight line in dB between its neighbours instead: {spread(line_errors, ' dB')})",
            f"largest step between neighbouring velocities, per key: {spread(steps, ' dB')}",
            f"decay shape at velocities 25-100 vs 127, largest frame difference: {spread(self.shapes, ' dB')}",
            f"brightness, centroid at 127 / at 25: {spread(self.brightness, '')}",
        ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--programs", help="GM programs, e.g. 0,24,40-42 (default: all, unless --kits is given)")
    parser.add_argument("--kits", help="drum kits (bank 128 programs), e.g. 0,25 or 'all' (default: all, unless "
                                       "--programs is given)")
    parser.add_argument("--kit-report", action="store_true", help="also print what the kits' level curves leave "
                                                                  "out (renders their held-out notes too)")
    parser.add_argument("--soundfont", type=Path, help="SoundFont (default: FluidR3_GM)")
    parser.add_argument("-o", "--output", type=Path, default=CALIBRATION_FILE, help=f"output file (default {CALIBRATION_FILE})")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="FluidSynth processes at once")
    parser.add_argument("--update", action="store_true", help="keep the output file's other programs and kits")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        family_map = FamilyMap.load()
        everything = not args.programs and not args.kits
        programs = (parse_int_list(args.programs, "programs", 0, 127) if args.programs
                    else tuple(sorted(family_map.programs)) if everything else ())  # fmt: skip
        kits = (tuple(sorted(family_map.kits)) if everything or args.kits == "all"
                else parse_int_list(args.kits, "kits", 0, 127) if args.kits else ())  # fmt: skip
        soundfont = args.soundfont or default_soundfont()
        started = time.perf_counter()
        keep = load_calibration(args.output) if args.update and args.output.is_file() else None
        if not programs and keep is None:
            raise MarsError(f"measuring kits alone needs --update and an existing {args.output.name} (its programs are kept)")
        report = KitReport() if args.kit_report else None
        calibration = calibrate(programs, soundfont, max(1, args.workers), progress=not args.quiet, keep=keep, kits=kits,
                                kit_report=report)  # fmt: skip
        if report is not None:
            print(report, flush=True)
        import json

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(calibration.to_json(), separators=(",", ":")) + "\n")
    except MarsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"measured {len(programs)} programs and {len(kits)} kits in {time.perf_counter() - started:.0f} s -> "
          f"{args.output} ({len(calibration.programs)} programs, {len(calibration.kits)} kits)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
