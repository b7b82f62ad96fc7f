"""Train the evaluation classifier on a note set's train split, early-stopped on its valid split."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mars_model.errors import MarsError
from mars_model.eval.classifier import (
    ClassifierConfig,
    NoteClassifier,
    calibrate_embedding_scale,
    save_classifier,
)
from mars_model.spectral import DB_SCALE

if TYPE_CHECKING:
    from mars_model.data.noteset import NoteSet


@dataclass(frozen=True)
class ClassifierTraining:
    """Training settings.

    Args:
        epochs: maximum passes over the training notes.
        batch_size: notes per step.
        lr: Adam learning rate (cosine-decayed to 5 % over ``epochs``).
        weight_decay: AdamW weight decay.
        seed: seeds the initial weights, batch order and the note subset.
        train_limit: use at most this many training notes (random, seeded); ``None`` = all.
        max_minutes: stop after the epoch that crosses this wall time.
        patience: stop after this many epochs without a better validation score.
        gain_db: each training note's level is moved by a random gain within ``±gain_db``
            (a shift of the log spectrogram; 0 = no augmentation).
    """

    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    train_limit: int | None = None
    max_minutes: float = 13.0
    patience: int = 3
    gain_db: float = 0.0


#: A note set's labels for the second head, ``[N]`` int (e.g. a field of ``NoteSet.conditions``).
Labeller = Callable[["NoteSet"], np.ndarray]


def augment_gain(x: torch.Tensor, gain_db: float, generator: torch.Generator) -> torch.Tensor:
    """Trunk inputs ``[B, bands, frames]`` at a random level each, within ``±gain_db``.

    The inputs are normalised log-magnitudes (:mod:`mars_model.spectral`: 50 dB per unit, the
    -100 dB floor at -1) averaged over bands, so a gain is a shift that leaves the floor put.
    """
    shift = (torch.rand(len(x), 1, 1, generator=generator) * 2 - 1) * (gain_db / DB_SCALE)
    return (x + shift).clamp_min(-1.0)


def prepare_split(
    model: NoteClassifier, specs: np.ndarray, indices: np.ndarray, progress=None
) -> torch.Tensor:
    """Project the chosen notes to the classifier's input once: ``[n, bands, frames]`` float16."""
    out = torch.empty((len(indices), *model.config.input_shape), dtype=torch.float16)
    with torch.no_grad():
        for start in range(0, len(indices), 256):
            idx = np.sort(indices[start : start + 256])  # sorted reads are kind to the memmap
            batch = torch.from_numpy(np.asarray(specs[idx], dtype=np.float32))
            out[start : start + len(idx)] = model.prepare(batch).half()
            if progress:
                progress(len(idx))
    return out


def _accuracy(model: NoteClassifier, x: torch.Tensor, pitch: torch.Tensor, family: torch.Tensor):
    model.eval()
    hits_p = hits_f = 0
    with torch.no_grad():
        for start in range(0, len(x), 256):
            heads = model.forward_prepared(x[start : start + 256].float())
            hits_p += (heads.pitch_logits.argmax(-1) == pitch[start : start + 256]).sum().item()
            hits_f += (heads.family_logits.argmax(-1) == family[start : start + 256]).sum().item()
    model.train()
    return hits_p / len(x), hits_f / len(x)


