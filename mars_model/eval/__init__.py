"""The evaluation suite: a pitch/family classifier and the MARS/GANSynth metrics built on it.

Public surface::

    evaluate_dirs(real, generated, split="test")   -> EvalReport   (NSynth-layout dirs)
    evaluate_ceiling(root, "train", "test")         -> EvalReport   (real vs real)
    Evaluator(...).compare(reference, candidate)    -> EvalReport   (in-memory NoteCollections)
    NoteCollection.from_dir / from_arrays

Metric functions live in :mod:`mars_model.eval.metrics`, pYIN in :mod:`mars_model.eval.pitch`.
"""

from mars_model.eval.classifier import (
    FAMILIES,
    ClassifierConfig,
    ClassifierOutput,
    NoteClassifier,
    load_classifier,
)
from mars_model.eval.suite import (
    EvalReport,
    Evaluator,
    NoteCollection,
    evaluate_ceiling,
    evaluate_dirs,
)

__all__ = [
    "FAMILIES",
    "ClassifierConfig",
    "ClassifierOutput",
    "EvalReport",
    "Evaluator",
    "NoteClassifier",
    "NoteCollection",
    "evaluate_ceiling",
    "evaluate_dirs",
    "load_classifier",
]
