"""``mars-synth devices``: the audio output devices and MIDI input ports ``play`` can use."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``devices`` options."""
    parser.description = ("List audio output devices (the default marked *) and MIDI input ports, "
                          "the names 'play --audio-device' and 'play --midi-in' take.")  # fmt: skip
    parser.add_argument("--midi-api", choices=["alsa", "jack"], help="list this MIDI system's ports (default: "
                        "the one play would choose)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Print the devices to stdout."""
    from engine.drivers.audio import list_devices
    from engine.drivers.midi_in import choose_api, list_inputs
    from mars_model.errors import MarsError

    print("audio outputs (play --audio-device):")
    for line in list_devices() or ["  none (no sound card, and no JACK server running)"]:
        print(line)
    api = choose_api(args.midi_api)
    print(f"MIDI inputs ({api}; play --midi-in):")
    try:
        ports = list_inputs(api)
    except MarsError as err:
        print(f"  none: {err}")
        return 0
    for port in ports or ["none (create one with 'play --virtual-midi NAME')"]:
        print(f"  {port}")
    return 0
