"""The audio callback: drains prepared commands into the :class:`Synth` and mixes one block.

This is the only code that runs on the audio thread. It pops :class:`AudioCommand` objects
from two ``collections.deque`` (append/popleft are atomic under the GIL, no lock), applies
them through :func:`engine.midi.apply_message` or the Synth's control methods, and renders
into a buffer allocated once. It never allocates arrays, takes locks, logs, or touches the
model; statistics are plain attribute writes and one preallocated ring of callback times.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from engine.live.events import EFFECT, GAIN, MIDI, PANIC, SWAP, AudioCommand
from engine.midi.dispatch import apply_message
from engine.synth.synth import CC_SOSTENUTO, CC_SUSTAIN, NUM_CHANNELS, Synth

#: Callback durations kept for statistics (a ring).
TIMING_RING = 4096
#: Block start times kept for the output clock (a ring, about a second at 128 frames).
CLOCK_RING = 512


class BlockRenderer:
    """The audio callback object; pass it as ``callback=`` to a ``sounddevice.OutputStream``.

    Args:
        synth: the engine core; from now on only this object calls it.
        channels: output channels of the stream (1: the left and right mix summed; >= 2: stereo
            on the first two, the rest silent).

    Attributes:
        immediate: commands applied at the start of the next block.
        timed: commands in frame order, applied at their frame inside the block they fall in.
        frame: output frames produced so far.
        clock: ``(frame, time.monotonic())`` at the start of the latest block (one tuple,
            replaced whole, so it is never torn); :meth:`frame_at` is the smoothed version.
        underflows: blocks the host reported as output underflows (the callback's status flags).
        blocks: callbacks so far.
    """

    def __init__(self, synth: Synth, channels: int = 2) -> None:
        self.synth = synth
        self.channels = channels
        self.immediate: deque[AudioCommand] = deque()
        self.timed: deque[AudioCommand] = deque()
        self.frame = 0
        self.clock = (0, time.monotonic())
        self.underflows = 0
        self.blocks = 0
        self.block_frames = 0
        self.peak = 0.0
        self.seconds = np.zeros(TIMING_RING, np.float64)
        self.frames_ring = np.zeros(TIMING_RING, np.int64)
        self._buffer = np.zeros((2, synth.block_size), np.float32)
        self._clock_offsets = np.full(CLOCK_RING, np.inf, np.float64)
        #: For each note-on: seconds from the input event to the start of the block that plays it.
        self.onset_latency = np.zeros(TIMING_RING, np.float64)
        self.onsets = 0
        self._now = 0.0

    def __call__(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        """sounddevice's callback: ``outdata`` float32 ``[frames, channels]``."""
        started = time.perf_counter()
        now = self._now = time.monotonic()
        self.clock = (self.frame, now)
        self._clock_offsets[self.blocks % CLOCK_RING] = now - self.frame / self.synth.sample_rate
        if status.output_underflow:
            self.underflows += 1
        immediate = self.immediate
        while immediate:
            self._apply(immediate.popleft())
        buffer = self._buffer
        synth = self.synth
        block_start = self.frame
        timed = self.timed
        done = 0
        peak = 0.0
        while done < frames:
            end = min(frames, done + synth.block_size)
            while timed and timed[0].frame < block_start + end:
                offset = timed[0].frame - block_start
                if offset > done:
                    peak = max(peak, synth.render(buffer, offset - done))
                    self._emit(outdata, done, offset)
                    done = offset
                self._apply(timed.popleft())
            peak = max(peak, synth.render(buffer, end - done))
            self._emit(outdata, done, end)
            done = end
        self.peak = peak
        self.frame = block_start + frames
        index = self.blocks % TIMING_RING
        self.frames_ring[index] = frames
        self.block_frames = frames
        self.blocks += 1
        self.seconds[index] = time.perf_counter() - started

    def _emit(self, outdata: np.ndarray, start: int, end: int) -> None:
        n = end - start
        if self.channels == 1:
            np.add(self._buffer[0, :n], self._buffer[1, :n], out=outdata[start:end, 0])
            return
        outdata[start:end, :2] = self._buffer[:, :n].T
        if self.channels > 2:
            outdata[start:end, 2:] = 0.0

    def _apply(self, command: AudioCommand) -> None:
        synth = self.synth
        kind = command.kind
        if kind == MIDI:
            message = command.message
            if command.start is not None and command.received:
                self.onset_latency[self.onsets % TIMING_RING] = self._now - command.received
                self.onsets += 1
            apply_message(synth, message, command.start)
        elif kind == SWAP:
            synth.replace_sample(command.channel, command.key, command.sample)
        elif kind == PANIC:
            for channel in range(NUM_CHANNELS):
                synth.control_change(channel, CC_SUSTAIN, 0)
                synth.control_change(channel, CC_SOSTENUTO, 0)
            synth.all_sound_off()
        elif kind == GAIN:
            synth.gain = command.value
        elif kind == EFFECT and synth.reverb is not None:  # (a synth made without effects ignores it)
            synth.set_effect(command.message, command.value)

    def frame_at(self, when: float) -> int:
        """The output frame that starts at ``time.monotonic()`` ``when``.

        Callbacks start late by a varying wake-up delay, never early, so the earliest
        ``start time - frame / rate`` seen over the last blocks is the stream's own schedule;
        one late block would otherwise shift every timed event by its delay.
        """
        offset = float(self._clock_offsets.min())
        if not np.isfinite(offset):
            frame, start = self.clock
            offset = start - frame / self.synth.sample_rate
        return int(round((when - offset) * self.synth.sample_rate))

    def callback_share(self) -> tuple[float, float]:
        """Callback time as a share of the block's duration: (median, 99th percentile) over the ring."""
        n = min(self.blocks, TIMING_RING)
        if n == 0:
            return 0.0, 0.0
        share = self.seconds[:n] * self.synth.sample_rate / np.maximum(self.frames_ring[:n], 1)
        return float(np.median(share)), float(np.percentile(share, 99))
