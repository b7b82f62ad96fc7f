"""How loud a note is, and how fast it starts and dies away: the measures playback is calibrated with.

The same functions measure the real instrument's notes (the FluidSynth-rendered note set,
:mod:`engine.calibration`) and every generated note when it is prepared, so a note can be
played exactly as loud as the real instrument's note of that pitch and velocity.

- **Level**: K-weighted mean power over the note's first :data:`LEVEL_SECONDS`, in dB
  (the ITU-R BS.1770 frequency weighting, a high shelf of +4 dB above about 1.5 kHz and a
  38 Hz high-pass, without gating; a full-scale 1 kHz sine reads about -3 dB). The
  weighting is applied as a power response in the frequency domain: only energy matters,
  so no filter runs sample by sample.
- **Attack**: seconds from the onset until the envelope first comes within 3 dB of its peak.
- **Release**: seconds for the sound to fall by 60 dB after key up, from a straight-line
  fit of the decay in dB (it extrapolates when the recording stops before -60 dB).
"""

from __future__ import annotations

import math

import numpy as np

#: The level is measured over the note's first second (most notes in music are shorter;
#: sustained notes have settled by then).
LEVEL_SECONDS = 1.0
#: Envelope frames for attack and release measures.
ENVELOPE_FRAME_SECONDS = 0.005
#: The release fit uses the decay from this far below the key-up level ...
_FIT_TOP_DB = 3.0
#: ... down to this far below it (or to the noise floor / end of the recording).
_FIT_BOTTOM_DB = 40.0
_FLOOR_DB = -100.0
# BS.1770 stage 1 (high shelf) and stage 2 (high-pass), as analogue prototypes: centre
# frequency (Hz), Q, and the shelf's gain (dB).
_SHELF_HZ, _SHELF_Q, _SHELF_DB = 1681.974450955533, 0.7071752369554196, 3.999843853973347
_HIGHPASS_HZ, _HIGHPASS_Q = 38.13547087602444, 0.5003270373238773


def _biquad_power(b: tuple[float, float, float], a: tuple[float, float, float], freqs: np.ndarray,
                  rate: float) -> np.ndarray:  # fmt: skip
    z = np.exp(-2j * np.pi * freqs / rate)
    num = b[0] + b[1] * z + b[2] * z * z
    den = a[0] + a[1] * z + a[2] * z * z
    return np.abs(num / den) ** 2


def k_weighting_power(freqs: np.ndarray, rate: float) -> np.ndarray:
    """|H(f)|^2 of the K-weighting filter at ``rate`` (bilinear biquads, as BS.1770 at 48 kHz)."""
    w = 2 * math.pi * _SHELF_HZ / rate
    gain = 10 ** (_SHELF_DB / 40)
    alpha = math.sin(w) / (2 * _SHELF_Q)
    root = 2 * math.sqrt(gain) * alpha
    cos = math.cos(w)
    shelf_b = (gain * ((gain + 1) + (gain - 1) * cos + root), -2 * gain * ((gain - 1) + (gain + 1) * cos),
               gain * ((gain + 1) + (gain - 1) * cos - root))  # fmt: skip
    shelf_a = ((gain + 1) - (gain - 1) * cos + root, 2 * ((gain - 1) - (gain + 1) * cos),
               (gain + 1) - (gain - 1) * cos - root)  # fmt: skip
    w = 2 * math.pi * _HIGHPASS_HZ / rate
    alpha = math.sin(w) / (2 * _HIGHPASS_Q)
    cos = math.cos(w)
    high_b = ((1 + cos) / 2, -(1 + cos), (1 + cos) / 2)
    high_a = (1 + alpha, -2 * cos, 1 - alpha)
    return _biquad_power(shelf_b, shelf_a, freqs, rate) * _biquad_power(high_b, high_a, freqs, rate)


def level_db(wave: np.ndarray, rate: int, seconds: float = LEVEL_SECONDS) -> float:
    """K-weighted mean power of ``wave[: seconds * rate]`` in dB (:data:`_FLOOR_DB` for silence).

    Args:
        wave: mono float ``[N]``, the note from its onset.
        rate: its sample rate in Hz.
    """
    n = max(1, int(round(seconds * rate)))
    x = np.zeros(n, np.float64)
    piece = np.asarray(wave, np.float64)[:n]
    x[: piece.shape[0]] = piece
    spectrum = np.fft.rfft(x)
    power = np.abs(spectrum) ** 2
    power[1:-1] *= 2.0  # one-sided spectrum (Parseval): every bin but DC and Nyquist counts twice
    if n % 2:
        power[-1] *= 2.0
    weighted = float(np.sum(power * k_weighting_power(np.fft.rfftfreq(n, 1.0 / rate), rate))) / (n * n)
    return 10 * math.log10(weighted) if weighted > 0 else _FLOOR_DB


def envelope_db(wave: np.ndarray, rate: int, frame_seconds: float = ENVELOPE_FRAME_SECONDS) -> np.ndarray:
    """Mean power per ``frame_seconds`` frame in dB (floor :data:`_FLOOR_DB`), one value per frame."""
    hop = max(1, int(round(frame_seconds * rate)))
    x = np.asarray(wave, np.float64)
    frames = x.shape[0] // hop
    power = np.mean(x[: frames * hop].reshape(frames, hop) ** 2, axis=1) if frames else np.zeros(0)
    return 10 * np.log10(np.maximum(power, 10 ** (_FLOOR_DB / 10)))


