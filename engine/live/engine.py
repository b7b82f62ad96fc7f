"""The live engine: builds the threads of live play, starts them in a safe order, and stops them cleanly.

Start order matters: the model is loaded first (a missing model is one error line before
anything opens); MIDI ports are opened before the audio stream starts (python-rtmidi and a
running JACK stream in one process can deadlock, see :mod:`engine.drivers.midi_in`); the
stream starts last. Stop order is the reverse: inputs stop, the stream stops, ports close,
the control thread stops, and the generation worker finishes the batch in hand (its notes
are written to the disk cache) before the process exits.
"""

from __future__ import annotations

import gc
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.drivers.audio import AudioSettings, open_stream, resolve_device
from engine.live.control import PARAMS, ControlThread, LiveControl
from engine.live.events import LiveEvent
from engine.live.generation import GenerationWorker, InProcessNoteMaker, ProcessNoteMaker
from engine.live.namespace import NAMESPACE
from engine.live.renderer import BlockRenderer
from engine.midi.program_map import ProgramMap
from engine.model import live_note_source
from engine.note_cache import NoteCache
from engine.preset import Preset, load_presets
from engine.synth.effects import EffectsSettings
from engine.synth.synth import Synth
from mars_model.api import NoteSource
from mars_model.errors import MarsError

#: The GIL switch interval while playing: a thread holding the GIL is asked to hand it to
#: the audio callback after the callback has waited this long (Python's default, 5 ms, is
#: longer than a block).
SWITCH_INTERVAL = 0.0001
#: The Synth renders at most this many frames at once; larger host blocks are split.
SYNTH_BLOCK = 1024
#: The reverb's step when the host chooses the block length (a common JACK period).
EFFECTS_CHUNK = 128


