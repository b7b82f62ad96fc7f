"""The narrow public API between the models and the engine: note requests in, waveforms out.

``engine`` imports only this module (and ``mars_model.commands`` for the CLI). The
concrete generator is :class:`mars_model.generator.NoteGenerator` (MARS); anything with
the same ``NoteSource`` surface can drive the engine.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mars_model.errors import MarsError

#: Velocities the note set is rendered at; the model conditions on the nearest one.
VELOCITY_BUCKETS = (25, 50, 75, 100, 127)
#: Instruments are GM programs 0-127, then drum kits: instrument ``FIRST_KIT + k`` is the kit of
#: bank 128, program ``k`` (Standard 128, TR-808 153, Orchestra 176).
FIRST_KIT = 128
#: Rate in Hz of the notes the shipped model makes (NSynth's: content up to 8 kHz). The loaded
#: model reports its own as ``NoteGenerator.sample_rate``; this is for callers that must not
#: load torch (``render`` with every note cached), and a test keeps the two equal.
MODEL_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn.

    Args:
        temperature: softmax temperature (> 0); lower is more conservative.
        top_k: keep the k most likely tokens (0 = all).
        top_p: nucleus sampling mass in (0, 1] (1 = off).
        guidance: classifier-free guidance weight (0 = the conditional model alone).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance: float = 0.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise MarsError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise MarsError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise MarsError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.guidance < 0:
            raise MarsError(f"guidance must be >= 0, got {self.guidance}")


@dataclass(frozen=True)
class NoteRequest:
    """One note to generate.

    Args:
        instrument: a GM program number (0-127), or a mapping ``{program: weight}`` for a
            timbre morph (weights are normalised to sum to 1).
        pitch: MIDI pitch.
        velocity: MIDI velocity 1..127.
        seed: sampling seed; the same request and seed give the same audio.
        sampling: token sampling settings.
    """

    instrument: int | Mapping[int, float]
    pitch: int
    velocity: int
    seed: int = 0
    sampling: Sampling = field(default_factory=Sampling)

    def __post_init__(self) -> None:
        if not 1 <= int(self.velocity) <= 127:
            raise MarsError(f"velocity must be in 1..127, got {self.velocity}")
        if not 0 <= int(self.pitch) <= 127:
            raise MarsError(f"pitch must be a MIDI note 0..127, got {self.pitch}")

    def instrument_weights(self) -> dict[int, float]:
        """The instrument as ``{program: weight}``: weights summing to 1, zero weights dropped."""
        if isinstance(self.instrument, Mapping):
            total = float(sum(self.instrument.values()))
            if total <= 0 or any(w < 0 for w in self.instrument.values()):
                raise MarsError(f"morph weights must be >= 0 and not all 0, got {dict(self.instrument)}")
            # Zero weights contribute nothing, so they are not part of the note's identity.
            return {int(k): float(w) / total for k, w in self.instrument.items() if w > 0}
        return {int(self.instrument): 1.0}

    def cache_key(self) -> str:
        """A stable text key for caches (instrument weights, pitch, velocity, seed, sampling)."""
        weights = ",".join(f"{k}:{w:.4f}" for k, w in sorted(self.instrument_weights().items()))
        s = self.sampling
        return (f"i={weights};p={self.pitch};v={self.velocity};s={self.seed};"
                f"t={s.temperature:g};k={s.top_k};tp={s.top_p:g};g={s.guidance:g}")  # fmt: skip


def velocity_bucket(velocity: int) -> int:
    """Index of the nearest rendered velocity in :data:`VELOCITY_BUCKETS`."""
    return int(np.argmin([abs(velocity - v) for v in VELOCITY_BUCKETS]))


@runtime_checkable
class NoteSource(Protocol):
    """What the engine needs from a note generator.

    Attributes:
        sample_rate: rate of the returned waveforms in Hz.
        pitch_range: ``(lowest, highest)`` MIDI pitch the model can make.
        model_id: a short hash of the weights, for cache keys.
    """

    sample_rate: int
    pitch_range: tuple[int, int]
    model_id: str

    def generate(self, requests: Sequence[NoteRequest]) -> np.ndarray:
        """Generate notes: returns float32 ``[len(requests), N]`` at ``sample_rate``."""
        ...


def weights_dir() -> Path:
    """The folder holding the shipped weight files (``mars_model/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def _short_hash(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:8]


def model_id(tokenizer_path: str | os.PathLike, autoregressor_path: str | os.PathLike) -> str:
    """Id of a tokenizer + autoregressor pair: 8 hex digits of each file's SHA-256.

    Computed without importing torch, so a render whose notes are all cached never loads it.
    """
    return _short_hash(tokenizer_path) + _short_hash(autoregressor_path)


def default_model_id() -> str:
    """Id of the shipped default model (what ``load_generator()`` reports as ``model_id``)."""
    tok, ar = weights_dir() / "tokenizer.pt", weights_dir() / "autoregressor.pt"
    for path in (tok, ar):
        if not path.is_file():
            raise MarsError(f"model file {path} is missing; reinstall mars-synth or train one (see README)")
    return model_id(tok, ar)


class _MetaUnpickler(pickle.Unpickler):
    """Reads a weight file's plain-Python parts without torch: tensors and any other class come back as ``None``."""

    _SAFE = {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._SAFE:
            return super().find_class(module, name)
        return lambda *args, **kwargs: None

    def persistent_load(self, pid):
        return None


def default_model_instruments() -> tuple[int, ...] | None:
    """The instruments the shipped model was trained on (what ``load_generator().instruments``
    reports), read from its weight file without torch; ``None`` when the file does not list them.

    Instruments 0-127 are GM programs; 128 and up are drum kits (128 + the kit's program).
    """
    path = weights_dir() / "autoregressor.pt"
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            blob = _MetaUnpickler(io.BytesIO(archive.read(name))).load()
        instruments = blob["meta"].get("instruments")
    except (OSError, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError, KeyError, TypeError,
            AttributeError, ValueError, EOFError) as err:  # fmt: skip
        raise MarsError(f"cannot read the model file {path} ({type(err).__name__}); reinstall mars-synth") from None
    return None if instruments is None else tuple(int(i) for i in instruments)
