"""The control side of live play: turns input events into prepared audio commands.

:class:`LiveControl` is FluidSynth's ``synth`` half for live play. For every event it decides,
off the audio thread, everything the callback will need:

* **which sample a key plays.** The exact note (preset, pitch, velocity bucket) when the
  generation worker has made it; otherwise the nearest ready pitch of the same preset and
  bucket (then any bucket, then any preset), which the Synth transposes by resampling, and
  a crossfade (:meth:`Synth.replace_sample`) to the exact note the moment it lands. Only when
  nothing at all is ready yet (the first seconds after start) does a key wait, and it starts
  as soon as any note of its preset arrives - late, never silent.
* **what to generate next**, by priority (see :mod:`engine.live.generation`).
* **drums** (channel 10, or a map's kit channel): a drum key plays its own kit note or waits
  for it (another drum transposed is not a stand-in); a kit program change generates the
  kit's keys ahead. The rest (one-shots, chokes) is the Synth's, as in ``render``.
* **when** a timed (OSC bundle) event sounds: its frame on the output clock.

It is single-threaded (the control thread's); :class:`ControlThread` runs it.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import mido

from engine.drivers.threads import prefer_realtime
from engine.live.events import EFFECT, GAIN, MIDI, PANIC, SWAP, AudioCommand, LiveEvent
from engine.live.renderer import BlockRenderer
from engine.midi.dispatch import NoteStart
from engine.midi.program_map import NoteChoice, ProgramMap
from engine.note_cache import NoteKey
from engine.preset import Preset
from engine.synth.effects import MAX_REVERB_TIME
from engine.synth.sample import NoteSample
from engine.synth.synth import CC_BANK_LSB, CC_BANK_MSB, CC_SOSTENUTO, CC_SUSTAIN, EFFECT_PARAMS
from engine.synth.voice import Patch
from mars_model.api import VELOCITY_BUCKETS, velocity_bucket

#: The velocity bucket generated ahead over the whole range on preset load (velocity 100).
DEFAULT_BUCKET = VELOCITY_BUCKETS.index(100)
#: Channels (0-based) used for detuned /mars/fnote notes, one per note in flight, round robin.
FNOTE_CHANNELS = tuple(range(10, 16))
#: Timed events are handed to the audio thread this long before their frame is due.
TIMED_LEAD_SECONDS = 0.02
#: Live parameters (``/mars/param/<name>``) and their allowed ranges: master gain, the envelope
#: and transposition of new notes, the reverb's and chorus's wet levels (0 = off) and the
#: reverb time (RT60, seconds).
PARAMS = {"gain": (0.0, 4.0), "attack": (0.0, 10.0), "release": (0.001, 30.0), "transpose": (-48.0, 48.0),
          "reverb": (0.0, 4.0), "chorus": (0.0, 4.0), "reverb_time": (0.1, MAX_REVERB_TIME)}  # fmt: skip


@dataclass
class ControlStats:
    """What the control side decided (read by the status line and the OSC queries)."""

    notes: int = 0
    exact: int = 0
    fallback: int = 0
    late: int = 0
    swaps: int = 0
    skipped: int = 0
    ready_notes: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of note-ons that found their exact note ready."""
        return self.exact / self.notes if self.notes else 1.0


@dataclass
class _Pending:
    message: mido.Message
    key: NoteKey
    patch: Patch
    received: float
    exact: bool = False  # start only on this very note (a drum), not the first of its preset


