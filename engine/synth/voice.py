"""Voices: one sounding note each, read from a :class:`NoteSample` with envelope, transposition and loop.

This is the render side (FluidSynth's ``rvoice``): a voice only knows how to add its next
block of audio, enveloped and scaled by its gain, to its channel's mono bus; the synth pans
each channel's bus into the stereo mix once per block. Which voice plays what, and when it
is released or stolen, is decided by :class:`engine.synth.synth.Synth`. Every buffer a voice
needs while mixing lives in a :class:`MixScratch` allocated once, so rendering a block
allocates no arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from engine.synth.sample import NoteSample

#: A released voice is freed once its envelope falls below this (-80 dB).
SILENCE = 1e-4
#: The release envelope falls by 60 dB over the patch's release time (then on to SILENCE).
RELEASE_DB = 60.0
#: Fade applied to a stolen or all-sound-off voice (at most 5 ms, so a stolen note is cut quickly but never clicks).
STEAL_FADE_SECONDS = 0.003
#: A note-off earlier than this after the note-on is delayed to it (as FluidSynth's min-note-length),
#: so zero-length MIDI notes still sound.
MIN_NOTE_SECONDS = 0.01


class VoiceState(IntEnum):
    """Where a voice is in its life. The order is the stealing order's first criterion."""

    FREE = 0
    RELEASED = 1  # key up, release envelope running
    SUSTAINED = 2  # key up, held by the sustain (CC64) or sostenuto (CC66) pedal
    HELD = 3  # key down
    STOLEN = 4  # fading out over STEAL_FADE_SECONDS, no longer counted against polyphony


@dataclass(frozen=True)
class Patch:
    """How a preset plays a note: the engine's envelope and gain on top of the generated audio.

    Args:
        attack: seconds of the linear fade-in at note start (>= 0); the default 1 ms only
            keeps the first sample from clicking, the generated attack is the instrument's.
        release: seconds for the release envelope to fall by 60 dB after key up (> 0).
        gain: linear gain of the preset.
        velocity_sensitivity: how far below the velocity-127 level softer notes fall, as a
            factor of the real instrument's velocity curve (see ``NoteSample.velocity_gain``).
        one_shot: a struck sound (most drums): the note plays to its end, never loops, and
            key up changes nothing (``release`` is unused).
        exclusive_class: a new note of this class (> 0) chokes the sounding notes of the same
            class on its channel (a closed hi-hat cuts an open one); 0: none.
    """

    attack: float = 0.001
    release: float = 0.3
    gain: float = 1.0
    velocity_sensitivity: float = 1.0
    one_shot: bool = False
    exclusive_class: int = 0


class MixScratch:
    """Buffers shared by all voices of one mixer while they render a block (one thread only).

    Args:
        block_size: the largest block ever rendered, in frames.
    """

    def __init__(self, block_size: int) -> None:
        n = int(block_size)
        self.block_size = n
        self.ramp = np.arange(n + 1, dtype=np.float64)  # 0, 1, ..., n
        self.positions = np.empty(n, np.float64)
        self.floor = np.empty(n, np.float64)
        self.frac = np.empty(n, np.float64)
        self.frac32 = np.empty(n, np.float32)
        self.ramp32 = np.arange(n + 1, dtype=np.float32)
        self.index = np.empty(n, np.intp)
        self.next_value = np.empty(n, np.float32)
        self.mono = np.empty(n, np.float32)
        self.envelope = np.empty(n, np.float32)


