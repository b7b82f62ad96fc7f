"""The drum-piece classifier: which drum a kit note plays, read from its attack.

The GM classifier's pitch head names a kit note's key from 16 frames of 256 ms, which blurs the
hit that tells drums apart. This classifier is the evaluation classifier's network
(:class:`~mars_model.eval.classifier.NoteClassifier`) on the first second of the note at the
spectrogram's own hop, shipped as ``mars_model/weights/eval_drum_classifier.pt``::

    log spectrogram [B, 512, 256] -> first 64 frames (1.02 s, 16 ms hop)  [B, 512, 64]
    -> log-frequency projection, 1 band per semitone from MIDI 24  [B, 96, 64]
    -> conv trunk (4 x conv3x3/BN/ReLU/maxpool2)  [B, 64, 6, 4]
    -> piece head [B, n_pieces] (what scores), key head [B, 128] (the key, an auxiliary label)

A note's *piece* is the name its kit's own map gives its key (:class:`DrumKeyMap`): the key
itself, except where a kit plays another drum on it (the Orchestra kit's timpani on 41-53 and
hi-hats on 27-29), so an Orchestra timpani that sounds like a closed hi-hat is wrong and one of
its hi-hats on 27 is a closed hi-hat. Tunings of one drum (toms, congas, timbales) stay apart.

    from mars_model.eval.drums import load_drum_classifier, drum_pieces, name_pieces
    clf = load_drum_classifier()
    right = name_pieces(clf, specs) == drum_pieces(clf, instruments, keys)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mars_model.api import FIRST_KIT
from mars_model.data.gm_map import DrumKeyMap
from mars_model.errors import MarsError
from mars_model.eval.classifier import ClassifierConfig, NoteClassifier, load_classifier
from mars_model.eval.training import ClassifierTraining

if TYPE_CHECKING:
    from mars_model.data.noteset import NoteSet

DEFAULT_DRUM_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "eval_drum_classifier.pt"
#: The bank whose notes are kit notes.
KIT_BANK = 128

#: The drum classifier's training: short (1 563 notes), a level change of up to 6 dB per note.
DRUM_TRAINING = ClassifierTraining(epochs=16, batch_size=32, lr=2e-3, patience=6, max_minutes=15.0, gain_db=6.0)


@functools.cache
def piece_names() -> tuple[str, ...]:
    """Every piece the drum key table names (every kit's keys), sorted: index = label."""
    keys = _drum_keys()
    names = set(keys.names.values())
    for kit_names in keys.kit_names.values():
        names.update(kit_names.values())
    return tuple(sorted(names))


def drum_classifier_config(n_pieces: int | None = None) -> ClassifierConfig:
    """The drum classifier's sizes (its second head names ``n_pieces``, default every piece)."""
    return ClassifierConfig(attack_frames=64, time_pool=1, midi_low=24.0, bands_per_semitone=1, n_bands=96,
                            embed_dim=64, n_families=n_pieces or len(piece_names()))  # fmt: skip


def piece_of(instrument: int, key: int) -> str:
    """The piece a kit (instrument ``FIRST_KIT`` + kit program) plays on ``key``."""
    return _drum_keys().name(int(instrument) - FIRST_KIT, int(key))


def drum_pieces(classifier: NoteClassifier, instruments: Sequence[int], keys: Sequence[int]) -> np.ndarray:
    """The piece labels ``[N]`` of kit notes, in ``classifier``'s piece order.

    Raises:
        MarsError: a note is not a kit note, or its piece is one the classifier does not know.
    """
    pieces = classifier_pieces(classifier)
    index = {name: i for i, name in enumerate(pieces)}
    labels = []
    for instrument, key in zip(instruments, keys, strict=True):
        if instrument < FIRST_KIT:
            raise MarsError(f"instrument {instrument} is a GM program, not a kit: it plays no drum piece")
        name = piece_of(instrument, key)
        if name not in index:
            raise MarsError(f"the drum classifier does not know {name!r} (kit {instrument - FIRST_KIT}, key {key})")
        labels.append(index[name])
    return np.asarray(labels, np.int64)


def piece_labels(notes: NoteSet) -> np.ndarray:
    """Training labels: every note's piece, in :func:`piece_names` order."""
    index = {name: i for i, name in enumerate(piece_names())}
    return np.array([index[piece_of(i, k)] for i, k in zip(notes.conditions["instrument"], notes.conditions["pitch"],
                                                             strict=True)], np.int64)  # fmt: skip


def classifier_pieces(classifier: NoteClassifier) -> tuple[str, ...]:
    """The piece names of ``classifier``'s second head (stored with its weights)."""
    pieces = tuple(classifier.info.get("pieces", ()))
    if len(pieces) != classifier.config.n_families:
        raise MarsError(f"this classifier names {classifier.config.n_families} classes but lists {len(pieces)} "
                        "drum pieces: not a drum classifier (tools/train_drum_classifier.py)")  # fmt: skip
    return pieces


def name_pieces(classifier: NoteClassifier, specs) -> np.ndarray:
    """The piece ``classifier`` hears in each of ``specs`` (``[N, F, T]`` log spectrograms): ``[N]`` labels."""
    return classifier.describe(specs).family_probs.argmax(axis=1)


def load_drum_classifier(path: str | os.PathLike | None = None) -> NoteClassifier:
    """Load a drum classifier (default: the shipped ``eval_drum_classifier.pt``), in eval mode.

    Raises:
        MarsError: the file is missing, or is an evaluation classifier without drum pieces.
    """
    path = Path(path) if path is not None else DEFAULT_DRUM_WEIGHTS
    if not path.is_file():
        raise MarsError(f"no drum classifier at {path}; train one with "
                        "'python tools/train_drum_classifier.py DATA_DIR'")  # fmt: skip
    classifier = load_classifier(path)
    classifier_pieces(classifier)
    return classifier


@dataclass
class PieceError:
    """One kit note the classifier names wrong."""

    kit: str
    key: int
    piece: str
    velocity: int
    named: str

    def __str__(self) -> str:
        return f"{self.kit} key {self.key} {self.piece} (velocity {self.velocity}) named {self.named}"


@dataclass
class PieceReport:
    """How many of a split's kit notes the classifier names right, and the ones it names wrong."""

    split: str
    notes: int
    accuracy: float
    errors: list[PieceError] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [f"{self.split}: {self.accuracy:.1%} of {self.notes} kit notes named as their piece"]
        lines += [f"* {error}" for error in self.errors]
        return "\n".join(lines)


def piece_report(classifier: NoteClassifier, notes: NoteSet, specs: np.ndarray | None = None) -> PieceReport:
    """Score ``classifier`` on a split's kit notes (``NoteSet(..., banks=[128])``), or on ``specs``,
    another rendition of the same notes (e.g. :func:`tokenizer_renditions`)."""
    truth = drum_pieces(classifier, notes.conditions["instrument"], notes.conditions["pitch"])
    named = name_pieces(classifier, notes.spectrograms() if specs is None else specs)
    pieces = classifier_pieces(classifier)
    errors = [PieceError(notes.labels["drum_kit_str"][i] or "", int(notes.conditions["pitch"][i]), pieces[truth[i]],
                         int(notes.conditions["velocity"][i]), pieces[named[i]])
              for i in np.flatnonzero(named != truth)]  # fmt: skip
    return PieceReport(notes.split, len(truth), float((named == truth).mean()), errors)


def tokenizer_renditions(tokenizer_path: str | os.PathLike | None = None, batch_size: int = 16):
    """A function giving every note of a note set as the tokenizer reconstructs it (``[N, F, T]``
    float16; default: the shipped tokenizer): what a note sounds like after the model's own
    representation, for training a judge of generated notes (``train_classifier(renditions=...)``)
    or checking one."""
    import torch

    from mars_model.weights_io import SHIPPED, load_tokenizer, shipped_path

    tokenizer = load_tokenizer(tokenizer_path or shipped_path(SHIPPED["tokenizer"]))

    def render(notes: NoteSet) -> np.ndarray:
        specs, out = notes.spectrograms(), []
        with torch.no_grad():
            for start in range(0, len(notes), batch_size):
                stop = min(start + batch_size, len(notes))
                x = torch.from_numpy(np.asarray(specs[start:stop], dtype=np.float32))[:, None]
                pitch = torch.from_numpy(notes.conditions["pitch"][start:stop])
                instrument = torch.from_numpy(notes.conditions["instrument"][start:stop])
                out.append(tokenizer(x, pitch, instrument)[0][:, 0].half().numpy())
        return np.concatenate(out)

    return render


@functools.cache
def _drum_keys() -> DrumKeyMap:
    return DrumKeyMap.load()
