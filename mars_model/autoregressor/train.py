"""Training and export of the autoregressor (``mars-synth train autoregressor``).

The tokenizer (a shipped weight file, ``tokenizer.weights`` in the config) is frozen.
Every training note is encoded once into its token pyramid (cached next to the run), and
with transposition augmentation (``augment:``) once more per shift; teacher-forcing inputs
are rebuilt from the tokens on the fly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mars_model.api import FIRST_KIT, VELOCITY_BUCKETS
from mars_model.autoregressor.model import ARConfig, NextScaleTransformer, build_autoregressor
from mars_model.errors import MarsError
from mars_model.spectral import pitch_shift_log_spectrogram
from mars_model.tokenizer.model import Tokenizer
from mars_model.tokenizer.train import load_split
from mars_model.training import (
    AugmentConfig,
    TrainConfig,
    finetune_init,
    grow_instrument_table,
    load_checkpoint,
    restore_run,
    train,
)
from mars_model.weights_io import file_hash, load_tokenizer, save_weights

KIND = "autoregressor"

#: What an autoregressor training config may hold (checked by :func:`mars_model.config.load_config`).
CONFIG_SECTIONS = {
    "data": ("root", "programs"),
    "tokenizer": ("weights",),
    "autoregressor": ARConfig,
    "train": TrainConfig,
    "finetune": ("init",),
    "augment": AugmentConfig,
}


def velocity_buckets(velocities: np.ndarray) -> np.ndarray:
    """Nearest-bucket index (0..4) for an array of MIDI velocities."""
    return np.abs(velocities[:, None] - np.array(VELOCITY_BUCKETS)[None]).argmin(1)


@torch.no_grad()
def encode_split(tokenizer: Tokenizer, specs: np.ndarray, pitches: np.ndarray, batch: int = 32,
                 quiet: bool = True, shift: int = 0) -> torch.Tensor:  # fmt: skip
    """Token pyramids of ``specs`` ``[N, F, T]`` (pitches ``[N]``), concatenated over scales: ``[N, total]`` int16.

    ``shift``: transpose every note by this many semitones first (its pitch with it; see
    :func:`mars_model.spectral.pitch_shift_log_spectrogram`).
    """
    from tqdm import tqdm

    out = []
    desc = f"tokenizing, {shift:+d} semitones" if shift else "tokenizing"
    for start in tqdm(range(0, len(specs), batch), desc=desc, unit="batch", disable=quiet):
        x = torch.from_numpy(np.asarray(specs[start : start + batch], dtype=np.float32))[:, None]
        pitch = torch.from_numpy(np.asarray(pitches[start : start + batch], dtype=np.int64)) + shift
        if shift:
            x = pitch_shift_log_spectrogram(x, torch.full((len(x),), shift))
        out.append(torch.cat([i.flatten(1) for i in tokenizer.encode(x, pitch.clamp(0, 127))], dim=1).short())
    return torch.cat(out)


def split_tokens(flat: torch.Tensor, scales) -> list[torch.Tensor]:
    """``[B, total]`` -> per-scale ``[B, h, w]`` long tensors."""
    out, at = [], 0
    for h, w in scales:
        out.append(flat[:, at : at + h * w].long().reshape(-1, h, w))
        at += h * w
    return out


def _tokenizer_path(config: Mapping[str, Any]) -> Path:
    path = config.get("tokenizer", {}).get("weights")
    if not path:
        raise MarsError("config has no tokenizer.weights: the shipped tokenizer file to train on")
    return Path(path)


def start_from(model: NextScaleTransformer, section: Mapping[str, Any] | None, quantizer) -> None:
    """``finetune: {init: WEIGHTS}``: start from a shipped autoregressor (same architecture and
    token pyramid) instead of a fresh initialisation; the schedule of ``train:`` starts over.

    The one change of architecture allowed is a larger instrument table (``n_instruments``,
    e.g. 128 GM programs -> 177 with the drum kits): the old rows are kept, and every new row
    (and every row the old model never trained) starts as the mean of the rows it trained, so
    a new instrument starts as "an average instrument" rather than noise.
    """
    blob = finetune_init(section, KIND)
    if blob is None:
        return
    cfg = blob["config"]
    old = dict(cfg["autoregressor"])
    new = model.config.to_dict()
    grown = old["n_instruments"] < new["n_instruments"]
    if {**old, "n_instruments": new["n_instruments"]} != new or old["n_instruments"] > new["n_instruments"]:
        raise MarsError(f"finetune.init {section['init']}: another autoregressor architecture than this config's "
                        "(only n_instruments may grow)")  # fmt: skip
    if [tuple(s) for s in cfg["scales"]] != list(quantizer.scales) or cfg["vocab"] != quantizer.codebook_size:
        raise MarsError(f"finetune.init {section['init']}: trained on another tokenizer's token pyramid")
    state = dict(blob["state"])
    if grown:
        name = "condition.instrument.weight"
        grow_instrument_table(state, name, new["n_instruments"],
                              blob["meta"].get("instruments", range(old["n_instruments"])))  # fmt: skip
    model.load_state_dict(state)


def train_instruments(root: str | Path, programs) -> list[int]:
    """The instruments (GM programs; 128 + kit for drum kits) of a config's train notes."""
    from mars_model.data.noteset import NoteSet

    return sorted({int(i) for i in NoteSet(root, "train", programs=programs).conditions["instrument"]})


