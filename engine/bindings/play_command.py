"""``mars-synth play``: play live from a MIDI keyboard or a DAW over OSC."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from engine.bindings.options import add_effects_arguments
from mars_model.commands import add_model_device_argument

#: How often ``play`` wakes to refresh the status line (and to check ``--duration``'s end).
TICK = 0.25
#: Every this many seconds ``play`` moves live objects out of the garbage collector's reach.
SETTLE_EVERY = 5.0
#: Without a terminal, the status line is printed this often.
STATUS_EVERY = 10.0


def _latency(text: str) -> str | float:
    if text in ("low", "high"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected low, high or seconds, got {text!r}") from None
    if not 0 < value <= 2:
        raise argparse.ArgumentTypeError(f"latency must be 0..2 seconds, got {value}")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``play`` options."""
    parser.description = (
        "Play the neural synth live. MIDI comes from a port (--midi-in) or a virtual port others "
        "connect to (--virtual-midi, default 'mars-synth'); a DAW drives it over OSC (/mars/..., "
        "see the README). Notes are generated ahead (the played note first, then its neighbours, "
        "then the preset's range) and cached on disk with render's cache; a note not generated "
        "yet plays from the nearest ready pitch and crossfades to the exact note when it lands. "
        "Ctrl-C stops."
    )
    audio = parser.add_argument_group("audio out")
    audio.add_argument("--audio-device", metavar="DEV", help="audio output device, index or name, as 'mars-synth "
                       "devices' lists them (default: the system default; with JACK running, JACK)")  # fmt: skip
    audio.add_argument("--sample-rate", type=int, metavar="HZ", help="must match the device (default: the device's rate)")
    audio.add_argument("--blocksize", type=int, default=0, metavar="FRAMES",
                       help="frames per audio callback (default 0: the host's, e.g. JACK's period)")  # fmt: skip
    audio.add_argument("--latency", type=_latency, default="low", metavar="low|high|SECONDS",
                       help="PortAudio's suggested output latency (default %(default)s)")  # fmt: skip
    midi = parser.add_argument_group("MIDI in")
    midi.add_argument("--midi-in", action="append", default=[], metavar="NAME",
                      help="open this MIDI input port (exact name or a unique part of it); repeatable")  # fmt: skip
    midi.add_argument("--virtual-midi", action="append", default=[], metavar="NAME",
                      help="create a virtual MIDI input port with this name; repeatable")  # fmt: skip
    midi.add_argument("--midi-api", choices=["alsa", "jack"],
                      help="MIDI system (default: JACK when a JACK server runs or there is no ALSA sequencer)")  # fmt: skip
    midi.add_argument("--no-midi", action="store_true", help="no MIDI input at all (OSC only)")
    osc = parser.add_argument_group("OSC in")
    osc.add_argument("--osc-host", default="127.0.0.1", metavar="HOST",
                     help="address to listen on (default %(default)s; OSC has no authentication)")  # fmt: skip
    osc.add_argument("--osc-port", type=int, default=9000, metavar="PORT", help="UDP port (default %(default)s)")
    osc.add_argument("--no-osc", action="store_true", help="no OSC server")
    sound = parser.add_argument_group("sound")
    sound.add_argument("--preset", metavar="NAME", help="one preset for every channel (default: the GM program map)")
    sound.add_argument("--map", type=Path, metavar="MAP.yaml", help="GM programs / channels -> presets (see the README)")
    sound.add_argument("--polyphony", type=int, default=64, metavar="N",
                       help="most voices at once (default %(default)s)")  # fmt: skip
    sound.add_argument("--gain", type=float, default=0.5,
                       help="master gain before the soft limiter (default %(default)s)")  # fmt: skip
    add_effects_arguments(parser)
    model = parser.add_argument_group("model and cache")
    add_model_device_argument(model)
    model.add_argument("--backend", choices=["eager", "compile", "cuda-graphs", "tensorrt"], default="eager",
                       help="how the model's steps run (cuda-graphs and tensorrt need a GPU; "
                            "default %(default)s)")  # fmt: skip
    model.add_argument("--seed", type=int, default=0, help="sampling seed of generated notes (default %(default)s)")
    model.add_argument("--cache-dir", type=Path, metavar="DIR", help="note cache (default: render's, "
                       "$XDG_CACHE_HOME/mars-synth)")  # fmt: skip
    model.add_argument("--no-cache", action="store_true", help="keep generated notes in memory only")
    model.add_argument("--no-precompute", action="store_true",
                       help="generate only played notes and their neighbours, not the preset's range")  # fmt: skip
    parser.add_argument("--duration", type=_duration, metavar="SECONDS",
                        help="stop the audio stream this many seconds after it starts; start-up (loading "
                             "the model) and shutting down (the notes being generated are finished and "
                             "cached) are not counted (default: play until Ctrl-C)")  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="no status line or summary")


