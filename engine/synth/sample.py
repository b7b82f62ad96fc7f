"""Prepared notes: a generated waveform resampled to the output rate, with a crossfaded sustain loop.

A generated note is NSynth-style: the key is held for :data:`HELD_SECONDS` (3 s) and then
released, and the release tail is part of the audio. A key held longer than that keeps
sounding the way samplers do it: a loop is found late in the held part, where the sound
has settled, and its end is crossfaded into the audio just before its start so the wrap is
seamless. Preparation (resampling, loop search, crossfade) runs once per cached note,
never per audio block.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.synth.loudness import level_db

#: Seconds the key is held in a generated note (NSynth convention: 3 s held, 1 s release).
HELD_SECONDS = 3.0
#: Samples of padding after each buffer so linear interpolation may read one past the end.
GUARD = 4
_LOOP_END_MARGIN_S = 0.1  # keep the loop clear of the key-up transient at HELD_SECONDS
_LOOP_MIN_S = 0.15
_LOOP_MAX_S = 1.0
_CROSSFADE_S = 0.04
_FILE_MAGIC = 0x4D41525332  # 'MARS2': MARS1 plus the note's level
_OLD_MAGICS = (0x4D41525331,)
_HEADER_WORDS = 8
#: A calibrated note is never raised by more than this, nor cut by more (dB): a near-silent
#: generated note is not blown up into noise.
_GAIN_LIMIT_DB = (-60.0, 24.0)
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
        level_db: the generated note's level (:func:`engine.synth.loudness.level_db`, measured
            at the model's rate before resampling).
        target_db: float32 ``[128]``, the real instrument's level at this pitch for each MIDI
            velocity (the playback calibration, :mod:`engine.calibration`), or ``None`` when
            the note is not calibrated.
    """

    data: np.ndarray
    loop: np.ndarray
    loop_start: int
    crossfade: int
    sample_rate: int
    root_pitch: int
    level_db: float = 0.0
    target_db: np.ndarray | None = None

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

    def velocity_gain(self, velocity: int, sensitivity: float = 1.0) -> float:
        """The linear gain that plays this note as loud as the real instrument at ``velocity``.

        With a target curve: ``target[v] - level`` dB, where a ``sensitivity`` other than 1
        scales the curve's distance below its velocity-127 level (0: every velocity as loud
        as 127; 2: twice the dB range). Without one (an uncalibrated note), the note is taken
        as played at velocity 127 and scaled by General MIDI's 40 dB curve, ``(v / 127) ** 2``.
        """
        v = min(max(int(velocity), 1), 127)
        if self.target_db is None:
            return (v / 127.0) ** 2
        top = float(self.target_db[127])
        db = top + sensitivity * (float(self.target_db[v]) - top) - self.level_db
        return 10.0 ** (min(max(db, _GAIN_LIMIT_DB[0]), _GAIN_LIMIT_DB[1]) / 20.0)

    def save(self, path: Path) -> None:
        """Write the sample as one raw file: an int64 header (the level as float64 bits), then
        ``data`` and ``loop`` as float32. The target curve is not saved: it comes from the
        calibration when the note is loaded."""
        header = np.array([_FILE_MAGIC, self.loop_start, self.crossfade, self.sample_rate, self.root_pitch,
                           self.data.shape[0], self.loop.shape[0], 0], dtype=np.int64)  # fmt: skip
        header[7:8] = np.array([self.level_db], np.float64).view(np.int64)
        with open(path, "wb") as f:
            f.write(header.tobytes())
            f.write(np.ascontiguousarray(self.data, np.float32).tobytes())
            f.write(np.ascontiguousarray(self.loop, np.float32).tobytes())

    @classmethod
    def load(cls, path: Path) -> NoteSample:
        """Read a sample written by :meth:`save`.

        Raises:
            StaleNoteFile: the file was written by an older version (prepare it again).
            ValueError: the file is damaged.
        """
        size = _HEADER_WORDS * 8
        with open(path, "rb") as f:
            # Mapped, not read: a warm render touches each note's pages as it plays them, and the
            # arrays keep the mapping (not the file) alive.
            try:
                raw = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8)
            except ValueError:  # an empty file cannot be mapped
                raw = np.zeros(0, np.uint8)
        header = raw[:size].view(np.int64) if raw.shape[0] >= size else np.zeros(_HEADER_WORDS, np.int64)
        magic, loop_start, crossfade, sample_rate, root_pitch, n_data, n_loop = (int(v) for v in header[:7])
        if magic in _OLD_MAGICS:
            raise StaleNoteFile(f"{path} was written by an older mars-synth")
        if magic != _FILE_MAGIC or raw.shape[0] != size + 4 * (n_data + n_loop):
            raise ValueError(f"{path} is not a complete note file")
        level = float(header[7:8].view(np.float64)[0])
        floats = raw[size:].view(np.float32)
        return cls(floats[:n_data], floats[n_data:], loop_start, crossfade, sample_rate, root_pitch, level)


class StaleNoteFile(ValueError):
    """A prepared-note file in an older format: not damaged, just to be prepared again."""


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


def prepare_note(wave: np.ndarray, source_rate: int, target_rate: int, root_pitch: int,
                 target_db: np.ndarray | None = None) -> NoteSample:  # fmt: skip
    """Turn a generated note into a :class:`NoteSample`: measure its level, resample, find and bake the loop.

    Args:
        wave: float ``[N]`` at ``source_rate`` (the model's rate, 16 kHz for MARS).
        source_rate: rate of ``wave`` in Hz.
        target_rate: output rate in Hz.
        root_pitch: MIDI pitch the note was generated at.
        target_db: the real instrument's level per velocity at this pitch (see
            :attr:`NoteSample.target_db`), or ``None``.
    """
    wave = np.nan_to_num(np.asarray(wave, dtype=np.float32))
    level = level_db(wave, source_rate)
    x = resample(wave, source_rate, target_rate)
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
    return NoteSample(data, loop, int(start), int(crossfade), int(target_rate), int(root_pitch), level, target_db)
