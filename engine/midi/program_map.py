"""Which preset plays a channel: General MIDI program (and bank) -> preset, overridable by a YAML file.

The built-in map sends every GM program with an NSynth family to the preset of that family
(``strings`` for 40-51, ``trumpet`` for 56-63, ...) and conditions the model on the file's
own program, so a cello part is generated as GM 42 with the string preset's envelope and
sampling. Programs with no NSynth family (percussive 112-119, sound effects 120-127,
timpani 47) are skipped with a warning; synth pads (88-95) play as strings and synth
effects (96-103) as the synth lead. Channel 10 holds General MIDI drums, which the model
cannot make: its notes are skipped with one warning unless a map gives channel 10 a preset.

A map file (``--map channels.yaml``)::

    programs:            # GM program (0-127) or "bank:program" -> preset name or .yaml path
      0: electric_piano
      "8:4": vibraphone  # bank 8, program 4; other banks of program 4 use the program entry
      80: null           # skip this program
    channels:            # MIDI channel (1-16) -> preset: fixed, program changes ignored
      10: vibraphone     # play the drum channel pitched
      2: null            # mute channel 2

Entries from a map file use the preset as written (its own ``instrument``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.preset import Preset, find_preset, load_presets
from mars_model.errors import MarsError

DRUM_CHANNEL = 9  # 0-based: MIDI channel 10

# (first, last, preset) over GM programs, 0-based inclusive.
_GM_FAMILY_PRESETS: tuple[tuple[int, int, str], ...] = (
    (0, 3, "grand_piano"), (4, 7, "electric_piano"), (8, 15, "vibraphone"),
    (16, 23, "drawbar_organ"), (24, 31, "nylon_guitar"), (32, 39, "finger_bass"),
    (40, 46, "violin"), (48, 51, "strings"), (52, 54, "choir"), (55, 55, "strings"),
    (56, 63, "trumpet"), (64, 71, "alto_sax"), (72, 79, "flute"), (80, 87, "square_lead"),
    (88, 95, "strings"), (96, 103, "square_lead"), (104, 107, "nylon_guitar"),
    (108, 108, "vibraphone"), (109, 111, "alto_sax"), (112, 112, "vibraphone"),
    (114, 114, "vibraphone"),
)  # fmt: skip
# Programs the model was trained on (those with an NSynth family): the file's program conditions the model.
_TRAINED_PROGRAMS = frozenset(
    [*range(0, 47), *range(48, 55), *range(56, 88), *range(104, 113), 114]
)


@dataclass
class ProgramMap:
    """Resolves (channel, bank, program) to the preset that plays it, or ``None`` to skip.

    Args:
        presets: the preset library by name.
        fixed: one preset for every channel (``--preset``), drums included.
        programs: overrides, ``program`` or ``(bank, program)`` -> preset or ``None``.
        channels: per-channel presets (0-based channel) or ``None`` to mute.
    """

    presets: Mapping[str, Preset]
    fixed: Preset | None = None
    programs: dict[int | tuple[int, int], Preset | None] = field(default_factory=dict)
    channels: dict[int, Preset | None] = field(default_factory=dict)

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
        for first, last, name in _GM_FAMILY_PRESETS:
            if first <= program <= last:
                preset = self.presets[name]
                return preset.with_program(program) if program in _TRAINED_PROGRAMS else preset
        return None

    @classmethod
    def load(cls, path: Path | None = None, fixed: str | None = None,
             presets: Mapping[str, Preset] | None = None) -> ProgramMap:  # fmt: skip
        """The built-in GM map, with ``--preset`` and a ``--map`` YAML file applied.

        Raises:
            MarsError: unreadable or invalid map file, or an unknown preset name.
        """
        presets = load_presets() if presets is None else presets
        missing = {name for _, _, name in _GM_FAMILY_PRESETS} - set(presets)
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
            self.channels[key - 1] = self._preset(path, f"channels.{key}", value)

    def _preset(self, path: Path, key: str, value: Any) -> Preset | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise MarsError(f"map {path}: '{key}' must be a preset name or null, got {value!r}")
        try:
            return find_preset(value, self.presets)
        except MarsError as err:
            raise MarsError(f"map {path}: '{key}': {err}") from None


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
