"""The evaluation suite: score a set of generated or reconstructed notes against real ones.

Typical use (the API behind ``mars-synth eval``)::

    from mars_model.eval import evaluate_dirs
    report = evaluate_dirs("data/fluidr3", "runs/recon", split="test")
    print(report.to_markdown()); report.save_json("recon.json")

or, for spectrograms held in memory (tokenizer reconstructions)::

    from mars_model.eval import Evaluator, NoteCollection
    real = NoteCollection.from_dir("data/fluidr3", "test")
    recon = NoteCollection.from_arrays(recon_specs, real.pitch, real.family, real.note_strs)
    report = Evaluator().compare(real, recon)

Set-level metrics (PIS, IIS, classifier accuracies, pYIN accuracy) are given for both
sets, so each generated figure stands beside its real-note ceiling; distances (PKID, IKID,
Fréchet, NDB/k) compare the candidate with the reference; paired metrics (MSE, MAE, LSD)
appear when every candidate note has a reference note of the same name.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mars_model.errors import MarsError
from mars_model.eval import metrics as M
from mars_model.eval.classifier import ClassifierOutput, NoteClassifier, load_classifier
from mars_model.eval.pitch import pyin_accuracy


@dataclass
class NoteCollection:
    """A set of notes to score: spectrograms, labels, names, and a way to get audio.

    Attributes:
        name: how the report calls this set (e.g. ``test`` or a directory).
        specs: ``[N, F, T]`` normalised log spectrograms (numpy array or memmap).
        pitch: ``[N]`` labelled MIDI pitches.
        family: ``[N]`` labelled NSynth families (0..10).
        note_strs: ``N`` note names (pairing key).
        waves: ``i -> [samples]`` waveform of note ``i``; ``None`` means "vocode the
            spectrogram with Griffin-Lim" when audio is needed (pYIN).
        sample_rate: rate of ``waves``.
    """

    name: str
    specs: np.ndarray
    pitch: np.ndarray
    family: np.ndarray
    note_strs: list[str]
    waves: Callable[[int], np.ndarray] | None = field(default=None, repr=False)
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        n = len(self.specs)
        if n == 0:
            raise MarsError(f"{self.name}: no notes to evaluate")
        if self.specs.ndim != 3:
            raise MarsError(f"{self.name}: spectrograms must be [N, F, T], got {self.specs.shape}")
        self.pitch = np.asarray(self.pitch, dtype=np.int64)
        self.family = np.asarray(self.family, dtype=np.int64)
        if not len(self.pitch) == len(self.family) == len(self.note_strs) == n:
            raise MarsError(
                f"{self.name}: {n} spectrograms but {len(self.pitch)} pitches, "
                f"{len(self.family)} families and {len(self.note_strs)} names"
            )

    def __len__(self) -> int:
        return len(self.specs)

    def subset(self, indices: np.ndarray) -> NoteCollection:
        """The notes at ``indices`` (sorted indices keep memmap reads sequential)."""
        indices = np.asarray(indices)
        waves = None if self.waves is None else (lambda i, w=self.waves: w(int(indices[i])))
        return NoteCollection(
            name=self.name,
            specs=_Rows(self.specs, indices),
            pitch=self.pitch[indices],
            family=self.family[indices],
            note_strs=[self.note_strs[i] for i in indices],
            waves=waves,
            sample_rate=self.sample_rate,
        )

    @classmethod
    def from_dir(
        cls, path: str | os.PathLike, split: str | None = None, progress: bool = True
    ) -> NoteCollection:
        """Read an NSynth-layout split (building its spectrogram cache on first use).

        Args:
            path: either a split directory (holding ``examples.json``) or a set root
                holding ``<split>/examples.json``.
            split: the split folder under a root (ignored when ``path`` is a split).
        """
        from tqdm import tqdm

        from mars_model.data.noteset import NoteSet

        path = Path(path)
        if not path.is_dir():
            raise MarsError(f"{path} is not a directory")
        if (path / "examples.json").is_file():
            root, split_name = path.parent, path.name
        elif split and (path / split / "examples.json").is_file():
            root, split_name = path, split
        else:
            where = f"{path}/examples.json" + (f" or {path}/{split}/examples.json" if split else "")
            raise MarsError(f"no examples.json at {where}: not an NSynth-layout note set")
        notes = NoteSet(root, split_name)
        if len(notes) == 0:
            raise MarsError(f"{root / split_name}/examples.json lists no notes")
        with tqdm(total=len(notes), desc=f"{split_name} spectrograms", unit="note",
                  disable=not progress, leave=False) as bar:  # fmt: skip
            specs = notes.spectrograms(progress=bar.update)
        return cls(
            name=str(root / split_name),
            specs=specs,
            pitch=notes.conditions["pitch"],
            family=notes.conditions["instrument_family"],
            note_strs=list(notes.note_strs),
            waves=notes.load_audio,
            sample_rate=notes.spectral.config.sample_rate,
        )

    @classmethod
    def from_arrays(
        cls,
        specs: np.ndarray,
        pitch: Sequence[int] | np.ndarray,
        family: Sequence[int] | np.ndarray,
        note_strs: Sequence[str] | None = None,
        waves: Callable[[int], np.ndarray] | Sequence[np.ndarray] | None = None,
        name: str = "candidate",
        sample_rate: int = 16000,
    ) -> NoteCollection:
        """Wrap in-memory notes.

        Args:
            specs: ``[N, F, T]`` log spectrograms (numpy or a CPU torch tensor).
            pitch, family: ``[N]`` labels.
            note_strs: names (default ``note-0000`` ...); equal names pair notes.
            waves: audio per note (callable or list), or ``None`` to vocode when needed.
        """
        specs = specs.detach().cpu().numpy() if hasattr(specs, "detach") else np.asarray(specs)
        names = (
            list(note_strs)
            if note_strs is not None
            else [f"note-{i:05d}" for i in range(len(specs))]
        )
        if waves is not None and not callable(waves):
            wave_list = waves
            waves = wave_list.__getitem__
        return cls(name, specs, np.asarray(pitch), np.asarray(family), names, waves, sample_rate)


def _griffin_lim_audio(specs: np.ndarray, sample_rate: int) -> Callable[[int], np.ndarray]:
    import torch

    from mars_model.spectral import SpectralConfig, SpectralFrontEnd

    n_bins = specs.shape[1]
    front = SpectralFrontEnd(SpectralConfig(sample_rate=sample_rate, n_fft=2 * n_bins))

    def wave(i: int) -> np.ndarray:
        log = torch.from_numpy(np.asarray(specs[i], dtype=np.float32))
        return front.griffin_lim(front.log_to_magnitude(log), n_iter=32).numpy()

    return wave


@dataclass
class EvalReport:
    """Everything one comparison measured.

    Attributes:
        reference: name and size of the real set ``{"name", "notes"}``.
        candidate: name and size of the set under test.
        reference_scores: set-level metrics of the real notes (PIS, IIS, accuracies, pYIN).
        candidate_scores: the same for the candidate.
        distances: PKID, IKID, Fréchet distances, NDB/k (candidate vs reference).
        paired: MSE, MAE, LSD over notes present in both sets (empty if not paired).
        details: counts and settings behind the numbers (NDB bins, pYIN subset, timings).
    """

    reference: dict
    candidate: dict
    reference_scores: dict
    candidate_scores: dict
    distances: dict
    paired: dict
    details: dict

    def to_dict(self) -> dict:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "reference_scores": self.reference_scores,
            "candidate_scores": self.candidate_scores,
            "distances": self.distances,
            "paired": self.paired,
            "details": self.details,
        }

    def save_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")

    def to_markdown(self, reference_label: str = "real", candidate_label: str = "candidate") -> str:
        """A markdown table: one row per metric, columns for the real and the candidate set."""
        ref_head = f"{reference_label} ({self.reference['notes']} notes)"
        cand_head = f"{candidate_label} ({self.candidate['notes']} notes)"
        rows = [f"| metric | {ref_head} | {cand_head} |", "| --- | ---: | ---: |"]
        for key, label in SCORE_ROWS:
            ref, cand = self.reference_scores.get(key), self.candidate_scores.get(key)
            if ref is None and cand is None:
                continue
            rows.append(f"| {label} | {_fmt(ref)} | {_fmt(cand)} |")
        for key, label in DISTANCE_ROWS:
            if key in self.distances:
                rows.append(f"| {label} | – | {_fmt(self.distances[key])} |")
        for key, label in PAIRED_ROWS:
            if key in self.paired:
                rows.append(f"| {label} | – | {_fmt(self.paired[key])} |")
        notes = []
        if self.paired:
            notes.append(f"paired metrics over {self.paired['notes']} notes present in both sets")
        else:
            notes.append("not paired: MSE/MAE/LSD need the same note names in both sets")
        pyin = self.details.get("pyin")
        if pyin:
            notes.append(f"pYIN on {pyin['notes']} notes per set ({pyin['audio']})")
        if "pyin_pitched_notes" in self.details:
            notes.append(
                f"pYIN on pitched notes: the {self.details['pyin_pitched_notes']} conditions whose "
                "real note pYIN reads at its label"
            )
        return "\n".join(rows) + "\n\n" + "; ".join(notes) + ".\n"


SCORE_ROWS = (
    ("pis", "PIS (pitch inception score) ↑"),
    ("iis", "IIS (family inception score) ↑"),
    ("pitch_accuracy", "pitch accuracy, classifier ↑"),
    ("family_accuracy", "family accuracy, classifier ↑"),
    ("pyin_accuracy", "pitch accuracy, pYIN ±50 cents ↑"),
    ("pyin_accuracy_pitched", "pitch accuracy, pYIN ±50 cents, pitched notes (real note reads at its label) ↑"),
    ("pyin_pitch_class_accuracy", "pitch-class accuracy, pYIN ±50 cents, octave errors forgiven ↑"),
)
DISTANCE_ROWS = (
    ("pkid", "PKID (pitch features) ↓"),
    ("ikid", "IKID (family features) ↓"),
    ("pitch_frechet", "Fréchet distance, pitch embedding (ours, not FAD) ↓"),
    ("family_frechet", "Fréchet distance, family embedding (ours, not FAD) ↓"),
    ("ndb_over_k", "NDB/k ↓"),
)
PAIRED_ROWS = (
    ("mse", "MSE, normalised log spectrogram ↓"),
    ("mae", "MAE, normalised log spectrogram ↓"),
    ("lsd_db", "log-spectral distance (dB) ↓"),
)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 0.01 or value == 0:
        return f"{value:.4f}"
    return f"{value:.2e}"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


class Evaluator:
    """Scores note sets with one trained classifier.

    Args:
        classifier: a :class:`NoteClassifier`, a path to one, or ``None`` for the shipped
            ``mars_model/weights/eval_classifier.pt``.
        ndb_bins: k of NDB/k (k-means bins fitted on the reference set).
        pyin_notes: notes per set checked by pYIN (a seeded random subset; the same names
            in both sets when paired); ``0`` skips pYIN, ``None`` checks every note.
        seed: seeds the pYIN subset and the k-means.
        batch_size: notes per classifier forward pass.
        device: where the classifier runs.
        progress: show progress bars.
    """

    def __init__(
        self,
        classifier: NoteClassifier | str | os.PathLike | None = None,
        ndb_bins: int = 50,
        pyin_notes: int | None = 500,
        seed: int = 0,
        batch_size: int = 64,
        device: str = "cpu",
        progress: bool = True,
    ) -> None:
        if isinstance(classifier, NoteClassifier):
            self.classifier = classifier.to(device).eval()
        else:
            self.classifier = load_classifier(classifier, device=device)
        if ndb_bins < 2:
            raise MarsError(f"NDB needs at least 2 bins, got {ndb_bins}")
        if pyin_notes is not None and pyin_notes < 0:
            raise MarsError(f"pyin_notes must be >= 0 or None (all), got {pyin_notes}")
        self.ndb_bins = ndb_bins
        self.pyin_notes = pyin_notes
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress

    # -- pieces ---------------------------------------------------------------------------
    def describe(self, notes: NoteCollection) -> ClassifierOutput:
        """Classifier outputs and features of every note (see :class:`ClassifierOutput`)."""
        import torch
        from tqdm import tqdm

        cfg = self.classifier.config
        if tuple(notes.specs.shape[1:]) != (cfg.n_bins, cfg.n_frames):
            raise MarsError(
                f"{notes.name}: spectrograms are {list(notes.specs.shape[1:])}, the evaluation "
                f"classifier reads [{cfg.n_bins}, {cfg.n_frames}] (16 kHz, n_fft 1024, hop 256, 4 s)"
            )
        with torch.no_grad(), tqdm(total=len(notes), desc=f"classifying {_short(notes.name)}",
                                   unit="note", disable=not self.progress, leave=False) as bar:  # fmt: skip
            return self.classifier.describe(notes.specs, self.batch_size, progress=bar.update)

    def set_scores(
        self, notes: NoteCollection, out: ClassifierOutput, pyin_indices: np.ndarray | None
    ) -> dict:
        """PIS, IIS, classifier accuracies and pYIN accuracy of one set."""
        from tqdm import tqdm

        _check_labels(notes, self.classifier)
        scores = {
            "pis": M.inception_score(out.pitch_probs),
            "iis": M.inception_score(out.family_probs),
            "pitch_accuracy": M.accuracy(out.pitch_probs, notes.pitch),
            "family_accuracy": M.accuracy(out.family_probs, notes.family),
        }
        if pyin_indices is not None and len(pyin_indices):
            audio = notes.waves or _griffin_lim_audio(notes.specs, notes.sample_rate)
            with tqdm(total=len(pyin_indices), desc=f"pYIN {_short(notes.name)}", unit="note",
                      disable=not self.progress, leave=False) as bar:  # fmt: skip
                result = pyin_accuracy(
                    lambda i: audio(int(pyin_indices[i])), notes.pitch[pyin_indices],
                    notes.sample_rate, progress=bar.update,
                )  # fmt: skip
            scores["pyin_accuracy"] = result["accuracy"]
            scores["pyin_pitch_class_accuracy"] = result["pitch_class_accuracy"]
            scores["pyin_unvoiced"] = result["unvoiced"]
            scores["pyin_median_abs_cents"] = result["median_abs_cents"]
            scores["_pyin_correct"] = result["correct"]  # per note, popped by compare()
        return scores

    def _pyin_subset(self, n: int, rng: np.random.Generator) -> np.ndarray | None:
        if self.pyin_notes == 0:
            return None
        if self.pyin_notes is None or self.pyin_notes >= n:
            return np.arange(n)
        return np.sort(rng.choice(n, self.pyin_notes, replace=False))

    # -- the comparison -------------------------------------------------------------------
    def compare(
        self,
        reference: NoteCollection,
        candidate: NoteCollection,
        paired: bool | None = None,
        restrict_reference: bool = True,
    ) -> EvalReport:
        """Score ``candidate`` against the real notes of ``reference``.

        Args:
            reference: real notes (for generation: the real notes of the same split).
            candidate: generated or reconstructed notes.
            paired: ``True`` requires every candidate name to be in the reference (else a
                :class:`MarsError`), ``False`` skips paired metrics, ``None`` pairs when
                the names allow it.
            restrict_reference: when paired, compare with only the reference notes that
                the candidate rebuilds (all metrics, so real and rebuilt accuracies are over
                the same notes); ``False`` keeps the whole reference for distances.
        """
        from tqdm import tqdm

        started = time.monotonic()
        if reference.specs.shape[1:] != candidate.specs.shape[1:]:
            raise MarsError(
                f"mismatched sets: {reference.name} has [F, T] = {list(reference.specs.shape[1:])}, "
                f"{candidate.name} has {list(candidate.specs.shape[1:])}"
            )
        if reference.sample_rate != candidate.sample_rate:
            raise MarsError(
                f"mismatched sets: {reference.name} is at {reference.sample_rate} Hz, "
                f"{candidate.name} at {candidate.sample_rate} Hz"
            )
        ref_index = {name: i for i, name in enumerate(reference.note_strs)}
        missing = [n for n in candidate.note_strs if n not in ref_index]
        if paired and missing:
            raise MarsError(
                f"mismatched sets: {len(missing)} of {len(candidate)} notes in {candidate.name} "
                f"have no namesake in {reference.name} (e.g. {missing[0]}); paired metrics "
                "need the real notes' note_str names"
            )
        is_paired = not missing if paired is None else paired
        details: dict = {"ndb_bins": self.ndb_bins, "seed": self.seed}
        if is_paired and restrict_reference and len(candidate) < len(reference):
            # Reconstructions of part of a split: compare with exactly the notes they rebuild.
            keep = np.sort(np.array([ref_index[n] for n in candidate.note_strs]))
            details["reference_restricted_from"] = len(reference)
            reference = reference.subset(keep)
            ref_index = {name: i for i, name in enumerate(reference.note_strs)}
        if len(reference) < self.ndb_bins:
            raise MarsError(
                f"NDB with k={self.ndb_bins} bins needs at least {self.ndb_bins} real notes, "
                f"{reference.name} has {len(reference)} (lower the number of bins)"
            )
        if len(reference) < 2 or len(candidate) < 2:
            raise MarsError("KID and Fréchet distances need at least 2 notes per set")

        ref_out = self.describe(reference)
        cand_out = self.describe(candidate)

        rng = np.random.default_rng(self.seed)
        if is_paired:
            pair_ref = np.array([ref_index[n] for n in candidate.note_strs])
            cand_pyin = self._pyin_subset(len(candidate), rng)
            ref_pyin = None if cand_pyin is None else pair_ref[cand_pyin]
        else:
            ref_pyin = self._pyin_subset(len(reference), rng)
            cand_pyin = self._pyin_subset(len(candidate), rng)
        reference_scores = self.set_scores(reference, ref_out, ref_pyin)
        candidate_scores = self.set_scores(candidate, cand_out, cand_pyin)
        ref_correct = reference_scores.pop("_pyin_correct", None)
        cand_correct = candidate_scores.pop("_pyin_correct", None)
        if is_paired and ref_correct is not None and ref_correct.any():
            # "Pitched notes": the conditions whose real note pYIN reads at its label. Some
            # real notes are not (FluidR3's drawbar organ sounds its 16' stop an octave below
            # the key), so the bar is "as pitched as the real note", measured on those.
            reference_scores["pyin_accuracy_pitched"] = 1.0
            candidate_scores["pyin_accuracy_pitched"] = float(cand_correct[ref_correct].mean())
            details["pyin_pitched_notes"] = int(ref_correct.sum())
        if cand_pyin is not None:
            details["pyin"] = {
                "notes": len(cand_pyin),
                "audio": "audio as given"
                if candidate.waves
                else "candidate spectrograms vocoded by Griffin-Lim, 32 iterations",
                "tolerance_cents": 50,
            }

        distances = {
            "pkid": M.kernel_inception_distance(ref_out.pitch_embedding, cand_out.pitch_embedding),
            "ikid": M.kernel_inception_distance(ref_out.family_embedding, cand_out.family_embedding),
            "pitch_frechet": M.frechet_distance(ref_out.pitch_embedding, cand_out.pitch_embedding),
            "family_frechet": M.frechet_distance(ref_out.family_embedding, cand_out.family_embedding),
        }  # fmt: skip
        bins = M.ndb(ref_out.spectral_features, cand_out.spectral_features, k=self.ndb_bins,
                     seed=self.seed)  # fmt: skip
        distances["ndb"] = bins["ndb"]
        distances["ndb_over_k"] = bins["ndb_over_k"]

        paired_scores: dict = {}
        if is_paired:
            order = np.argsort(pair_ref)  # read the reference memmap in file order
            with tqdm(total=len(order), desc="paired errors", unit="note",
                      disable=not self.progress, leave=False) as bar:  # fmt: skip
                paired_scores = M.paired_spectrogram_errors(
                    _Rows(reference.specs, pair_ref[order]),
                    _Rows(candidate.specs, order),
                    progress=bar.update,
                )
            paired_scores["notes"] = len(order)
        details["seconds"] = time.monotonic() - started
        return EvalReport(
            reference={"name": reference.name, "notes": len(reference)},
            candidate={"name": candidate.name, "notes": len(candidate)},
            reference_scores=reference_scores,
            candidate_scores=candidate_scores,
            distances=distances,
            paired=paired_scores,
            details=details,
        )


class _Rows:
    """Lazy row selection of a (memmapped) ``[N, F, T]`` array, sliced a batch at a time."""

    def __init__(self, array: np.ndarray, rows: np.ndarray) -> None:
        self.array, self.rows = array, rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.array.shape[1:])

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def __getitem__(self, item) -> np.ndarray:
        return np.asarray(self.array[self.rows[item]])


def _check_labels(notes: NoteCollection, classifier: NoteClassifier) -> None:
    cfg = classifier.config
    if notes.pitch.min() < 0 or notes.pitch.max() >= cfg.n_pitches:
        raise MarsError(f"{notes.name}: pitches must be MIDI 0..{cfg.n_pitches - 1}")
    if notes.family.min() < 0 or notes.family.max() >= cfg.n_families:
        raise MarsError(f"{notes.name}: instrument_family must be 0..{cfg.n_families - 1}")


def _short(name: str) -> str:
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else name


def evaluate_dirs(
    real: str | os.PathLike,
    generated: str | os.PathLike,
    split: str = "test",
    paired: bool | None = None,
    evaluator: Evaluator | None = None,
) -> EvalReport:
    """Score an NSynth-layout directory of generated notes against the real ones.

    Args:
        real: the real note set root (or a split directory), e.g. ``data/fluidr3``.
        generated: the generated set's root or split directory; its ``examples.json``
            labels (pitch, instrument_family) are what accuracies are measured against.
        split: the split read under each root (``test``).
        paired: see :meth:`Evaluator.compare`.
        evaluator: settings (default: the shipped classifier, k = 50, 500 pYIN notes).
    """
    evaluator = evaluator or Evaluator()
    reference = NoteCollection.from_dir(real, split, progress=evaluator.progress)
    candidate = NoteCollection.from_dir(generated, split, progress=evaluator.progress)
    return evaluator.compare(reference, candidate, paired=paired)


def evaluate_ceiling(
    root: str | os.PathLike,
    reference_split: str = "train",
    candidate_split: str = "test",
    evaluator: Evaluator | None = None,
) -> EvalReport:
    """The real-vs-real ceiling: one split of real notes scored against another."""
    evaluator = evaluator or Evaluator()
    reference = NoteCollection.from_dir(root, reference_split, progress=evaluator.progress)
    candidate = NoteCollection.from_dir(root, candidate_split, progress=evaluator.progress)
    return evaluator.compare(reference, candidate, paired=False)