def train_autoregressor(config: Mapping[str, Any], run_dir: str | Path, quiet: bool = False,
                        stop_after: int | None = None, device: torch.device | None = None):  # fmt: skip
    """Train (or resume) the autoregressor as configured; returns the model."""
    ar_cfg = ARConfig.from_dict(config.get("autoregressor"))
    train_cfg = TrainConfig.from_dict(config.get("train", {}))
    tok_path = _tokenizer_path(config)
    tokenizer = load_tokenizer(tok_path)
    notes = load_split(config, "train", tokenizer.config, quiet)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    augment = AugmentConfig.from_dict(config.get("augment"))
    tokens = {}  # shift -> [N, total] token pyramids of every train note moved by it
    for shift in range(-augment.pitch_shift, augment.pitch_shift + 1):
        cache = run_dir / f"tokens-{file_hash(tok_path)}-{len(notes)}{f'-shift{shift:+d}' if shift else ''}.pt"
        if cache.exists():
            tokens[shift] = torch.load(cache)
        else:
            tokens[shift] = encode_split(tokenizer, notes.spectrograms(), notes.conditions["pitch"], quiet=quiet,
                                         shift=shift)  # fmt: skip
            torch.save(tokens[shift], cache)
    q = tokenizer.quantizer
    model = build_autoregressor(ar_cfg, q.scales, q.dim, q.codebook_size, seed=train_cfg.seed)
    start_from(model, config.get("finetune"), q)
    cond = notes.conditions
    instruments = torch.from_numpy(cond["instrument"])
    pitches = torch.from_numpy(cond["pitch"])
    buckets = torch.from_numpy(velocity_buckets(cond["velocity"]))
    dev = device or torch.device("cpu")
    tokenizer.to(dev)

    def fetch(idx):
        idx = np.sort(idx)
        moved = torch.from_numpy(augment.draw(cond["pitch"][idx].astype(np.int64), train_cfg.seed, idx,
                                              movable=cond["instrument"][idx] < FIRST_KIT))  # fmt: skip
        idx = torch.from_numpy(idx)
        flat = tokens[0][idx]
        for shift in moved.unique().tolist():
            if shift:
                rows = moved == shift
                flat[rows] = tokens[shift][idx[rows]]
        flat = flat.to(dev)
        with torch.no_grad():
            inputs = q.teacher_inputs(split_tokens(flat, q.scales))
        return {"targets": flat.long(), "inputs": inputs,
                "instrument": instruments[idx].to(dev), "pitch": (pitches[idx] + moved).to(dev),
                "velocity": buckets[idx].to(dev)}  # fmt: skip

    def loss_fn(net, batch, step):
        core: NextScaleTransformer = net.module if hasattr(net, "module") else net
        b = batch["targets"].shape[0]
        weights = F.one_hot(batch["instrument"], core.config.n_instruments).float()
        drop = torch.rand(b, device=weights.device) < core.config.cond_dropout
        logits = net(weights, batch["pitch"], batch["velocity"], batch["inputs"], drop)
        loss = F.cross_entropy(logits.float().reshape(-1, core.vocab), batch["targets"].reshape(-1))
        with torch.no_grad():
            last = core.offsets[-2]
            acc = (logits[:, last:].argmax(-1) == batch["targets"][:, last:]).float().mean()
        return loss, {"acc_fine": acc.item()}

    train(model, loss_fn, notes, config, run_dir, device=dev, fetch=fetch, quiet=quiet,
          stop_after=stop_after)  # fmt: skip
    return model


def export_autoregressor(run_dir: str | Path, out: str | Path,
                         recipe: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the run's latest weights as a shipped autoregressor file; returns its metadata.

    ``recipe`` (``{"config": FILE, "stage": NAME}``) is recorded in the metadata when given.
    """
    config = load_checkpoint(Path(run_dir) / "last.pt")["config"]
    tok_path = _tokenizer_path(config)
    q = load_tokenizer(tok_path).quantizer
    state, ar_cfg, model = restore_run(
        run_dir, "autoregressor", ARConfig, lambda cfg: build_autoregressor(cfg, q.scales, q.dim, q.codebook_size)
    )
    data = config.get("data", {})
    from mars_model.data.noteset import NoteSet

    pitches = NoteSet(data["root"], "train", programs=data.get("programs")).conditions["pitch"]
    meta = {
        **({"finetune": config["finetune"]} if config.get("finetune") else {}),
        "pitch_range": [int(pitches.min()), int(pitches.max())],
        "steps": int(state["step"]),
        "data": data,
        "instruments": train_instruments(data["root"], data.get("programs")),
        "tokenizer_hash": file_hash(tok_path),
        "exported": time.strftime("%Y-%m-%d"),
        **({"recipe": dict(recipe)} if recipe else {}),
    }
    save_weights(out, KIND, {"autoregressor": ar_cfg.to_dict(), "scales": [list(s) for s in q.scales],
                             "latent_dim": q.dim, "vocab": q.codebook_size}, model, meta)  # fmt: skip
    return meta
