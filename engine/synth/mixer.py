"""The master bus: the effect send buses, and a soft limiter so dense chords never clip."""

from __future__ import annotations

import math

import numpy as np

#: Peaks are held under this level by gain reduction (-1 dBFS).
LIMIT_THRESHOLD = 10 ** (-1 / 20)
#: Anything still above this after gain reduction is bent smoothly towards +/-1 (never reaching it).
CLIP_KNEE = 0.9
LIMITER_RELEASE_SECONDS = 0.25
_SHAPE = 0.999 * (1.0 - CLIP_KNEE)


class SoftLimiter:
    """Stereo-linked limiter: block-peak gain reduction with instant attack and a slow release,
    followed by a soft clipper, so the output stays strictly inside (-1, 1).

    Gain changes ramp linearly across a block; a peak at the start of a block that the ramp
    has not yet caught is caught by the soft clipper (``tanh`` above ``CLIP_KNEE``).

    Args:
        sample_rate: frames per second.
        block_size: the largest block processed, in frames.
    """

    def __init__(self, sample_rate: int, block_size: int) -> None:
        self.sample_rate = sample_rate
        self.gain = 1.0
        self._release_per_frame = 1.0 / (LIMITER_RELEASE_SECONDS * sample_rate)
        self._peak = np.empty(block_size, np.float32)
        self._work = np.empty(block_size, np.float32)
        self._ramp = np.arange(block_size, dtype=np.float32) + 1.0

    @property
    def reduction_db(self) -> float:
        """The current gain reduction in dB (0 when idle)."""
        return -20.0 * math.log10(max(self.gain, 1e-9))

    def process(self, bus: np.ndarray, frames: int) -> float:
        """Limit ``bus[:, :frames]`` in place; returns the output peak of the block.

        Args:
            bus: float32 ``[2, >= frames]``.
        """
        left, right = bus[0, :frames], bus[1, :frames]
        peak = self._peak[:frames]
        np.abs(left, out=peak)
        work = self._work[:frames]
        np.abs(right, out=work)
        np.maximum(peak, work, out=peak)
        block_peak = float(peak.max()) if frames else 0.0
        wanted = min(1.0, LIMIT_THRESHOLD / block_peak) if block_peak > 0 else 1.0
        if wanted < self.gain:
            target = wanted
        else:
            target = min(wanted, self.gain + self._release_per_frame * frames)
        start = self.gain
        out_peak = block_peak
        if start == target == 1.0:
            pass
        elif start == target:
            left *= target
            right *= target
            out_peak = block_peak * target
        else:
            curve = work
            np.multiply(self._ramp[:frames], (target - start) / frames, out=curve)
            curve += start
            left *= curve
            right *= curve
            np.multiply(peak, curve, out=peak)
            out_peak = float(peak.max())
        self.gain = target
        if out_peak > CLIP_KNEE:
            self._soft_clip(left, right, peak, work)
            # The clipper is monotonic in level, so the new peak is the old one, shaped.
            out_peak = CLIP_KNEE + _SHAPE * math.tanh((out_peak - CLIP_KNEE) / (1.0 - CLIP_KNEE))
        return out_peak

    @staticmethod
    def _soft_clip(left: np.ndarray, right: np.ndarray, level: np.ndarray, work: np.ndarray) -> None:
        # level = max(|L|, |R|) per frame; both sides get the same factor (keeps the stereo image).
        np.abs(left, out=level)
        np.abs(right, out=work)
        np.maximum(level, work, out=level)
        np.subtract(level, CLIP_KNEE, out=work)
        np.maximum(work, 0.0, out=work)
        work *= 1.0 / (1.0 - CLIP_KNEE)
        np.tanh(work, out=work)
        work *= _SHAPE
        work += CLIP_KNEE  # shaped level: CLIP_KNEE below the knee, < 1 above it
        np.maximum(level, 1e-12, out=level)
        np.divide(work, level, out=work)
        np.minimum(work, 1.0, out=work)  # factor 1 below the knee
        left *= work
        right *= work


