"""Prepared notes: a generated waveform resampled to the output rate, with a crossfaded sustain loop.

A generated note is NSynth-style: the key is held for :data:`HELD_SECONDS` (3 s) and then
released, and the release tail is part of the audio. A key held longer than that keeps
sounding the way samplers do it: a loop is found late in the held part, where the sound
has settled, and its end is crossfaded into the audio just before its start so the wrap is
seamless. Preparation (resampling, loop search, crossfade) runs once per cached note,
never per audio block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Seconds the key is held in a generated note (NSynth convention: 3 s held, 1 s release).
HELD_SECONDS = 3.0
#: Samples of padding after each buffer so linear interpolation may read one past the end.
GUARD = 4
_LOOP_END_MARGIN_S = 0.1  # keep the loop clear of the key-up transient at HELD_SECONDS
_LOOP_MIN_S = 0.15
_LOOP_MAX_S = 1.0
_CROSSFADE_S = 0.04
_FILE_MAGIC = 0x4D41525331  # 'MARS1'
_MIN_SAMPLES = 64


@dataclass(frozen=True, eq=False)
class NoteSample:
    """A generated note ready to play at the output rate.

    Attributes:
        data: float32 ``[N + GUARD]``, the whole note (attack, held part, release tail),
            followed by ``GUARD`` zeros.
        loop: float32 ``[L + GUARD]``, one loop cycle: ``data[loop_start : loop_start + L]``
            whose last ``crossfade`` samples are crossfaded into the audio just before
            ``loop_start``; the guard repeats the cycle's first samples.
        loop_start: first sample of the loop in ``data``.
        crossfade: length of the baked crossfade in samples (``< L``).
        sample_rate: rate of ``data`` and ``loop`` in Hz.
        root_pitch: MIDI pitch the note was generated at; a voice playing another key
            transposes by resampling on the fly.
    """

    data: np.ndarray
    loop: np.ndarray
    loop_start: int
    crossfade: int
    sample_rate: int
    root_pitch: int

    @property
    def length(self) -> int:
        """N, the note's length in samples (without the guard)."""
        return int(self.data.shape[0] - GUARD)

    @property
    def loop_length(self) -> int:
        """L, the loop cycle's length in samples."""
        return int(self.loop.shape[0] - GUARD)

    @property
    def loop_entry(self) -> int:
        """Position in ``data`` where a held voice moves into ``loop`` (at loop index L - crossfade)."""
        return self.loop_start + self.loop_length - self.crossfade

    def save(self, path: Path) -> None:
        """Write the sample as one raw file: an int64 header, then ``data`` and ``loop`` as float32."""
        header = np.array([_FILE_MAGIC, self.loop_start, self.crossfade, self.sample_rate, self.root_pitch,
                           self.data.shape[0], self.loop.shape[0]], dtype=np.int64)  # fmt: skip
        with open(path, "wb") as f:
            f.write(header.tobytes())
            f.write(np.ascontiguousarray(self.data, np.float32).tobytes())
            f.write(np.ascontiguousarray(self.loop, np.float32).tobytes())

    @classmethod
    def load(cls, path: Path) -> NoteSample:
        """Read a sample written by :meth:`save` (raises ``ValueError`` if the file is damaged)."""
        raw = np.fromfile(path, dtype=np.uint8)
        header = raw[: 7 * 8].view(np.int64) if raw.shape[0] >= 56 else np.zeros(7, np.int64)
        magic, loop_start, crossfade, sample_rate, root_pitch, n_data, n_loop = (int(v) for v in header)
        if magic != _FILE_MAGIC or raw.shape[0] != 56 + 4 * (n_data + n_loop):
            raise ValueError(f"{path} is not a complete note file")
        floats = raw[56:].view(np.float32)
        return cls(floats[:n_data], floats[n_data:], loop_start, crossfade, sample_rate, root_pitch)


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a mono waveform with soxr (high quality).

    Args:
        wave: float ``[N]`` at ``source_rate``.
    Returns:
        float32 ``[round(N * target_rate / source_rate)]``.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if source_rate == target_rate:
        return wave.copy()
    import soxr

    return soxr.resample(wave, source_rate, target_rate, quality="HQ").astype(np.float32)


