"""Train the General MIDI evaluation classifier: pitch (or drum key) and instrument (177 classes).

    python tools/train_gm_classifier.py data/gm -o mars_model/weights/eval_classifier_gm.pt

The evaluation classifier's trainer and command line (``tools/train_eval_classifier.py``) with
the instrument as the second label: GM programs 0-127 and the drum kits (128 + kit program),
so a generated note can be scored on its own program, its family (read off the program) and,
for a kit, its piece (kit and key: the pitch head reads the key). The eleven-family classifier
stays what it is, so the family numbers of the 24 programs remain comparable with before.
Trained on every note of a set built with ``mars-synth dataset build --programs all``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from train_eval_classifier import main as train_main

from mars_model.eval.classifier import ClassifierConfig
from mars_model.eval.training import ClassifierTraining

#: GM programs 0-127 and kits 0-48 (instrument 128 + kit program).
GM_INSTRUMENTS = 177
GM_CONFIG = replace(ClassifierConfig(), n_families=GM_INSTRUMENTS)
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "mars_model" / "weights" / "eval_classifier_gm.pt"


def main(argv: list[str] | None = None) -> int:
    return train_main(argv, config=GM_CONFIG, label="instrument", output=DEFAULT_OUTPUT,
                      settings=ClassifierTraining(), description=__doc__.split("\n")[0])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