def train_classifier(
    root: str | os.PathLike,
    output: str | os.PathLike,
    settings: ClassifierTraining | None = None,
    config: ClassifierConfig | None = None,
    log=print,
    progress_bars: bool = True,
    label: str | Labeller = "instrument_family",
    banks: Sequence[int] | None = None,
    extra_info: dict | None = None,
    renditions: Callable[[NoteSet], np.ndarray] | None = None,
) -> dict:
    """Train the evaluation classifier on ``root/train``, keep the best on ``root/valid``.

    The score for early stopping is the mean of pitch and family accuracy on ``valid``;
    the best epoch's weights are written to ``output``. ``label`` names the
    ``examples.json`` field the second head learns (the tokenizer's perceptual network,
    :mod:`mars_model.tokenizer.perceptual`, learns ``instrument`` instead of the family), or
    is a function that labels a note set (the drum classifier's pieces,
    :mod:`mars_model.eval.drums`); ``banks`` keeps only those banks' notes (128: the kits).
    ``extra_info`` is stored with the weights beside the training facts (the drum pieces' names).
    ``renditions`` gives, for the train split, one more spectrogram of every note (``[N, F, T]``,
    e.g. the tokenizer's reconstruction), trained on with the note's labels, so the classifier
    also names notes that went through the model's representation; validation stays on real notes.

    Returns:
        the facts stored with the weights: accuracies, note counts, epochs, wall time.
    """
    from tqdm import tqdm

    from mars_model.data.noteset import NoteSet

    settings = settings or ClassifierTraining()
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = NoteClassifier(config or ClassifierConfig())
    started = time.monotonic()
    label_name = label if isinstance(label, str) else getattr(label, "__name__", "second-head")

    data = {}
    for split in ("train", "valid"):
        notes = NoteSet(root, split, banks=banks)
        if len(notes) == 0:
            raise MarsError(f"{Path(root) / split} has no notes")
        if isinstance(label, str) and label not in notes.conditions:
            raise MarsError(f"{split}: no label field {label!r}; allowed: {', '.join(notes.conditions)}")
        with tqdm(total=len(notes), desc=f"{split} spectrograms", unit="note",
                  disable=not progress_bars) as bar:  # fmt: skip
            specs = notes.spectrograms(progress=bar.update)
        idx = np.arange(len(notes))
        if split == "train" and settings.train_limit and settings.train_limit < len(idx):
            idx = np.sort(rng.choice(idx, settings.train_limit, replace=False))
        with tqdm(total=len(idx), desc=f"{split} projection", unit="note",
                  disable=not progress_bars) as bar:  # fmt: skip
            x = prepare_split(model, specs, idx, progress=bar.update)
        pitch = torch.from_numpy(notes.conditions["pitch"][idx])
        labels = notes.conditions[label] if isinstance(label, str) else label(notes)
        family = torch.from_numpy(np.asarray(labels, np.int64)[idx])
        if split == "train" and renditions is not None:
            x = torch.cat([x, prepare_split(model, renditions(notes), idx)])
            pitch, family = pitch.repeat(2), family.repeat(2)
        if pitch.min() < 0 or pitch.max() >= model.config.n_pitches:
            raise MarsError(f"{split}: pitches must be MIDI 0..{model.config.n_pitches - 1}")
        if family.min() < 0 or family.max() >= model.config.n_families:
            raise MarsError(f"{split}: {label_name} labels must be 0..{model.config.n_families - 1}")
        data[split] = (x, pitch, family)
    x_train, p_train, f_train = data["train"]
    log(f"training on {len(x_train)} notes, validating on {len(data['valid'][0])}")

    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)  # fmt: skip
    steps_per_epoch = -(-len(x_train) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=settings.epochs * steps_per_epoch, eta_min=settings.lr * 0.05
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(settings.seed)
    best_score, best_state, best_epoch, stale = -1.0, None, 0, 0
    history = []
    model.train()
    for epoch in range(1, settings.epochs + 1):
        order = torch.randperm(len(x_train), generator=gen)
        with tqdm(total=len(order), desc=f"epoch {epoch}", unit="note",
                  disable=not progress_bars) as bar:  # fmt: skip
            for start in range(0, len(order), settings.batch_size):
                b = order[start : start + settings.batch_size]
                x = x_train[b].float()
                if settings.gain_db:
                    x = augment_gain(x, settings.gain_db, gen)
                heads = model.forward_prepared(x)
                loss = loss_fn(heads.pitch_logits, p_train[b]) + loss_fn(heads.family_logits, f_train[b])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                bar.update(len(b))
                bar.set_postfix(loss=f"{loss.item():.3f}")
        valid_pitch, valid_family = _accuracy(model, *data["valid"])
        score = (valid_pitch + valid_family) / 2
        minutes = (time.monotonic() - started) / 60
        history.append({"epoch": epoch, "valid_pitch_accuracy": valid_pitch,
                        "valid_family_accuracy": valid_family, "minutes": minutes})  # fmt: skip
        log(f"epoch {epoch}: valid pitch {valid_pitch:.4f} family {valid_family:.4f} "
            f"({minutes:.1f} min)")  # fmt: skip
        if score > best_score:
            best_score, best_state, best_epoch, stale = (
                score,
                copy.deepcopy(model.state_dict()),
                epoch,
                0,
            )
        else:
            stale += 1
        if stale >= settings.patience or minutes >= settings.max_minutes:
            break
    model.load_state_dict(best_state)
    calibrate_embedding_scale(model, x_train)
    train_pitch, train_family = _accuracy(model, x_train, p_train, f_train)
    best = history[best_epoch - 1]
    info = {
        "data": str(root),
        "train_notes": len(x_train),
        "valid_notes": len(data["valid"][0]),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_pitch_accuracy": train_pitch,
        "train_family_accuracy": train_family,
        "valid_pitch_accuracy": best["valid_pitch_accuracy"],
        "valid_family_accuracy": best["valid_family_accuracy"],
        "wall_minutes": (time.monotonic() - started) / 60,
        "seed": settings.seed,
        "label": label_name,
        "banks": list(banks) if banks is not None else None,
        "gain_db": settings.gain_db,
        "torch_threads": torch.get_num_threads(),
        "history": history,
        **(extra_info or {}),
    }
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    save_classifier(model, output, info)
    return info
