"""What the note set renders and how it labels it: GM programs and kits -> families, ranges, keys.

Two tables ship with mars_model: ``gm_families.yaml`` (every GM program's family, source and
pitch range, every kit's keys; ranges and keys measured by ``tools/measure_gm_ranges.py``)
and ``gm_drum_keys.yaml`` (the GM/GS names of drum keys and their exclusive classes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from mars_model.data.soundfont import PERCUSSION_BANK
from mars_model.errors import MarsError


@dataclass(frozen=True)
class ProgramInfo:
    """What the family map says about one melodic GM program (bank 0)."""

    program: int
    family: str
    family_index: int
    source: str
    source_index: int
    pitch_range: tuple[int, int]
    bank: int = 0

    @property
    def instrument(self) -> int:
        """The ``instrument`` label: the GM program itself (0-127)."""
        return self.program

    @property
    def instrument_str(self) -> str:
        """NSynth-style instrument name, e.g. ``keyboard_acoustic_000``."""
        return f"{self.family}_{self.source}_{self.program:03d}"


@dataclass(frozen=True)
class KitInfo:
    """One percussion kit (bank 128) and the keys the note set renders for it.

    Attributes:
        program: the kit's program number (0 Standard, 25 TR-808 ...).
        name: the kit's name (``Standard``).
        keys: every key the kit sounds on.
        own_keys: the keys rendered for this kit: all of ``keys`` without a ``fallback``, else
            those where it sounds different from the fallback kit.
        fallback: the kit whose notes stand in for this kit's other keys (``None``: none).
    """

    program: int
    name: str
    family: str
    family_index: int
    source: str
    source_index: int
    keys: tuple[int, ...]
    own_keys: tuple[int, ...]
    fallback: int | None = None
    bank: int = PERCUSSION_BANK

    def source_of(self, key: int, kits: dict[int, KitInfo]) -> KitInfo | None:
        """The kit whose note plays ``key`` on this kit (itself, or a fallback down the chain);
        None where the kit has no sound on that key."""
        if key not in self.keys:
            return None
        kit: KitInfo | None = self
        while kit is not None and key not in kit.own_keys:
            kit = kits.get(kit.fallback) if kit.fallback is not None else None
        return kit

    @property
    def instrument(self) -> int:
        """The ``instrument`` label: 128 + the kit's program, so it never meets a GM program."""
        return PERCUSSION_BANK + self.program

    @property
    def instrument_str(self) -> str:
        """NSynth-style name, e.g. ``percussion_acoustic_128`` for the Standard kit."""
        return f"{self.family}_{self.source}_{self.instrument:03d}"