@dataclass
class PlaySettings:
    """Everything ``play`` can be told (see ``mars-synth play --help``).

    Args:
        audio: output device, rate, block size, latency.
        polyphony: the most voices at once.
        gain: master gain before the limiter.
        preset: one preset (name or .yaml) for every channel; ``None``: the GM program map.
        channel_map: a ``--map`` YAML file.
        seed: sampling seed of every generated note.
        cache_dir: the persistent note cache shared with ``render`` (``None``: memory only).
        midi_in: existing MIDI ports to open.
        virtual_midi: virtual MIDI ports to create.
        midi_api: ``"alsa"``/``"jack"``; ``None`` chooses.
        osc_host, osc_port: where OSC is served; ``osc_port=None`` turns OSC off (0: any free port).
        model_device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        backend: the NoteGenerator backend (``eager``, ``compile``, ``cuda-graphs``, ``tensorrt``).
        urgent_batch, background_batch: generation batch sizes.
        precompute: generate each preset's range ahead (velocity 100).
        worker: ``"process"`` (the model in a process of its own: it never holds the audio
            process's GIL) or ``"thread"`` (in this process; tests and debugging).
        effects: the reverb and chorus at start (levels and reverb time change live over OSC).
    """

    audio: AudioSettings = field(default_factory=AudioSettings)
    polyphony: int = 64
    gain: float = 0.5
    preset: str | None = None
    channel_map: Path | None = None
    seed: int = 0
    cache_dir: Path | None = None
    midi_in: list[str] = field(default_factory=list)
    virtual_midi: list[str] = field(default_factory=list)
    midi_api: str | None = None
    osc_host: str = "127.0.0.1"
    osc_port: int | None = 9000
    model_device: str = "auto"
    backend: str = "eager"
    urgent_batch: int = 16
    background_batch: int = 4
    precompute: bool = True
    worker: str = "process"
    effects: EffectsSettings = field(default_factory=EffectsSettings)

    def check(self) -> None:
        """Validate (one MarsError naming the setting and what is allowed)."""
        if not 1 <= self.polyphony <= 1024:
            raise MarsError(f"polyphony must be 1..1024, got {self.polyphony}")
        if not 0 <= self.gain <= 4:
            raise MarsError(f"gain must be 0..4 (linear), got {self.gain}")
        if self.audio.blocksize < 0 or self.audio.blocksize > 16384:
            raise MarsError(f"blocksize must be 0 (the host's) or 1..16384 frames, got {self.audio.blocksize}")
        if self.osc_port is not None and not 0 <= self.osc_port <= 65535:
            raise MarsError(f"OSC port must be 0..65535, got {self.osc_port}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.model_device):
            raise MarsError(f"model device must be auto, cpu, cuda or cuda:N, got {self.model_device!r}")
        if self.worker not in ("process", "thread"):
            raise MarsError(f"worker must be process or thread, got {self.worker!r}")
        if not 1 <= self.urgent_batch <= 256 or not 1 <= self.background_batch <= 256:
            raise MarsError("generation batch sizes must be 1..256")
        self.effects.check()


def settle_garbage() -> None:
    """Move every object alive now out of the garbage collector's reach (``gc.freeze``).

    A full collection walks every tracked object while holding the GIL - tens of
    milliseconds in a process with numpy, mido and the engine loaded - and the audio callback
    would wait for it. Frozen objects are never walked again; new objects are still
    collected, and garbage without reference cycles is freed by reference counting as
    always. ``play`` calls this after start-up and then every few seconds, which is cheap.
    """
    gc.freeze()


class OscInput(Protocol):
    """An OSC front end the engine starts and closes (:class:`engine.bindings.osc.OscServer`)."""

    #: ``(host, port)`` it listens on.
    address: tuple

    def start(self) -> None:
        """Start serving (on a thread of its own)."""
        ...

    def close(self) -> None:
        """Stop serving and close the socket."""
        ...


#: Builds the OSC front end: ``(put, query, presets, host, port) -> OscInput``. ``put`` takes the
#: events it receives, ``query(what)`` answers ``/mars/q/<what>`` (``None``: unknown query).
OscFactory = Callable[[Callable[[LiveEvent], None], Callable[[str], list | None], Mapping[str, Preset], str, int],
                      OscInput]  # fmt: skip


class LiveEngine:
    """MIDI and OSC in, the model warm, sound out. ``start()``, then ``stop()`` (also on errors).

    The engine builds no OSC server itself (bindings sit above it): ``play`` hands it
    :class:`engine.bindings.osc.OscServer` as ``osc_server``.

    Example::

        from engine.bindings.osc import OscServer
        engine = LiveEngine(PlaySettings(virtual_midi=["mars-synth"]), osc_server=OscServer)
        engine.start()
        ...
        engine.stop()

    Args:
        settings: what to open and how.
        source: a NoteSource to use instead of loading the model (tests, benchmarks).
        osc_server: builds the OSC front end when ``settings.osc_port`` is set.
    Raises:
        MarsError: the settings are invalid.
        ValueError: ``settings.osc_port`` is set and no ``osc_server`` was given.
    """

    def __init__(self, settings: PlaySettings, source: NoteSource | None = None,
                 osc_server: OscFactory | None = None) -> None:  # fmt: skip
        settings.check()
        if settings.osc_port is not None and osc_server is None:
            raise ValueError(f"OSC port {settings.osc_port} is set but no osc_server was given: pass "
                             "osc_server=engine.bindings.osc.OscServer, or set osc_port=None")  # fmt: skip
        self.settings = settings
        self._given_source = source
        self._osc_server = osc_server
        self.presets = load_presets()
        self.program_map = ProgramMap.load(settings.channel_map, settings.preset, self.presets)
        self.stream = None
        self.osc: OscInput | None = None
        self.midi_inputs: list = []
        self.started_at = 0.0  # time.monotonic() when the audio stream started (0: not started)
        self.stopped_at = 0.0  # ... and when it stopped
        self.warnings: list[str] = []
        self._stopped = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Load the model, open everything, start the stream; raises MarsError (and cleans up) on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        settings = self.settings
        sys.setswitchinterval(SWITCH_INTERVAL)
        index, info, rate = resolve_device(settings.audio)
        self.device_name = str(info["name"])
        self.sample_rate = rate
        channels = min(2, int(info["max_output_channels"]))
        if settings.worker == "process":
            self.maker = ProcessNoteMaker(rate, settings.seed, settings.cache_dir, self._given_source,
                                          settings.model_device, settings.backend)  # fmt: skip
        else:
            source = self._given_source or live_note_source(settings.model_device, settings.backend)
            self.maker = InProcessNoteMaker(NoteCache(rate, source, str(source.model_id), settings.seed,
                                                      settings.cache_dir, progress=False))  # fmt: skip
        self.program_map.set_model_instruments(self.maker.instruments)  # drums play when the model makes them
        self.synth = Synth(rate, settings.polyphony, max(SYNTH_BLOCK, settings.audio.blocksize), settings.gain,
                           settings.effects, settings.audio.blocksize or EFFECTS_CHUNK)  # fmt: skip
        self.renderer = BlockRenderer(self.synth, channels)
        self.worker = GenerationWorker(self.maker, self._note_ready, settings.urgent_batch,
                                       settings.background_batch, warmup=self._first_preset())  # fmt: skip
        pitch_range = self.maker.pitch_range
        request = self.worker.request if settings.precompute else self._request_played_only
        self.control = LiveControl(self.renderer, self.program_map, request, pitch_range,
                                   cancel_background=self.worker.cancel_background)  # fmt: skip
        self.control_thread = ControlThread(self.control)
        # MIDI ports before the stream (see the module notes).
        if settings.midi_in or settings.virtual_midi:
            from engine.drivers.midi_in import MidiInput, choose_api

            api = choose_api(settings.midi_api)
            for name in settings.midi_in:
                self.midi_inputs.append(MidiInput(api, name, False, self._midi, self._disconnect))
            for name in settings.virtual_midi:
                self.midi_inputs.append(MidiInput(api, name, True, self._midi, self._disconnect))
            self.midi_api = api
        if settings.osc_port is not None and self._osc_server is not None:
            self.osc = self._osc_server(self.control_thread.put, self.query, self.presets, settings.osc_host,
                                        settings.osc_port)  # fmt: skip
        self.stream = open_stream(settings.audio, self.renderer, index, rate, channels)
        self.control.output_latency = float(self.stream.latency)
        self.worker.start()
        self.control_thread.start()
        first = self._first_preset()
        if first is not None:
            self.control_thread.put(LiveEvent("preset", self.program_map.fixed) if self.program_map.fixed
                                    else LiveEvent("midi", _program_change(0, 0)))  # fmt: skip
        self.stream.start()
        self.started_at = time.monotonic()
        for port in self.midi_inputs:
            port.start()
        if self.osc is not None:
            self.osc.start()
        settle_garbage()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded and warmed up; True if it is."""
        return self.worker.ready.wait(timeout)

    def stop(self) -> None:
        """Stop everything (safe to call twice, and after a failed start)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.osc is not None:
            self.osc.close()
        for port in self.midi_inputs:
            port.stop()
        if self.stream is not None:
            try:
                self.stream.stop()
                self.stream.close()
            except Exception as err:  # noqa: BLE001 - a dead device must not stop the shutdown
                self.warnings.append(f"closing the audio stream: {err}")
            self.stopped_at = time.monotonic()
        for port in self.midi_inputs:
            port.close()
        if hasattr(self, "control_thread"):
            self.control_thread.stop()
        if hasattr(self, "worker"):
            self.worker.stop()  # closes the maker
        elif hasattr(self, "maker"):
            self.maker.close()
        if hasattr(self, "maker"):
            self.warnings.extend(self.maker.warnings)
        self.warnings.extend(self.program_map.report())

    # ------------------------------------------------------------------ input callbacks (input threads)

    def _midi(self, message, source: str) -> None:
        self.control_thread.put(LiveEvent("midi", message, source))

    def _disconnect(self, source: str) -> None:
        self.warnings.append(f"MIDI device {source!r} disconnected; its notes were released "
                             "(reconnect it to this program's port, or restart)")  # fmt: skip
        self.control_thread.put(LiveEvent("disconnect", source, source))

    def _note_ready(self, key, sample) -> None:
        self.control_thread.put(LiveEvent("note_ready", (key, sample), "worker"))

    def _request_played_only(self, preset, key, priority: int, rank: int) -> None:
        if priority <= 2:
            self.worker.request(preset, key, priority, rank)

    def _first_preset(self):
        fixed = self.program_map.fixed
        return fixed if fixed is not None else self.program_map.resolve(0, 0, 0)

    # ------------------------------------------------------------------ reports

    def query(self, what: str) -> list | None:
        """Answers to ``/mars/q/<what>`` (see the README), or ``None`` for an unknown query."""
        synth, control, gen = self.synth, self.control, self.worker.stats
        if what == "voices":
            return [synth.active_voices, synth.polyphony]
        if what == "status":
            c = control.stats
            return [synth.active_voices, self.renderer.underflows, c.notes, c.exact, c.fallback, c.late,
                    gen.generated, gen.queued, float(gen.seconds_per_note)]  # fmt: skip
        if what == "presets":
            return sorted(self.presets)
        if what == "preset":
            return [control.fixed.name if control.fixed is not None else "gm-map"]
        if what == "params":
            patch = control.fixed.patch if control.fixed is not None else None
            values = {"gain": synth.gain, "transpose": control.transpose,
                      "attack": control.patch_override.get("attack", patch.attack if patch else -1.0),
                      "release": control.patch_override.get("release", patch.release if patch else -1.0),
                      "reverb": synth.reverb.level, "chorus": synth.chorus.level, "reverb_time": synth.reverb.time}  # fmt: skip
            return [item for name in PARAMS for item in (name, float(values[name]))]
        if what == "latency":
            median, p99 = self.renderer.callback_share()
            onset = self._onset_ms()
            return [median, p99, onset[0], onset[1]]
        if what == "namespace":
            return list(NAMESPACE)
        return None

    def _onset_ms(self) -> tuple[float, float]:
        n = min(self.renderer.onsets, len(self.renderer.onset_latency))
        if n == 0:
            return 0.0, 0.0
        values = self.renderer.onset_latency[:n] * 1000.0
        return float(np.median(values)), float(np.percentile(values, 99))

    def status_line(self) -> str:
        """The one-line status: voices, cache hits, generation, model time, underflows, callback load."""
        synth, c, g = self.synth, self.control.stats, self.worker.stats
        median, _ = self.renderer.callback_share()
        model = f"{g.seconds_per_note * 1000:.0f} ms/note" if g.generated else "idle"
        if not self.worker.ready.is_set():
            model = "warming up"
        errors = f" | model errors {g.errors}: {g.last_error[:80]}" if g.errors else ""
        return (f"voices {synth.active_voices:3d}/{synth.polyphony} | notes {c.notes} "
                f"({100 * c.hit_rate:.0f}% cached, {c.fallback} nearest, {c.late} late) | "
                f"generated {g.generated}, queued {g.queued} | model {model} | "
                f"underflows {self.renderer.underflows} | callback {100 * median:.0f}% of block{errors}")  # fmt: skip

    def summary(self) -> str:
        """The last line printed on exit; "played" is how long the audio stream ran."""
        seconds = (self.stopped_at or time.monotonic()) - self.started_at if self.started_at else 0.0
        c, g = self.control.stats, self.worker.stats
        median, p99 = self.renderer.callback_share()
        return (f"played {seconds:.1f} s, {c.notes} notes ({c.exact} cached, {c.fallback} from the nearest "
                f"pitch, {c.late} late), {g.generated} generated, {g.disk_hits} from disk, "
                f"{self.renderer.underflows} underflows, callback {100 * median:.0f}% of a block "
                f"(p99 {100 * p99:.0f}%), peak {self.synth.peak_voices} voices"
                + (f"; {g.errors} generation errors, the last: {g.last_error}" if g.errors else ""))  # fmt: skip


def _program_change(channel: int, program: int):
    import mido

    return mido.Message("program_change", channel=channel, program=program)

