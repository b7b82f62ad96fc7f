"""``mars-synth dataset build``: render an NSynth-style note set (programs and drum kits) from a
SoundFont; ``dataset check``: read one back and cache its spectrograms."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="dataset_action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="render General MIDI programs and drum kits into 4 s notes (NSynth layout)",
        description=(
            "Render General MIDI programs and drum kits with FluidSynth as NSynth-style notes: "
            "4 s at 16 kHz mono, five velocities. Melodic programs are held 3 s and released "
            "for 1 s, over each program's measured pitch range; kit notes are one-shots struck "
            "with the same timing and left to ring, on every key the kit sounds on (a key that "
            "sounds as in the kit's fallback kit is rendered once, under that kit). Splits "
            "hold out whole (instrument, pitch) conditions, and for kits single (kit, key, "
            "velocity) conditions at inner velocities. Writes DIR/{train,valid,test}/"
            "examples.json and DIR/<split>/audio/<note_str>.wav. Without --programs it builds "
            "today's set: the 96 programs with an NSynth family, no kits; '--programs all' "
            "builds every GM program and every kit."
        ),
        epilog=(
            "examples: '--programs all' (every GM program and kit: the full set); "
            "'--programs all --no-kits'; '--programs none --kits 0,25' (Standard and TR-808 "
            "only); '--programs all --dry-run' (count what would be rendered)"
        ),
    )
    build.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="DIR",
        help="output directory (created; existing splits are replaced); required unless --dry-run",
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
        default="nsynth",
        help="GM programs, 0-based, e.g. 0,24,40-42; 'nsynth' (default): the 96 with an NSynth "
        "family; 'all': every program 0-127 the SoundFont has; 'none': kits only",
    )
    kits = build.add_mutually_exclusive_group()
    kits.add_argument(
        "--kits",
        metavar="LIST",
        help="drum kits by program number in bank 128, e.g. 0,8,25, or 'all' (every kit of the "
        "map the SoundFont has: 0 Standard, 8 Room, 16 Power, 24 Electronic, 25 TR-808, 32 Jazz, "
        "40 Brush, 48 Orchestra and FluidR3's variations); default: all with '--programs all', "
        "else none",
    )
    kits.add_argument("--no-kits", action="store_true", help="no drum kits, even with '--programs all'")
    build.add_argument(
        "--pitches",
        metavar="LO-HI",
        help="MIDI pitch range, intersected with each instrument's usable range and each kit's "
        "keys (default: those)",
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
        help="share of (instrument, pitch) conditions held out for test, and of kit notes at "
        "inner velocities (default 10)",
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
    build.add_argument(
        "--dry-run",
        action="store_true",
        help="print the notes that would be rendered, per family and per kit, and their size; "
        "render nothing",
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


def select_programs(text: str, family_map, index) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``--programs`` as (programs to render, programs of the keyword's set the SoundFont lacks)."""
    from mars_model.data.build import parse_int_list

    if text == "none":
        return (), ()
    if text in ("nsynth", "all"):
        wanted = family_map.nsynth_programs() if text == "nsynth" else tuple(sorted(family_map.programs))
        return (tuple(p for p in wanted if index.has(0, p)),
                tuple(p for p in wanted if not index.has(0, p)))  # fmt: skip
    return parse_int_list(text, "--programs", 0, 127), ()


