"""Audio out through sounddevice (PortAudio): device choice, settings checked up front, the stream.

With a JACK server running, PortAudio's default output is JACK (its ``system`` device), and
the stream's JACK ports are connected to the system playback ports. JACK must be running
before sounddevice is imported: PortAudio looks for host APIs once, at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mars_model.errors import MarsError


@dataclass(frozen=True)
class AudioSettings:
    """What ``play`` asks of the output device.

    Args:
        device: index or (part of a) name, as sounddevice takes it; ``None``: the system default.
        sample_rate: Hz; ``None``: the device's default rate. Must be one the device runs at.
        blocksize: frames per callback; 0 lets the host choose (JACK: its period).
        latency: ``"low"``, ``"high"`` or seconds (PortAudio's suggested output latency).
    """

    device: int | str | None = None
    sample_rate: int | None = None
    blocksize: int = 0
    latency: str | float = "low"


def _sounddevice():
    try:
        import sounddevice
    except OSError as err:  # libportaudio missing
        raise MarsError(f"no audio output: PortAudio is not installed ({err}); apt-get install libportaudio2") from None
    return sounddevice


def jack_running() -> bool:
    """Whether PortAudio found a JACK server (its JACK host API has devices)."""
    sd = _sounddevice()
    return any(api["name"].startswith("JACK") and api["devices"] for api in sd.query_hostapis())


def resolve_device(settings: AudioSettings) -> tuple[int, dict, int]:
    """Find the output device and check the rate and channels.

    Returns:
        ``(device index, device info, sample rate)``.
    Raises:
        MarsError: no such device, no output device at all, or a rate the device does not run at.
    """
    sd = _sounddevice()
    device = settings.device
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    try:
        info = sd.query_devices(device, "output")
    except (ValueError, sd.PortAudioError) as err:
        names = [d["name"] for d in sd.query_devices() if d["max_output_channels"] > 0]
        if device is None:
            raise MarsError("no audio output device (no sound card, and no JACK server running); "
                            "start one, e.g. 'jackd -d dummy -r 48000 -p 256' for a silent test device") from None  # fmt: skip
        raise MarsError(f"no output device {device!r} ({err}); output devices: {', '.join(names) or 'none'} "
                        "(see 'mars-synth devices')") from None  # fmt: skip
    index = int(info["index"])
    rate = int(settings.sample_rate or info["default_samplerate"])
    channels = min(2, int(info["max_output_channels"]))
    try:
        sd.check_output_settings(index, channels=channels, dtype="float32", samplerate=rate)
    except (ValueError, sd.PortAudioError):
        raise MarsError(f"output device '{info['name']}' cannot run at {rate} Hz (it runs at "
                        f"{int(info['default_samplerate'])} Hz); use --sample-rate {int(info['default_samplerate'])}") from None  # fmt: skip
    return index, info, rate


def open_stream(settings: AudioSettings, callback: Callable, index: int, rate: int, channels: int):
    """Open (not start) a float32 output stream calling ``callback``.

    Raises:
        MarsError: the device refused the settings.
    """
    sd = _sounddevice()
    latency = settings.latency
    try:
        return sd.OutputStream(samplerate=rate, blocksize=settings.blocksize, device=index, channels=channels,
                               dtype="float32", latency=latency, callback=callback)  # fmt: skip
    except (ValueError, sd.PortAudioError) as err:
        raise MarsError(f"cannot open the output device: {err}; check --blocksize and --latency") from None


def list_devices() -> list[str]:
    """One line per output device: index, name, host API, channels, default rate; the default marked."""
    sd = _sounddevice()
    apis = sd.query_hostapis()
    try:
        default = sd.query_devices(None, "output")["index"]
    except (ValueError, sd.PortAudioError):
        default = -1
    lines = []
    for info in sd.query_devices():
        if info["max_output_channels"] <= 0:
            continue
        mark = "*" if info["index"] == default else " "
        lines.append(f"{mark} {info['index']:3d}  {info['name']}  ({apis[info['hostapi']]['name']}, "
                     f"{info['max_output_channels']} out, {int(info['default_samplerate'])} Hz)")  # fmt: skip
    return lines


def terminate() -> None:
    """Release PortAudio (its JACK client included), e.g. before a JACK server goes away."""
    sd = _sounddevice()
    sd._terminate()