class SendBuses:
    """The effect sends: voices grouped by their channel's send levels, and the reverb and chorus buses.

    Each channel sends a share of its stereo signal (CC91 to the reverb, CC93 to the chorus).
    Rather than scaling every voice, voices of channels that send the same amounts are summed
    into one group buffer; at the end of the block each group is added to the dry bus and,
    scaled, to the send buses, so the cost is per distinct pair of send levels (usually one or
    two), not per voice or channel. A channel that sends nothing plays straight into the dry
    bus, exactly as with no effects at all. When a send level changes, that group's send ramps
    from the old level to the new one across the block (no zipper noise).

    Args:
        block_size: the largest block, in frames.
        channels: MIDI channels.
    """

    def __init__(self, block_size: int, channels: int = 16) -> None:
        self.block_size = int(block_size)
        self._groups = np.zeros((channels, 2, self.block_size), np.float32)
        self._group_views = list(self._groups)
        self.reverb = np.zeros((2, self.block_size), np.float32)
        self.chorus = np.zeros((2, self.block_size), np.float32)
        #: Whether the reverb / chorus bus received anything this block (else it holds stale data).
        self.reverb_fed = False
        self.chorus_fed = False
        self._scaled = np.zeros((2, self.block_size), np.float32)
        self._curve = np.zeros(self.block_size, np.float32)
        self._ramp = np.arange(1, self.block_size + 1, dtype=np.float32)
        # Per channel: the send levels reached at the end of the last block, and this block's targets.
        self._reverb_from = [0.0] * channels
        self._chorus_from = [0.0] * channels
        self.reverb_to = [0.0] * channels
        self.chorus_to = [0.0] * channels
        self._group_of = [-1] * channels  # -2: not decided yet this block; -1: dry
        self._undecided = [-2] * channels
        self._keys: list[tuple[float, float, float, float]] = [(0.0, 0.0, 0.0, 0.0)] * channels
        self._used = 0
        self._frames = 0

    def begin(self, frames: int) -> None:
        """Start a block; set :attr:`reverb_to` and :attr:`chorus_to` (0..1 per channel) before voices mix."""
        self._used = 0
        self._frames = frames
        self.reverb_fed = self.chorus_fed = False
        self._group_of[:] = self._undecided

    def bus_for(self, channel: int, dry: np.ndarray) -> np.ndarray:
        """The stereo buffer a voice of ``channel`` mixes into this block (``dry`` when it sends nothing)."""
        group = self._group_of[channel]
        if group == -2:
            key = (self._reverb_from[channel], self.reverb_to[channel], self._chorus_from[channel], self.chorus_to[channel])
            if key == (0.0, 0.0, 0.0, 0.0):
                group = -1
            else:
                for used in range(self._used):
                    if self._keys[used] == key:
                        group = used
                        break
                if group < 0:
                    group = self._used
                    self._used += 1
                    self._keys[group] = key
                    self._groups[group, :, : self._frames] = 0.0
            self._group_of[channel] = group
        return dry if group < 0 else self._group_views[group]

    def finish(self, dry: np.ndarray) -> None:
        """Add every group to ``dry`` and, scaled by its sends, to the send buses; end the block."""
        n = self._frames
        for group in range(self._used):
            buffer = self._group_views[group][:, :n]
            dry[0, :n] += buffer[0]  # row by row: numpy buffers 2-D operands of unlike layouts
            dry[1, :n] += buffer[1]
            reverb_from, reverb_to, chorus_from, chorus_to = self._keys[group]
            self.reverb_fed = self._send(self.reverb, self.reverb_fed, buffer, reverb_from, reverb_to)
            self.chorus_fed = self._send(self.chorus, self.chorus_fed, buffer, chorus_from, chorus_to)
        self._reverb_from[:] = self.reverb_to
        self._chorus_from[:] = self.chorus_to

    def _send(self, bus: np.ndarray, fed: bool, buffer: np.ndarray, start: float, end: float) -> bool:
        if start == end == 0.0:
            return fed
        n = buffer.shape[1]
        target = bus[:, :n] if not fed else self._scaled[:, :n]
        if start == end:
            np.multiply(buffer, np.float32(end), out=target)
        else:
            curve = self._curve[:n]
            np.multiply(self._ramp[:n], np.float32((end - start) / n), out=curve)
            curve += np.float32(start)
            np.multiply(buffer[0], curve, out=target[0])  # row by row: a broadcast curve would buffer
            np.multiply(buffer[1], curve, out=target[1])
        if fed:
            bus[0, :n] += target[0]
            bus[1, :n] += target[1]
        return True
