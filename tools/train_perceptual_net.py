"""Train the perceptual network that the tokenizer's decoder fine-tune compares notes with.

    python tools/train_perceptual_net.py data/fluidr3            # the shipped one

The evaluation classifier's trainer and command line (``tools/train_eval_classifier.py``)
with the sizes of :data:`mars_model.tokenizer.perceptual.PERCEPTUAL_CONFIG`, the GM program as
the second label and another seed, so the network that shapes the decoder is not the one
that scores it. The defaults are the settings the shipped network was trained with.
"""

from __future__ import annotations

import sys

from train_eval_classifier import main as train_main

from mars_model.eval.training import ClassifierTraining
from mars_model.tokenizer.perceptual import DEFAULT_PERCEPTUAL_WEIGHTS, PERCEPTUAL_CONFIG

#: How the shipped ``tokenizer_perceptual.pt`` was trained (seed 1: the evaluation classifier used 0).
SHIPPED = ClassifierTraining(epochs=5, seed=1, max_minutes=20.0)


def main(argv: list[str] | None = None) -> int:
    return train_main(argv, config=PERCEPTUAL_CONFIG, label="instrument", output=DEFAULT_PERCEPTUAL_WEIGHTS,
                      settings=SHIPPED, description=__doc__.split("\n")[0])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
