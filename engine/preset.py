"""Presets: YAML files naming an instrument (GM program or a morph), envelope, gain, sampling and cache policy.

A preset file looks like this (every key but ``instrument`` is optional)::

    description: Acoustic grand piano
    family: keyboard            # NSynth family, informational
    instrument: 0               # GM program 0-127, or a morph {0: 0.5, 48: 0.5}
    envelope: {attack: 0.001, release: 0.4}   # seconds; release default: the instrument's measured
    stand_in: 48                # played when the model does not know the instrument (optional)
    gain: 1.0                   # linear
    velocity: {sensitivity: 1.0}  # scales the real instrument's velocity curve (0: no dynamics)
    sampling: {temperature: 1.0, top_k: 0, top_p: 1.0, guidance: 0.0}
    cache: disk                 # disk: keep generated notes across runs; memory: this run only

Without an ``envelope.release`` a preset releases as its instrument does: the release time
measured from the real instrument's notes (:mod:`engine.calibration`), which follows the
GM program when the preset plays a file's program. ``envelope: {one_shot: true}`` makes a
struck sound that plays its note to the end whatever key up and the pedal do. A model that
does not know the instrument plays a stand-in, with a warning (:meth:`Preset.playable`). The
name is the file name without ``.yaml``. Presets are validated once, at load, and a bad one
raises one :class:`MarsError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.calibration import DEFAULT_RELEASE, load_calibration
from engine.synth.voice import Patch
from mars_model.api import FIRST_KIT, NoteRequest, Sampling
from mars_model.errors import MarsError

#: The note set's families of the GM programs NSynth has no family for (``mars_model/data/gm_families.yaml``).
GM_ONLY_FAMILIES = ("synth_pad", "synth_effect", "orchestra_hit", "percussive", "sound_effect")
#: Instrument families (informational ``family`` key): NSynth's eleven, then :data:`GM_ONLY_FAMILIES`.
FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
            "synth_lead", "vocal", *GM_ONLY_FAMILIES)  # fmt: skip
CACHE_POLICIES = ("disk", "memory")
_KEYS = {"description", "family", "instrument", "stand_in", "envelope", "gain", "sampling", "cache", "velocity"}


@dataclass(frozen=True)
class Preset:
    """A validated preset.

    Attributes:
        name: the file's stem (``grand_piano``).
        instrument: GM program 0-127, or ``{program: weight}`` for a morph.
        envelope: the engine's attack and release on top of the generated note.
        sampling: how the model draws tokens.
        cache: ``"disk"`` or ``"memory"``.
        path: where it was loaded from (``None`` for presets made in code).
        stand_in: the instrument to play when a model knows neither ``instrument`` nor
            ``fallback`` (``None``: the nearest program it knows).
    """

    name: str
    instrument: int | Mapping[int, float]
    envelope: Patch = field(default_factory=Patch)
    sampling: Sampling = field(default_factory=Sampling)
    cache: str = "disk"
    description: str = ""
    family: str | None = None
    path: Path | None = None
    #: The instrument to use when a model does not know ``instrument`` (set by :meth:`with_program`).
    fallback: int | Mapping[int, float] | None = None
    #: Whether ``envelope.release`` is the instrument's measured release (no ``release`` in the file).
    release_measured: bool = False
    stand_in: int | Mapping[int, float] | None = None

    def __str__(self) -> str:
        return f"{self.name}: {self.description}" if self.description else self.name

    @property
    def is_kit(self) -> bool:
        """Whether this preset plays a drum kit (instrument ``FIRST_KIT`` + kit program), whose
        keys are drums, not pitches."""
        return isinstance(self.instrument, int) and self.instrument >= FIRST_KIT

    @property
    def patch(self) -> Patch:
        """Envelope and gain for the voices playing this preset."""
        return self.envelope

    def request(self, pitch: int, velocity: int, seed: int) -> NoteRequest:
        """The model request for one note of this preset."""
        return NoteRequest(instrument=self.instrument, pitch=pitch, velocity=velocity, seed=seed,
                           sampling=self.sampling)  # fmt: skip

    def with_program(self, program: int) -> Preset:
        """This preset's envelope, gain and sampling with another GM program as the instrument
        (and that program's measured release, unless the preset sets its own)."""
        envelope = self.envelope
        if self.release_measured:
            envelope = dataclasses.replace(envelope, release=measured_release(int(program), envelope.release))
        return dataclasses.replace(self, name=f"{self.name}@{program}", instrument=int(program),
                                   fallback=self.instrument, envelope=envelope)  # fmt: skip

    def identity(self) -> str:
        """What makes the generated notes differ (instrument and sampling), for cache keys."""
        return self.request(60, 100, 0).cache_key().replace(";p=60;v=100;s=0", "")

    def knows(self, instruments: Iterable[int]) -> bool:
        """Whether a model that makes ``instruments`` plays this preset's instrument as itself."""
        return set(instrument_weights(self.instrument)) <= set(instruments)

    def playable(self, known: Iterable[int] | None) -> tuple[Preset, str | None]:
        """This preset with an instrument the model knows, and a warning when it is a stand-in.

        Args:
            known: the instruments the model makes (a NoteSource's ``instruments``); ``None``
                or empty when it does not say: the preset plays as it is.
        Returns:
            ``(preset, None)`` when the model knows the instrument (or it is a drum kit, never
            replaced by a GM program); else the preset with the first of these that the model
            knows: ``fallback`` (the family preset's own program, when the GM map plays a
            file's program), ``stand_in``, per program the nearest known program of its GM
            group of eight, else the nearest known program; and one line naming both, e.g.
            ``GM program 89 is not in this model; played with 48``.

        Example::

            warm = find_preset("warm_pad").with_program(90)
            warm.playable([0, 48, 80])[1]   # 'GM program 90 is not in this model; played with 48'
        """
        programs = sorted({int(k) for k in known or () if int(k) < FIRST_KIT})
        asked = instrument_weights(self.instrument)
        if not programs or min(asked) >= FIRST_KIT or self.knows(programs):
            return self, None
        candidates = [c for c in (self.fallback, self.stand_in) if c is not None]
        instrument = next((c for c in candidates if set(instrument_weights(c)) <= set(programs)), None)
        if instrument is None:
            nearest: dict[int, float] = {}
            for program, weight in asked.items():
                near = min(programs, key=lambda k, p=program: (k // 8 != p // 8, abs(k - p)))
                nearest[near] = nearest.get(near, 0.0) + weight
            instrument = next(iter(nearest)) if len(nearest) == 1 else nearest
        played = dataclasses.replace(self, instrument=instrument, fallback=None, stand_in=None)
        return played, (f"GM program {_program_list(asked)} is not in this model; "
                        f"played with {_program_list(instrument_weights(instrument))}")  # fmt: skip


def instrument_weights(instrument: int | Mapping[int, float]) -> dict[int, float]:
    """An instrument as ``{program: weight}`` (a GM program: weight 1; a morph as written)."""
    return {int(instrument): 1.0} if isinstance(instrument, int) else {int(p): float(w) for p, w in instrument.items()}


def _program_list(weights: Mapping[int, float]) -> str:
    return "+".join(str(p) for p in sorted(weights))


def measured_release(instrument: int | Mapping[int, float], default: float = DEFAULT_RELEASE) -> float:
    """The release time measured from the real instrument's notes, else ``default``."""
    release = load_calibration().release(instrument_weights(instrument))
    return default if release is None else release


def preset_dir() -> Path:
    """The installed presets: ``engine/presets`` (the repository's top-level ``presets/``)."""
    return Path(__file__).resolve().parent / "presets"


def _fail(path: Path, key: str, problem: str) -> MarsError:
    return MarsError(f"preset {path}: '{key}' {problem}")


def _number(path: Path, key: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, key, f"must be a number, got {value!r}")
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise _fail(path, key, f"must be in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def _instrument(path: Path, value: Any, key: str = "instrument") -> int | dict[int, float]:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 127:
        return value
    if isinstance(value, Mapping) and value:
        morph: dict[int, float] = {}
        for program, weight in value.items():
            if not (isinstance(program, int) and 0 <= program <= 127):
                raise _fail(path, key, f"morph keys must be GM programs 0-127, got {program!r}")
            morph[program] = _number(path, f"{key}.{program}", weight, 0.0, 1e6, low_open=True)
        return morph
    raise _fail(path, key, f"must be a GM program 0-127 or a morph like {{0: 0.5, 48: 0.5}}, got {value!r}")


def _section(path: Path, key: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(path, key, f"must be a mapping with keys {sorted(allowed)}, got {value!r}")
    unknown = set(value) - allowed
    if unknown:
        raise _fail(path, f"{key}.{sorted(unknown)[0]}", f"is not a known key; allowed: {', '.join(sorted(allowed))}")
    return dict(value)


def parse_preset(data: Any, path: Path, name: str | None = None) -> Preset:
    """Validate a preset's parsed YAML.

    Args:
        data: the YAML document (a mapping).
        path: the file, for error messages.
        name: the preset's name (default: the file's stem).
    Raises:
        MarsError: naming the file, the key and what is allowed.
    """
    if not isinstance(data, Mapping):
        raise MarsError(f"preset {path}: must be a YAML mapping with keys {', '.join(sorted(_KEYS))}")
    unknown = set(data) - _KEYS
    if unknown:
        raise _fail(path, str(sorted(unknown, key=str)[0]), f"is not a known key; allowed: {', '.join(sorted(_KEYS))}")
    if "instrument" not in data:
        raise _fail(path, "instrument", "is missing: give a GM program 0-127 or a morph {program: weight}")
    instrument = _instrument(path, data["instrument"])
    stand_in = None if data.get("stand_in") is None else _instrument(path, data["stand_in"], "stand_in")
    env = _section(path, "envelope", data.get("envelope"), {"attack", "release", "one_shot"})
    attack = _number(path, "envelope.attack", env.get("attack", Patch.attack), 0.0, 10.0)
    one_shot = env.get("one_shot", False)
    if not isinstance(one_shot, bool):
        raise _fail(path, "envelope.one_shot", f"must be true or false, got {one_shot!r}")
    if "release" in env:
        release = _number(path, "envelope.release", env["release"], 0.0, 30.0, low_open=True)
    else:
        release = measured_release(instrument)
    gain = _number(path, "gain", data.get("gain", 1.0), 0.0, 16.0)
    vel = _section(path, "velocity", data.get("velocity"), {"sensitivity"})
    sensitivity = _number(path, "velocity.sensitivity", vel.get("sensitivity", 1.0), 0.0, 4.0)
    s = _section(path, "sampling", data.get("sampling"), {"temperature", "top_k", "top_p", "guidance"})
    top_k = s.get("top_k", 0)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise _fail(path, "sampling.top_k", f"must be an integer >= 0 (0 = off), got {top_k!r}")
    sampling = Sampling(
        temperature=_number(path, "sampling.temperature", s.get("temperature", 1.0), 0.0, 10.0, low_open=True),
        top_k=top_k,
        top_p=_number(path, "sampling.top_p", s.get("top_p", 1.0), 0.0, 1.0, low_open=True),
        guidance=_number(path, "sampling.guidance", s.get("guidance", 0.0), 0.0, 100.0),
    )
    cache = data.get("cache", "disk")
    if cache not in CACHE_POLICIES:
        raise _fail(path, "cache", f"must be one of {', '.join(CACHE_POLICIES)}, got {cache!r}")
    family = data.get("family")
    if family is not None and family not in FAMILIES:
        raise _fail(path, "family", f"must be one of {', '.join(FAMILIES)}, got {family!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail(path, "description", f"must be text, got {description!r}")
    return Preset(name=name or path.stem, instrument=instrument,
                  envelope=Patch(attack, release, gain, sensitivity, one_shot=one_shot), sampling=sampling,
                  cache=cache, description=description, family=family, path=path,
                  release_measured="release" not in env, stand_in=stand_in)  # fmt: skip


def load_preset(path: Path) -> Preset:
    """Load and validate one preset file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise MarsError(f"cannot read preset {path}: {err.strerror or err}") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when present
    except yaml.YAMLError as err:
        raise MarsError(f"preset {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return parse_preset(data, path)


def load_presets(directory: Path | None = None) -> dict[str, Preset]:
    """Load every ``*.yaml`` preset of ``directory`` (default: the installed presets), by name."""
    directory = preset_dir() if directory is None else Path(directory)
    if not directory.is_dir():
        raise MarsError(f"no preset directory at {directory}; reinstall mars-synth (presets are package data)")
    return {path.stem: load_preset(path) for path in sorted(directory.glob("*.yaml"))}


def find_preset(name: str, presets: Mapping[str, Preset] | None = None) -> Preset:
    """A preset by name, or by path to a ``.yaml`` file.

    Raises:
        MarsError: listing the known names when there is no such preset.
    """
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return load_preset(Path(name))
    presets = load_presets() if presets is None else presets
    if name not in presets:
        raise MarsError(f"unknown preset '{name}'; known presets: {', '.join(sorted(presets))} "
                        "(or give a path to a preset .yaml file)")  # fmt: skip
    return presets[name]
