"""The note cache: each distinct (preset, pitch, velocity bucket) note is generated once, in batches,
prepared for the output rate, and kept in memory and (optionally) on disk across runs.

On disk, notes live under ``<cache dir>/<model id>/``; a file's name hashes the model
request (instrument weights, sampling, pitch, velocity, seed), so two presets that ask for
the same notes share them, and changing a preset's sampling makes new ones. Each note is
stored twice: as generated (``*.raw.npz``, any output rate can be prepared from it) and
prepared for one output rate and playback calibration (``*.<rate>-<calibration>.note``, read
as is by a warm render).

Drum notes (a kit's instrument, 128 and up) are asked for at their drum key, whatever the
model's pitch range, and keep their generated decay; they play at the real kit's level for
that key and velocity (the playback calibration's kit curve).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.calibration import Calibration, envelope_gain, load_calibration
from engine.preset import Preset
from engine.synth.loudness import tilt_to_centroid
from engine.synth.sample import NoteSample, StaleNoteFile, prepare_note
from mars_model.api import FIRST_KIT, VELOCITY_BUCKETS, NoteRequest, NoteSource, velocity_bucket
from mars_model.errors import MarsError

#: Where the note cache keeps the last measured generation speed per model (``render --dry-run``).
SPEED_FILE = "generation-speed.json"
#: Seconds faded out at the end of a drum note (the note set cuts every note at 4 s; a cymbal still rings there).
KIT_TAIL_FADE_SECONDS = 0.02


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mars-synth``, or ``~/.cache/mars-synth`` when XDG_CACHE_HOME is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mars-synth"


@dataclass(frozen=True)
class NoteKey:
    """One distinct note: a preset's identity (instrument and sampling), a pitch, a velocity bucket."""

    identity: str
    pitch: int
    bucket: int

    @property
    def velocity(self) -> int:
        """The velocity the note is generated at (the bucket's)."""
        return VELOCITY_BUCKETS[self.bucket]


@dataclass
class CacheStats:
    """What a render asked of the cache."""

    memory_hits: int = 0
    disk_hits: int = 0
    generated: int = 0
    batches: int = 0

    @property
    def hits(self) -> int:
        """Notes found without generating (memory or disk)."""
        return self.memory_hits + self.disk_hits


