"""Training and export of the tokenizer (``mars-synth train tokenizer``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mars_model.data.noteset import NoteSet
from mars_model.errors import MarsError
from mars_model.spectral import SpectralFrontEnd
from mars_model.tokenizer.model import Tokenizer, TokenizerConfig, build_tokenizer
from mars_model.training import TrainConfig, dataclass_from_dict, restore_run, train
from mars_model.weights_io import load_weights, save_weights

KIND = "tokenizer"


def load_split(config: Mapping[str, Any], split: str, tok_cfg: TokenizerConfig, quiet: bool = True) -> NoteSet:
    """The configured note set split (``data.root``, ``data.programs``) with spectrograms cached."""
    from tqdm import tqdm

    data = config.get("data", {})
    if "root" not in data:
        raise MarsError("config has no data.root: point it at a note set built by 'mars-synth dataset build'")
    notes = NoteSet(data["root"], split, SpectralFrontEnd(tok_cfg.spectral), programs=data.get("programs"))
    with tqdm(total=len(notes), unit="note", desc=f"spectrograms {split}", disable=quiet) as bar:
        notes.spectrograms(progress=bar.update)
    return notes


def reconstruction_loss(weights: Mapping[str, float]):
    """``(model, batch, step) -> (loss, metrics)`` for a tokenizer: L1 + L2 on log-spectrograms + VQ."""
    w_l1, w_l2, w_vq = (float(weights.get(k, d)) for k, d in (("l1", 1.0), ("l2", 1.0), ("vq", 1.0)))

    def loss_fn(model, batch, step):
        spec = batch["spec"]
        recon, _, vq = model(spec, batch.get("pitch"))
        l1, l2 = F.l1_loss(recon, spec), F.mse_loss(recon, spec)
        quantizer = (model.module if hasattr(model, "module") else model).quantizer
        alive = float((quantizer.usage > 0.1 / quantizer.codebook_size).float().mean())
        return w_l1 * l1 + w_l2 * l2 + w_vq * vq, {"l1": l1.item(), "vq": vq.item(), "codes": alive}

    return loss_fn


def train_tokenizer(config: Mapping[str, Any], run_dir: str | Path, quiet: bool = False,
                    stop_after: int | None = None, device: torch.device | None = None) -> Tokenizer:  # fmt: skip
    """Train (or resume) a tokenizer as configured; returns the model after this call's steps."""
    tok_cfg = TokenizerConfig.from_dict(config.get("tokenizer"))
    train_cfg = TrainConfig.from_dict(config.get("train", {}))
    notes = load_split(config, "train", tok_cfg, quiet)
    specs = np.asarray(notes.spectrograms())  # the subset fits in memory; random access is then free
    model = build_tokenizer(tok_cfg, seed=train_cfg.seed)
    pitches = torch.from_numpy(notes.conditions["pitch"])

    def fetch(idx):
        idx = np.sort(idx)
        device = next(model.parameters()).device
        batch = torch.from_numpy(specs[idx].astype(np.float32))[:, None]
        return {"spec": batch.to(device), "pitch": pitches[idx].to(device)}

    train(model, reconstruction_loss(config.get("loss", {})), notes, config, run_dir, device=device,
          fetch=fetch, quiet=quiet, stop_after=stop_after)  # fmt: skip
    return model


def export_tokenizer(run_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the run's latest weights as a shipped tokenizer file; returns its metadata."""
    state, tok_cfg, model = restore_run(run_dir, "tokenizer", TokenizerConfig, build_tokenizer)
    meta = {"steps": int(state["step"]), "data": state["config"].get("data", {}),
            "exported": time.strftime("%Y-%m-%d")}  # fmt: skip
    save_weights(out, KIND, {"tokenizer": tok_cfg.to_dict()}, model, meta)
    return meta


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> Tokenizer:
    """Load a shipped tokenizer file for inference (eval mode)."""
    blob = load_weights(path, KIND)
    raw = dict(blob["config"]["tokenizer"])
    cfg = TokenizerConfig.from_dict(raw, where=f"{path}: tokenizer")
    model = build_tokenizer(cfg)
    try:
        model.load_state_dict(blob["state"])
    except RuntimeError:
        raise MarsError(f"{path}: weights do not match its tokenizer config") from None
    return model.to(device).eval()


def train_config_only(config: Mapping[str, Any]) -> TrainConfig:
    return dataclass_from_dict(TrainConfig, config.get("train", {}), "train")
