"""Train the evaluation classifier (pitch + family) that ``mars-synth eval`` scores notes with.

    python tools/train_eval_classifier.py data/fluidr3                       # the shipped one
    python tools/train_eval_classifier.py data/fluidr3 -o /tmp/clf.pt --train-limit 4000

Reads DIR/train (fit) and DIR/valid (early stopping), writes the weights with the training
facts (accuracies, note counts, wall time) stored inside. The shipped weights were made with
the defaults on one CPU thread (``--threads 1``) under ``nice -n 10``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from mars_model.errors import MarsError
from mars_model.eval.classifier import DEFAULT_WEIGHTS, ClassifierConfig
from mars_model.eval.training import ClassifierTraining, Labeller, train_classifier


def build_parser(output: Path = DEFAULT_WEIGHTS, settings: ClassifierTraining | None = None,
                 description: str | None = None) -> argparse.ArgumentParser:
    """The trainer's options, with ``settings`` and ``output`` as their defaults."""
    defaults = settings or ClassifierTraining()
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="NSynth-layout note set with train/ and valid/")
    parser.add_argument("-o", "--output", type=Path, default=output,
                        help=f"weights file (default: {output})")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use a seeded random subset of this many training notes")  # fmt: skip
    parser.add_argument("--max-minutes", type=float, default=defaults.max_minutes,
                        help="stop after the epoch that crosses this wall time")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def train_from_args(args: argparse.Namespace, prog: str, *, config: ClassifierConfig | None = None,
                    label: str | Labeller = "instrument_family", settings: ClassifierTraining | None = None,
                    **options) -> int:
    """Train with the parsed options (``settings`` gives what the command line does not set);
    ``options`` go to :func:`train_classifier` (``banks``, ``extra_info``)."""
    torch.set_num_threads(args.threads)
    settings = replace(settings or ClassifierTraining(), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, train_limit=args.train_limit, max_minutes=args.max_minutes)  # fmt: skip
    try:
        info = train_classifier(args.root, args.output, settings, config, progress_bars=not args.quiet,
                                label=label, **options)  # fmt: skip
    except MarsError as err:
        print(f"{Path(prog).stem}: error: {err}", file=sys.stderr)
        return 1
    summary = {k: v for k, v in info.items() if k not in ("history", "pieces")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")
    return 0


def main(argv: list[str] | None = None, *, config: ClassifierConfig | None = None,
         label: str = "instrument_family", output: Path = DEFAULT_WEIGHTS,
         settings: ClassifierTraining | None = None, description: str | None = None) -> int:
    """The command line; ``tools/train_perceptual_net.py`` calls it with its network's sizes,
    label and defaults."""
    parser = build_parser(output, settings, description)
    args = parser.parse_args(argv)
    return train_from_args(args, parser.prog, config=config, label=label, settings=settings)


if __name__ == "__main__":
    sys.exit(main())
