"""The engine core shared by live play and ``render``: MIDI-level control of a voice pool, and the mix.

:class:`Synth` is FluidSynth's ``synth`` side: it owns channel state, decides which voice
plays, holds, releases or is stolen; :meth:`Synth.render` then mixes the voices into a
stereo block, adds the reverb and chorus of what the channels send them (CC91, CC93), and
passes the sum through the soft limiter. It is single-threaded by
design: the offline renderer calls it from its loop on a sample clock; the live engine
calls it from the audio callback, after draining the events other threads queued for it.
Neither :meth:`Synth.render` nor the control methods allocate arrays or take locks.
"""

from __future__ import annotations

import math

import numpy as np

from engine.synth.channel import VIBRATO_HZ, ChannelState
from engine.synth.effects import Chorus, EffectsSettings, Reverb
from engine.synth.mixer import SendBuses, SoftLimiter
from engine.synth.sample import NoteSample
from engine.synth.voice import (
    STEAL_FADE_SECONDS,
    MixScratch,
    Patch,
    Voice,
    VoiceState,
    semitones_to_rate,
)

NUM_CHANNELS = 16
CC_BANK_MSB, CC_MODULATION, CC_DATA_MSB, CC_VOLUME, CC_PAN, CC_EXPRESSION = 0, 1, 6, 7, 10, 11
CC_BANK_LSB, CC_DATA_LSB, CC_SUSTAIN, CC_SOSTENUTO = 32, 38, 64, 66
CC_REVERB_SEND, CC_CHORUS_SEND = 91, 93
CC_ALL_SOUND_OFF, CC_RESET_CONTROLLERS, CC_ALL_NOTES_OFF = 120, 121, 123
#: Slots beyond the polyphony limit where stolen voices finish their fade.
_FADE_SLOTS_MIN = 8
#: Live effect parameters :meth:`Synth.set_effect` takes.
EFFECT_PARAMS = ("reverb", "chorus", "reverb_time")


