"""Train the drum-piece classifier: which drum a kit note plays, from its first second.

    python tools/train_drum_classifier.py data/gm -o mars_model/weights/eval_drum_classifier.pt
    python tools/train_drum_classifier.py data/gm -o /tmp/drums.pt --test    # also report the test split

The evaluation classifier's trainer and command line (``tools/train_eval_classifier.py``) on the
kit notes (bank 128) only, with the drum classifier's sizes (:mod:`mars_model.eval.drums`: the
first 64 frames at 16 ms, 96 log-frequency bands), the note's piece as the second label and its
key as the first, and each training note's level moved by up to ±6 dB. Early-stopped on the
valid split; afterwards every valid note it names wrong is listed, and with ``--test`` the test
split's too (reported only: nothing is chosen on it).

A judge of generated drums must name a drum after the model's own representation has smoothed
it, not only the real recording: so every training note is also trained on as the tokenizer
reconstructs it (``--renditions``, the shipped tokenizer by default; ``none`` for real notes
only), and the reports score the reconstructions too.
"""

from __future__ import annotations

import sys

from train_eval_classifier import build_parser, train_from_args

from mars_model.data.noteset import NoteSet
from mars_model.eval.drums import (
    DEFAULT_DRUM_WEIGHTS,
    DRUM_TRAINING,
    KIT_BANK,
    drum_classifier_config,
    load_drum_classifier,
    piece_labels,
    piece_names,
    piece_report,
    tokenizer_renditions,
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(DEFAULT_DRUM_WEIGHTS, DRUM_TRAINING, __doc__.split("\n")[0])
    parser.add_argument("--test", action="store_true", help="also report the test split (nothing is chosen on it)")
    parser.add_argument("--renditions", default="shipped", metavar="TOKENIZER",
                        help="also train on each note as this tokenizer reconstructs it "
                             "(default: the shipped one; 'none': real notes only)")  # fmt: skip
    args = parser.parse_args(argv)
    renditions = None if args.renditions == "none" else tokenizer_renditions(
        None if args.renditions == "shipped" else args.renditions)  # fmt: skip
    rc = train_from_args(args, parser.prog, config=drum_classifier_config(), label=piece_labels, settings=DRUM_TRAINING,
                         banks=[KIT_BANK], extra_info={"pieces": list(piece_names()), "renditions": args.renditions},
                         renditions=renditions)  # fmt: skip
    if rc:
        return rc
    classifier = load_drum_classifier(args.output)
    check = renditions or tokenizer_renditions()
    for split in ("valid", "test") if args.test else ("valid",):
        notes = NoteSet(args.root, split, banks=[KIT_BANK])
        print(piece_report(classifier, notes).to_markdown())
        print(f"as the tokenizer reconstructs them: {piece_report(classifier, notes, check(notes)).accuracy:.1%} "
              "named right")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
