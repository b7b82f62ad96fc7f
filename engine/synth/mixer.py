"""The master bus: gain and a soft limiter, so dense chords never clip."""

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
