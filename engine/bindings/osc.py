"""OSC in: the ``/mars/...`` namespace over UDP, served by python-osc's blocking server on its own thread.

The blocking server handles one datagram at a time, in arrival order (the threading server
drops and reorders messages under bursts). Packets are parsed with python-osc but routed
here, because python-osc's dispatcher *sleeps* in the server thread until a bundle's
timetag: this server instead stamps the event with its due time and the control thread
schedules it on the audio clock. Every handler checks its arguments (ints and floats are
accepted alike) and answers problems on ``/mars/error`` to the sender; a malformed packet
never raises out of the server. The namespace is documented in the README (section "Live
play") and in :data:`engine.live.namespace.NAMESPACE`.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from engine.drivers.threads import prefer_realtime
from engine.live.control import PARAMS
from engine.live.events import LiveEvent
from engine.live.namespace import QUERIES
from engine.preset import Preset, find_preset
from engine.synth.voice import Patch
from mars_model.errors import MarsError

#: Bundles timed further ahead than this are refused (answered on /mars/error).
MAX_LOOKAHEAD_SECONDS = 10.0
#: Under a flood, the server thread works at most this long before it pauses for as long
#: again (packets wait in the socket buffer, and drop there if it fills): it runs at a
#: real-time priority, and must leave the GIL and the CPU to the audio thread and the rest
#: of the system (the kernel throttles real-time threads that use the whole CPU).
FLOOD_SLICE_SECONDS = 0.004
#: Morph positions are rounded to this step, so sweeping a morph reuses generated notes.
MORPH_STEP = 0.05
DEFAULT_PORT = 9000


def _quiet_pythonosc(record: logging.LogRecord) -> bool:
    # python-osc logs a warning on the root logger for every undecodable bundle element; under a
    # flood of garbage that is thousands of lines (and their I/O) - the packet is answered instead.
    return "pythonosc" not in record.pathname


class OscError(Exception):
    """A bad OSC message; its text is sent back on /mars/error."""


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OscError(f"{what} must be a number, got {value!r}")
    if not low <= value <= high:
        raise OscError(f"{what} must be in {low:g}..{high:g}, got {value!r}")
    return float(value)


def _int(value: Any, what: str, low: int, high: int) -> int:
    return int(round(_number(value, what, low, high)))


def _arity(args: tuple, low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise OscError(f"expects {usage}, got {len(args)} argument(s)")


def _note_id(args: tuple, index: int) -> object:
    if len(args) <= index:
        return None
    value = args[index]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise OscError(f"id must be a number or a string, got {value!r}")
    return int(value) if isinstance(value, float) and value.is_integer() else value


def morph_preset(a: Preset, b: Preset, t: float) -> Preset:
    """A preset halfway (by ``t``, 0 = ``a``, 1 = ``b``) between two presets' instruments and envelopes.

    The instrument is the weighted mix of both instruments' GM programs (the model's timbre
    morph); attack, release and gain are interpolated; sampling is the nearer preset's. The
    notes are kept in memory only (``cache: memory``).
    """
    t = round(t / MORPH_STEP) * MORPH_STEP
    weights: dict[int, float] = {}
    for preset, share in ((a, 1.0 - t), (b, t)):
        if share <= 0:
            continue
        instrument = preset.instrument if isinstance(preset.instrument, Mapping) else {preset.instrument: 1.0}
        total = float(sum(instrument.values()))
        for program, weight in instrument.items():
            weights[int(program)] = weights.get(int(program), 0.0) + share * float(weight) / total
    instrument: int | dict[int, float] = next(iter(weights)) if len(weights) == 1 else weights
    pa, pb = a.patch, b.patch
    patch = Patch(pa.attack + t * (pb.attack - pa.attack), pa.release + t * (pb.release - pa.release),
                  pa.gain + t * (pb.gain - pa.gain),
                  pa.velocity_sensitivity + t * (pb.velocity_sensitivity - pa.velocity_sensitivity))  # fmt: skip
    return Preset(name=f"morph:{a.name}:{b.name}:{t:.2f}", instrument=instrument, envelope=patch,
                  sampling=(a if t < 0.5 else b).sampling, cache="memory",
                  description=f"{1 - t:.2f} {a.name} + {t:.2f} {b.name}")  # fmt: skip


#: UDP receive buffer asked of the kernel, so bursts are queued rather than dropped.
RECEIVE_BUFFER_BYTES = 4 << 20


class OscServer:
    """The OSC front end: datagrams in, :class:`LiveEvent` out, queries and errors answered.

    Args:
        put: where events go (the control thread's queue).
        query: ``what -> list of values`` for ``/mars/q/<what>`` (``None``: unknown query).
        presets: the preset library, to check ``/mars/preset`` and ``/mars/morph`` names.
        host, port: where to listen (127.0.0.1 by default: OSC has no authentication).
    """

    def __init__(self, put: Callable[[LiveEvent], None], query: Callable[[str], list | None],
                 presets: Mapping[str, Preset], host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:  # fmt: skip
        from pythonosc.osc_server import BlockingOSCUDPServer

        self.put = put
        self.query = query
        self.presets = presets
        self.packets = 0
        self.messages = 0
        self.errors = 0
        self.malformed = 0
        self._slice_start, self._busy = 0.0, 0.0
        outer = self

        class _Server(BlockingOSCUDPServer):
            def verify_request(self, request, client_address) -> bool:
                outer.packets += 1
                ok = super().verify_request(request, client_address)
                if not ok:
                    outer.malformed += 1  # not OSC at all: dropped without an answer
                return ok

            def handle_error(self, request, client_address) -> None:
                outer.errors += 1  # never print a traceback from the server thread

        try:
            self._server = _Server((host, port), self)
        except OSError as err:
            raise MarsError(f"cannot listen for OSC on {host}:{port} ({err.strerror or err}); "
                            "choose another --osc-port") from None  # fmt: skip
        # A DAW can send thousands of messages at once; the kernel's default UDP receive buffer
        # (about 208 KiB) overflows and drops them before this thread reads them. Ask for
        # more (the kernel caps it at net.core.rmem_max).
        try:
            self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        except OSError:
            pass  # keep the default buffer: bursts may then drop, as UDP does
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._serve, name="mars-osc", daemon=True)
        self._handlers: dict[str, Callable[[tuple], LiveEvent | None]] = {
            "/mars/note": self._note, "/mars/note_off": self._note_off, "/mars/fnote": self._fnote,
            "/mars/cc": self._cc, "/mars/bend": self._bend, "/mars/program": self._program,
            "/mars/preset": self._preset, "/mars/morph": self._morph, "/mars/panic": self._panic,
        }  # fmt: skip

    def start(self) -> None:
        """Serve on the thread."""
        logging.getLogger().addFilter(_quiet_pythonosc)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(2.0)
        self._server.server_close()
        logging.getLogger().removeFilter(_quiet_pythonosc)

    def _serve(self) -> None:
        prefer_realtime()
        self._server.serve_forever(poll_interval=0.5)  # packets wake it at once; this is for shutdown

    # ---------------------------------------------------------------- python-osc's dispatcher surface

    def call_handlers_for_packet(self, data: bytes, client_address) -> list:
        """Route one datagram (called by the server thread); always returns ``[]`` (replies are sent here)."""
        started = time.perf_counter()
        if started - self._slice_start > 2 * FLOOD_SLICE_SECONDS:
            self._slice_start, self._busy = started, 0.0  # quiet lately: a fresh slice
        try:
            self._route(data, client_address)
        finally:
            self._busy += time.perf_counter() - started
            if self._busy > FLOOD_SLICE_SECONDS:
                time.sleep(FLOOD_SLICE_SECONDS)
                self._slice_start, self._busy = time.perf_counter(), 0.0
        return []

    def _route(self, data: bytes, client_address) -> None:
        from pythonosc.osc_packet import OscPacket

        try:
            packet = OscPacket(data)
            timed = packet.messages
        except Exception as err:  # noqa: BLE001 - any garbage: answer, never die
            self.malformed += 1
            self._reply(client_address, "/mars/error", "", f"malformed OSC packet: {str(err)[:120]}")
            return
        wall_now = time.time()
        for item in timed:
            address = getattr(item.message, "address", "?")
            try:
                params = tuple(item.message.params)
                due = None
                if item.time > wall_now + 0.001:
                    ahead = item.time - wall_now
                    if ahead > MAX_LOOKAHEAD_SECONDS:
                        raise OscError(f"bundle timetag {ahead:.1f} s ahead; at most {MAX_LOOKAHEAD_SECONDS:g} s")
                    due = time.monotonic() + ahead
                self.messages += 1
                self._dispatch(address, params, due, client_address)
            except OscError as err:
                self.errors += 1
                self._reply(client_address, "/mars/error", str(address), str(err))
            except Exception as err:  # noqa: BLE001 - a parse problem inside a message
                self.errors += 1
                self._reply(client_address, "/mars/error", str(address)[:200], f"bad message: {str(err)[:120]}")

    # ---------------------------------------------------------------- routing

    def _dispatch(self, address: str, args: tuple, due: float | None, client) -> None:
        if address.startswith("/mars/q/"):
            answer = self.query(address[len("/mars/q/") :])
            if answer is None:
                raise OscError(f"unknown query; known: {', '.join(QUERIES)}")
            self._reply(client, address, *answer)
            return
        if address.startswith("/mars/param/"):
            event = self._param(address[len("/mars/param/") :], args)
        else:
            handler = self._handlers.get(address)
            if handler is None:
                raise OscError("unknown address; see /mars/q/namespace")
            event = handler(args)
        if event is not None:
            self.put(LiveEvent(event[0], event[1], "osc", due=due))

    def _reply(self, client, address: str, *values) -> None:
        from pythonosc.osc_message_builder import OscMessageBuilder

        try:
            builder = OscMessageBuilder(address=address)
            for value in values:
                builder.add_arg(value)
            self._server.socket.sendto(builder.build().dgram, client)
        except (OSError, ValueError, TypeError):
            pass  # the sender went away or sent something unanswerable: nothing to do

    # ---------------------------------------------------------------- handlers: args -> (kind, payload)

    def _note(self, args: tuple):
        _arity(args, 2, 3, "pitch velocity [id]")
        pitch = _int(args[0], "pitch", 0, 127)
        velocity = _int(args[1], "velocity", 0, 127)
        if velocity == 0:
            return "note_off", (pitch, _note_id(args, 2))
        return "note", (pitch, velocity, _note_id(args, 2))

    def _note_off(self, args: tuple):
        _arity(args, 1, 2, "pitch [id]")
        return "note_off", (_int(args[0], "pitch", 0, 127), _note_id(args, 1))

    def _fnote(self, args: tuple):
        _arity(args, 2, 3, "freq_hz velocity [id]")
        frequency = _number(args[0], "frequency", 8.2, 12543.9)  # MIDI keys 0..127
        velocity = _int(args[1], "velocity", 1, 127)
        return "fnote", (frequency, velocity, _note_id(args, 2))

    def _cc(self, args: tuple):
        import mido

        _arity(args, 3, 3, "channel number value")
        channel = _int(args[0], "channel", 1, 16) - 1
        message = mido.Message("control_change", channel=channel, control=_int(args[1], "controller", 0, 127),
                               value=_int(args[2], "value", 0, 127))  # fmt: skip
        return "midi", message

    def _bend(self, args: tuple):
        import mido

        _arity(args, 2, 2, "channel value")
        channel = _int(args[0], "channel", 1, 16) - 1
        return "midi", mido.Message("pitchwheel", channel=channel, pitch=_int(args[1], "bend", -8192, 8191))

    def _program(self, args: tuple):
        import mido

        _arity(args, 2, 2, "channel program")
        channel = _int(args[0], "channel", 1, 16) - 1
        return "midi", mido.Message("program_change", channel=channel, program=_int(args[1], "program", 0, 127))

    def _preset_named(self, value: Any) -> Preset:
        if not isinstance(value, str) or value not in self.presets:
            raise OscError(f"unknown preset {value!r}; known: {', '.join(sorted(self.presets))}")
        return find_preset(value, self.presets)

    def _preset(self, args: tuple):
        _arity(args, 1, 1, "name")
        return "preset", self._preset_named(args[0])

    def _morph(self, args: tuple):
        _arity(args, 3, 3, "preset_a preset_b t")
        a, b = self._preset_named(args[0]), self._preset_named(args[1])
        return "preset", morph_preset(a, b, _number(args[2], "t", 0.0, 1.0))

    def _param(self, name: str, args: tuple):
        if name not in PARAMS:
            raise OscError(f"unknown parameter {name!r}; known: {', '.join(PARAMS)}")
        _arity(args, 1, 1, "value")
        low, high = PARAMS[name]
        return "param", (name, _number(args[0], name, low, high))

    def _panic(self, args: tuple):
        return "panic", None