def settings_from_args(args: argparse.Namespace):
    """The :class:`PlaySettings` for parsed ``play`` arguments."""
    from engine.bindings.options import effects_from_args
    from engine.drivers.audio import AudioSettings
    from engine.live.engine import PlaySettings
    from engine.note_cache import default_cache_dir

    midi_in, virtual = list(args.midi_in), list(args.virtual_midi)
    if args.no_midi:
        midi_in, virtual = [], []
    elif not midi_in and not virtual:
        virtual = ["mars-synth"]
    return PlaySettings(
        audio=AudioSettings(args.audio_device, args.sample_rate, args.blocksize, args.latency),
        polyphony=args.polyphony, gain=args.gain, preset=args.preset, channel_map=args.map, seed=args.seed,
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
        midi_in=midi_in, virtual_midi=virtual, midi_api=args.midi_api, osc_host=args.osc_host,
        osc_port=None if args.no_osc else args.osc_port, model_device=args.model_device, backend=args.backend,
        precompute=not args.no_precompute, effects=effects_from_args(args),
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Play until Ctrl-C (or SIGTERM, or ``--duration``); prints a status line and a summary to stderr."""
    from engine.bindings.osc import OscServer
    from engine.live.engine import LiveEngine

    engine = LiveEngine(settings_from_args(args), osc_server=OscServer)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tty = sys.stderr.isatty()
    try:
        engine.start()
        if not args.quiet:
            inputs = [f"MIDI '{p.source}' ({p.api})" for p in engine.midi_inputs]
            if engine.osc is not None:
                inputs.append(f"OSC {engine.osc.address[0]}:{engine.osc.address[1]}")
            print(f"mars-synth play: {engine.device_name} at {engine.sample_rate} Hz; listening on "
                  f"{', '.join(inputs) or 'nothing'}; Ctrl-C stops", file=sys.stderr, flush=True)  # fmt: skip
        from engine.drivers.threads import prefer_realtime
        from engine.live.engine import settle_garbage

        prefer_realtime()  # this thread too takes the GIL (status line, gc) - see engine.drivers.threads
        # Deadlines on the clock, counted from the moment the stream started: a tick that wakes
        # late on a busy machine delays the next line, never the end of --duration.
        now = time.monotonic()
        end = None if args.duration is None else engine.started_at + args.duration
        next_settle, next_status = now + SETTLE_EVERY, now + STATUS_EVERY
        while not stop.is_set():
            now = time.monotonic()
            if end is not None and now >= end:
                break
            stop.wait(TICK if end is None else min(TICK, end - now))
            now = time.monotonic()
            if now >= next_settle:
                settle_garbage()
                next_settle = now + SETTLE_EVERY
            if not args.quiet and tty:
                print(f"\r\033[K{engine.status_line()}", end="", file=sys.stderr, flush=True)
            elif not args.quiet and now >= next_status:
                print(engine.status_line(), file=sys.stderr, flush=True)
                next_status = now + STATUS_EVERY
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.stop()
        if tty and not args.quiet:
            print(file=sys.stderr)
    if not args.quiet and engine.started_at:
        for warning in dict.fromkeys(engine.warnings):
            print(f"mars-synth play: warning: {warning}", file=sys.stderr)
        print(f"mars-synth play: {engine.summary()}", file=sys.stderr, flush=True)
    return 0
