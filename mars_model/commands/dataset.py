"""``mars-synth dataset build``: render an NSynth-style note set from a SoundFont."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="dataset_action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="render General MIDI programs into 4 s notes (NSynth layout)",
        description=(
            "Render General MIDI programs with FluidSynth as NSynth-style notes: 4 s at 16 kHz "
            "mono (3 s held, 1 s release), five velocities, splits that hold out whole "
            "(instrument, pitch) conditions. Writes DIR/{train,valid,test}/examples.json and "
            "DIR/<split>/audio/<note_str>.wav."
        ),
    )
    build.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="DIR",
        help="output directory (created; existing splits are replaced)",
    )
    build.add_argument(
        "--soundfont",
        type=Path,
        metavar="SF2",
        help="SoundFont to render (default: FluidR3_GM if installed, else TimGM6mb)",
    )
    build.add_argument(
        "--programs",
        metavar="LIST",
        help="GM programs, 0-based, e.g. 0,24,40-42 (default: every program with an NSynth family)",
    )
    build.add_argument(
        "--pitches",
        metavar="LO-HI",
        help="MIDI pitch range, intersected with each instrument's usable range (default: that range)",
    )
    build.add_argument(
        "--velocities",
        metavar="LIST",
        default="25,50,75,100,127",
        help="MIDI velocities (default: 25,50,75,100,127)",
    )
    build.add_argument(
        "--test-percent",
        type=float,
        default=10.0,
        help="share of (instrument, pitch) conditions held out for test (default 10)",
    )
    build.add_argument(
        "--valid-percent",
        type=float,
        default=10.0,
        help="share held out for validation (default 10)",
    )
    build.add_argument(
        "--workers",
        type=int,
        default=None,
        help="FluidSynth processes in parallel (default: number of CPUs, max 4)",
    )
    build.add_argument("--quiet", action="store_true", help="no progress bar")

    check = actions.add_parser(
        "check",
        help="read every note of a set, report problems, and build its spectrogram cache",
        description=(
            "Read every WAV of an NSynth-layout set (ours or a real NSynth download), stop at the "
            "first unreadable one with its path, and store the spectrograms that training reads."
        ),
    )
    check.add_argument(
        "root", type=Path, metavar="DIR", help="the note set (holds train/ valid/ test/)"
    )
    check.add_argument(
        "--splits",
        default="train,valid,test",
        help="comma-separated splits to check (default: train,valid,test)",
    )
    check.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    return {"build": run_build, "check": run_check}[args.dataset_action](args)


def run_check(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mars_model.data.noteset import NoteSet
    from mars_model.errors import MarsError

    if not args.root.is_dir():
        raise MarsError(f"{args.root} is not a directory")
    for split in filter(None, args.splits.split(",")):
        notes = NoteSet(args.root, split)
        with tqdm(total=len(notes), unit="note", desc=split, disable=args.quiet) as bar:
            specs = notes.spectrograms(progress=bar.update)
        print(
            f"mars-synth dataset: {split}: {len(notes)} notes ok, spectrograms {tuple(specs.shape)} in "
            f"{notes.cache_path().parent}",
            file=sys.stderr,
        )
    return 0


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mars_model.data.build import (
        BuildPlan,
        FamilyMap,
        build_dataset,
        check_soundfont,
        default_soundfont,
        parse_int_list,
        plan_notes,
        prepare_output_dir,
    )
    from mars_model.errors import MarsError

    family_map = FamilyMap.load()
    programs = (parse_int_list(args.programs, "--programs", 0, 127) if args.programs
                else tuple(sorted(family_map.programs)))  # fmt: skip
    pitch_range = None
    if args.pitches:
        pitches = parse_int_list(args.pitches, "--pitches", 0, 127)
        pitch_range = (pitches[0], pitches[-1])
    for name in ("test_percent", "valid_percent"):
        if not 0 <= getattr(args, name) <= 50:
            raise MarsError(f"--{name.replace('_', '-')} must be between 0 and 50")
    plan = BuildPlan(
        soundfont=args.soundfont or default_soundfont(),
        programs=programs,
        pitch_range=pitch_range,
        velocities=parse_int_list(args.velocities, "--velocities", 1, 127),
        test_percent=args.test_percent,
        valid_percent=args.valid_percent,
    )
    # Check everything that can fail fast before the progress bar appears.
    check_soundfont(plan.soundfont)
    prepare_output_dir(args.output)
    total = sum(len(notes) for _, notes in plan_notes(plan, family_map))
    with tqdm(total=total, unit="note", desc="rendering", disable=args.quiet) as bar:
        report = build_dataset(plan, args.output, family_map, progress=bar.update,
                               workers=args.workers)  # fmt: skip
    print(f"mars-synth dataset: wrote {args.output}: {report.summary()}", file=sys.stderr)
    if report.clipped:
        print(f"mars-synth dataset: warning: {report.clipped} notes reached full scale and were clipped",
              file=sys.stderr)
    return 0
