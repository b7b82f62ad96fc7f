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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.synth.effects import PREDELAY_MS, Reverb, decay_time, impulse_response  # noqa: E402

BANDS = (125, 250, 500, 1000, 2000, 4000, 8000)


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