class Synth:
    """Sixteen MIDI channels playing :class:`NoteSample` notes through a voice pool and a stereo mixer.

    Voice stealing. When a note starts and ``polyphony`` voices already sound, one voice is
    stolen: the one with the smallest key ``(class, age, loudness)``, where class orders
    released (key up, fading) < sustained (key up, held by a pedal) < held (key down), age
    prefers the oldest note, and loudness (envelope level times gain) breaks the remaining
    ties towards the quietest. The stolen voice fades out over 3 ms (at most 5 ms) in a
    spare slot, so stealing never clicks.

    Retrigger. A note-on for a key that is already sounding on the same channel releases
    the old voice (normal release envelope) and starts a new one.

    Drums. A patch marked ``one_shot`` plays its note to the end whatever the key does (a
    struck drum; it never loops). A note whose patch has an ``exclusive_class`` chokes the
    voices of that class on its channel, its own key included, with the steal fade (a closed
    hi-hat cuts an open one).

    Effects. With ``effects`` given, each channel sends ``CC91 / 127`` of its signal to a
    stereo reverb and ``CC93 / 127`` to a chorus (power-on 40 and 0, as in General MIDI 2),
    and their wet output joins the mix before the limiter. Without (the default here; ``render``
    and ``play`` turn them on), the synth is dry. A level of 0 turns an effect off; the
    channels then play straight into the dry mix, bit for bit as without effects.

    Args:
        sample_rate: output rate in Hz; every :class:`NoteSample` must have this rate.
        polyphony: the most voices sounding at once (stolen voices fading out excluded).
        block_size: the largest block :meth:`render` is asked for, in frames.
        gain: master gain (linear) before the limiter.
        effects: reverb and chorus settings, or ``None`` for none at all.
        effects_chunk: frames per step of the reverb (see :class:`Reverb`); live play gives
            its callback's length so every callback does the same work. Default: the longest.
    """

    def __init__(self, sample_rate: int = 48000, polyphony: int = 64, block_size: int = 512,
                 gain: float = 0.5, effects: EffectsSettings | None = None,
                 effects_chunk: int | None = None) -> None:  # fmt: skip
        if polyphony < 1:
            raise ValueError(f"polyphony must be >= 1, got {polyphony}")
        self.sample_rate = int(sample_rate)
        self.polyphony = int(polyphony)
        self.block_size = int(block_size)
        self.gain = float(gain)
        self.channels = [ChannelState(n) for n in range(NUM_CHANNELS)]
        self.voices = [Voice() for _ in range(self.polyphony + max(_FADE_SLOTS_MIN, self.polyphony // 4))]
        self.limiter = SoftLimiter(self.sample_rate, self.block_size)
        self.reverb: Reverb | None = None
        self.chorus: Chorus | None = None
        self._sends: SendBuses | None = None
        if effects is not None:
            effects.check()
            self.reverb = Reverb(self.sample_rate, self.block_size, effects.reverb_time, effects.reverb_damping,
                                 effects.reverb_width, effects.reverb_level, effects_chunk)  # fmt: skip
            self.chorus = Chorus(self.sample_rate, self.block_size, effects.chorus_level)
            self._sends = SendBuses(self.block_size, NUM_CHANNELS)
        self._sends_muted = 0  # frames left in which no channel sends (voices fading after all sound off)
        self._sends_changed = 0  # counts CC91/CC93 changes and resets, so the send levels are recomputed
        self._sends_key: tuple[bool, bool, int] | None = None
        # Voices add into their channel's mono bus; each channel sounding this block is then
        # panned into the mix (or its send group) once, so a voice costs mono work only.
        self._channel_buses = list(np.zeros((NUM_CHANNELS, self.block_size), np.float32))
        self._channel_used = [False] * NUM_CHANNELS
        self._pan_from: list[tuple[float, float] | None] = [None] * NUM_CHANNELS  # gains of the last block
        self._scaled = np.empty(self.block_size, np.float32)
        self._pair = np.zeros((2, 1), np.float32)
        self._stereo = np.empty((2, self.block_size), np.float32)
        self._pan_curve = np.empty(self.block_size, np.float32)
        self._scratch = MixScratch(self.block_size)
        self._increments = np.empty(self.block_size, np.float64)
        self._serial = 0
        self._sounding = 0  # voices counted against polyphony
        #: The most voices ever sounding at once (a statistic for tests and reports).
        self.peak_voices = 0
        #: Voices stolen so far.
        self.steals = 0

    # ----------------------------------------------------------------- control side

    def note_on(self, channel: int, key: int, velocity: int, sample: NoteSample, patch: Patch,
                gain: float = 1.0) -> Voice:  # fmt: skip
        """Start a note. Velocity 0 is a note-off (MIDI running-status convention).

        Args:
            channel: 0-based MIDI channel.
            key: the MIDI key played; the sample is transposed from its ``root_pitch``.
            velocity: 1..127 (stored for reports; loudness comes through ``gain``).
            sample: the prepared note, at this synth's sample rate.
            patch: envelope and preset gain.
            gain: the note's own gain (the velocity curve, see ``velocity_gain``).
        Returns:
            The voice now playing the note.
        """
        if sample.sample_rate != self.sample_rate:
            raise ValueError(f"sample rate {sample.sample_rate} != synth rate {self.sample_rate}")
        if patch.exclusive_class:
            self._choke(channel, patch.exclusive_class)
        self._release_key(channel, key, retrigger=True)
        if self._sounding >= self.polyphony:
            self._steal_one()
        voice = self._free_slot()
        self._serial += 1
        voice.start(sample, channel, key, velocity, gain, patch, self._serial)
        voice.rate = self._voice_rate(voice, self.channels[channel])
        self._sounding += 1
        self.peak_voices = max(self.peak_voices, self._sounding)
        return voice

    def replace_sample(self, channel: int, key: int, sample: NoteSample, fade_seconds: float = 0.03) -> int:
        """Crossfade the key's held (or pedal-sustained) voices to another sample of the same note.

        Live play starts a key whose exact note is not generated yet on the nearest ready
        pitch, transposed; when the exact note lands, this swaps it in without a click: a
        new voice starts ``sample`` at the same elapsed time (inside its loop if the note
        has been held that long), fading in over ``fade_seconds`` while the old voice fades
        out over the same time. Released voices are left to finish as they are.

        Returns:
            The number of voices swapped (0 when the key no longer sounds held).
        """
        if sample.sample_rate != self.sample_rate:
            raise ValueError(f"sample rate {sample.sample_rate} != synth rate {self.sample_rate}")
        swapped = 0
        fade_frames = max(1.0, fade_seconds * self.sample_rate)
        for old in self.voices:
            if (old.channel != channel or old.key != key or old.sample is sample
                    or old.state not in (VoiceState.HELD, VoiceState.SUSTAINED)):  # fmt: skip
                continue
            new = self._free_slot()
            new.start(sample, channel, key, old.velocity, 1.0, Patch(attack=fade_seconds), old.serial)
            # Same velocity, the new note's own calibration (the fallback was another pitch's note).
            before = old.sample.velocity_gain(old.velocity) if old.sample is not None else 0.0
            new.gain = old.gain * (sample.velocity_gain(old.velocity) / before if before > 0 else 1.0)
            new.release_coef = old.release_coef
            new.one_shot, new.exclusive_class = old.one_shot, old.exclusive_class
            new.state, new.key_down, new.sostenuto = old.state, old.key_down, old.sostenuto
            new.played, new.release_pending = old.played, old.release_pending
            new.rate = self._voice_rate(new, self.channels[channel])
            elapsed = old.played * new.rate  # position in the new note's own time
            if elapsed < sample.loop_entry:
                new.pos = elapsed
            else:
                new.in_loop = True
                new.pos = (elapsed - sample.loop_start) % sample.loop_length
            old.steal_step = 1.0 / fade_frames
            old.state = VoiceState.STOLEN  # fades out; no longer counted (the new voice is)
            swapped += 1
        return swapped

    def note_off(self, channel: int, key: int) -> None:
        """Key up: release the key's voices, unless the sustain or sostenuto pedal holds them."""
        self._release_key(channel, key, retrigger=False)

    def control_change(self, channel: int, control: int, value: int) -> None:
        """Apply a MIDI control change (CC0/32 bank, 1 modulation, 6/38 data entry, 7 volume,
        10 pan, 11 expression, 64 sustain, 66 sostenuto, 91 reverb send, 93 chorus send,
        98-101 (N)RPN, 120 all sound off, 121 reset controllers, 123 all notes off). Other
        controllers are ignored."""
        state = self.channels[channel]
        if control == CC_VOLUME:
            state.volume = value
        elif control == CC_EXPRESSION:
            state.expression = value
        elif control == CC_PAN:
            state.pan = value
        elif control == CC_MODULATION:
            state.modulation = value
        elif control == CC_REVERB_SEND:
            state.reverb_send = value
            self._sends_changed += 1
        elif control == CC_CHORUS_SEND:
            state.chorus_send = value
            self._sends_changed += 1
        elif control == CC_BANK_MSB:
            state.bank_msb = value
        elif control == CC_BANK_LSB:
            state.bank_lsb = value
        elif control == CC_SUSTAIN:
            self._set_sustain(state, value >= 64)
        elif control == CC_SOSTENUTO:
            self._set_sostenuto(state, value >= 64)
        elif control in (98, 99, 100, 101):
            state.select_rpn(control, value)
        elif control in (CC_DATA_MSB, CC_DATA_LSB):
            state.data_entry(control, value)
            self._update_rates(channel)
        elif control == CC_ALL_SOUND_OFF:
            self.all_sound_off(channel)
        elif control == CC_RESET_CONTROLLERS:
            state.reset_controllers()
            self._release_unheld(channel)
            self._update_rates(channel)
        elif control == CC_ALL_NOTES_OFF:
            self.all_notes_off(channel)

    def pitch_bend(self, channel: int, value: int) -> None:
        """Pitch bend, ``value`` in -8192..8191; the range is set by RPN 0 (default +/-2 semitones)."""
        self.channels[channel].bend = int(value)
        self._update_rates(channel)

    def program_change(self, channel: int, program: int) -> None:
        """Store the channel's program; it applies to notes started afterwards."""
        self.channels[channel].program = int(program)

    def all_notes_off(self, channel: int | None = None) -> None:
        """Key up for every note of ``channel`` (all channels if ``None``); pedals still hold them."""
        for voice in self.voices:
            if voice.state == VoiceState.HELD and (channel is None or voice.channel == channel):
                self._key_up(voice, self.channels[voice.channel])

    def all_sound_off(self, channel: int | None = None) -> None:
        """Silence ``channel`` (all if ``None``) within the steal fade, ignoring envelopes and pedals.

        For all channels the reverb and chorus tails are faded out over the next block too
        (they are shared, so one channel's all-sound-off leaves them ringing), and the voices
        fading out send them nothing, so no new tail starts."""
        for voice in self.voices:
            if voice.state not in (VoiceState.FREE, VoiceState.STOLEN) and (
                channel is None or voice.channel == channel
            ):
                voice.steal()
                self._sounding -= 1
        if channel is None:
            for effect in (self.reverb, self.chorus):
                if effect is not None:
                    effect.fade_out()
            self._sends_muted = 2 * int(STEAL_FADE_SECONDS * self.sample_rate) + 1

    def release_all(self) -> None:
        """Release every voice now, pedals included (end of a file)."""
        for voice in self.voices:
            if voice.state in (VoiceState.HELD, VoiceState.SUSTAINED):
                voice.key_down = False
                voice.sostenuto = False
                self._release(voice)

    def reset(self) -> None:
        """Free every voice at once and restore every channel to its power-on state."""
        for voice in self.voices:
            voice.free()
        self._sounding = 0
        self.channels = [ChannelState(n) for n in range(NUM_CHANNELS)]
        self._sends_changed += 1
        self.limiter.gain = 1.0
        for effect in (self.reverb, self.chorus):
            if effect is not None:
                effect.clear()

    def set_effect(self, name: str, value: float) -> None:
        """Set a live effect parameter (from the audio thread; allocates no arrays).

        Args:
            name: ``"reverb"`` (wet level, 0 = off), ``"chorus"`` (wet level, 0 = off) or
                ``"reverb_time"`` (RT60 in seconds).
        Raises:
            ValueError: an unknown name, or a synth made without effects.
        """
        if self.reverb is None or self.chorus is None:
            raise ValueError("this Synth has no effects; make it with effects=EffectsSettings()")
        if name == "reverb":
            self.reverb.level = float(value)
        elif name == "chorus":
            self.chorus.level = float(value)
        elif name == "reverb_time":
            self.reverb.set_time(float(value))
        else:
            raise ValueError(f"unknown effect parameter {name!r}; known: {', '.join(EFFECT_PARAMS)}")

    @property
    def active_voices(self) -> int:
        """Voices counted against the polyphony limit (held, sustained or releasing)."""
        return self._sounding

    @property
    def busy(self) -> bool:
        """Whether anything still makes sound: a voice (stolen ones fading out included) or an effect's tail."""
        if any(voice.state != VoiceState.FREE for voice in self.voices):
            return True
        return any(effect is not None and not effect.idle for effect in (self.reverb, self.chorus))

    # ------------------------------------------------------------------ render side

    def render(self, out: np.ndarray, frames: int | None = None) -> float:
        """Mix the next block into ``out`` (overwritten) and return its peak after the limiter.

        Args:
            out: float32 ``[2, >= frames]``, C-contiguous rows; left in row 0, right in row 1.
            frames: frames to render, <= ``block_size`` (default: ``out.shape[1]``).
        """
        n = out.shape[1] if frames is None else frames
        if n > self.block_size:
            raise ValueError(f"block of {n} frames > block_size {self.block_size}")
        out[:, :n] = 0.0
        sends = self._sends
        if sends is not None:
            self._begin_sends(sends, n)
        buses, used = self._channel_buses, self._channel_used
        for voice in self.voices:
            if voice.state == VoiceState.FREE:
                continue
            channel = voice.channel
            bus = buses[channel]
            if not used[channel]:
                bus[:n] = 0.0
                used[channel] = True
            state = self.channels[channel]
            was_counted = voice.state != VoiceState.STOLEN
            increments = None
            if state.modulation > 0:
                increments = self._vibrato_increments(voice, state, n)
            pending = voice.min_frames - voice.played if voice.release_pending else 0
            if 0 < pending < n:
                # A note-off that came before MIN_NOTE_SECONDS of sound takes effect mid-block.
                voice.render(bus, pending, self._scratch, increments)
                voice.release()
                tail_increments = None if increments is None else increments[pending:n]
                voice.render(bus[pending:n], n - pending, self._scratch, tail_increments)
            else:
                if voice.release_pending and pending <= 0:
                    voice.release()
                voice.render(bus, n, self._scratch, increments)
            if voice.state == VoiceState.FREE and was_counted:
                self._sounding -= 1
        for channel in range(NUM_CHANNELS):
            if used[channel]:
                used[channel] = False
                self._pan_channel(channel, out if sends is None else sends.bus_for(channel, out), n)
            else:
                self._pan_from[channel] = None
        if sends is not None:
            self._finish_sends(sends, out, n)
        for state in self.channels:
            if state.modulation > 0:
                state.vibrato_phase = (state.vibrato_phase + 2 * math.pi * VIBRATO_HZ * n / self.sample_rate) % (2 * math.pi)
        return self.limiter.process(out, n)

    # ------------------------------------------------------------------ internals

    def _pan_channel(self, channel: int, bus: np.ndarray, n: int) -> None:
        """Add channel ``channel``'s mono bus to the stereo ``bus`` with its volume, expression
        and pan (and the master gain); when those changed since the last block, the gains ramp
        across this one (no zipper noise on CC7/CC10/CC11)."""
        left, right = self.channels[channel].gains()
        left, right = left * self.gain, right * self.gain
        mono = self._channel_buses[channel][:n]
        scaled = self._scaled[:n]
        start = self._pan_from[channel]
        if start is None or start == (left, right):
            pair, stereo = self._pair, self._stereo[:, :n]
            pair[0, 0], pair[1, 0] = left, right
            np.multiply(pair, mono, out=stereo)
            bus[:, :n] += stereo
        else:
            curve = self._pan_curve[:n]
            for row, g0, g1 in ((0, start[0], left), (1, start[1], right)):
                np.multiply(self._scratch.ramp32[:n], np.float32((g1 - g0) / n), out=curve)
                curve += np.float32(g0)
                np.multiply(mono, curve, out=scaled)
                bus[row, :n] += scaled
        self._pan_from[channel] = (left, right)

    def _begin_sends(self, sends: SendBuses, n: int) -> None:
        # An effect at level 0 is off: its sends count as 0, so those channels play dry.
        muted = self._sends_muted > 0
        self._sends_muted = max(0, self._sends_muted - n)
        reverb_on = self.reverb is not None and self.reverb.level > 0.0 and not muted
        chorus_on = self.chorus is not None and self.chorus.level > 0.0 and not muted
        key = (reverb_on, chorus_on, self._sends_changed)
        if key != self._sends_key:  # the send levels are recomputed only when something changed
            self._sends_key = key
            for number, state in enumerate(self.channels):
                sends.reverb_to[number] = state.reverb_send / 127.0 if reverb_on else 0.0
                sends.chorus_to[number] = state.chorus_send / 127.0 if chorus_on else 0.0
        sends.begin(n)

    def _finish_sends(self, sends: SendBuses, out: np.ndarray, n: int) -> None:
        sends.finish(out)
        if self.reverb is not None:
            self.reverb.process(sends.reverb if sends.reverb_fed else None, out, n)
        if self.chorus is not None:
            self.chorus.process(sends.chorus if sends.chorus_fed else None, out, n)

    def _vibrato_increments(self, voice: Voice, state: ChannelState, n: int) -> np.ndarray:
        inc = self._increments[:n]
        np.multiply(self._scratch.ramp[:n], 2 * math.pi * VIBRATO_HZ / self.sample_rate, out=inc)
        inc += state.vibrato_phase
        np.sin(inc, out=inc)
        inc *= state.vibrato_depth
        inc += 1.0
        inc *= voice.rate
        return inc

    def _voice_rate(self, voice: Voice, state: ChannelState) -> float:
        sample = voice.sample
        root = sample.root_pitch if sample is not None else voice.key
        return semitones_to_rate(voice.key - root + state.bend_semitones)

    def _update_rates(self, channel: int) -> None:
        state = self.channels[channel]
        for voice in self.voices:
            if voice.state != VoiceState.FREE and voice.channel == channel:
                voice.rate = self._voice_rate(voice, state)

    def _release_key(self, channel: int, key: int, retrigger: bool) -> None:
        state = self.channels[channel]
        for voice in self.voices:
            if voice.channel != channel or voice.key != key:
                continue
            if retrigger and voice.state in (VoiceState.HELD, VoiceState.SUSTAINED):
                voice.key_down = False
                voice.sostenuto = False
                self._release(voice)
            elif not retrigger and voice.state == VoiceState.HELD:
                self._key_up(voice, state)

    def _key_up(self, voice: Voice, state: ChannelState) -> None:
        voice.key_down = False
        if voice.sostenuto or state.sustain:
            voice.state = VoiceState.SUSTAINED
        else:
            self._release(voice)

    @staticmethod
    def _release(voice: Voice) -> None:
        voice.release()

    def _set_sustain(self, state: ChannelState, down: bool) -> None:
        state.sustain = down
        if not down:
            self._release_unheld(state.number)

    def _set_sostenuto(self, state: ChannelState, down: bool) -> None:
        if down and not state.sostenuto:
            # Latch the notes whose keys are down now; later notes are not held by this press.
            for voice in self.voices:
                if voice.channel == state.number and voice.state == VoiceState.HELD:
                    voice.sostenuto = True
        state.sostenuto = down
        if not down:
            for voice in self.voices:
                if voice.channel == state.number:
                    voice.sostenuto = False
            self._release_unheld(state.number)

    def _release_unheld(self, channel: int) -> None:
        state = self.channels[channel]
        for voice in self.voices:
            if (voice.channel == channel and voice.state == VoiceState.SUSTAINED
                    and not voice.sostenuto and not state.sustain):  # fmt: skip
                self._release(voice)

    def _choke(self, channel: int, exclusive_class: int) -> None:
        for voice in self.voices:
            if (voice.channel == channel and voice.exclusive_class == exclusive_class
                    and voice.state not in (VoiceState.FREE, VoiceState.STOLEN)):  # fmt: skip
                voice.steal()
                self._sounding -= 1

    def _steal_one(self) -> None:
        victim: Voice | None = None
        best: tuple[int, int, float] | None = None
        for voice in self.voices:
            if voice.state in (VoiceState.FREE, VoiceState.STOLEN):
                continue
            score = (int(voice.state), voice.serial, voice.loudness)
            if best is None or score < best:
                best, victim = score, voice
        if victim is not None:
            victim.steal()
            self._sounding -= 1
            self.steals += 1

    def _free_slot(self) -> Voice:
        quietest: Voice | None = None
        for voice in self.voices:
            if voice.state == VoiceState.FREE:
                return voice
            if voice.state == VoiceState.STOLEN and (quietest is None or voice.level < quietest.level):
                quietest = voice
        # Every spare slot is still fading a stolen voice: cut the quietest (nearly silent) one.
        assert quietest is not None, "voice pool larger than polyphony guarantees a stolen slot"
        quietest.free()
        return quietest