def find_loop(wave: np.ndarray, sample_rate: int, held_seconds: float = HELD_SECONDS) -> tuple[int, int, int]:
    """Find loop points in the held part of a note.

    The loop ends shortly before the key-up point. Its start is the position, between
    ``_LOOP_MIN_S`` and ``_LOOP_MAX_S`` earlier, whose preceding ``crossfade`` samples
    correlate best (normalised cross-correlation) with the loop end's, so the crossfade
    joins two similar stretches of sound.

    Args:
        wave: float32 ``[N]``, the note at ``sample_rate``.
    Returns:
        ``(loop_start, loop_end, crossfade)`` in samples, ``loop_end - loop_start > crossfade``.
    """
    n = wave.shape[0]
    end = min(int(round((held_seconds - _LOOP_END_MARGIN_S) * sample_rate)), n)
    crossfade = max(8, int(_CROSSFADE_S * sample_rate))
    min_len = max(2 * crossfade, int(_LOOP_MIN_S * sample_rate))
    max_len = min(int(_LOOP_MAX_S * sample_rate), end - crossfade)
    if end < 4 * crossfade or max_len <= min_len:
        # Too short to search: loop the last stretch of whatever there is.
        crossfade = max(1, min(crossfade, end // 4))
        return max(crossfade, end // 2), max(end, crossfade + 2), crossfade
    x = wave.astype(np.float64)
    template = x[end - crossfade : end]
    # Candidate loop starts s in [end - max_len, end - min_len]; the window before s is x[s - w : s].
    lo, hi = end - max_len - crossfade, end - min_len  # window starts k = s - w in [lo, hi - w]
    region = x[lo:hi]
    # corr[j] = <region[j : j + w], template>, by FFT (numpy's: scipy.signal takes seconds to import).
    size = 1 << int(np.ceil(np.log2(region.shape[0] + crossfade)))
    spectrum = np.fft.rfft(region, size) * np.conj(np.fft.rfft(template, size))
    corr = np.fft.irfft(spectrum, size)[: region.shape[0] - crossfade + 1]
    energy = np.concatenate([[0.0], np.cumsum(region * region)])
    window_energy = energy[crossfade:] - energy[:-crossfade]
    norm = np.sqrt(np.maximum(window_energy[: corr.shape[0]], 1e-20) * max(float(template @ template), 1e-20))
    score = corr / norm
    best = int(np.argmax(score))
    start = lo + best + crossfade
    return start, end, crossfade


def prepare_note(wave: np.ndarray, source_rate: int, target_rate: int, root_pitch: int) -> NoteSample:
    """Turn a generated note into a :class:`NoteSample`: resample, find and bake the loop.

    Args:
        wave: float ``[N]`` at ``source_rate`` (the model's rate, 16 kHz for MARS).
        source_rate: rate of ``wave`` in Hz.
        target_rate: output rate in Hz.
        root_pitch: MIDI pitch the note was generated at.
    """
    x = resample(np.nan_to_num(np.asarray(wave, dtype=np.float32)), source_rate, target_rate)
    if x.shape[0] < _MIN_SAMPLES:  # an empty or tiny note still gets a (silent) loop to stand on
        x = np.concatenate([x, np.zeros(_MIN_SAMPLES - x.shape[0], np.float32)])
    start, end, crossfade = find_loop(x, target_rate)
    cycle = x[start:end].copy()
    head = x[start - crossfade : start]
    t = (np.arange(crossfade, dtype=np.float64) + 0.5) / crossfade
    tail = cycle[-crossfade:].astype(np.float64)
    denom = np.sqrt(float(tail @ tail) * float(head.astype(np.float64) @ head))
    similarity = float(tail @ head) / denom if denom > 0 else 1.0
    if similarity > 0.7:  # correlated: a linear fade keeps the level constant
        fade_in = t
        fade_out = 1.0 - t
    else:  # uncorrelated: equal power keeps the energy constant
        fade_in = np.sin(0.5 * np.pi * t)
        fade_out = np.cos(0.5 * np.pi * t)
    cycle[-crossfade:] = (tail * fade_out + head * fade_in).astype(np.float32)
    loop = np.concatenate([cycle, cycle[:GUARD]]).astype(np.float32)
    data = np.concatenate([x, np.zeros(GUARD, np.float32)]).astype(np.float32)
    return NoteSample(data, loop, int(start), int(crossfade), int(target_rate), int(root_pitch))