@dataclass
class NoteCache:
    """Prepared notes by :class:`NoteKey`, generated on demand through a NoteSource.

    Args:
        sample_rate: the output rate notes are prepared for.
        source: the NoteSource, or a function returning it (called only when a note must
            be generated, so a warm render never loads the model).
        model_id: the model's id for disk keys (default: ask the source, loading it).
        seed: sampling seed for every note.
        cache_dir: disk cache root (``None``: memory only).
        batch_size: notes per ``generate`` call.
        progress: show a progress bar while generating.
        calibration: the real instruments' levels; each prepared note gets its preset
            instrument's target curve at its pitch (``None``: notes stay uncalibrated).
        known_instruments: the instruments the source makes, when known without loading it
            (the shipped model's, read from its weight file); see :meth:`instruments`.

    Not thread-safe: one thread (the renderer, or live play's generation worker) fills it;
    the :class:`NoteSample` objects it hands out are immutable and may go to any thread.
    """

    sample_rate: int
    source: NoteSource | Callable[[], NoteSource]
    model_id: str | None = None
    seed: int = 0
    cache_dir: Path | None = None
    batch_size: int = 16
    progress: bool = True
    calibration: Calibration | None = field(default_factory=load_calibration)
    known_instruments: tuple[int, ...] | None = None
    stats: CacheStats = field(default_factory=CacheStats)
    warnings: list[str] = field(default_factory=list)
    _notes: dict[NoteKey, NoteSample] = field(default_factory=dict, repr=False)
    # Generated but not yet prepared: (wave, its rate, root pitch), a third of a prepared note's
    # size at 48 kHz; :meth:`get` prepares on first use, so a render holds few prepared notes.
    _raw: dict[NoteKey, tuple[np.ndarray, int, int]] = field(default_factory=dict, repr=False)
    _prepare_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _presets: dict[str, Preset] = field(default_factory=dict, repr=False)

    def key(self, preset: Preset, pitch: int, velocity: int) -> NoteKey:
        """The note a key press needs: the preset, the pitch, the nearest velocity bucket."""
        identity = preset.identity()
        self._presets.setdefault(identity, preset)
        return NoteKey(identity, int(pitch), velocity_bucket(velocity))

    def get(self, key: NoteKey) -> NoteSample:
        """The prepared note for ``key`` (generated now if :meth:`fill` did not bring it in).

        Safe to call from a second thread that prepares notes ahead (see :meth:`prepare`).
        """
        note = self._notes.get(key)
        if note is None:
            with self._prepare_lock:
                if key not in self._notes and key not in self._raw:
                    self.fill([key])
                note = self._notes.get(key) or self._prepare(key)
        return note

    def prepare(self, key: NoteKey) -> None:
        """Prepare a generated note for playing now, if it waits unprepared (else do nothing)."""
        if key in self._raw:
            with self._prepare_lock:
                if key in self._raw:
                    self._prepare(key)

    def _prepare(self, key: NoteKey) -> NoteSample:
        wave, rate, root = self._raw.pop(key)
        note = self._prepare_generated(key, wave, rate, root)
        self._notes[key] = note
        self._save(self._disk_path(key, self._prepared_suffix()), note.save)
        return note

    def fill(self, keys: Iterable[NoteKey]) -> None:
        """Bring every key into memory: from memory, then disk, then the model in batches."""
        wanted = list(dict.fromkeys(keys))
        missing: list[NoteKey] = []
        for key in wanted:
            if key in self._notes or key in self._raw:
                self.stats.memory_hits += 1
                continue
            note = self._load(key)
            if note is not None:
                self._notes[key] = note
                self.stats.disk_hits += 1
            else:
                missing.append(key)
        if missing:
            self._generate(missing)

    def request(self, key: NoteKey) -> NoteRequest:
        """What the note source is asked for ``key``: the preset (or its stand-in) at the key's
        pitch (kept inside the model's range) and velocity layer, with the cache's seed."""
        source = self.note_source()
        return self._playable(self._presets[key.identity], source).request(self._root(key, source), key.velocity,
                                                                           self.seed)  # fmt: skip

    def instruments(self) -> tuple[int, ...] | None:
        """The instruments the note source says it makes (its ``instruments``), or ``None`` when it
        does not say. Asked of the source when it is loaded, else taken from ``known_instruments``
        (so a render whose notes are all cached never loads the model to learn it)."""
        if isinstance(self.source, NoteSource):
            known = getattr(self.source, "instruments", None)
        else:
            known = self.known_instruments
        return None if known is None else tuple(int(i) for i in known)

    def has(self, key: NoteKey) -> bool:
        """Whether ``key`` would come without generating (in memory, or on disk: prepared or raw)."""
        if key in self._notes or key in self._raw:
            return True
        prepared = self._disk_path(key, self._prepared_suffix())
        return prepared is not None and (prepared.is_file() or prepared.with_name(
            prepared.name.replace("." + self._prepared_suffix(), ".raw.npz")).is_file())  # fmt: skip

    def measured_speed(self) -> float | None:
        """Notes per second of the last generation of 16 or more notes by this model with this
        cache directory (:data:`SPEED_FILE`), or ``None`` if there was none."""
        if self.cache_dir is None:
            return None
        try:
            speeds = json.loads((self.cache_dir / SPEED_FILE).read_text())
            return float(speeds[self._model_id()])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _record_speed(self, notes: int, seconds: float) -> None:
        if self.cache_dir is None or notes < 16 or seconds <= 0:
            return
        path = self.cache_dir / SPEED_FILE
        try:
            speeds = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            speeds = {}
        speeds[self._model_id()] = round(notes / seconds, 2)
        self._save(path, lambda tmp: tmp.write_text(json.dumps(speeds, indent=1)))

    def forget(self, keys: Iterable[NoteKey]) -> None:
        """Drop these notes from memory (their disk copies stay): for a user that keeps them itself."""
        for key in keys:
            self._notes.pop(key, None)
            self._raw.pop(key, None)

    def note_source(self) -> NoteSource:
        """The NoteSource (loaded now when the cache was given a function that returns it)."""
        if not isinstance(self.source, NoteSource):
            self.source = self.source()
        return self.source

    # ----------------------------------------------------------------- internals

    def _model_id(self) -> str:
        if self.model_id is None:
            self.model_id = str(self.note_source().model_id)
        return self.model_id

    def _disk_path(self, key: NoteKey, suffix: str) -> Path | None:
        preset = self._presets.get(key.identity)
        if self.cache_dir is None or preset is None or preset.cache != "disk":
            return None
        digest = hashlib.sha1(f"{key.identity};p={key.pitch};v={key.velocity};s={self.seed}".encode()).hexdigest()
        model = "".join(c if c.isalnum() or c in "-_." else "_" for c in self._model_id())
        return self.cache_dir / model / f"{digest[:24]}.{suffix}"

    def _instrument(self, key: NoteKey, root: int) -> dict[int, float]:
        """The key's preset instrument (the file's program when the GM map plays it, whatever
        stand-in the model generated it with): the one the calibration is looked up for."""
        return self._presets[key.identity].request(root, key.velocity, 0).instrument_weights()

    def _is_kit(self, key: NoteKey) -> bool:
        return self._presets[key.identity].is_kit

    def _root(self, key: NoteKey, source: NoteSource) -> int:
        """The pitch a key's note is generated at: the key, kept inside the model's range
        (a drum key is not a pitch: it is asked for as it is)."""
        if self._is_kit(key):
            return key.pitch
        low, high = source.pitch_range
        return min(max(key.pitch, low), high)

    def _target(self, key: NoteKey, root: int, level_db: float) -> np.ndarray | None:
        """The level per velocity to play the key's note at: the real instrument's at ``root``
        (for a drum, the real kit's on that key)."""
        if self._is_kit(key):
            kit = int(self._presets[key.identity].instrument) - FIRST_KIT
            curve = self.calibration.kit_curve(kit, key.pitch) if self.calibration is not None else None
            if curve is not None:
                return curve
            # Not measured (no calibration, or a kit or key the file lacks): the note's own level
            # at its velocity layer, moved along General MIDI's 40 dB curve to the velocity played.
            velocities = np.maximum(np.arange(128), 1) / key.velocity
            return (level_db + 40.0 * np.log10(velocities)).astype(np.float32)
        if self.calibration is None:
            return None
        return self.calibration.target_curve(self._instrument(key, root), root)

    def _prepared_suffix(self) -> str:
        """A prepared note's file suffix: its output rate and the calibration it was shaped by."""
        shaped = f"-{self.calibration.fingerprint}" if self.calibration is not None else ""
        return f"{self.sample_rate}{shaped}.note"

    def _prepare_generated(self, key: NoteKey, wave: np.ndarray, rate: int, root: int) -> NoteSample:
        """A generated note prepared for playing: given the real instrument's held-part envelope
        and brightness (see :mod:`engine.calibration`, where the calibration has them), and its
        target levels."""
        if self._is_kit(key):
            wave = np.array(wave, np.float32)
            fade = min(wave.shape[0], int(KIT_TAIL_FADE_SECONDS * rate))
            wave[wave.shape[0] - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
            note = prepare_note(wave, rate, self.sample_rate, root)
            return dataclasses.replace(note, target_db=self._target(key, root, note.level_db))
        if self.calibration is None:
            return prepare_note(wave, rate, self.sample_rate, root)
        instrument = self._instrument(key, root)
        wave = np.asarray(wave, np.float32)
        # The envelope first: reweighting the note's frames moves its average brightness, a
        # static tilt afterwards moves it back without changing the envelope's shape.
        envelope = self.calibration.target_envelope(instrument, root)
        if envelope is not None:
            wave = wave * envelope_gain(wave, rate, envelope)
        centroid = self.calibration.target_centroid(instrument, root, key.velocity)
        if centroid is not None:
            wave = tilt_to_centroid(wave, rate, centroid)
        return prepare_note(wave, rate, self.sample_rate, root, self.calibration.target_curve(instrument, root))

    def _load(self, key: NoteKey) -> NoteSample | None:
        prepared = self._disk_path(key, self._prepared_suffix())
        if prepared is None:
            return None
        try:
            if prepared.is_file():
                try:
                    note = NoteSample.load(prepared)
                    return dataclasses.replace(note, target_db=self._target(key, note.root_pitch, note.level_db))
                except StaleNoteFile:
                    pass  # prepared by an older version: prepare it again from the raw note
            raw = prepared.with_name(prepared.name.replace("." + self._prepared_suffix(), ".raw.npz"))
            if raw.is_file():
                with np.load(raw) as arrays:
                    wave, meta = arrays["wave"], arrays["meta"]
                root = int(meta[1])
                rate = int(meta[0])
                note = self._prepare_generated(key, wave, rate, root)
                self._save(prepared, note.save)
                return note
        except (OSError, ValueError, KeyError) as err:
            self.warnings.append(f"ignored a damaged note in the cache ({err}); it is generated again")
        return None

    def _save(self, path: Path | None, write: Callable[[Path], None]) -> None:
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(tmp)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            message = (f"cannot write the note cache at {self.cache_dir} ({err.strerror or err}); notes are "
                       "kept in memory only (use --cache-dir DIR or --no-cache)")  # fmt: skip
            if message not in self.warnings:
                self.warnings.append(message)
            self.cache_dir = None

    def _playable(self, preset: Preset, source: NoteSource) -> Preset:
        """The preset with an instrument the source knows (:meth:`Preset.playable`): a source
        may list what it makes (``instruments``, optional in the NoteSource protocol; MARS's
        NoteGenerator refuses anything else). A stand-in is warned about once per program."""
        playable, warning = preset.playable(getattr(source, "instruments", None))
        if warning is not None:
            self._warn_once(warning)
        return playable

    def _warn_once(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _generate(self, keys: list[NoteKey]) -> None:
        from tqdm import tqdm

        source = self.note_source()
        bar = tqdm(total=len(keys), unit="note", desc=f"generating {len(keys)} notes", disable=not self.progress,
                   file=sys.stderr, leave=False, smoothing=0.1)  # fmt: skip
        started = time.perf_counter()
        try:
            roots = [self._root(key, source) for key in keys]
            requests = [self.request(key) for key in keys]

            def keep(first: int, waves: np.ndarray) -> None:
                waves = np.asarray(waves)
                count = min(self.batch_size, len(keys) - first)
                if waves.ndim != 2 or waves.shape[0] != count:
                    raise MarsError(f"the note source returned shape {waves.shape}, expected [{count}, N]")
                self.stats.batches += 1
                for key, root, wave in zip(keys[first : first + count], roots[first : first + count], waves, strict=True):
                    self._raw[key] = (np.array(wave, np.float32), source.sample_rate, root)
                    self.stats.generated += 1
                    meta = np.array([source.sample_rate, root], np.int64)
                    self._save(self._disk_path(key, "raw.npz"),
                               lambda path, w=wave, m=meta: _save_raw(path, w, m))  # fmt: skip
                bar.update(count)

            batches = getattr(source, "generate_batches", None)  # the model's pipelined batches
            if batches is not None:
                for first, waves in batches(requests, self.batch_size):
                    keep(first, waves)
            else:  # any NoteSource
                for start in range(0, len(keys), self.batch_size):
                    keep(start, source.generate(requests[start : start + self.batch_size]))
            self._record_speed(len(keys), time.perf_counter() - started)
        finally:
            bar.close()


def _save_raw(path: Path, wave: np.ndarray, meta: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, wave=np.asarray(wave, np.float32), meta=meta)
