"""Per-MIDI-channel controller state: volume, expression, pan, effect sends, pedals, pitch bend and its RPN range."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Pitch-bend range in semitones until an RPN 0 message sets another (General MIDI default).
DEFAULT_BEND_RANGE = 2.0
#: Power-on reverb send (CC91) and chorus send (CC93): General MIDI 2's defaults. (FluidSynth
#: starts CC91 at 0 instead, but its SoundFont presets carry reverb sends of their own.)
DEFAULT_REVERB_SEND = 40
DEFAULT_CHORUS_SEND = 0
#: Vibrato rate (Hz) and depth at CC1 = 127 (cents, peak) of the modulation wheel.
VIBRATO_HZ = 5.5
VIBRATO_MAX_CENTS = 50.0
_RPN_NULL = (127, 127)


@dataclass
class ChannelState:
    """Controller state of one MIDI channel (0-based ``number``).

    Gains follow General MIDI practice: volume (CC7) and expression (CC11) are each
    ``(value / 127) ** 2`` in amplitude (40 dB curves); pan (CC10) is equal-power with
    64 = centre. The modulation wheel (CC1) adds vibrato: a 5.5 Hz sine on the pitch, up
    to +/-50 cents at 127. The effect sends, CC91 (reverb, 40 at power-on) and CC93 (chorus,
    0), send ``value / 127`` of the channel's signal to the master reverb and chorus.
    """

    number: int
    program: int = 0
    bank_msb: int = 0
    bank_lsb: int = 0
    volume: int = 100
    expression: int = 127
    pan: int = 64
    modulation: int = 0
    reverb_send: int = DEFAULT_REVERB_SEND
    chorus_send: int = DEFAULT_CHORUS_SEND
    sustain: bool = False
    sostenuto: bool = False
    bend: int = 0  # -8192 .. 8191
    bend_range: float = DEFAULT_BEND_RANGE  # semitones
    rpn: tuple[int, int] = _RPN_NULL
    vibrato_phase: float = 0.0  # radians, advanced by the mixer
    _gains_for: tuple[int, int, int] = field(default=(-1, -1, -1), repr=False, compare=False)
    _gains: tuple[float, float] = field(default=(0.0, 0.0), repr=False, compare=False)

    @property
    def bank(self) -> int:
        """The 14-bit bank number (CC0 MSB, CC32 LSB)."""
        return self.bank_msb * 128 + self.bank_lsb

    @property
    def bend_semitones(self) -> float:
        """The current pitch bend in semitones."""
        return self.bend / 8192.0 * self.bend_range

    @property
    def vibrato_depth(self) -> float:
        """Peak vibrato depth as a fraction of the playback rate (0 when CC1 is 0)."""
        return (2.0 ** (VIBRATO_MAX_CENTS * self.modulation / 127.0 / 1200.0)) - 1.0

    def gains(self) -> tuple[float, float]:
        """Left and right amplitude gains from volume, expression and pan (computed again only
        when one of them changed: every voice asks for every block)."""
        key = (self.volume, self.expression, self.pan)
        if key != self._gains_for:
            self._gains_for, self._gains = key, self._compute_gains()
        return self._gains

    def _compute_gains(self) -> tuple[float, float]:
        level = (self.volume / 127.0) ** 2 * (self.expression / 127.0) ** 2
        position = min(max((self.pan - 64) / 63.0, -1.0), 1.0)  # -1 left .. +1 right
        angle = (position + 1.0) * math.pi / 4.0
        # Equal power, normalised so a centred channel has unity gain on each side.
        return level * math.cos(angle) * math.sqrt(2.0), level * math.sin(angle) * math.sqrt(2.0)

    def select_rpn(self, controller: int, value: int) -> None:
        """Track RPN (CC101/100) and NRPN (CC99/98) selection; NRPN deselects any RPN."""
        msb, lsb = self.rpn
        if controller == 101:
            self.rpn = (value, lsb)
        elif controller == 100:
            self.rpn = (msb, value)
        else:
            self.rpn = _RPN_NULL

    def data_entry(self, controller: int, value: int) -> None:
        """Data entry (CC6 MSB, CC38 LSB) for the selected RPN; only RPN 0 (bend range) is used."""
        if self.rpn != (0, 0):
            return
        semitones = math.floor(self.bend_range)
        cents = round((self.bend_range - semitones) * 100)
        if controller == 6:
            semitones = value
        else:
            cents = min(value, 99)
        self.bend_range = semitones + cents / 100.0

    def reset_controllers(self) -> None:
        """CC121: reset controllers as General MIDI RP-015 says (volume, pan, the effect sends
        CC91-95 and the program are kept)."""
        self.expression = 127
        self.modulation = 0
        self.sustain = False
        self.sostenuto = False
        self.bend = 0
        self.rpn = _RPN_NULL
