"""Read the preset table of a SoundFont 2 file: which (bank, program) presets it has, and what
each preset plays on each key (instrument, sample, root key, exclusive class).

Only the ``pdta`` hierarchy is parsed (PHDR/PBAG/PGEN -> INST/IBAG/IGEN -> SHDR); sample data
is never read, so this is fast on FluidR3_GM's 148 MB. Layout as in the SoundFont 2.04
specification, section 7.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from mars_model.errors import MarsError

PERCUSSION_BANK = 128

# Generator numbers (SoundFont 2.04, section 8.1.2).
_GEN_INSTRUMENT = 41
_GEN_KEY_RANGE = 43
_GEN_VEL_RANGE = 44
_GEN_SAMPLE_ID = 53
_GEN_SCALE_TUNING = 56
_GEN_EXCLUSIVE_CLASS = 57
_GEN_ROOT_KEY = 58


@dataclass(frozen=True, order=True)
class Preset:
    """One preset of the file: ``bank`` 0-127 for melodic banks, 128 for percussion kits."""

    bank: int
    program: int
    name: str

    def __str__(self) -> str:
        return f"{self.bank:03d}-{self.program:03d} {self.name}"


@dataclass(frozen=True)
class KeyZone:
    """What one preset plays on a span of keys (one instrument zone under one preset zone).

    Attributes:
        keys: inclusive ``(lo, hi)`` MIDI keys, velocities: inclusive ``(lo, hi)``.
        instrument, sample: names in the file.
        root_key: the key at which the sample plays at its recorded pitch.
        scale_tuning: cents per key (100: follows the keyboard; 0: same pitch on every key).
        exclusive_class: 0, or the class shared by keys that cut each other off (hi-hats).
    """

    keys: tuple[int, int]
    velocities: tuple[int, int]
    instrument: str
    sample: str
    root_key: int
    scale_tuning: int
    exclusive_class: int


@dataclass(frozen=True)
class _Chunks:
    phdr: bytes
    pbag: bytes
    pgen: bytes
    inst: bytes
    ibag: bytes
    igen: bytes
    shdr: bytes


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()


def _read_pdta(path: Path) -> _Chunks:
    """The sub-chunks of the ``pdta`` list, found by walking the RIFF tree."""
    body = None
    try:
        with open(path, "rb") as handle:
            header = handle.read(12)
            if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"sfbk":
                raise MarsError(f"{path} is not a SoundFont 2 file (no RIFF/sfbk header)")
            while body is None:
                chunk = handle.read(12)
                if len(chunk) < 12:
                    break
                ck_id, size = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
                if ck_id == b"LIST" and chunk[8:12] == b"pdta":
                    body = handle.read(size - 4)
                else:
                    handle.seek(size + (size & 1) - 4, os.SEEK_CUR)
    except OSError as err:
        raise MarsError(f"cannot read SoundFont {path}: {err.strerror}") from None
    if body is None:
        raise MarsError(f"{path} has no preset table (pdta chunk); is it truncated?")
    parts: dict[str, bytes] = {}
    offset = 0
    while offset + 8 <= len(body):
        ck_id = body[offset : offset + 4].decode("latin-1")
        size = struct.unpack("<I", body[offset + 4 : offset + 8])[0]
        parts[ck_id] = body[offset + 8 : offset + 8 + size]
        offset += 8 + size + (size & 1)
    names = tuple(_Chunks.__dataclass_fields__)
    missing = [k for k in names if k not in parts]
    if missing:
        raise MarsError(f"{path}: preset table lacks {', '.join(missing)}; is it truncated?")
    return _Chunks(**{k: parts[k] for k in names})


def _records(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def _zone_generators(bags: list[tuple[int, int]], gens: list[tuple[int, bytes]], first: int,
                     last: int) -> list[dict[int, bytes]]:  # fmt: skip
    """Generators of the zones ``first..last-1`` (bag indices), as ``{oper: amount}``."""
    zones = []
    for bag in range(first, last):
        g0, g1 = bags[bag][0], bags[bag + 1][0]
        zones.append({oper: amount for oper, amount in gens[g0:g1]})
    return zones


def _range(amount: bytes | None) -> tuple[int, int]:
    return (0, 127) if amount is None else (amount[0], amount[1])


def _short(amount: bytes | None, default: int) -> int:
    return default if amount is None else struct.unpack("<h", amount)[0]


class SoundFontIndex:
    """The preset table of one SoundFont.

    Example::

        index = SoundFontIndex.load("/usr/share/sounds/sf2/FluidR3_GM.sf2")
        index.has(128, 25)               # True: the TR-808 kit
        index.zones(128, 0)[0].sample    # what the Standard kit plays on its lowest key
    """

    def __init__(self, path: Path, chunks: _Chunks) -> None:
        self.path = path
        self._c = chunks
        self._phdr = [(_name(r[:20]), *struct.unpack("<HHH", r[20:26]))
                      for r in _records(chunks.phdr, 38)]  # fmt: skip
        self.presets = tuple(
            sorted(Preset(bank, program, name) for name, program, bank, _ in self._phdr[:-1])
            if self._phdr else ()
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> SoundFontIndex:
        """Parse the preset table of ``path``; raises :class:`MarsError` on a bad file."""
        path = Path(path)
        if not path.exists():
            raise MarsError(f"SoundFont {path} does not exist")
        return cls(path, _read_pdta(path))

    def has(self, bank: int, program: int) -> bool:
        return any(p.bank == bank and p.program == program for p in self.presets)

    def programs(self, bank: int) -> tuple[int, ...]:
        """Program numbers the file has in ``bank`` (0: the GM melodic bank, 128: kits)."""
        return tuple(p.program for p in self.presets if p.bank == bank)

    def name(self, bank: int, program: int) -> str:
        for p in self.presets:
            if p.bank == bank and p.program == program:
                return p.name
        raise KeyError((bank, program))

    def zones(self, bank: int, program: int) -> list[KeyZone]:
        """Every (preset zone x instrument zone) of one preset, with key ranges intersected."""
        c = self._c
        row = next((i for i, r in enumerate(self._phdr[:-1]) if (r[2], r[1]) == (bank, program)),
                   None)  # fmt: skip
        if row is None:
            raise KeyError((bank, program))
        pbags = [struct.unpack("<HH", r) for r in _records(c.pbag, 4)]
        pgens = [(struct.unpack("<H", r[:2])[0], r[2:4]) for r in _records(c.pgen, 4)]
        insts = [(_name(r[:20]), struct.unpack("<H", r[20:22])[0]) for r in _records(c.inst, 22)]
        ibags = [struct.unpack("<HH", r) for r in _records(c.ibag, 4)]
        igens = [(struct.unpack("<H", r[:2])[0], r[2:4]) for r in _records(c.igen, 4)]
        samples = [(_name(r[:20]), r[40]) for r in _records(c.shdr, 46)]

        out: list[KeyZone] = []
        preset_zones = _zone_generators(pbags, pgens, self._phdr[row][3], self._phdr[row + 1][3])
        # A first zone without an instrument is the preset's global zone.
        p_global = preset_zones[0] if preset_zones and _GEN_INSTRUMENT not in preset_zones[0] else {}
        for pz in preset_zones:
            if _GEN_INSTRUMENT not in pz:
                continue
            pz = {**p_global, **pz}
            inst = struct.unpack("<H", pz[_GEN_INSTRUMENT])[0]
            inst_name = insts[inst][0]
            inst_zones = _zone_generators(ibags, igens, insts[inst][1], insts[inst + 1][1])
            i_global = inst_zones[0] if inst_zones and _GEN_SAMPLE_ID not in inst_zones[0] else {}
            pk, pv = _range(pz.get(_GEN_KEY_RANGE)), _range(pz.get(_GEN_VEL_RANGE))
            for iz in inst_zones:
                if _GEN_SAMPLE_ID not in iz:
                    continue
                iz = {**i_global, **iz}
                ik, iv = _range(iz.get(_GEN_KEY_RANGE)), _range(iz.get(_GEN_VEL_RANGE))
                keys = (max(pk[0], ik[0]), min(pk[1], ik[1]))
                vels = (max(pv[0], iv[0]), min(pv[1], iv[1]))
                if keys[0] > keys[1] or vels[0] > vels[1]:
                    continue
                sample_name, original_pitch = samples[struct.unpack("<H", iz[_GEN_SAMPLE_ID])[0]]
                root = _short(iz.get(_GEN_ROOT_KEY), -1)
                out.append(KeyZone(
                    keys=keys,
                    velocities=vels,
                    instrument=inst_name,
                    sample=sample_name,
                    root_key=root if 0 <= root <= 127 else original_pitch,
                    # Scale tuning adds up over preset and instrument level (relative at preset).
                    scale_tuning=_short(iz.get(_GEN_SCALE_TUNING), 100)
                    + _short(pz.get(_GEN_SCALE_TUNING), 0),
                    exclusive_class=_short(iz.get(_GEN_EXCLUSIVE_CLASS), 0),
                ))  # fmt: skip
        return out