def attack_seconds(wave: np.ndarray, rate: int) -> float:
    """Seconds from the start until the envelope first comes within 3 dB of its peak."""
    env = envelope_db(wave, rate)
    if env.shape[0] == 0:
        return 0.0
    return float(np.argmax(env >= env.max() - 3.0)) * ENVELOPE_FRAME_SECONDS


def release_seconds(wave: np.ndarray, rate: int, key_up: float) -> float | None:
    """Seconds to fall by 60 dB after key up (time ``key_up`` s into ``wave``).

    The key-up level is the mean power of the 30 ms before key up. The decay is fitted by
    a straight line in dB from where it first falls :data:`_FIT_TOP_DB` below that level down
    to :data:`_FIT_BOTTOM_DB` below it, the noise floor or the end of ``wave``, whichever
    comes first, and extrapolated to -60 dB.

    Returns:
        The release time, or ``None`` when the sound does not decay after key up (silent,
        or not falling by at least 6 dB).
    """
    env = envelope_db(wave, rate)
    up = int(round(key_up / ENVELOPE_FRAME_SECONDS))
    before = env[max(0, up - 6) : up]
    after = env[up:]
    if before.shape[0] == 0 or after.shape[0] < 4:
        return None
    ref = 10 * math.log10(max(float(np.mean(10 ** (before / 10))), 1e-30))
    if ref <= _FLOOR_DB + 10:
        return None
    rel = after - ref
    below = np.flatnonzero(rel <= -_FIT_TOP_DB)
    if below.shape[0] == 0:
        return None
    first = int(below[0])
    bottom = max(-_FIT_BOTTOM_DB, _FLOOR_DB + 10 - ref)
    reached = np.flatnonzero(rel[first:] <= bottom)
    last = first + (int(reached[0]) if reached.shape[0] else rel.shape[0] - first - 1)
    if last - first < 2 or rel[last] > -6.0:
        return None
    t = np.arange(first, last + 1) * ENVELOPE_FRAME_SECONDS
    slope = float(np.polyfit(t, rel[first : last + 1], 1)[0])  # dB per second, negative
    if slope >= 0:
        return None
    # Time to the first fitted point, then on at the fitted slope to -60 dB.
    return first * ENVELOPE_FRAME_SECONDS + (60.0 - _FIT_TOP_DB) / -slope


#: Brightness is measured below this frequency (the band every note set and model share).
CENTROID_MAX_HZ = 8000.0


def centroid_hz(wave: np.ndarray, rate: int, seconds: float = LEVEL_SECONDS) -> float:
    """Spectral centroid (Hz) of the first ``seconds`` below :data:`CENTROID_MAX_HZ`: the brightness."""
    freqs, power = _power_spectrum(wave, rate, seconds)
    return _centroid(freqs, power)


def _power_spectrum(wave: np.ndarray, rate: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(wave, np.float64)[: max(2, int(round(seconds * rate)))]
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.shape[0], 1.0 / rate)
    keep = freqs <= CENTROID_MAX_HZ
    return freqs[keep], power[keep]


def _centroid(freqs: np.ndarray, power: np.ndarray) -> float:
    total = float(power.sum())
    return float((freqs * power).sum() / total) if total > 0 else 0.0


#: The brightness correction tilts the spectrum by at most this many dB per octave.
TILT_LIMIT_DB_PER_OCTAVE = 6.0


def tilt_to_centroid(wave: np.ndarray, rate: int, target_hz: float) -> np.ndarray:
    """``wave`` with its spectrum tilted (a straight line in dB over log frequency, pivoting at
    1 kHz) so that its centroid is ``target_hz``, within +/-:data:`TILT_LIMIT_DB_PER_OCTAVE`.

    The tilt is applied to the whole note at once (one FFT), so it is a static EQ: the note's
    envelope and partials keep their shape, only the balance of low and high changes.
    """
    x = np.asarray(wave, np.float64)
    freqs, power = _power_spectrum(x, rate, LEVEL_SECONDS)
    if power.sum() <= 0 or target_hz <= 0:
        return np.asarray(wave, np.float32)
    octaves = np.log2(np.maximum(freqs, freqs[1] if freqs.shape[0] > 1 else 1.0) / 1000.0)
    limit = TILT_LIMIT_DB_PER_OCTAVE / 10 * np.log2(10)  # as a power exponent per octave: 10^(dB/10) = 2^slope

    def centroid(slope: float) -> float:
        return _centroid(freqs, power * np.exp2(slope * octaves))

    low, high = -limit, limit
    if centroid(high) <= target_hz:
        slope = high
    elif centroid(low) >= target_hz:
        slope = low
    else:
        for _ in range(40):  # the centroid rises monotonically with the slope: bisect
            mid = 0.5 * (low + high)
            low, high = (mid, high) if centroid(mid) < target_hz else (low, mid)
        slope = 0.5 * (low + high)
    spectrum = np.fft.rfft(x)
    all_freqs = np.fft.rfftfreq(x.shape[0], 1.0 / rate)
    all_octaves = np.log2(np.maximum(all_freqs, all_freqs[1]) / 1000.0)
    spectrum *= np.exp2(0.5 * slope * all_octaves)  # amplitude: half the power exponent
    return np.fft.irfft(spectrum, x.shape[0]).astype(np.float32)