class LiveControl:
    """Decides what the audio callback plays (one thread only).

    Args:
        renderer: the audio callback object (its command deques and output clock).
        program_map: channel/program -> preset (the GM map, ``--map``, ``--preset``).
        request: ``(preset, key, priority, rank)`` -> None, the generation worker's request.
        pitch_range: ``(lo, hi)`` MIDI pitches generated ahead on preset load.
        output_latency: seconds from the callback's block start to the DAC (for timetags).
        cancel_background: drops the worker's queued background requests (on a preset change).
    """

    def __init__(self, renderer: BlockRenderer, program_map: ProgramMap,
                 request: Callable[[Preset, NoteKey, int, int], None],
                 pitch_range: tuple[int, int] = (21, 108), output_latency: float = 0.0,
                 cancel_background: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.renderer = renderer
        self.sample_rate = renderer.synth.sample_rate
        self.program_map = program_map
        self.request = request
        self.pitch_range = pitch_range
        self.output_latency = output_latency
        self.cancel_background = cancel_background
        self.stats = ControlStats()
        self.fixed: Preset | None = program_map.fixed
        self.patch_override: dict[str, float] = {}
        self.transpose = 0
        self.programs = [0] * 16
        self.banks = [0] * 16
        self._ready: dict[str, dict[int, dict[int, NoteSample]]] = {}  # identity -> bucket -> pitch -> note
        self._identities: dict[int, tuple[Preset, str]] = {}
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._fallback: dict[tuple[int, int], NoteKey] = {}
        self._playing: dict[tuple[int, int], int] = {}  # (channel, key pressed) -> key played (transpose)
        self._held: dict[str, set[tuple[int, int]]] = {}  # source -> (channel, key pressed)
        self._channels_of: dict[str, set[int]] = {}
        self._ids: dict[object, tuple[int, int]] = {}  # OSC note id -> (channel, key)
        self._fnote_next = 0
        self._last_timed_frame = -1
        self._precomputed: set[str] = set()
        self._precomputed_keys: set[tuple[str, int]] = set()  # (identity, drum key)

    # ------------------------------------------------------------------ events

    def handle(self, event: LiveEvent) -> None:
        """Act on one event (it is due now)."""
        frame = self._frame_for(event.due)
        kind, payload = event.kind, event.payload
        if kind == "midi":
            self.midi(payload, event.source, frame, event.received)
        elif kind == "note_ready":
            self.note_ready(*payload)
        elif kind == "note":
            pitch, velocity, note_id = payload
            self._remember_id(note_id, 0, pitch)
            self.midi(mido.Message("note_on", channel=0, note=pitch, velocity=velocity), event.source, frame,
                      event.received)  # fmt: skip
        elif kind == "note_off":
            pitch, note_id = payload
            channel, key = self._ids.pop(note_id, (0, pitch)) if note_id is not None else (0, pitch)
            self.midi(mido.Message("note_off", channel=channel, note=key), event.source, frame, event.received)
        elif kind == "fnote":
            self.fnote(*payload, source=event.source, frame=frame, received=event.received)
        elif kind == "preset":
            self.set_preset(payload)
        elif kind == "param":
            self.set_param(*payload, frame=frame)
        elif kind == "panic":
            self.panic()
        elif kind == "disconnect":
            self.disconnect(payload, frame)

    def midi(self, message: mido.Message, source: str = "", frame: int = -1, received: float = 0.0) -> None:
        """A MIDI channel message from ``source``."""
        kind = message.type
        if kind == "note_on" and message.velocity > 0:
            self._note_on(message, source, frame, received)
            return
        if kind in ("note_on", "note_off"):
            self._note_off(message, source, frame)
            return
        if kind == "program_change":
            self.programs[message.channel] = message.program
            self._precompute_channel(message.channel)
        elif kind == "control_change" and message.control == CC_BANK_MSB:
            self.banks[message.channel] = message.value * 128 + self.banks[message.channel] % 128
        elif kind == "control_change" and message.control == CC_BANK_LSB:
            self.banks[message.channel] = (self.banks[message.channel] // 128) * 128 + message.value
        elif kind not in ("control_change", "pitchwheel"):
            return  # clock, sysex, aftertouch...: not for the synth
        self._channels_of.setdefault(source, set()).add(message.channel)
        self._emit(AudioCommand(MIDI, frame, message, received=received))

    def note_ready(self, key: NoteKey, sample: NoteSample) -> None:
        """The worker made (or loaded) ``key``: crossfade fallbacks to it, start keys waiting for it."""
        self._ready.setdefault(key.identity, {}).setdefault(key.bucket, {})[key.pitch] = sample
        self.stats.ready_notes += 1
        for slot, wanted in list(self._fallback.items()):
            if wanted == key:
                del self._fallback[slot]
                channel, pressed = slot
                played = self._playing.get(slot)
                if played is not None:
                    self._emit(AudioCommand(SWAP, -1, channel=channel, key=played, sample=sample))
                    self.stats.swaps += 1
        for slot, pending in list(self._pending.items()):
            if pending.key.identity != key.identity or (pending.exact and pending.key != key):
                continue
            del self._pending[slot]
            self.stats.late += 1
            self._start(slot, pending.message, pending.key, pending.patch, sample, key, -1, pending.received)

    def set_preset(self, preset: Preset | None) -> None:
        """Play ``preset`` on every channel (``None``: back to the program map) and generate its range ahead."""
        if preset is not self.fixed and self.cancel_background is not None:
            self.cancel_background()  # the old preset's range is not needed now
            self._precomputed.clear()  # (what it did make stays ready; the rest is queued again if it returns)
        self.fixed = preset
        if preset is not None:
            self._precompute(preset)

    def set_param(self, name: str, value: float, frame: int = -1) -> None:
        """A live parameter (:data:`PARAMS`); the caller has checked name and range."""
        if name == "gain":
            self._emit(AudioCommand(GAIN, frame, value=float(value)))
        elif name in EFFECT_PARAMS:
            self._emit(AudioCommand(EFFECT, frame, message=name, value=float(value)))
        elif name == "transpose":
            self.transpose = int(round(value))
        else:
            self.patch_override[name] = float(value)

    def panic(self) -> None:
        """Silence everything at once: all voices fade out within 3 ms, pedals up, nothing waits."""
        self._pending.clear()
        self._fallback.clear()
        self._playing.clear()
        for held in self._held.values():
            held.clear()
        self._emit(AudioCommand(PANIC, -1))

    def disconnect(self, source: str, frame: int = -1) -> None:
        """``source`` went away: lift its pedals and release every key it holds (no stuck notes)."""
        for channel in sorted(self._channels_of.pop(source, set())):
            for control in (CC_SUSTAIN, CC_SOSTENUTO):
                message = mido.Message("control_change", channel=channel, control=control, value=0)
                self._emit(AudioCommand(MIDI, frame, message))
        for channel, key in sorted(self._held.pop(source, set())):
            self._note_off(mido.Message("note_off", channel=channel, note=key), source, frame)

    def fnote(self, frequency: float, velocity: int, note_id: object = None, source: str = "osc",
              frame: int = -1, received: float = 0.0) -> None:  # fmt: skip
        """A note at any frequency: the nearest key, detuned by pitch bend on a channel of its own."""
        midi = 69.0 + 12.0 * math.log2(frequency / 440.0)
        key = min(127, max(0, int(round(midi))))
        cents = (midi - key) * 100.0
        channel = 0
        if abs(cents) >= 0.5:
            channel = FNOTE_CHANNELS[self._fnote_next % len(FNOTE_CHANNELS)]
            self._fnote_next += 1
            self.programs[channel], self.banks[channel] = self.programs[0], self.banks[0]
            bend = max(-8192, min(8191, int(round(cents / 200.0 * 8192))))  # default range +/-2 semitones
            self.midi(mido.Message("program_change", channel=channel, program=self.programs[0]), source, frame)
            self.midi(mido.Message("pitchwheel", channel=channel, pitch=bend), source, frame)
        self._remember_id(note_id, channel, key)
        self.midi(mido.Message("note_on", channel=channel, note=key, velocity=velocity), source, frame, received)

    # ------------------------------------------------------------------ notes

    def _note_on(self, message: mido.Message, source: str, frame: int, received: float) -> None:
        channel, pressed = message.channel, message.note
        choice = self._choice_for(channel, pressed)
        slot = (channel, pressed)
        self._held.setdefault(source, set()).add(slot)
        self._channels_of.setdefault(source, set()).add(channel)
        if choice is None:
            self.stats.skipped += 1
            return
        if choice.preset.is_kit:
            self._drum_on(message, choice, slot, frame, received)
            return
        preset = choice.preset
        played = min(127, max(0, pressed + self.transpose))
        if played != pressed:
            message = message.copy(note=played)
        key = NoteKey(self._identity(preset), played, velocity_bucket(message.velocity))
        self.stats.notes += 1
        self._ask_ahead(preset, key)
        patch = self._patch(preset)
        exact = self._lookup(key)
        if exact is not None:
            self.stats.exact += 1
            self._pending.pop(slot, None)
            self._fallback.pop(slot, None)
            self._start(slot, message, key, patch, exact, key, frame, received)
            return
        near = self._nearest(key)
        if near is None:
            self._pending[slot] = _Pending(message, key, patch, received)
            return
        self.stats.fallback += 1
        self._start(slot, message, key, patch, near[1], near[0], frame, received)

    def _drum_on(self, message: mido.Message, choice: NoteChoice, slot: tuple[int, int], frame: int,
                 received: float) -> None:  # fmt: skip
        key = NoteKey(self._identity(choice.preset), message.note, velocity_bucket(message.velocity))
        self.stats.notes += 1
        self.request(choice.preset, key, 0, 0)
        patch = self._patch_of(choice.patch)
        exact = self._lookup(key)
        if exact is None:
            self._pending[slot] = _Pending(message, key, patch, received, exact=True)
            return
        self.stats.exact += 1
        self._pending.pop(slot, None)
        self._start(slot, message, key, patch, exact, key, frame, received)

    def _start(self, slot: tuple[int, int], message: mido.Message, key: NoteKey, patch: Patch,
               sample: NoteSample, sample_key: NoteKey, frame: int, received: float) -> None:  # fmt: skip
        if sample_key != key:
            self._fallback[slot] = key
        else:
            self._fallback.pop(slot, None)
        self._playing[slot] = message.note
        start = NoteStart(sample, patch, sample.velocity_gain(message.velocity, patch.velocity_sensitivity))
        self._emit(AudioCommand(MIDI, frame, message, start, received=received))

    def _note_off(self, message: mido.Message, source: str, frame: int) -> None:
        slot = (message.channel, message.note)
        held = self._held.get(source)
        if held is not None:
            held.discard(slot)
        if self._pending.pop(slot, None) is not None:
            return  # never started
        played = self._playing.get(slot, message.note)
        off = mido.Message("note_off", channel=message.channel, note=played)
        self._emit(AudioCommand(MIDI, frame, off))

    def _lookup(self, key: NoteKey) -> NoteSample | None:
        return self._ready.get(key.identity, {}).get(key.bucket, {}).get(key.pitch)

    def _nearest(self, key: NoteKey) -> tuple[NoteKey, NoteSample] | None:
        """The nearest ready note: same preset and bucket, else same preset, else any preset."""
        best: tuple[tuple[int, int], NoteKey, NoteSample] | None = None
        for identity, buckets in self._ready.items():
            other = int(identity != key.identity)
            for bucket, pitches in buckets.items():
                for pitch, sample in pitches.items():
                    # A velocity bucket away costs as much as three semitones of transposition.
                    score = (other, abs(pitch - key.pitch) + 3 * abs(bucket - key.bucket))
                    if best is None or score < best[0]:
                        best = (score, NoteKey(identity, pitch, bucket), sample)
        return None if best is None else (best[1], best[2])

    def _ask_ahead(self, preset: Preset, key: NoteKey) -> None:
        lo, hi = self.pitch_range
        self.request(preset, key, 0, 0)
        for distance in (1, 2):
            for pitch in (key.pitch - distance, key.pitch + distance):
                if lo <= pitch <= hi:
                    self.request(preset, NoteKey(key.identity, pitch, key.bucket), 1, distance)
        for bucket in (key.bucket - 1, key.bucket + 1):
            if 0 <= bucket < len(VELOCITY_BUCKETS):
                self.request(preset, NoteKey(key.identity, key.pitch, bucket), 2, 0)
        self._precompute(preset)

    def _precompute(self, preset: Preset | None) -> None:
        """Generate ``preset``'s whole range at velocity 100 ahead, nearest to middle C first (once)."""
        if preset is None:
            return
        identity = self._identity(preset)
        if identity in self._precomputed:
            return
        self._precomputed.add(identity)
        lo, hi = self.pitch_range
        for pitch in sorted(range(lo, hi + 1), key=lambda p: (abs(p - 60), p)):
            self.request(preset, NoteKey(identity, pitch, DEFAULT_BUCKET), 3, abs(pitch - 60))

    def _precompute_channel(self, channel: int) -> None:
        """Generate ahead what a channel's program change selects: a preset's range, or a kit's keys."""
        kit = None
        if self.fixed is None or channel in self.program_map.kit_channels:
            kit = self.program_map.kit_program(channel, self.banks[channel], self.programs[channel])
        if kit is None:
            self._precompute(self._preset_for(channel))
            return
        for key, choice in self.program_map.kit_choices(kit):
            identity = self._identity(choice.preset)
            if (identity, key) not in self._precomputed_keys:
                self._precomputed_keys.add((identity, key))
                self.request(choice.preset, NoteKey(identity, key, DEFAULT_BUCKET), 3, abs(key - 38))

    def _choice_for(self, channel: int, key: int) -> NoteChoice | None:
        if (self.fixed is not None and channel not in self.program_map.channels
                and channel not in self.program_map.kit_channels):  # fmt: skip
            return self.program_map.melodic_choice(self.fixed)
        return self.program_map.choose(channel, self.banks[channel], self.programs[channel], key)

    def _preset_for(self, channel: int) -> Preset | None:
        if self.fixed is not None and channel not in self.program_map.channels:
            return self.fixed
        return self.program_map.resolve(channel, self.banks[channel], self.programs[channel])

    def _identity(self, preset: Preset) -> str:
        known = self._identities.get(id(preset))
        if known is None or known[0] is not preset:
            known = (preset, preset.identity())
            self._identities[id(preset)] = known
        return known[1]

    def _patch(self, preset: Preset) -> Patch:
        return self._patch_of(preset.patch)

    def _patch_of(self, patch: Patch) -> Patch:
        if not self.patch_override:
            return patch
        return dataclasses.replace(patch, **self.patch_override)

    def _remember_id(self, note_id: object, channel: int, key: int) -> None:
        if note_id is not None:
            if len(self._ids) > 4096:  # ids never released by the sender: forget the oldest
                self._ids.pop(next(iter(self._ids)))
            self._ids[note_id] = (channel, key)

    # ------------------------------------------------------------------ timing

    def _frame_for(self, due: float | None) -> int:
        """The output frame at which an event due at ``due`` (monotonic seconds) should sound."""
        if due is None:
            return -1
        frame = self.renderer.frame_at(due - self.output_latency)
        if frame <= self.renderer.frame:
            return -1
        frame = max(frame, self._last_timed_frame)  # the timed deque stays in frame order
        self._last_timed_frame = frame
        return frame

    def _emit(self, command: AudioCommand) -> None:
        (self.renderer.immediate if command.frame < 0 else self.renderer.timed).append(command)


class ControlThread:
    """Runs :class:`LiveControl` on its own thread, fed by one event queue.

    Events with a ``due`` time (OSC bundles) wait in a heap until shortly before they are due,
    then go to the audio thread with their exact frame.

    Args:
        control: the decisions.
    """

    def __init__(self, control: LiveControl) -> None:
        self.control = control
        self.events: queue.SimpleQueue[LiveEvent | None] = queue.SimpleQueue()
        self._later: list[tuple[float, int, LiveEvent]] = []
        self._order = itertools.count()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="mars-control", daemon=True)

    def put(self, event: LiveEvent) -> None:
        """Queue an event (any thread)."""
        self.events.put(event)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the event in hand."""
        self._stop = True
        self.events.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        prefer_realtime()
        while not self._stop:
            timeout = 1.0
            if self._later:
                timeout = max(0.0, self._later[0][0] - TIMED_LEAD_SECONDS - time.monotonic())
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                event = None
            now = time.monotonic()
            if event is not None:
                if event.due is not None and event.due - TIMED_LEAD_SECONDS > now:
                    heapq.heappush(self._later, (event.due, next(self._order), event))
                else:
                    self.control.handle(event)
            while self._later and self._later[0][0] - TIMED_LEAD_SECONDS <= now:
                self.control.handle(heapq.heappop(self._later)[2])
