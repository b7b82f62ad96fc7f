"""Train the perceptual network that the tokenizer's decoder fine-tune compares notes with.

    python tools/train_perceptual_net.py data/fluidr3            # the shipped one

Same trainer as the evaluation classifier (``tools/train_eval_classifier.py``) with the
sizes of :data:`mars_model.tokenizer.perceptual.PERCEPTUAL_CONFIG` and the GM program as the
second label, so the network that shapes the decoder is not the one that scores it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from mars_model.errors import MarsError
from mars_model.eval.training import ClassifierTraining, train_classifier
from mars_model.tokenizer.perceptual import DEFAULT_PERCEPTUAL_WEIGHTS, PERCEPTUAL_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="NSynth-layout note set with train/ and valid/")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_PERCEPTUAL_WEIGHTS,
                        help=f"weights file (default: {DEFAULT_PERCEPTUAL_WEIGHTS})")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1, help="default 1 (the evaluation classifier used 0)")
    parser.add_argument("--max-minutes", type=float, default=20.0,
                        help="stop after the epoch that crosses this wall time")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = ClassifierTraining(epochs=args.epochs, seed=args.seed, max_minutes=args.max_minutes)
    try:
        info = train_classifier(args.root, args.output, settings, PERCEPTUAL_CONFIG,
                                progress_bars=not args.quiet, label="instrument")  # fmt: skip
    except MarsError as err:
        print(f"train_perceptual_net: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in info.items() if k != "history"}, indent=2))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
