"""MIDI in: python-rtmidi ports (ALSA sequencer or JACK), parsed by mido, polled by one thread.

Why polling and not rtmidi's callback: with JACK, rtmidi would call a Python callback from
JACK's real-time process thread, which must then wait for the GIL; any thread holding it
would make the whole JACK graph late. Polled, rtmidi's own queue takes the events in the
real-time thread and this thread drains it every millisecond (at most 1 ms added).

Why ports are opened before the audio stream starts: python-rtmidi holds the GIL while it
opens or connects a JACK port, and the JACK server waits for every active client (our audio
callback, which needs the GIL) before it lets that finish - opening one while our stream
runs can deadlock the process (../shared/DESIGN.md).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import mido

from engine.drivers.threads import prefer_realtime
from mars_model.errors import MarsError

APIS = ("alsa", "jack")
POLL_SECONDS = 0.001
DISCONNECT_CHECK_SECONDS = 0.25


def _rtmidi():
    try:
        import rtmidi
    except ImportError as err:
        raise MarsError(f"MIDI needs python-rtmidi ({err}); pip install python-rtmidi") from None
    return rtmidi


def choose_api(forced: str | None = None, jack: bool | None = None) -> str:
    """``"alsa"`` or ``"jack"``: the forced one, else JACK when a JACK server runs or no ALSA sequencer exists.

    Args:
        forced: ``--midi-api``.
        jack: whether a JACK server runs (default: ask PortAudio).
    """
    if forced is not None:
        if forced not in APIS:
            raise MarsError(f"unknown MIDI API {forced!r}; choose one of {', '.join(APIS)}")
        return forced
    if jack is None:
        from engine.drivers.audio import jack_running

        jack = jack_running()
    if jack or not os.path.exists("/dev/snd/seq"):
        return "jack"
    return "alsa"


def _api_constant(api: str) -> int:
    rtmidi = _rtmidi()
    constant = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK}[api]
    if constant not in rtmidi.get_compiled_api():
        raise MarsError(f"this python-rtmidi was built without {api.upper()} MIDI support")
    return constant


def _client(api: str, name: str):
    rtmidi = _rtmidi()
    if api == "jack" and not _jack_available():
        raise MarsError("MIDI API jack: no JACK server is running (start one, or use --midi-api alsa, or --no-midi)")
    if api == "alsa" and not os.path.exists("/dev/snd/seq"):
        raise MarsError("MIDI API alsa: no ALSA sequencer (/dev/snd/seq); use --midi-api jack, or --no-midi")
    try:
        return rtmidi.MidiIn(rtapi=_api_constant(api), name=name, queue_size_limit=4096)
    except rtmidi.SystemError as err:
        raise MarsError(f"cannot open MIDI ({api}): {err}") from None


def _jack_available() -> bool:
    from engine.drivers.audio import jack_running

    return jack_running()


def list_inputs(api: str) -> list[str]:
    """Names of the MIDI ports that can be opened with ``--midi-in`` on ``api``."""
    client = _client(api, "mars-synth-list")
    try:
        return list(client.get_ports())
    finally:
        client.delete()


class MidiInput:
    """One MIDI input: an existing port (``--midi-in NAME``) or a virtual one (``--virtual-midi NAME``).

    Channel messages go to ``on_message(message, source)``; everything else (clock, sysex,
    active sensing, malformed bytes) is dropped. When the opened port's device disappears,
    ``on_disconnect(source)`` is called once so its notes can be released.

    Args:
        api: ``"alsa"`` or ``"jack"``.
        name: the port to open (exact name, else a unique case-insensitive part of one), or
            the virtual port's name.
        virtual: create a port others connect to instead of opening an existing one.
        on_message, on_disconnect: called from the poll thread.
        client_name: this program's MIDI client name.
    """

    def __init__(self, api: str, name: str, virtual: bool, on_message: Callable[[mido.Message, str], None],
                 on_disconnect: Callable[[str], None] | None = None, client_name: str = "mars-synth") -> None:  # fmt: skip
        self.api = api
        self.virtual = virtual
        self.on_message = on_message
        self.on_disconnect = on_disconnect
        self.messages = 0
        self.dropped = 0
        self.connected = True
        self._parser = mido.Parser()
        self._stop = threading.Event()
        self._client = _client(api, client_name)
        self._client.ignore_types(sysex=True, timing=True, active_sense=True)
        rtmidi = _rtmidi()
        try:
            if virtual:
                self._client.open_virtual_port(name)
                self.source = name
            else:
                ports = list(self._client.get_ports())
                index = _match(name, ports, api)
                self.source = ports[index]
                self._client.open_port(index, "in")
        except rtmidi.RtMidiError as err:
            self._client.delete()
            raise MarsError(f"cannot open MIDI port {name!r} ({api}): {err}") from None
        self._thread = threading.Thread(target=self._run, name="mars-midi-in", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (the port stays open until :meth:`close`)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def close(self) -> None:
        """Close the port and the MIDI client (after the audio stream has stopped, see the module notes)."""
        self.stop()
        self._client.close_port()
        self._client.delete()

    def feed(self, data: list[int] | bytes) -> None:
        """Parse raw MIDI bytes and pass on the channel messages (malformed bytes are dropped)."""
        try:
            self._parser.feed(bytes(int(b) & 0xFF for b in data))
        except (TypeError, ValueError):
            self.dropped += 1
            return
        for message in self._parser:
            if hasattr(message, "channel") and message.type != "polytouch" and message.type != "aftertouch":
                self.messages += 1
                self.on_message(message, self.source)
            else:
                self.dropped += 1

    def _run(self) -> None:
        prefer_realtime()
        next_check = time.monotonic() + DISCONNECT_CHECK_SECONDS
        get = self._client.get_message
        while not self._stop.is_set():
            event = get()
            if event is not None:
                while event is not None:
                    self.feed(event[0])
                    event = get()
                continue
            now = time.monotonic()
            if not self.virtual and now >= next_check:
                next_check = now + DISCONNECT_CHECK_SECONDS
                present = self.source in self._client.get_ports()
                if self.connected and not present:
                    self.connected = False
                    if self.on_disconnect is not None:
                        self.on_disconnect(self.source)
            time.sleep(POLL_SECONDS)


def _match(name: str, ports: list[str], api: str) -> int:
    if name in ports:
        return ports.index(name)
    hits = [i for i, port in enumerate(ports) if name.lower() in port.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(repr(p) for p in ports) or "none"
    if not hits:
        raise MarsError(f"no MIDI input port matches {name!r} ({api}); ports: {listing} (see 'mars-synth devices')")
    raise MarsError(f"{name!r} matches several MIDI ports ({api}): {', '.join(repr(ports[i]) for i in hits)}; "
                    "give more of the name")  # fmt: skip