def select_kits(args: argparse.Namespace, family_map, index) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``--kits``/``--no-kits`` as (kits to render, kits of the map the SoundFont lacks)."""
    from mars_model.data.build import parse_int_list
    from mars_model.data.soundfont import PERCUSSION_BANK

    text = args.kits or ("all" if args.programs == "all" else None)
    if args.no_kits or text is None:
        return (), ()
    if text == "all":
        mapped = tuple(sorted(family_map.kits))
        return (tuple(k for k in mapped if index.has(PERCUSSION_BANK, k)),
                tuple(k for k in mapped if not index.has(PERCUSSION_BANK, k)))  # fmt: skip
    return parse_int_list(text, "--kits", 0, 127), ()


def print_dry_run(work, plan, skipped: list[str]) -> None:
    from mars_model.data.build import NOTE_SECONDS, SAMPLE_RATE, count_notes

    counts = count_notes(work)
    total = sum(len(notes) for _, notes in work)
    print(f"{plan.soundfont.name}: {len(plan.programs)} programs, {len(plan.kits)} kits, "
          f"velocities {','.join(map(str, plan.velocities))}")  # fmt: skip
    print("notes per family:")
    for family, n in counts["families"].items():
        print(f"  {family:14s} {n:7d}")
    if counts["kits"]:
        print("notes per kit:")
        for kit, n in counts["kits"].items():
            print(f"  {kit:14s} {n:7d}")
    wav_bytes = 44 + int(NOTE_SECONDS * SAMPLE_RATE) * 2
    print(f"total {total} notes (before silent ones are dropped), about "
          f"{total * wav_bytes / 1e9:.1f} GB of WAV")  # fmt: skip
    for line in skipped:
        print(line)


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mars_model.data.build import (
        BuildPlan,
        FamilyMap,
        build_dataset,
        check_presets,
        check_soundfont,
        default_soundfont,
        parse_int_list,
        plan_notes,
        prepare_output_dir,
    )
    from mars_model.data.soundfont import SoundFontIndex
    from mars_model.errors import MarsError

    if args.output is None and not args.dry_run:
        raise MarsError("dataset build needs -o DIR (the output directory), or --dry-run")
    family_map = FamilyMap.load()
    soundfont = args.soundfont or default_soundfont()
    pitch_range = None
    if args.pitches:
        pitches = parse_int_list(args.pitches, "--pitches", 0, 127)
        pitch_range = (pitches[0], pitches[-1])
    for name in ("test_percent", "valid_percent"):
        if not 0 <= getattr(args, name) <= 50:
            raise MarsError(f"--{name.replace('_', '-')} must be between 0 and 50")
    velocities = parse_int_list(args.velocities, "--velocities", 1, 127)
    # Check everything that can fail fast before the progress bar appears.
    check_soundfont(soundfont)
    index = SoundFontIndex.load(soundfont)
    programs, missing_programs = select_programs(args.programs, family_map, index)
    kits, missing_kits = select_kits(args, family_map, index)
    if not programs and not kits:
        raise MarsError("nothing to render: --programs none and no kits; add --kits all")
    plan = BuildPlan(
        soundfont=soundfont,
        programs=programs,
        kits=kits,
        pitch_range=pitch_range,
        velocities=velocities,
        test_percent=args.test_percent,
        valid_percent=args.valid_percent,
    )
    work = plan_notes(plan, family_map)
    check_presets(plan, index)
    skipped = []
    if missing_programs:
        skipped.append(f"mars-synth dataset: {soundfont.name} lacks GM programs "
                       f"{','.join(map(str, missing_programs))}; skipped")  # fmt: skip
    if missing_kits:
        skipped.append(f"mars-synth dataset: {soundfont.name} lacks kits "
                       f"{','.join(map(str, missing_kits))}; skipped")  # fmt: skip
    if args.dry_run:
        print_dry_run(work, plan, skipped)
        return 0
    prepare_output_dir(args.output)
    for line in skipped:
        print(line, file=sys.stderr)
    total = sum(len(notes) for _, notes in work)
    with tqdm(total=total, unit="note", desc="rendering", disable=args.quiet) as bar:
        report = build_dataset(plan, args.output, family_map, progress=bar.update,
                               workers=args.workers)  # fmt: skip
    print(f"mars-synth dataset: wrote {args.output}: {report.summary()}", file=sys.stderr)
    if report.clipped:
        print(f"mars-synth dataset: warning: {report.clipped} notes reached full scale and were clipped",
              file=sys.stderr)
    return 0
