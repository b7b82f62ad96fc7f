"""The vocoder floor: real test notes through a Griffin-Lim round trip, scored by the eval suite.

    python tools/eval_griffin_lim_floor.py data/fluidr3 --notes 500 --json gl_floor.json

Each real note's magnitude is vocoded with fast Griffin-Lim and re-analysed; the result is
scored against the same real notes (paired). Any model that outputs magnitudes and uses
Griffin-Lim cannot beat these numbers on the audio-based metrics (pYIN), and a perfect
spectrogram model would score them on everything else. It also shows the in-memory API:
``NoteCollection.from_arrays`` + ``Evaluator.compare``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mars_model.errors import MarsError
from mars_model.eval import Evaluator, NoteCollection
from mars_model.spectral import SpectralFrontEnd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="NSynth-layout note set")
    parser.add_argument("--split", default="test")
    parser.add_argument("--notes", type=int, default=500, help="seeded random subset size")
    parser.add_argument("--iterations", type=int, default=32, help="Griffin-Lim iterations")
    parser.add_argument("--pyin-notes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        real = NoteCollection.from_dir(args.root, args.split)
        rng = np.random.default_rng(args.seed)
        keep = np.sort(rng.choice(len(real), min(args.notes, len(real)), replace=False))
        front = SpectralFrontEnd()
        started = time.monotonic()
        waves, specs = [], []
        for start in range(0, len(keep), 16):
            idx = keep[start : start + 16]
            log = torch.from_numpy(np.asarray(real.specs[idx], dtype=np.float32))
            with torch.no_grad():
                wave = front.griffin_lim(front.log_to_magnitude(log), n_iter=args.iterations)
                specs.append(front.log_spectrogram(wave).numpy())
            waves.extend(wave.numpy())
        vocoded = NoteCollection.from_arrays(
            np.concatenate(specs), real.pitch[keep], real.family[keep],
            [real.note_strs[i] for i in keep], waves=waves, name="griffin-lim",
        )  # fmt: skip
        print(f"vocoded {len(keep)} notes in {time.monotonic() - started:.0f} s", file=sys.stderr)
        evaluator = Evaluator(pyin_notes=args.pyin_notes, seed=args.seed)
        report = evaluator.compare(real, vocoded, paired=True)
    except MarsError as err:
        print(f"eval_griffin_lim_floor: error: {err}", file=sys.stderr)
        return 1
    print(report.to_markdown("real", f"Griffin-Lim x{args.iterations}"), end="")
    if args.json:
        report.save_json(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
