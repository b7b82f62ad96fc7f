"""General MIDI drum kits: which generated note plays a key of a kit, and how the key plays.

The table (``engine/data/drum_kits.json``, written by ``tools/export_kit_map.py`` from the
note set's manifest) holds FluidR3_GM's kits in bank 128: Standard 0 (variations 1-7),
Room 8, Power 16, Electronic 24, TR-808 25, Jazz 32, Brush 40, Orchestra 48. The model
knows a kit as instrument ``128 + program`` and was trained on each kit's *own* keys only
(where it sounds different from its fallback kit), so a key plays the note of the first kit
in the fallback chain (variation -> base kit -> Standard) that owns it::

    kits = DrumKits.load()
    kits.kit(9).sound(36)   # Room 1's own kick: instrument 137
    kits.kit(9).sound(49)   # its crash is Room's: instrument 136

Every drum is a one-shot (note-off does nothing, the note plays to its end) except the keys
whose real sound FluidSynth cuts on note-off (whistles, long guiro, open triangle, jingle
bell, applause, and what the measured table adds per kit). Keys of one exclusive class cut
each other off (a closed hi-hat chokes an open one).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from mars_model.api import FIRST_KIT
from mars_model.errors import MarsError

KIT_TABLE = Path(__file__).resolve().parents[1] / "data" / "drum_kits.json"


@dataclass(frozen=True)
class DrumSound:
    """What one key of a kit plays.

    Attributes:
        key: the drum key (MIDI note number) struck.
        name: its name in this kit (``Closed Hi-Hat``).
        instruments: the model instruments that have this sound, preferred first: 128 + each
            kit of the fallback chain that owns a sound on the key (a model that lacks the
            first may know the next: Room 1's kick, then Room's, then Standard's).
        note_off: whether letting the key up ends the sound (else it is a one-shot).
        exclusive_class: keys of the same class on a channel choke each other (0: none).
    """

    key: int
    name: str
    instruments: tuple[int, ...]
    note_off: bool
    exclusive_class: int

    @property
    def instrument(self) -> int:
        """The instrument whose note is this sound: 128 + the first kit of the chain that owns it."""
        return self.instruments[0]


@dataclass(frozen=True)
class DrumKit:
    """One kit: its program number, name, and the sound of every key it plays."""

    program: int
    name: str
    base: bool
    sounds: dict[int, DrumSound] = field(repr=False)

    def sound(self, key: int) -> DrumSound | None:
        """The sound of ``key`` in this kit, or ``None`` when the kit has none there."""
        return self.sounds.get(key)

    def __str__(self) -> str:
        return f"{self.name} ({self.program})"


@dataclass(frozen=True)
class KitChoice:
    """The kit a program number selects: ``kit``, and ``asked`` when that number is not a kit
    (then ``kit`` is the nearest base kit below it)."""

    kit: DrumKit
    asked: int | None = None


class DrumKits:
    """Every kit of the table, by program number.

    Args:
        kits: the kits by program.
    """

    def __init__(self, kits: dict[int, DrumKit]) -> None:
        self.kits = kits

    @classmethod
    def load(cls, path: Path | None = None) -> DrumKits:
        """The shipped table (or the one at ``path``); read once per process."""
        return _load(Path(path) if path is not None else KIT_TABLE)

    @property
    def instruments(self) -> frozenset[int]:
        """Every model instrument some kit plays (128 + the program of each kit with sounds of its own)."""
        return frozenset(s.instrument for kit in self.kits.values() for s in kit.sounds.values())

    def kit(self, program: int) -> DrumKit:
        """The kit with this program number (it must exist; see :meth:`choose` for any number)."""
        return self.kits[program]

    def choose(self, program: int) -> KitChoice:
        """The kit a program change selects: that kit, else the nearest base kit below the number."""
        if program in self.kits:
            return KitChoice(self.kits[program])
        below = [p for p, kit in self.kits.items() if kit.base and p <= program] or [min(self.kits)]
        return KitChoice(self.kits[max(below)], asked=program)

    def find(self, text: str | int) -> DrumKit:
        """A kit by program number (``25``) or name, any case, spaces and dashes optional
        (``standard``, ``TR-808``, ``tr808``, ``"room 1"``).

        Raises:
            MarsError: naming the known kits.
        """
        spoken = str(text).strip()
        if re.fullmatch(r"\d+", spoken) and int(spoken) in self.kits:
            return self.kits[int(spoken)]
        wanted = _plain(spoken)
        for kit in self.kits.values():
            if _plain(kit.name) == wanted:
                return kit
        known = ", ".join(f"{kit.name.lower().replace(' ', '')} ({p})" for p, kit in sorted(self.kits.items()) if kit.base)
        raise MarsError(f"unknown drum kit {spoken!r}; base kits: {known}, and variations such as "
                        "'standard1' or 'room3' (or give the kit's program number)")  # fmt: skip


def _plain(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@functools.cache
def _load(path: Path) -> DrumKits:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DrumKits(_kits(data))
    except OSError as err:
        raise MarsError(f"cannot read the drum kit table {path}: {err.strerror or err}; reinstall mars-synth") from None
    except (ValueError, KeyError, TypeError) as err:
        raise MarsError(f"{path} is not a valid drum kit table ({err}); remake it with tools/export_kit_map.py") from None


def _kits(data: dict) -> dict[int, DrumKit]:
    """Resolve every kit's keys through its fallback chain (the table stores only the differences)."""
    raw = {int(p): entry for p, entry in data["kits"].items()}
    names = {int(k): str(v) for k, v in data["names"].items()}

    def chain(program: int | None) -> list[tuple[int, dict]]:
        entries = []
        while program is not None:
            entries.append((program, raw[program]))
            program = raw[program]["fallback"]
        return entries

    def first(entries: list[tuple[int, dict]], field: str, default):
        return next((entry[field] for _, entry in entries if field in entry), default)

    kits: dict[int, DrumKit] = {}
    for program, entry in raw.items():
        entries = chain(program)
        classes = first(entries, "exclusive_classes", data["exclusive_classes"])
        class_of = {key: number for number, keys in enumerate(classes.values(), 1) for key in keys}
        note_off = set(first(entries, "note_off_keys", []))
        own_names = {int(k): v for k, v in first(entries, "names", {}).items()}
        sounds = {}
        for key in entry["keys"]:
            owners = tuple(FIRST_KIT + p for p, e in entries if key in e["own_keys"])
            sounds[key] = DrumSound(key, own_names.get(key) or names.get(key, f"Key {key}"), owners,
                                    key in note_off, class_of.get(key, 0))  # fmt: skip
        kits[program] = DrumKit(program, str(entry["name"]), bool(entry["base"]), sounds)
    return kits

