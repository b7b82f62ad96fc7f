"""Which preset plays a note: General MIDI program (and bank) -> preset, drum kits, overridable by a YAML file.

The built-in map sends every GM program 0-127 to the preset of its family (``strings`` for
48-51, ``trumpet`` for 56-63, ``warm_pad`` for the synth pads 88-95, ``timpani`` for 47, ...)
and conditions the model on the file's own program, so a cello part is generated as GM 42
with the string preset's envelope and sampling. A model that does not know a program plays a
stand-in with one warning (:meth:`engine.preset.Preset.playable`, through the note cache); a
one-shot preset's stand-in is held and released as melodic notes are, since the stand-in's
note does not die away by itself.

Channel 10 plays a drum kit (:mod:`engine.midi.drum_kits`): its program change picks the
kit (Standard by default), and each key is a note of the kit's instrument (128 + kit), a
one-shot unless the key honours note-off. So does any channel whose bank MSB is 120 (GM2's
rhythm bank) or 127 (XG's), with one warning. Drum notes play only when the model lists the
kit instruments it makes; otherwise they are skipped with one warning, as no pitched preset
is a stand-in for drums.

A map file (``--map channels.yaml``)::

    programs:            # GM program (0-127) or "bank:program" -> preset name or .yaml path
      0: electric_piano
      "8:4": vibraphone  # bank 8, program 4; other banks of program 4 use the program entry
      80: null           # skip this program
    channels:            # MIDI channel (1-16) -> preset: fixed, program changes ignored
      10: vibraphone     # play the drum channel pitched
      11: "kit:tr-808"   # or a drum kit, by name or number ("kit:25")
      2: null            # mute channel 2

Entries from a map file use the preset as written (its own ``instrument``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.midi.drum_kits import DrumKits, DrumSound
from engine.preset import Preset, find_preset, load_presets
from engine.synth.voice import Patch
from mars_model.api import FIRST_KIT, Sampling
from mars_model.errors import MarsError

DRUM_CHANNEL = 9  # 0-based: MIDI channel 10
#: Bank select MSBs (CC0) that make any channel play a drum kit: GM2's rhythm bank, XG's drum bank.
DRUM_BANK_MSBS = (120, 127)
#: Seconds for a drum that honours note-off (a long whistle, an open triangle) to fall 60 dB after key up.
DRUM_RELEASE_SECONDS = 0.2
#: What a ``channels:`` entry of a map file starts with to name a drum kit.
KIT_PREFIX = "kit:"

#: (first, last, preset) over GM programs, 0-based inclusive: every program 0-127, each once.
#: The percussive family is split by what FluidR3 does on key up: timpani, synth drum and
#: reverse cymbal stop (``timpani``); agogo, woodblock, taiko and melodic tom ring on (the
#: one-shot ``taiko_drum``).
GM_FAMILY_PRESETS: tuple[tuple[int, int, str], ...] = (
    (0, 3, "grand_piano"), (4, 7, "electric_piano"), (8, 15, "vibraphone"),
    (16, 23, "drawbar_organ"), (24, 31, "nylon_guitar"), (32, 39, "finger_bass"),
    (40, 46, "violin"), (47, 47, "timpani"), (48, 51, "strings"), (52, 54, "choir"),
    (55, 55, "orchestra_hit"), (56, 63, "trumpet"), (64, 71, "alto_sax"), (72, 79, "flute"),
    (80, 87, "square_lead"), (88, 95, "warm_pad"), (96, 103, "atmosphere"),
    (104, 107, "nylon_guitar"), (108, 108, "vibraphone"), (109, 111, "alto_sax"),
    (112, 112, "vibraphone"), (113, 113, "taiko_drum"), (114, 114, "vibraphone"),
    (115, 117, "taiko_drum"), (118, 119, "timpani"), (120, 127, "seashore"),
)  # fmt: skip


@dataclass(frozen=True)
class NoteChoice:
    """What plays one note-on: the preset (a drum kit's for a drum key) and the voice's patch.
    The note is generated at the key struck (for a drum, the drum key)."""

    preset: Preset
    patch: Patch


@dataclass
class ProgramMap:
    """Resolves (channel, bank, program) and a key to what plays it, or ``None`` to skip.

    Args:
        presets: the preset library by name.
        fixed: one preset for every channel (``--preset``), drums included.
        programs: overrides, ``program`` or ``(bank, program)`` -> preset or ``None``.
        channels: per-channel presets (0-based channel) or ``None`` to mute.
        kit_channels: per-channel drum kits (0-based channel -> kit program), from a map file.
        kits: the drum kit table.
        model_instruments: the instruments the model makes (see :meth:`set_model_instruments`);
            drum notes play only when these hold their kit, and a one-shot preset plays as one
            only when these hold its instrument (empty: the model does not say).
    """

    presets: Mapping[str, Preset]
    fixed: Preset | None = None
    programs: dict[int | tuple[int, int], Preset | None] = field(default_factory=dict)
    channels: dict[int, Preset | None] = field(default_factory=dict)
    kit_channels: dict[int, int] = field(default_factory=dict)
    kits: DrumKits = field(default_factory=DrumKits.load)
    model_instruments: frozenset[int] = frozenset()
    #: Warnings so far (each once): unknown kits, keys a kit does not play, kits on melodic channels.
    warnings: list[str] = field(default_factory=list)
    #: Drum notes skipped because the model does not make their kit, by 0-based channel.
    drum_skips: dict[int, int] = field(default_factory=dict)
    _kit_presets: dict[int, Preset] = field(default_factory=dict, repr=False)

    def set_model_instruments(self, instruments: Iterable[int] | None) -> None:
        """Tell the map what the model makes (a NoteSource's ``instruments``; ``None``: it does
        not say, so no drums): drum notes of kits it lacks are skipped, and one-shot presets whose
        instrument it lacks are held (their stand-in is a melodic instrument)."""
        self.model_instruments = frozenset(int(i) for i in instruments or ())

    @property
    def makes_drums(self) -> bool:
        """Whether the model makes any drum kit's notes."""
        return bool(self.model_instruments & self.kits.instruments)

    def choose(self, channel: int, bank: int, program: int, key: int) -> NoteChoice | None:
        """What plays ``key`` on ``channel`` (0-based) with the channel's bank and program, or
        ``None`` to skip the note (the reason is in :attr:`warnings` or :attr:`drum_skips`)."""
        if channel in self.kit_channels:
            return self._drum(channel, self.kit_channels[channel], key)
        if channel not in self.channels and self.fixed is None:
            kit = self.kit_program(channel, bank, program)
            if kit is not None:
                if channel != DRUM_CHANNEL:
                    self._warn(f"channel {channel + 1} selects drum kit {self.kits.choose(kit).kit} with bank "
                               f"{bank // 128} (a rhythm bank): its keys play drums")  # fmt: skip
                return self._drum(channel, kit, key)
        preset = self.resolve(channel, bank, program)
        return None if preset is None else self.melodic_choice(preset)

    def kit_program(self, channel: int, bank: int, program: int) -> int | None:
        """The drum kit program ``channel`` plays with this bank and program, or ``None`` for a
        melodic channel (a map file's channel entries and ``--preset`` come first)."""
        if channel in self.kit_channels:
            return self.kit_channels[channel]
        if channel in self.channels or self.fixed is not None:
            return None
        if channel == DRUM_CHANNEL or bank // 128 in DRUM_BANK_MSBS:
            return program
        return None

    def kit_choices(self, kit_program: int) -> list[tuple[int, NoteChoice]]:
        """``(key, choice)`` for every key of a kit the model can play (live play generates them ahead)."""
        kit = self.kits.choose(kit_program).kit
        return [(key, choice) for key, sound in sorted(kit.sounds.items())
                for choice in [self._sound_choice(sound)] if choice is not None]  # fmt: skip

    def report(self) -> list[str]:
        """The warnings of every note chosen so far, drum notes skipped for want of a kit included."""
        lines = list(self.warnings)
        if self.drum_skips:
            count = sum(self.drum_skips.values())
            where = ", ".join(str(c + 1) for c in sorted(self.drum_skips))
            where = f"channel {where}" if len(self.drum_skips) == 1 else f"channels {where}"
            if self.makes_drums:
                lines.append(f"skipped {count} drum notes on {where}: the model does not make their kits")
            else:
                lines.append(f"skipped {count} drum notes on {where} (the model makes no drums yet; to hear them "
                             f"pitched, give the channel a preset with --map, e.g. 'channels: {{10: vibraphone}}')")  # fmt: skip
        return lines

    def melodic_choice(self, preset: Preset) -> NoteChoice:
        """What plays a note of a pitched ``preset``: its patch, held rather than one-shot when
        the model plays it by a stand-in."""
        patch = preset.patch
        if patch.one_shot and self.model_instruments and not preset.knows(self.model_instruments):
            # Played by a stand-in (a held instrument): its note would ring for 4 s on every hit.
            patch = dataclasses.replace(patch, one_shot=False)
        return NoteChoice(preset, patch)

    def _drum(self, channel: int, kit_program: int, key: int) -> NoteChoice | None:
        picked = self.kits.choose(kit_program)
        kit = picked.kit
        if picked.asked is not None:
            self._warn(f"drum kit {picked.asked} is not in FluidR3_GM's bank 128; playing {kit}, "
                       "the nearest base kit below it")  # fmt: skip
        sound = kit.sound(key)
        if sound is None:
            self._warn(f"drum key {key} has no sound in kit {kit}; its notes are skipped")
            return None
        choice = self._sound_choice(sound)
        if choice is None:
            self.drum_skips[channel] = self.drum_skips.get(channel, 0) + 1
        return choice

    def _sound_choice(self, sound: DrumSound) -> NoteChoice | None:
        instrument = next((i for i in sound.instruments if i in self.model_instruments), None)
        if instrument is None:
            return None
        patch = Patch(attack=0.0, release=DRUM_RELEASE_SECONDS, one_shot=not sound.note_off,
                      exclusive_class=sound.exclusive_class)  # fmt: skip
        return NoteChoice(self._kit_preset(instrument), patch)

    def _kit_preset(self, instrument: int) -> Preset:
        preset = self._kit_presets.get(instrument)
        if preset is None:
            kit = self.kits.kit(instrument - FIRST_KIT)
            preset = Preset(name=f"kit:{kit.name.lower().replace(' ', '')}", instrument=instrument,
                            envelope=Patch(attack=0.0, release=DRUM_RELEASE_SECONDS), sampling=Sampling(),
                            description=f"{kit.name} drum kit", family=None)  # fmt: skip
            self._kit_presets[instrument] = preset
        return preset

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def resolve(self, channel: int, bank: int, program: int) -> Preset | None:
        """The preset for a note on ``channel`` (0-based) with the channel's bank and program."""
        if channel in self.channels:
            return self.channels[channel]
        if self.fixed is not None:
            return self.fixed
        if channel == DRUM_CHANNEL:
            return None
        if (bank, program) in self.programs:
            return self.programs[(bank, program)]
        if program in self.programs:
            return self.programs[program]
        return self.presets[gm_family_preset(program)].with_program(program)

    @classmethod
    def load(cls, path: Path | None = None, fixed: str | None = None,
             presets: Mapping[str, Preset] | None = None) -> ProgramMap:  # fmt: skip
        """The built-in GM map, with ``--preset`` and a ``--map`` YAML file applied.

        Raises:
            MarsError: unreadable or invalid map file, or an unknown preset name.
        """
        presets = load_presets() if presets is None else presets
        missing = {name for _, _, name in GM_FAMILY_PRESETS} - set(presets)
        if missing:
            raise MarsError(f"the General MIDI map needs presets that are not installed: {', '.join(sorted(missing))}")
        result = cls(presets, fixed=find_preset(fixed, presets) if fixed else None)
        if path is not None:
            result._apply_file(Path(path))
        return result

    def _apply_file(self, path: Path) -> None:
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise MarsError(f"cannot read map {path}: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise MarsError(f"map {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if data is None:
            return
        if not isinstance(data, Mapping) or set(data) - {"programs", "channels"}:
            raise MarsError(f"map {path}: must be a mapping with keys 'programs' and/or 'channels'")
        for key, value in _entries(path, "programs", data.get("programs")):
            self.programs[_program_key(path, key)] = self._preset(path, f"programs.{key}", value)
        for key, value in _entries(path, "channels", data.get("channels")):
            if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= 16:
                raise MarsError(f"map {path}: 'channels' keys must be MIDI channels 1-16, got {key!r}")
            if isinstance(value, str) and value.startswith(KIT_PREFIX):
                try:
                    self.kit_channels[key - 1] = self.kits.find(value[len(KIT_PREFIX):]).program
                except MarsError as err:
                    raise MarsError(f"map {path}: 'channels.{key}': {err}") from None
            else:
                self.channels[key - 1] = self._preset(path, f"channels.{key}", value)

    def _preset(self, path: Path, key: str, value: Any) -> Preset | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise MarsError(f"map {path}: '{key}' must be a preset name, \"kit:NAME\" (channels only) or null, "
                            f"got {value!r}")  # fmt: skip
        try:
            return find_preset(value, self.presets)
        except MarsError as err:
            raise MarsError(f"map {path}: '{key}': {err}") from None


def gm_family_preset(program: int) -> str:
    """The name of the preset that plays GM ``program`` (0-127) in the built-in map."""
    return next(name for first, last, name in GM_FAMILY_PRESETS if first <= program <= last)


def _entries(path: Path, key: str, value: Any) -> list[tuple[Any, Any]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise MarsError(f"map {path}: '{key}' must be a mapping, got {value!r}")
    return list(value.items())


def _program_key(path: Path, key: Any) -> int | tuple[int, int]:
    try:
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= 127:
            return key
        bank, program = (int(part) for part in str(key).split(":"))
        if 0 <= bank <= 16383 and 0 <= program <= 127:
            return (bank, program)
    except ValueError:
        pass
    raise MarsError(f"map {path}: 'programs' keys must be GM programs 0-127 or \"bank:program\", got {key!r}")