class Voice:
    """One sounding note. Created once per pool slot and reused; see :meth:`start`."""

    __slots__ = ("state", "channel", "key", "velocity", "serial", "sample", "pos", "in_loop",
                 "rate", "level", "attack_step", "release_coef", "steal_step", "gain",
                 "key_down", "sostenuto", "played", "min_frames", "release_pending", "one_shot",
                 "exclusive_class")  # fmt: skip

    def __init__(self) -> None:
        self.state = VoiceState.FREE
        self.channel = -1
        self.key = -1
        self.velocity = 0
        self.serial = 0
        self.sample: NoteSample | None = None
        self.pos = 0.0
        self.in_loop = False
        self.rate = 1.0
        self.level = 0.0
        self.attack_step = 1.0
        self.release_coef = 0.0
        self.steal_step = 0.0
        self.gain = 0.0
        self.key_down = False
        self.sostenuto = False
        self.played = 0  # frames rendered since start
        self.min_frames = 0
        self.release_pending = False
        self.one_shot = False
        self.exclusive_class = 0

    def __repr__(self) -> str:
        return (f"Voice({self.state.name}, ch={self.channel}, key={self.key}, vel={self.velocity}, "
                f"serial={self.serial}, level={self.level:.3f})")  # fmt: skip

    def start(self, sample: NoteSample, channel: int, key: int, velocity: int, gain: float,
              patch: Patch, serial: int) -> None:  # fmt: skip
        """Begin playing ``sample`` for ``key`` (the key is down).

        Args:
            gain: the note's linear gain (velocity curve times preset gain).
            serial: start order, used as the note's age when stealing.
        """
        rate = sample.sample_rate
        self.state = VoiceState.HELD
        self.channel, self.key, self.velocity, self.serial = channel, key, velocity, serial
        self.sample = sample
        self.pos = 0.0
        self.in_loop = False
        self.rate = 1.0
        attack_frames = patch.attack * rate
        self.level = 0.0 if attack_frames >= 1 else 1.0
        self.attack_step = 1.0 / attack_frames if attack_frames >= 1 else 1.0
        # A one-shot's key up leaves it at full level: it rings to the end of its note.
        self.release_coef = 1.0 if patch.one_shot else 10.0 ** (-RELEASE_DB / 20.0 / max(patch.release * rate, 1.0))
        self.steal_step = 1.0 / max(STEAL_FADE_SECONDS * rate, 1.0)
        self.gain = gain * patch.gain
        self.key_down = True
        self.sostenuto = False
        self.played = 0
        self.min_frames = int(MIN_NOTE_SECONDS * rate)
        self.release_pending = False
        self.one_shot = patch.one_shot
        self.exclusive_class = patch.exclusive_class

    @property
    def loudness(self) -> float:
        """The voice's amplitude scale for stealing: gain times the envelope level, where a
        voice still in its attack counts at full level (it is about to be that loud)."""
        if self.state in (VoiceState.HELD, VoiceState.SUSTAINED):
            return self.gain
        return self.level * self.gain

    def release(self) -> None:
        """Start the release envelope (key up and no pedal holds it); before MIN_NOTE_SECONDS of
        sound it is left pending, and the mixer releases the voice when that much has played."""
        if self.state in (VoiceState.HELD, VoiceState.SUSTAINED):
            if self.played < self.min_frames:
                self.release_pending = True
                return
            self.release_pending = False
            # The release is the envelope alone (the instrument's measured release time): a voice
            # in its loop stays there rather than also playing the generated release tail.
            self.state = VoiceState.RELEASED

    def steal(self) -> None:
        """Fade out over STEAL_FADE_SECONDS, then free the voice."""
        if self.state != VoiceState.FREE:
            self.state = VoiceState.STOLEN

    def free(self) -> None:
        """Stop at once (no fade)."""
        self.state = VoiceState.FREE
        self.sample = None

    def render(self, bus: np.ndarray, frames: int, scratch: MixScratch,
               increments: np.ndarray | None = None) -> None:  # fmt: skip
        """Add the next ``frames`` frames of this voice, times its envelope and gain, to ``bus``.

        Args:
            bus: float32 ``[>= frames]`` mono bus of the voice's channel, added to (the
                channel's pan, volume and expression are applied to the whole bus later).
            frames: frames to render (<= ``scratch.block_size``).
            increments: float64 ``[>= frames]`` per-frame read increments when the playback
                rate varies inside the block (vibrato), else ``None`` to use ``self.rate``.
        """
        sample = self.sample
        if sample is None or self.state == VoiceState.FREE:
            return
        mono = scratch.mono
        done = 0
        while done < frames:
            count = frames - done
            looping = not self.one_shot and self.state in (VoiceState.HELD, VoiceState.SUSTAINED, VoiceState.STOLEN)
            if self.in_loop:
                buffer = sample.loop
                limit = float(sample.loop_length)
            else:
                buffer = sample.data
                limit = float(sample.loop_entry if looping else sample.length)
            if increments is None and self.rate == 1.0:
                # Untransposed and unbent (a key played at its generated pitch): no per-sample
                # positions, a plain copy, or one lerp with a constant fraction.
                m = min(count, max(0, math.ceil(limit - self.pos)))
                if m > 0:
                    self._copy_at_unit_rate(buffer, self.pos, mono[done : done + m])
                next_pos = self.pos + m
            else:
                pos = scratch.positions[:count]
                if increments is None:
                    np.multiply(scratch.ramp[:count], self.rate, out=pos)
                else:
                    pos[0] = 0.0
                    np.cumsum(increments[done : done + count - 1], out=pos[1:])
                pos += self.pos
                m = int(np.searchsorted(pos, limit))
                if m > 0:
                    self._interpolate(buffer, pos[:m], mono[done : done + m], scratch)
                step = self.rate if increments is None else float(increments[done + m - 1]) if m > 0 else 0.0
                next_pos = (float(pos[m - 1]) + step) if m > 0 else self.pos
            done += m
            if m == count and next_pos < limit:
                self.pos = next_pos
                break
            # Crossed the limit: wrap, enter the loop, or end.
            if self.in_loop:
                self.pos = next_pos - sample.loop_length
            elif looping:
                self.in_loop = True
                self.pos = next_pos - sample.loop_start
            else:
                mono[done:frames] = 0.0
                self.state = VoiceState.FREE
                break
        self.played += frames
        self._apply_envelope_and_mix(bus, frames, scratch)

    @staticmethod
    def _copy_at_unit_rate(buffer: np.ndarray, pos: float, out: np.ndarray) -> None:
        m = out.shape[0]
        start = int(pos)
        frac = pos - start
        if frac == 0.0:
            np.copyto(out, buffer[start : start + m])
        else:
            np.subtract(buffer[start + 1 : start + 1 + m], buffer[start : start + m], out=out)
            out *= np.float32(frac)
            out += buffer[start : start + m]

    @staticmethod
    def _interpolate(buffer: np.ndarray, pos: np.ndarray, out: np.ndarray, scratch: MixScratch) -> None:
        # Every operation below works in place on same-typed operands: mixed-type ufuncs would
        # allocate cast buffers, and take() buffers its output unless mode="clip".
        m = pos.shape[0]
        floor = scratch.floor[:m]
        frac64 = scratch.frac[:m]
        frac = scratch.frac32[:m]
        index = scratch.index[:m]
        nxt = scratch.next_value[:m]
        np.floor(pos, out=floor)
        np.subtract(pos, floor, out=frac64)
        np.copyto(frac, frac64, casting="same_kind")
        np.copyto(index, floor, casting="unsafe")
        buffer.take(index, out=out, mode="clip")
        index += 1
        buffer.take(index, out=nxt, mode="clip")
        nxt -= out
        nxt *= frac
        out += nxt

    def _apply_envelope_and_mix(self, bus: np.ndarray, frames: int, scratch: MixScratch) -> None:
        # The voice's gain is folded into the envelope's scalars, so each case costs one
        # multiply over the block before the add into the channel's bus.
        mono = scratch.mono[:frames]
        env = scratch.envelope[:frames]
        ramp = scratch.ramp32[:frames]
        state = self.state
        gain = self.gain
        end_level = self.level
        if state == VoiceState.STOLEN:
            np.multiply(ramp, np.float32(-self.steal_step), out=env)
            env += np.float32(self.level)
            np.maximum(env, np.float32(0.0), out=env)
            env *= np.float32(gain)
            mono *= env
            end_level = max(0.0, self.level - self.steal_step * frames)
            if end_level <= 0.0:
                state = VoiceState.FREE
        elif state == VoiceState.RELEASED and self.release_coef == 1.0:  # a one-shot after key up
            mono *= np.float32(self.level * gain)
        elif state == VoiceState.RELEASED:
            # coef ** i as exp(i * log coef): numpy's power with a scalar base runs a slow
            # per-element pow (51 us for 4096 frames here), exp is vectorised (11 us).
            np.multiply(ramp, np.float32(math.log(self.release_coef)), out=env)
            np.exp(env, out=env)
            env *= np.float32(self.level * gain)
            mono *= env
            end_level = self.level * self.release_coef**frames
            if end_level < SILENCE:
                state = VoiceState.FREE
        elif self.level < 1.0:  # attack (FREE here means the note ran out this block: finish its envelope)
            np.multiply(ramp, np.float32(self.attack_step), out=env)
            env += np.float32(self.level)
            np.minimum(env, np.float32(1.0), out=env)
            env *= np.float32(gain)
            mono *= env
            end_level = min(1.0, self.level + self.attack_step * frames)
        else:
            mono *= np.float32(gain)
        self.level = end_level
        bus[:frames] += mono
        if state == VoiceState.FREE:
            self.free()
        else:
            self.state = state


def semitones_to_rate(semitones: float) -> float:
    """Playback rate that transposes by ``semitones``."""
    return math.pow(2.0, semitones / 12.0)
