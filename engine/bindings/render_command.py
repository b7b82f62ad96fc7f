"""``mars-synth render IN.mid -o OUT.wav``: render a MIDI file with the neural synth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.bindings.options import add_effects_arguments
from mars_model.commands import add_model_device_argument


def _tail(text: str) -> str | float:
    if text in ("auto", "eot"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, eot or seconds, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``render`` options."""
    parser.description = (
        "Render a MIDI file (type 0 or 1) to WAV or FLAC. Every distinct note the file needs "
        "is generated once by the model (in batches, with a progress bar) and cached on disk, "
        "so a second render of the same file only mixes. Each General MIDI program plays through its "
        "family's preset as itself; one the model does not know plays a stand-in, with a warning. "
        "Channel 10 plays drum kits when the model makes them, else it is skipped with a warning "
        "unless --map gives it a preset."
    )
    parser.add_argument("midi", type=Path, metavar="IN.mid", help="the MIDI file")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT",
                        help="output file, .wav or .flac (required unless --dry-run)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="render nothing: say how many distinct notes the file needs, how many the "
                        "cache holds, and roughly how long generating the rest takes")  # fmt: skip
    parser.add_argument("--sample-rate", type=int, default=48000, metavar="HZ",
                        help="output sample rate (default %(default)s; the model makes notes at 16000, "
                             "each resampled once with soxr)")  # fmt: skip
    parser.add_argument("--format", choices=["wav", "flac"], help="file format (default: from the extension)")
    parser.add_argument("--subtype", metavar="BITS", default=None,
                        help="sample format: 16, 24 or float (default 24; float only in WAV)")  # fmt: skip
    parser.add_argument("--gain", type=float, default=0.5,
                        help="master gain, linear, before the soft limiter (default %(default)s)")  # fmt: skip
    parser.add_argument("--polyphony", type=int, default=64, metavar="N",
                        help="most voices at once (default %(default)s)")  # fmt: skip
    parser.add_argument("--preset", metavar="NAME",
                        help="one preset (name or .yaml file) for every channel; see 'mars-synth presets'")  # fmt: skip
    parser.add_argument("--map", type=Path, metavar="MAP.yaml",
                        help="YAML map of GM programs and channels to presets (see the README)")  # fmt: skip
    parser.add_argument("--tail", type=_tail, default="auto", metavar="auto|SECONDS|eot",
                        help="after the end of the file: until the mix is below -90 dBFS (auto, "
                        "default), SECONDS more, or stop at the end of track (eot)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for generated notes (default %(default)s)")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help="note cache directory (default $XDG_CACHE_HOME/mars-synth or ~/.cache/mars-synth)")  # fmt: skip
    parser.add_argument("--no-cache", action="store_true", help="generate every note, keep none on disk")
    parser.add_argument("--max-duration", type=float, default=3600.0, metavar="SECONDS",
                        help="refuse MIDI files longer than this (default %(default)g)")  # fmt: skip
    add_model_device_argument(parser)
    add_effects_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings or summary")


def run(args: argparse.Namespace) -> int:
    """Render; prints warnings and a summary line to stderr unless ``--quiet``."""
    from engine.bindings.options import check_output_rate, effects_from_args, warn_if_band_cut
    from engine.model import default_note_rate, default_note_source
    from engine.note_cache import default_cache_dir
    from engine.render import RenderSettings, render_file
    from mars_model.commands import resolve_model_device

    check_output_rate(args.sample_rate)
    effects = effects_from_args(args)
    # "auto" and "cpu" are resolved when the model loads (a warm render never imports torch);
    # a CUDA device is checked now, so a machine without a GPU says so before any work.
    device = args.model_device if args.model_device in ("auto", "cpu") else resolve_model_device(args.model_device)
    source = None
    if not args.quiet:
        note_rate = default_note_rate()
        if note_rate is None:  # another note source: only it knows (render would load it on the first miss)
            source = default_note_source(device)
            note_rate = int(source.sample_rate)
        warn_if_band_cut(args.sample_rate, note_rate, "render")
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    settings = RenderSettings(
        sample_rate=args.sample_rate, gain=args.gain, polyphony=args.polyphony, preset=args.preset,
        channel_map=args.map, tail=args.tail, seed=args.seed, cache_dir=cache_dir,
        progress=not args.quiet and sys.stderr.isatty(), max_seconds=args.max_duration,
        model_device=device, effects=effects,
    )  # fmt: skip
    if args.dry_run:
        from engine.render import plan_render

        print(f"{args.midi}: {plan_render(args.midi, settings, source).summary()}")
        return 0
    if args.output is None:
        print("mars-synth render: error: -o/--output is required (or ask for --dry-run)", file=sys.stderr)
        return 2
    report = render_file(args.midi, args.output, settings, source=source, fmt=args.format, subtype=args.subtype)
    if not args.quiet:
        for warning in report.warnings:
            print(f"mars-synth render: warning: {warning}", file=sys.stderr)
        print(f"mars-synth render: wrote {args.output}: {report.summary()}", file=sys.stderr)
    return 0
