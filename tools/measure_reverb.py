"""Measure the reverb against its settings: decay time per octave band, stereo correlation, onset.

    python tools/measure_reverb.py                      # 48 kHz, reverb times 0.5, 1.8 and 4 s
    python tools/measure_reverb.py --rate 44100 --times 1 2.5 --damping 0.5

For each setting it sends one click through :class:`engine.synth.effects.Reverb` and measures
the impulse response as a room acoustician would: Schroeder backward integration of each
octave band (4th-order Butterworth), a line fitted to the decay curve from -5 to -35 dB,
extrapolated to 60 dB. Also printed: the correlation of left and right after the first 50 ms,
and how many samples of the first 40 ms after the pre-delay exceed 1 % of that window's peak
(the diffuser's echo density).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.synth.effects import PREDELAY_MS, Reverb  # noqa: E402

BANDS = (125, 250, 500, 1000, 2000, 4000, 8000)


def impulse_response(reverb: Reverb, seconds: float, block: int = 512) -> np.ndarray:
    """The reverb's answer to one full-scale click: float32 ``[2, seconds * rate]``."""
    frames = int(seconds * reverb.sample_rate)
    out = np.zeros((2, frames), np.float32)
    send = np.zeros((2, block), np.float32)
    for start in range(0, frames, block):
        n = min(block, frames - start)
        send[:, 0] = 1.0 if start == 0 else 0.0
        reverb.process(send, out[:, start : start + n], n)
    return out


def decay_time(x: np.ndarray, rate: int, band: tuple[float, float] | None = None) -> float:
    """RT60 in seconds from the -5..-35 dB part of the Schroeder decay curve of ``x`` ``[2, n]``."""
    x = np.asarray(x, np.float64)
    if band is not None:
        x = sosfilt(butter(4, band, btype="band", fs=rate, output="sos"), x, axis=1)
    energy = np.cumsum(np.square(x).sum(axis=0)[::-1])[::-1]
    curve = 10 * np.log10(energy / energy[0] + 1e-300)
    first, last = int(np.argmax(curve < -5)), int(np.argmax(curve < -35))
    return -60.0 / np.polyfit(np.arange(first, last) / rate, curve[first:last], 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=48000)
    parser.add_argument("--times", type=float, nargs="+", default=[0.5, 1.8, 4.0], help="reverb times (s)")
    parser.add_argument("--damping", type=float, nargs="+", default=[0.0, 0.5], help="damping values")
    args = parser.parse_args(argv)
    rate = args.rate
    print(f"# measure_reverb: {rate} Hz; RT60 (s) per octave band, measured from the impulse response")
    print(f"{'set':>5} {'damp':>5} {'broad':>6} " + " ".join(f"{b:>6}" for b in BANDS) + f" {'L/R r':>6} {'dense':>6}")
    for damping in args.damping:
        for seconds in args.times:
            ir = impulse_response(Reverb(rate, 512, time=seconds, damping=damping), 1.2 * seconds + 0.4)
            bands = [decay_time(ir, rate, (b / np.sqrt(2), min(b * np.sqrt(2), 0.45 * rate))) for b in BANDS]
            start = int(PREDELAY_MS * rate / 1000)
            after = ir[:, start + rate // 20 :]
            early = np.abs(ir[0, start : start + int(0.04 * rate)])
            print(f"{seconds:5.2f} {damping:5.2f} {decay_time(ir, rate):6.2f} " + " ".join(f"{t:6.2f}" for t in bands)
                  + f" {np.corrcoef(after[0], after[1])[0, 1]:6.3f} {np.count_nonzero(early > 0.01 * early.max()):6d}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
