"""The generation worker: keeps the model warm and fills the note cache in priority order, in batches.

It owns the :class:`NoteCache` (and through it the model and the persistent disk cache shared
with ``render``); no other thread touches either. Requests carry a priority - lower is more
urgent - and the worker always takes the most urgent first:

    0  a key being played whose exact note is not ready
    1  its neighbours (+/-1, +/-2 semitones, same velocity bucket)
    2  the same pitch at the adjacent velocity buckets
    3  the rest of the range (on preset load), nearest to middle C first
    4  the rest of the range at the other velocity buckets

Urgent requests (priority <= 1) that are waiting together are generated in one batch (a
chord is one model call); background requests go in smaller batches so an urgent one never
waits long behind them. Each finished note is handed to ``on_ready(key, sample)``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from engine.drivers.threads import prefer_realtime
from engine.model import live_note_source
from engine.note_cache import NoteCache, NoteKey
from engine.preset import Preset
from engine.synth.sample import NoteSample
from mars_model.errors import MarsError

URGENT = 1


@dataclass
class GenerationStats:
    """What the worker did; read by the status line (plain numbers, written by the worker only)."""

    requested: int = 0
    generated: int = 0
    disk_hits: int = 0
    batches: int = 0
    model_seconds: float = 0.0
    last_batch_seconds: float = 0.0
    warmup_seconds: float = 0.0
    queued: int = 0
    errors: int = 0
    last_error: str = ""

    @property
    def seconds_per_note(self) -> float:
        """Mean model time per generated note."""
        return self.model_seconds / self.generated if self.generated else 0.0


@dataclass(frozen=True)
class MadeNotes:
    """What one :meth:`NoteMaker.make` call brought in.

    Args:
        notes: ``(key, prepared note)`` for every key asked for, in order.
        generated: how many of them the model generated.
        from_disk: how many came from the disk cache.
    """

    notes: list[tuple[NoteKey, NoteSample]]
    generated: int
    from_disk: int


class NoteMaker(Protocol):
    """Makes notes for the worker: from the note cache, its disk, or the model."""

    model_id: str
    pitch_range: tuple[int, int]
    #: The instruments the model says it makes (``None``: it does not say); drums need their kit here.
    instruments: tuple[int, ...] | None
    warnings: list[str]
    #: Whether the model runs in this process (then the worker thread must stay an ordinary thread).
    in_process: bool

    def warm_up(self, preset: Preset) -> float:
        """Generate one note of ``preset`` (not kept) so the model is loaded and warm; returns seconds."""
        ...

    def make(self, batch: list[tuple[Preset, NoteKey]]) -> MadeNotes:
        """Bring the notes of ``batch`` in (from memory, disk or the model)."""
        ...

    def close(self) -> None:
        """Release the model (and the worker process)."""
        ...


class InProcessNoteMaker:
    """Notes made in this process, through a :class:`NoteCache` (tests; and where a process cannot start).

    Args:
        cache: the note cache; the worker thread becomes its only user.
    """

    in_process = True

    def __init__(self, cache: NoteCache) -> None:
        self.cache = cache
        source = cache.note_source()
        self.model_id = str(source.model_id)
        self.pitch_range = tuple(getattr(source, "pitch_range", (21, 108)))
        self.instruments = cache.instruments()
        self.warnings = cache.warnings

    def warm_up(self, preset: Preset) -> float:
        started = time.perf_counter()
        self.cache.note_source().generate([preset.request(60, 100, self.cache.seed)])
        return time.perf_counter() - started

    def make(self, batch: list[tuple[Preset, NoteKey]]) -> MadeNotes:
        return _make(self.cache, batch, keep=True)

    def close(self) -> None:
        pass


def _make(cache: NoteCache, batch: list[tuple[Preset, NoteKey]], keep: bool) -> MadeNotes:
    keys = []
    for preset, key in batch:
        cache.key(preset, key.pitch, key.velocity)  # registers the preset for the cache's requests
        keys.append(key)
    generated, disk = cache.stats.generated, cache.stats.disk_hits
    cache.fill(keys)
    notes = [(key, cache.get(key)) for key in keys]
    if not keep:  # the engine holds them now; a second copy here would only double the memory
        cache.forget(keys)
    return MadeNotes(notes, cache.stats.generated - generated, cache.stats.disk_hits - disk)


class ProcessNoteMaker:
    """Notes made in a worker process: the model, its Python loop and note preparation run there,
    so they never hold the audio process's GIL (the audio callback needs it every block).

    The process owns the :class:`NoteCache` (disk cache included) and hands each prepared
    note back through a pipe; the process is started with ``spawn`` (forking a process that
    runs audio threads is unsafe) and runs at a lower CPU priority (nice +5).

    Args:
        sample_rate, seed, cache_dir: as :class:`NoteCache` takes them.
        source: a picklable NoteSource to use; ``None`` loads the model there
            (:func:`engine.model.live_note_source`).
        device, backend: where and how the model runs.
    Raises:
        MarsError: the process could not load the model (the child's one-line reason).
    """

    in_process = False

    def __init__(self, sample_rate: int, seed: int, cache_dir, source=None, device: str = "auto",
                 backend: str = "eager", start_timeout: float = 300.0) -> None:  # fmt: skip
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_worker_main, name="mars-generation",
                                        args=(child, sample_rate, seed, cache_dir, source, device, backend),
                                        daemon=True)  # fmt: skip
        self._process.start()
        child.close()
        self.warnings: list[str] = []
        if not self._conn.poll(start_timeout):
            self.close()
            raise MarsError(f"the generation process did not start within {start_timeout:.0f} s")
        reply = self._receive()
        self.model_id, self.pitch_range, self.instruments = reply[1], tuple(reply[2]), reply[3]

    def _receive(self):
        try:
            reply = self._conn.recv()
        except (EOFError, OSError):
            raise MarsError("the generation process died; see its message above") from None
        if reply[0] == "error":
            raise MarsError(reply[1])
        return reply

    def warm_up(self, preset: Preset) -> float:
        self._conn.send(("warm", preset))
        return float(self._receive()[1])

    def make(self, batch: list[tuple[Preset, NoteKey]]) -> MadeNotes:
        self._conn.send(("make", batch))
        _, made, warnings = self._receive()
        self.warnings.extend(w for w in warnings if w not in self.warnings)
        return made

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("stop",))
            except (OSError, ValueError):
                pass
            self._process.join(30.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)
        self._conn.close()


def _worker_main(conn, sample_rate: int, seed: int, cache_dir, source, device: str, backend: str) -> None:
    """The generation process: load the model, then make notes on request until told to stop."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the player, which stops us in order
    try:
        os.nice(5)
    except OSError:
        pass
    try:
        if source is None:
            source = live_note_source(device, backend)
        cache = NoteCache(sample_rate, source, str(source.model_id), seed, cache_dir, progress=False)
        conn.send(("ready", str(source.model_id), tuple(getattr(source, "pitch_range", (21, 108))),
                   cache.instruments()))  # fmt: skip
    except MarsError as err:
        conn.send(("error", str(err)))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if request[0] == "stop":
                return
            if request[0] == "warm":
                started = time.perf_counter()
                source.generate([request[1].request(60, 100, seed)])
                conn.send(("warm", time.perf_counter() - started))
            elif request[0] == "make":
                conn.send(("made", _make(cache, request[1], keep=False), list(cache.warnings)))
        except (MarsError, ValueError, RuntimeError, OSError) as err:
            conn.send(("error", str(err)))


class GenerationWorker:
    """A thread that brings notes into the cache, most urgent first.

    Args:
        maker: makes the notes (:class:`InProcessNoteMaker` or :class:`ProcessNoteMaker`).
        on_ready: called from the worker thread with ``(key, sample)`` for every note ready.
        urgent_batch: most notes in one urgent batch.
        background_batch: most notes in one background batch.
        warmup: a preset whose middle C is generated once at start (not stored), so the first
            real request finds the model loaded and its kernels warm; ``None`` skips it.
    """

    def __init__(self, maker: NoteMaker, on_ready: Callable[[NoteKey, NoteSample], None],
                 urgent_batch: int = 16, background_batch: int = 4, warmup: Preset | None = None) -> None:  # fmt: skip
        self.maker = maker
        self.on_ready = on_ready
        self.urgent_batch = urgent_batch
        self.background_batch = background_batch
        self.warmup = warmup
        self.stats = GenerationStats()
        self.ready = threading.Event()  # set once warm-up is done
        self._heap: list[tuple[int, int, int, NoteKey]] = []
        self._best: dict[NoteKey, int] = {}  # key -> best priority queued
        self._done: set[NoteKey] = set()
        self._presets: dict[str, Preset] = {}
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="mars-generation", daemon=True)

    # ---------------------------------------------------------------- any thread

    def start(self) -> None:
        """Start the thread (it loads the model and warms it up first)."""
        self._thread.start()

    def request(self, preset: Preset, key: NoteKey, priority: int, rank: int = 0) -> None:
        """Ask for ``key`` (a note of ``preset``) at ``priority``; ``rank`` orders within a priority."""
        with self._wake:
            if key in self._done or self._best.get(key, 1 << 30) <= priority:
                return
            self._presets.setdefault(key.identity, preset)
            self._best[key] = priority
            heapq.heappush(self._heap, (priority, rank, next(self._order), key))
            self.stats.requested += 1
            self.stats.queued = len(self._best)
            self._wake.notify()

    def cancel_background(self) -> None:
        """Drop every queued request of priority > 2 (the range of a preset no longer in use)."""
        with self._wake:
            self._heap = [entry for entry in self._heap if entry[0] <= 2]
            heapq.heapify(self._heap)
            self._best = {key: p for key, p in self._best.items() if p <= 2}
            self.stats.queued = len(self._best)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in progress (its notes are written to the disk cache first)."""
        with self._wake:
            self._stop = True
            self._heap.clear()
            self._best.clear()
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.maker.close()

    # ---------------------------------------------------------------- worker thread

    def _run(self) -> None:
        if not self.maker.in_process:
            prefer_realtime()  # this thread only waits on the worker process's pipe
        self._warm_up()
        self.ready.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._generate(batch)

    def _warm_up(self) -> None:
        if self.warmup is None:
            return
        try:
            self.stats.warmup_seconds = self.maker.warm_up(self.warmup)
        except (MarsError, ValueError, RuntimeError) as err:
            self.stats.errors += 1
            self.stats.last_error = f"model warm-up failed: {err}"

    def _next_batch(self) -> list[NoteKey] | None:
        with self._wake:
            while not self._heap and not self._stop:
                self._wake.wait()
            if self._stop:
                return None
            batch: list[NoteKey] = []
            urgent = False
            limit = self.background_batch
            while self._heap and len(batch) < limit:
                priority, _, _, key = self._heap[0]
                if self._best.get(key) != priority or key in self._done:
                    heapq.heappop(self._heap)  # stale: re-queued at a better priority, or already made
                    continue
                if batch and (priority <= URGENT) != urgent:
                    break  # never mix urgent and background notes in one batch
                heapq.heappop(self._heap)
                if not batch:
                    urgent = priority <= URGENT
                    limit = self.urgent_batch if urgent else self.background_batch
                batch.append(key)
                del self._best[key]
            self.stats.queued = len(self._best)
            return batch

    def _generate(self, batch: list[NoteKey]) -> None:
        if not batch:
            return
        started = time.perf_counter()
        try:
            made = self.maker.make([(self._presets[key.identity], key) for key in batch])
        except (MarsError, ValueError, RuntimeError, OSError) as err:
            self.stats.errors += 1
            self.stats.last_error = str(err)
            with self._wake:
                self._done.update(batch)  # do not retry forever; the keys play from neighbours
            return
        elapsed = time.perf_counter() - started
        self.stats.disk_hits += made.from_disk
        if made.generated:
            self.stats.generated += made.generated
            self.stats.batches += 1
            self.stats.model_seconds += elapsed
            self.stats.last_batch_seconds = elapsed
        with self._wake:
            self._done.update(batch)
        for key, sample in made.notes:
            self.on_ready(key, sample)