@dataclass(frozen=True)
class DrumKeyMap:
    """GM/GS drum key names and exclusive classes (``gm_drum_keys.yaml``).

    Example::

        drums = DrumKeyMap.load()
        drums.name(0, 38), drums.exclusive_class(0, 46)   # ('Acoustic Snare', 'hi-hat')
    """

    names: dict[int, str]
    classes: dict[int, str]
    kit_names: dict[int, dict[int, str]]
    kit_classes: dict[int, dict[int, str]]

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> DrumKeyMap:
        raw, where = _read_yaml(path, "gm_drum_keys.yaml")
        try:
            names = {int(k): str(v) for k, v in raw["names"].items()}
            classes = _invert(raw["exclusive_classes"])
            kit_names, kit_classes = {}, {}
            for kit, entry in (raw.get("kits") or {}).items():
                kit_names[int(kit)] = {int(k): str(v) for k, v in entry.get("names", {}).items()}
                kit_classes[int(kit)] = _invert(entry.get("exclusive_classes", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise MarsError(f"{where}: malformed drum key table ({err})") from None
        return cls(names, classes, kit_names, kit_classes)

    def name(self, kit: int, key: int) -> str:
        """The key's name in ``kit`` (the kit's own map first, then the GM/GS one)."""
        return self.kit_names.get(kit, {}).get(key) or self.names.get(key, f"Key {key}")

    def exclusive_class(self, kit: int, key: int) -> str | None:
        """The exclusive class (``hi-hat``, ``whistle`` ...) of ``key`` in ``kit``, or None."""
        if kit in self.kit_classes:
            return self.kit_classes[kit].get(key)
        return self.classes.get(key)


@dataclass(frozen=True)
class FamilyMap:
    """The GM-program/kit -> family table (``gm_families.yaml``).

    ``families`` lists NSynth's eleven first, in NSynth's order, then ours (``synth_pad`` ...,
    ``percussion``), so a family's index is the same in every set built since.
    """

    families: tuple[str, ...]
    sources: tuple[str, ...]
    programs: dict[int, ProgramInfo]
    kits: dict[int, KitInfo]
    n_nsynth_families: int = 11

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> FamilyMap:
        """Load the table shipped with mars_model, or one given by ``path``."""
        raw, where = _read_yaml(path, "gm_families.yaml")
        nsynth = tuple(raw["families"])
        families = nsynth + tuple(raw.get("extra_families") or ())
        sources = tuple(raw["sources"])
        if len(set(families)) != len(families):
            raise MarsError(f"{where}: a family is listed twice")
        programs: dict[int, ProgramInfo] = {}
        for entry in raw["programs"]:
            if entry["family"] not in families or entry["source"] not in sources:
                raise MarsError(f"{where}: unknown family/source in {entry}")
            lo, hi = entry["pitches"]
            for program in range(entry["first"], entry["last"] + 1):
                if program in programs:
                    raise MarsError(f"{where}: program {program} is listed twice")
                programs[program] = ProgramInfo(
                    program=program,
                    family=entry["family"],
                    family_index=families.index(entry["family"]),
                    source=entry["source"],
                    source_index=sources.index(entry["source"]),
                    pitch_range=(int(lo), int(hi)),
                )
        kits: dict[int, KitInfo] = {}
        family = raw.get("kit_family", "percussion")
        for entry in raw.get("kits") or ():
            if family not in families or entry["source"] not in sources:
                raise MarsError(f"{where}: unknown family/source in kit {entry}")
            keys = _int_list(str(entry["keys"]), where)
            own = _int_list(str(entry["own"]), where) if "own" in entry else keys
            if not set(own) <= set(keys) or ("own" in entry) != ("fallback" in entry):
                raise MarsError(f"{where}: kit {entry['program']}: 'own' keys need a fallback "
                                f"and must be among its keys")  # fmt: skip
            kits[int(entry["program"])] = KitInfo(
                program=int(entry["program"]),
                name=str(entry["name"]),
                family=family,
                family_index=families.index(family),
                source=entry["source"],
                source_index=sources.index(entry["source"]),
                keys=keys,
                own_keys=own,
                fallback=entry.get("fallback"),
            )
        for kit in kits.values():
            if kit.fallback is not None and kit.fallback not in kits:
                raise MarsError(f"{where}: kit {kit.program} falls back to unknown kit {kit.fallback}")
        return cls(families, sources, programs, kits, len(nsynth))

    def nsynth_programs(self) -> tuple[int, ...]:
        """Programs with one of NSynth's eleven families: what the note set held at first."""
        return tuple(p for p, info in sorted(self.programs.items())
                     if info.family_index < self.n_nsynth_families)  # fmt: skip


def _read_yaml(path: str | os.PathLike | None, shipped: str) -> tuple[dict, str]:
    if path is None:
        return yaml.safe_load(resources.files("mars_model.data").joinpath(shipped).read_text()), shipped
    try:
        return yaml.safe_load(Path(path).read_text()), str(path)
    except OSError as err:
        raise MarsError(f"cannot read {path}: {err.strerror}") from None


def _invert(classes: dict[str, list[int]]) -> dict[int, str]:
    return {int(key): str(name) for name, keys in classes.items() for key in keys}


def _int_list(text: str, where: str) -> tuple[int, ...]:
    values: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, _, b = part.partition("-")
        try:
            values.update(range(int(a), int(b or a) + 1))
        except ValueError:
            raise MarsError(f"{where}: cannot read key list {text!r}") from None
    return tuple(sorted(values))
