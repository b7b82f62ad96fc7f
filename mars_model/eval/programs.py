"""Is each instrument recognised? Per-program scoring with the General MIDI classifier.

The family metrics (NSynth's eleven families) say whether a generated note sounds like a
flute; with every GM program and drum kit in play, the question is also whether it sounds
like *this* flute, and whether a kit's snare is that kit's snare. The GM classifier
(``tools/train_gm_classifier.py``: a pitch head and a 177-class instrument head, programs
0-127 then kits) answers both for real and for generated notes of the same conditions, and a
program is judged by how often its generated notes are recognised *relative to* how often its
real notes are (a program the classifier confuses with its neighbours on real notes cannot be
held to a higher bar on generated ones). A drum note's *piece* (kick, snare, closed hi-hat:
what its key plays) is recognised when the pitch head names its key, whichever kit the
instrument head names: kits differ from each other on a few keys only, and subtly. Given the
drum classifier (:mod:`mars_model.eval.drums`, which hears a note's attack), the piece is
scored by it instead: it names the piece from the first second, where the GM classifier's
256 ms frames blur the hit.

    from mars_model.eval.programs import instrument_recognition
    table = instrument_recognition(classifier, real_specs, generated_specs, instruments, pitches, families,
                                   drum_classifier=load_drum_classifier())
    print(table.to_markdown())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mars_model.api import FIRST_KIT
from mars_model.eval.drums import drum_pieces, name_pieces


@dataclass
class InstrumentRow:
    """One instrument's scores: notes, and the share recognised among real and candidate notes."""

    instrument: int
    family: str
    notes: int
    real: float
    candidate: float

    @property
    def ratio(self) -> float:
        """Candidate recognition relative to the real notes' (``nan`` when no real note is recognised)."""
        return self.candidate / self.real if self.real > 0 else float("nan")


