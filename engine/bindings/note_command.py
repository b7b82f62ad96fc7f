"""``mars-synth note``: generate one note of a preset or drum kit to a WAV file (and optionally a spectrogram picture)."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from mars_model.commands import add_model_device_argument
from mars_model.errors import MarsError

#: Exit status of a missing optional dependency (like argparse's for a bad command line: nothing ran).
EXIT_MISSING_EXTRA = 2

NOTE_NAMES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


def parse_pitch(text: str) -> int:
    """A MIDI number (``60``) or a note name (``C4``, ``F#3``, ``Bb2``; C4 = 60)."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    match = re.fullmatch(r"([A-Ga-g])([#b]?)(-?\d)", text)
    if not match:
        raise MarsError(f"--pitch {text!r}: give a MIDI number (60) or a note name (C4, F#3, Bb2)")
    letter, accidental, octave = match.groups()
    return (int(octave) + 1) * 12 + NOTE_NAMES[letter.lower()] + {"#": 1, "b": -1, "": 0}[accidental]


def parse_morph(text: str) -> tuple[str, float]:
    """``OTHER:WEIGHT`` -> (preset name, weight in [0, 1])."""
    name, _, weight = text.rpartition(":")
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if not name or not 0.0 <= value <= 1.0:
        raise MarsError(f"--morph {text!r}: expected OTHER_PRESET:WEIGHT with WEIGHT in 0..1, e.g. strings:0.3")
    return name, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``note`` options."""
    parser.description = (
        "Generate one 4 s note (3 s held, 1 s release) with the MARS model and write it as a WAV. "
        "The same preset, pitch, velocity and seed always give the same note. With --kit, one drum "
        "hit of a General MIDI kit instead (--pitch is the drum key: 36 bass drum, 38 snare, 42 closed "
        "hi-hat ...); this needs a model that makes drums. A preset whose instrument the model does "
        "not know is played by its stand-in, with a warning."
    )
    sound = parser.add_mutually_exclusive_group(required=True)
    sound.add_argument("--preset", help="preset name (see 'mars-synth presets') or a .yaml path")
    sound.add_argument("--kit", metavar="KIT",
                       help="a drum kit by name or number: standard (0), room (8), power (16), electronic (24), "
                            "tr-808 (25), jazz (32), brush (40), orchestra (48), or a variation such as "
                            "standard1 (1)")  # fmt: skip
    parser.add_argument("--pitch", required=True, metavar="P",
                        help="MIDI pitch or note name (C4 = 60); with --kit, the drum key (38 = snare)")  # fmt: skip
    parser.add_argument("--velocity", type=int, default=100, metavar="V",
                        help="MIDI velocity 1..127 (default %(default)s)")  # fmt: skip
    parser.add_argument("-o", "--output", required=True, type=Path, help="WAV file to write")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--morph", metavar="OTHER:W",
                        help="blend in another preset's instrument with weight W, e.g. strings:0.3")  # fmt: skip
    parser.add_argument("--png", type=Path, metavar="FILE",
                        help="also draw the generated spectrogram here (needs matplotlib: "
                             "pip install 'mars-synth[plot]')")  # fmt: skip
    parser.add_argument("--guidance", type=float, metavar="G",
                        help="classifier-free guidance weight (0 = off; 2 gives truer timbre for twice "
                             "the model time, see README; default: the preset's)")  # fmt: skip
    parser.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (default: the preset's)")
    parser.add_argument("--sample-rate", type=int, default=48000, metavar="HZ",
                        help="output rate in Hz, like render's (default %(default)s; the model makes notes at "
                             "16000, resampled once with soxr)")  # fmt: skip
    add_model_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Generate the note and write the file(s); the summary and warnings go to stderr."""
    import sys

    import numpy as np
    import soundfile

    from engine.bindings.options import check_output_rate, warn_if_band_cut
    from engine.model import default_note_source
    from engine.preset import find_preset
    from mars_model.api import NoteRequest
    from mars_model.commands import resolve_model_device

    pitch = parse_pitch(args.pitch)
    morph = parse_morph(args.morph) if args.morph else None
    check_output_rate(args.sample_rate)
    for path in (args.output, args.png):
        if path is not None and path.parent and not path.parent.is_dir():
            raise MarsError(f"cannot write {path}: directory {path.parent} does not exist")
    pyplot = None
    if args.png:
        pyplot = _pyplot()  # before anything is generated: a missing extra costs nothing
        if pyplot is None:
            print("mars-synth note: error: --png needs matplotlib, which is not installed: "
                  "pip install 'mars-synth[plot]' (from a checkout: pip install '.[plot]')", file=sys.stderr)  # fmt: skip
            return EXIT_MISSING_EXTRA
    if args.kit is not None:
        if morph:
            raise MarsError("--morph blends presets' instruments; it does not apply to --kit")
        preset = _kit_preset(args.kit, pitch)
    else:
        preset = find_preset(args.preset)
    instrument = preset.instrument
    if morph:
        other_name, weight = morph
        other = find_preset(other_name)
        mix: dict[int, float] = {}
        for source, share in ((preset.instrument, 1.0 - weight), (other.instrument, weight)):
            parts = {source: 1.0} if isinstance(source, int) else dict(source)
            total = sum(parts.values())
            for program, w in parts.items():
                mix[int(program)] = mix.get(int(program), 0.0) + share * w / total
        instrument = mix
    sampling = preset.sampling
    if args.guidance is not None or args.temperature is not None:
        sampling = dataclasses.replace(
            sampling,
            guidance=sampling.guidance if args.guidance is None else args.guidance,
            temperature=sampling.temperature if args.temperature is None else args.temperature,
        )  # Sampling checks the values (one line on a bad one)
    request = NoteRequest(instrument, pitch, args.velocity, seed=args.seed, sampling=sampling)
    source = default_note_source(resolve_model_device(args.model_device))
    played, warning = dataclasses.replace(preset, instrument=instrument).playable(getattr(source, "instruments", None))
    if warning is not None:
        print(f"mars-synth note: warning: {warning}", file=sys.stderr)
        request = dataclasses.replace(request, instrument=played.instrument)
    warn_if_band_cut(args.sample_rate, int(source.sample_rate), "note")
    if hasattr(source, "generate_spectrograms"):
        waves, specs = source.generate([request], return_spectrograms=True)
    else:
        waves, specs = source.generate([request]), None
    wave = np.asarray(waves[0], dtype=np.float32) * float(preset.envelope.gain)
    rate = int(source.sample_rate)
    if args.sample_rate != rate:
        import soxr

        wave, rate = soxr.resample(wave, rate, args.sample_rate, quality="HQ").astype(np.float32), args.sample_rate
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 1.0:
        wave = wave / peak  # never write a clipped file
    try:
        soundfile.write(args.output, wave, rate, subtype="PCM_16")
    except (OSError, RuntimeError) as err:
        raise MarsError(f"cannot write {args.output}: {err}") from None
    if args.png:
        if specs is None:
            raise MarsError("--png needs a model that returns spectrograms")
        _draw(pyplot, specs[0, 0].cpu().numpy(), args.png,
              f"{preset.name}  pitch {pitch}  velocity {args.velocity}  seed {args.seed}")  # fmt: skip
    print(f"mars-synth note: wrote {args.output}: {preset.name}, pitch {pitch}, velocity {args.velocity}, "
          f"seed {args.seed}, {len(wave) / rate:.1f} s at {rate} Hz, "
          f"peak {20 * np.log10(max(peak, 1e-9)):.1f} dBFS", file=sys.stderr)  # fmt: skip
    return 0


def _kit_preset(text: str, key: int):
    """A preset playing ``key`` of the drum kit ``text`` (name or number), after checking that the
    model makes it (asked without loading the model when it can tell, as the shipped one can).

    Raises:
        MarsError: unknown kit, a key it does not play, or a model that makes no drums.
    """
    from engine.midi.drum_kits import DrumKits
    from engine.model import default_model_instruments, default_note_source
    from engine.preset import Preset

    kit = DrumKits.load().find(text)
    sound = kit.sound(key)
    if sound is None:
        raise MarsError(f"drum key {key} has no sound in kit {kit}; it plays keys {min(kit.sounds)}-{max(kit.sounds)}")
    known = default_model_instruments()
    if known is None:
        known = getattr(default_note_source(), "instruments", None) or ()
    instrument = next((i for i in sound.instruments if i in known), None)
    if instrument is None:
        programs = sorted(i for i in known if i < 128)
        raise MarsError(f"the model makes no drums yet (it knows GM programs {', '.join(map(str, programs))}); "
                        f"give --preset to hear key {key} pitched")  # fmt: skip
    return Preset(name=f"{kit.name} kit {sound.name}", instrument=instrument)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or ``None`` when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _draw(plt, logspec, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.imshow(logspec, origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1,
              extent=(0, 4.0 * logspec.shape[1] / 250.0, 0, 8000))  # fmt: skip
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as err:
        raise MarsError(f"cannot write {path}: {err.strerror}") from None
    finally:
        plt.close(fig)
