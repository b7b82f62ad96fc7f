"""``mars-synth eval``: score generated or reconstructed notes against real ones (PIS, IIS, PKID ...)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mars_model.commands import add_model_device_argument

EPILOG = """\
examples:
  mars-synth eval data/fluidr3 runs/recon --json recon.json --markdown recon.md
  mars-synth eval --ceiling data/fluidr3 --json ceiling.json      # real train vs real test

Both directories use the NSynth layout (DIR/<split>/examples.json + audio/<note_str>.wav);
a split directory itself may be given instead of a root. When every generated note has a
real namesake, paired metrics (MSE, MAE, log-spectral distance) are reported too and the
real side is restricted to those namesakes.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("real", type=Path, metavar="REAL_DIR", help="real notes (NSynth layout)")
    parser.add_argument(
        "generated", type=Path, nargs="?", metavar="GEN_DIR",
        help="generated or reconstructed notes (NSynth layout); omit with --ceiling",
    )  # fmt: skip
    parser.add_argument("--split", default="test", help="split read under each root (default test)")
    parser.add_argument(
        "--ceiling", action="store_true",
        help="real vs real: score REAL_DIR's --candidate-split against its --reference-split",
    )  # fmt: skip
    parser.add_argument("--reference-split", default="train", help="ceiling reference (default train)")
    parser.add_argument("--candidate-split", default="test", help="ceiling candidate (default test)")
    parser.add_argument(
        "--paired", choices=("auto", "yes", "no"), default="auto",
        help="paired metrics: auto (when names match), yes (error unless they do), no (default auto)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the full report as JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the table as markdown")
    parser.add_argument(
        "--classifier", type=Path, metavar="PT",
        help="evaluation classifier weights (default: the shipped eval_classifier.pt)",
    )  # fmt: skip
    parser.add_argument("--ndb-bins", type=int, default=50, help="k of NDB/k (default 50)")
    parser.add_argument(
        "--pyin-notes", type=int, default=500,
        help="notes per set checked by pYIN, seeded subset (default 500; 0 = skip, -1 = all)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of subsets and k-means (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_model_device_argument(parser, default="cpu", what="the evaluation classifier",
                              why=", which keeps scores comparable with the README's")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from mars_model.commands import resolve_model_device
    from mars_model.errors import MarsError
    from mars_model.eval.suite import Evaluator, evaluate_ceiling, evaluate_dirs

    if args.ceiling and args.generated is not None:
        raise MarsError("--ceiling scores one real set against itself: give only REAL_DIR")
    if not args.ceiling and args.generated is None:
        raise MarsError("give REAL_DIR and GEN_DIR, or --ceiling REAL_DIR")
    if args.pyin_notes < -1:
        raise MarsError("--pyin-notes must be -1 (all), 0 (skip) or a positive count")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_model_device(args.model_device)
    for path in (args.json, args.markdown):
        if path is not None and not path.parent.is_dir():
            raise MarsError(f"cannot write {path}: {path.parent} is not a directory")

    evaluator = Evaluator(
        classifier=args.classifier,
        ndb_bins=args.ndb_bins,
        pyin_notes=None if args.pyin_notes == -1 else args.pyin_notes,
        seed=args.seed,
        device=device,
        progress=not args.quiet,
    )
    if args.ceiling:
        report = evaluate_ceiling(args.real, args.reference_split, args.candidate_split, evaluator)
        labels = (f"real {args.reference_split}", f"real {args.candidate_split}")
    else:
        paired = {"auto": None, "yes": True, "no": False}[args.paired]
        report = evaluate_dirs(args.real, args.generated, args.split, paired, evaluator)
        labels = ("real", "generated")
    table = report.to_markdown(*labels)
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        report.save_json(args.json)
    return 0