@dataclass
class InstrumentRecognition:
    """Per-instrument recognition of real and candidate notes (see :func:`instrument_recognition`)."""

    rows: list[InstrumentRow]
    overall_real: float
    overall_candidate: float
    kit_pieces_real: float | None = None
    kit_pieces_candidate: float | None = None
    kit_notes: int = 0
    candidate_label: str = "generated"
    kit_pieces_by: str = "the GM classifier's pitch head (the key)"
    families: dict[str, list[InstrumentRow]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for row in self.rows:
            self.families.setdefault(row.family, []).append(row)

    def median_ratio(self, melodic_only: bool = True) -> float:
        """The median instrument's candidate/real recognition ratio (programs only by default)."""
        ratios = [r.ratio for r in self.rows if not (melodic_only and r.instrument >= FIRST_KIT) and np.isfinite(r.ratio)]
        return float(np.median(ratios)) if ratios else float("nan")

    def to_dict(self) -> dict:
        return {
            "overall_real": self.overall_real, "overall_candidate": self.overall_candidate,
            "median_program_ratio": self.median_ratio(), "kit_notes": self.kit_notes,
            "kit_pieces_real": self.kit_pieces_real, "kit_pieces_candidate": self.kit_pieces_candidate,
            "kit_pieces_by": self.kit_pieces_by,
            "instruments": [{**vars(r), "ratio": r.ratio} for r in self.rows],
        }  # fmt: skip

    def to_markdown(self, worst: int = 3) -> str:
        """A table by family: instruments, notes, recognition of real and candidate notes, the
        median ratio, and the ``worst`` instruments by ratio; then the overall figures."""
        label = self.candidate_label
        lines = [f"| family | instruments | notes | real recognised | {label} recognised | median ratio | lowest ratios |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        for family in sorted(self.families):
            rows = self.families[family]
            notes = sum(r.notes for r in rows)
            real = sum(r.real * r.notes for r in rows) / notes
            cand = sum(r.candidate * r.notes for r in rows) / notes
            ratios = [r.ratio for r in rows if np.isfinite(r.ratio)]
            low = sorted((r for r in rows if np.isfinite(r.ratio)), key=lambda r: r.ratio)[:worst]
            lows = ", ".join(f"{_name(r.instrument)} {r.ratio:.2f}" for r in low)
            median = f"{np.median(ratios):.2f}" if ratios else "-"
            lines.append(f"| {family} | {len(rows)} | {notes} | {real:.1%} | {cand:.1%} | {median} | {lows} |")
        lines.append("")
        lines.append(f"All notes: real {self.overall_real:.1%}, {label} {self.overall_candidate:.1%} recognised as their "
                     f"instrument; the median program's {label}/real ratio is {self.median_ratio():.2f}.")  # fmt: skip
        if self.kit_notes:
            lines.append(f"Drum kits ({self.kit_notes} notes): the piece (the drum its key plays) recognised for "
                         f"{self.kit_pieces_real:.1%} of real and {self.kit_pieces_candidate:.1%} of {label} notes "
                         f"(judged by {self.kit_pieces_by}).")  # fmt: skip
        return "\n".join(lines)


def _name(instrument: int) -> str:
    return f"kit {instrument - FIRST_KIT}" if instrument >= FIRST_KIT else f"program {instrument}"


def instrument_recognition(classifier, real_specs, candidate_specs, instruments: Sequence[int],
                           pitches: Sequence[int], families: Sequence[str], candidate_label: str = "generated",
                           drum_classifier=None) -> InstrumentRecognition:  # fmt: skip
    """Score real and candidate notes of the same conditions by the GM classifier.

    Args:
        classifier: a :class:`~mars_model.eval.classifier.NoteClassifier` whose second head names
            instruments (``n_families`` >= every instrument here).
        real_specs, candidate_specs: ``[N, F, T]`` log spectrograms, paired row by row.
        instruments, pitches: each row's instrument (GM program, or ``FIRST_KIT`` + kit) and
            pitch (a drum key for kits).
        families: each row's family name (the table's grouping).
        drum_classifier: optional drum-piece classifier (:func:`~mars_model.eval.drums.load_drum_classifier`)
            that scores the kit notes' pieces.
    Returns:
        :class:`InstrumentRecognition`: a note is recognised when the instrument head's top
        class is its instrument; a kit note's *piece* when the drum classifier names its piece,
        or, without one, when the pitch head names its key.
    """
    instruments = np.asarray(instruments, np.int64)
    pitches = np.asarray(pitches, np.int64)
    if len(instruments) != len(real_specs) or len(real_specs) != len(candidate_specs):
        raise ValueError(f"{len(real_specs)} real, {len(candidate_specs)} candidate notes for {len(instruments)} labels")
    if instruments.max() >= classifier.config.n_families:
        raise ValueError(f"the classifier names {classifier.config.n_families} instruments; the notes go up to "
                         f"{int(instruments.max())}: use the GM classifier")  # fmt: skip
    kits = instruments >= FIRST_KIT
    kit_rows = np.flatnonzero(kits)
    by_drums = drum_classifier is not None and len(kit_rows) > 0
    if by_drums:
        truth = drum_pieces(drum_classifier, instruments[kit_rows], pitches[kit_rows])
    hits, pieces = {}, {}
    for name, specs in (("real", real_specs), ("candidate", candidate_specs)):
        out = classifier.describe(specs)
        hits[name] = out.family_probs.argmax(axis=1) == instruments
        pieces[name] = out.pitch_probs.argmax(axis=1) == pitches
        if by_drums:
            pieces[name][kit_rows] = name_pieces(drum_classifier, specs[kit_rows]) == truth
    rows = []
    for instrument in np.unique(instruments):
        mask = instruments == instrument
        family = str(np.asarray(families, dtype=object)[mask][0])
        rows.append(InstrumentRow(int(instrument), family, int(mask.sum()), float(hits["real"][mask].mean()),
                                  float(hits["candidate"][mask].mean())))  # fmt: skip
    return InstrumentRecognition(
        rows, float(hits["real"].mean()), float(hits["candidate"].mean()),
        float(pieces["real"][kits].mean()) if kits.any() else None,
        float(pieces["candidate"][kits].mean()) if kits.any() else None,
        int(kits.sum()), candidate_label,
        **({"kit_pieces_by": "the drum classifier"} if by_drums else {}),
    )  # fmt: skip
