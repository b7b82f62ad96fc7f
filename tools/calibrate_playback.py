"""Measure the real instruments' levels and releases: writes the playback calibration (engine/data/playback.json).

    nice -n 10 python -m tools.calibrate_playback                      # every program with a family
    python -m tools.calibrate_playback --programs 0,40-42 -o /tmp/p.json   # a few programs
    python -m tools.calibrate_playback --programs 12,13 --update           # re-measure two in the shipped file

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
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engine.calibration import (
    CALIBRATION_FILE,
    ENVELOPE_FRAME_SECONDS,
    ENVELOPE_FRAMES,
    Calibration,
    ProgramCalibration,  # fmt: skip
    load_calibration,
)
from engine.synth.loudness import (
    attack_seconds,
    centroid_hz,
    envelope_db,
    level_db,
    release_seconds,
)
from mars_model.data.build import (
    DEFAULT_VELOCITIES,
    HOLD_SECONDS,
    NOTE_SECONDS,
    NOTES_PER_PROCESS,
    SAMPLE_RATE,
    SILENCE_PEAK_DBFS,
    SLOT_SECONDS,
    BuildPlan,
    FamilyMap,
    NoteProtocol,
    default_soundfont,
    parse_int_list,  # fmt: skip
    plan_notes,
    render_notes,
    split_of,
)
from mars_model.errors import MarsError

#: Notes below this velocity do not vote on the program's release and attack.
ENVELOPE_MIN_VELOCITY = 75
#: Key-up time of the extra notes that measure the release of programs silent at 3 s.
SHORT_HOLD_SECONDS = 0.3
#: The held part's envelope is kept for notes of this velocity, every few measured pitches.
ENVELOPE_VELOCITY = 100
ENVELOPE_PITCH_STEP = 3

Measures = tuple[float, float, "float | None", "np.ndarray | None", float]


def measure_program(soundfont: Path, program: int, notes: list[tuple[int, int]],
                    hold: float = HOLD_SECONDS) -> dict[tuple[int, int], Measures]:  # fmt: skip
    """Render and measure notes of one program, the key held ``hold`` seconds:
    ``(pitch, velocity) -> (level, attack, release, envelope, centroid)``, the envelope (dB re
    level, 50 ms frames of the held part) for velocity :data:`ENVELOPE_VELOCITY` only."""
    out: dict[tuple[int, int], Measures] = {}
    silence = 10 ** (SILENCE_PEAK_DBFS / 20)
    for first in range(0, len(notes), NOTES_PER_PROCESS):
        chunk = notes[first : first + NOTES_PER_PROCESS]
        protocol = NoteProtocol(hold_s=hold, note_s=NOTE_SECONDS, slot_s=SLOT_SECONDS)
        waves = render_notes(soundfont, program, chunk, protocol=protocol)
        for note, wave in zip(chunk, waves, strict=True):
            if float(np.abs(wave).max()) < silence:
                continue
            level = level_db(wave, SAMPLE_RATE)
            envelope = None
            if note[1] == ENVELOPE_VELOCITY:
                envelope = envelope_db(wave, SAMPLE_RATE, ENVELOPE_FRAME_SECONDS)[:ENVELOPE_FRAMES] - level
            out[note] = (level, attack_seconds(wave, SAMPLE_RATE), release_seconds(wave, SAMPLE_RATE, hold), envelope,
                         centroid_hz(wave, SAMPLE_RATE))  # fmt: skip
    return out


def _median_release(results: dict[tuple[int, int], Measures]) -> float | None:
    releases = [r[2] for (_, v), r in results.items() if v >= ENVELOPE_MIN_VELOCITY and r[2] is not None]
    return statistics.median(releases) if releases else None


def calibrate(programs: tuple[int, ...], soundfont: Path, workers: int, progress: bool = True,
              keep: Calibration | None = None) -> Calibration:  # fmt: skip
    """Measure ``programs`` (train-split pitches) into a :class:`Calibration`, adding them to
    the programs of ``keep`` (replacing those measured again)."""
    from tqdm import tqdm

    family_map = FamilyMap.load()
    plan = BuildPlan(soundfont=soundfont, programs=programs)
    work = []
    for info, notes in plan_notes(plan, family_map):
        train = [(p, v) for p, v in notes if split_of(info.instrument_str, p, plan.test_percent, plan.valid_percent) == "train"]
        work.append((info.program, train))
    velocities = np.asarray(plan.velocities if plan.velocities else DEFAULT_VELOCITIES)
    bar = tqdm(total=sum(len(n) for _, n in work), unit="note", desc="measuring real notes", disable=not progress,
               file=sys.stderr)  # fmt: skip
    measured: dict[int, ProgramCalibration] = dict(keep.programs) if keep is not None else {}

    def run(item):
        program, notes = item
        result = measure_program(soundfont, program, notes)
        release = _median_release(result)
        if release is None:  # died away before key up: release some notes early instead
            short = [(p, v) for p, v in notes[:: 3 * len(velocities)] for v in velocities if v >= ENVELOPE_MIN_VELOCITY]
            release = _median_release(measure_program(soundfont, program, short, SHORT_HOLD_SECONDS))
        return program, notes, result, release

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for program, notes, result, release in pool.map(run, work):
            bar.update(len(notes))
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
    generic = np.median(np.concatenate([c.levels for c in measured.values()], axis=0), axis=0)
    source = (f"{soundfont.name} rendered as the note set (train split, {len(measured)} programs; release "
              f"of programs silent at key up from notes released after {SHORT_HOLD_SECONDS} s); "
              "made by python -m tools.calibrate_playback")  # fmt: skip
    return Calibration(velocities, measured, generic, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--programs", help="GM programs, e.g. 0,24,40-42 (default: every program with a family)")
    parser.add_argument("--soundfont", type=Path, help="SoundFont (default: FluidR3_GM)")
    parser.add_argument("-o", "--output", type=Path, default=CALIBRATION_FILE, help=f"output file (default {CALIBRATION_FILE})")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="FluidSynth processes at once")
    parser.add_argument("--update", action="store_true", help="keep the output file's other programs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        family_map = FamilyMap.load()
        programs = (parse_int_list(args.programs, "programs", 0, 127) if args.programs
                    else tuple(sorted(family_map.programs)))  # fmt: skip
        soundfont = args.soundfont or default_soundfont()
        started = time.perf_counter()
        keep = load_calibration(args.output) if args.update and args.output.is_file() else None
        calibration = calibrate(programs, soundfont, max(1, args.workers), progress=not args.quiet, keep=keep)
        import json

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(calibration.to_json(), separators=(",", ":")) + "\n")
    except MarsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(calibration.programs)} programs measured in {time.perf_counter() - started:.0f} s -> {args.output}",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
