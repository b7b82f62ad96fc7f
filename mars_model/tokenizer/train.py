"""Training and export of the tokenizer (``mars-synth train tokenizer``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mars_model.api import FIRST_KIT
from mars_model.data.noteset import NoteSet
from mars_model.errors import MarsError
from mars_model.spectral import (
    SpectralConfig,
    SpectralFrontEnd,
    log_frequency_filterbank,
    pitch_shift_log_spectrogram,
)
from mars_model.tokenizer.model import Tokenizer, TokenizerConfig, build_tokenizer
from mars_model.tokenizer.perceptual import load_perceptual
from mars_model.training import (
    AugmentConfig,
    TrainConfig,
    finetune_init,
    grow_instrument_table,
    restore_run,
    train,
)
from mars_model.weights_io import save_weights

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


LOSS_TERMS = {"l1": 1.0, "l2": 1.0, "vq": 1.0, "logfreq": 0.0, "perceptual": 0.0}
#: Non-numeric keys of the ``loss:`` section: the perceptual network's weights file
#: (default: the shipped ``tokenizer_perceptual.pt``).
LOSS_OPTIONS = ("perceptual_net",)


def log_frequency_bank(spectral: SpectralConfig) -> torch.Tensor:
    """``[bands, bins]``: 4 bands per semitone from MIDI 21 (27.5 Hz) to just below Nyquist."""
    bins = spectral.n_fft // 2
    top = 69.0 + 12.0 * np.log2(0.98 * spectral.sample_rate / 2 / 440.0)
    return log_frequency_filterbank(spectral.sample_rate, spectral.n_fft, bins, 21.0, 4, int((top - 21.0) * 4))


def reconstruction_loss(weights: Mapping[str, float], spectral: SpectralConfig | None = None):
    """``(model, batch, step) -> (loss, metrics)`` for a tokenizer.

    Terms (weights from the config's ``loss:`` section): ``l1`` and ``l2`` on the normalised
    log spectrogram, ``vq`` (codebook + commitment), and ``logfreq``: L1 after a
    log-frequency filterbank (4 bands per semitone). On linear bins the harmonics of a low
    note share a handful of the 512 bins, so a plain L1 barely sees them being smeared;
    on a log-frequency axis every octave weighs the same. ``perceptual``: the LPIPS-style
    distance of :mod:`mars_model.tokenizer.perceptual` (network: ``perceptual_net``).
    """
    unknown = sorted(set(weights) - set(LOSS_TERMS) - set(LOSS_OPTIONS))
    if unknown:
        raise MarsError(f"loss: unknown term(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join([*LOSS_TERMS, *LOSS_OPTIONS])}")  # fmt: skip
    w = {k: float(weights.get(k, d)) for k, d in LOSS_TERMS.items()}
    bank = log_frequency_bank(spectral or SpectralConfig()) if w["logfreq"] else None
    perceptual = load_perceptual(weights.get("perceptual_net")) if w["perceptual"] else None

    def loss_fn(model, batch, step):
        spec = batch["spec"]
        recon, _, vq = model(spec, batch.get("pitch"), batch.get("instrument"))
        l1, l2 = F.l1_loss(recon, spec), F.mse_loss(recon, spec)
        loss = w["l1"] * l1 + w["l2"] * l2 + w["vq"] * vq
        metrics = {"l1": l1.item(), "vq": vq.item()}
        if bank is not None:
            b = bank.to(spec.device)
            lf = F.l1_loss(torch.einsum("kf,bcft->bckt", b, recon.float()), torch.einsum("kf,bcft->bckt", b, spec))
            loss = loss + w["logfreq"] * lf
            metrics["logfreq"] = lf.item()
        if perceptual is not None:
            perceptual.to(spec.device)
            pd = perceptual(recon.float(), spec)
            loss = loss + w["perceptual"] * pd
            metrics["perceptual"] = pd.item()
        quantizer = (model.module if hasattr(model, "module") else model).quantizer
        metrics["codes"] = float((quantizer.usage > 0.1 / quantizer.codebook_size).float().mean())
        return loss, metrics

    return loss_fn


FREEZABLE = ("encoder", "quantizer", "decoder")

#: What a tokenizer training config may hold (checked by :func:`mars_model.config.load_config`).
CONFIG_SECTIONS = {
    "data": ("root", "programs"),
    "tokenizer": TokenizerConfig,
    "loss": (*LOSS_TERMS, *LOSS_OPTIONS),
    "train": TrainConfig,
    "finetune": ("init", "freeze"),
    "augment": AugmentConfig,
}


def apply_finetune(model: Tokenizer, section: Mapping[str, Any] | None) -> None:
    """Start from shipped weights and freeze parts, as the config's ``finetune:`` section says.

    ``finetune: {init: WEIGHTS, freeze: [encoder, quantizer]}`` trains the decoder alone: the
    token pyramids stay exactly those of ``init``, so an autoregressor trained on them stays
    valid. Nothing happens without the section.
    """
    blob = finetune_init(section, KIND, allowed=("init", "freeze"))
    if blob is None:
        return
    init_cfg = TokenizerConfig.from_dict(blob["config"]["tokenizer"], where=f"{section['init']}: tokenizer")
    init_table = init_cfg.n_instruments
    # The changes a fine-tune may make: add the instrument prior (its layers start as identities),
    # or grow its instrument table (rows are added; see below).
    adds_instrument = model.config.instrument_prior and not init_cfg.instrument_prior
    grows = init_cfg.instrument_prior and model.config.n_instruments > init_cfg.n_instruments
    if adds_instrument:
        init_cfg = replace(init_cfg, instrument_prior=True)
    if grows or adds_instrument:
        init_cfg = replace(init_cfg, n_instruments=model.config.n_instruments)
    if init_cfg != model.config:
        raise MarsError(f"finetune.init {section['init']}: trained with a different tokenizer config "
                        "than this config's tokenizer section (copy that section from the weights' config; "
                        "only instrument_prior may be turned on and n_instruments grown)")  # fmt: skip
    state = dict(blob["state"])
    if grows:
        # Every instrument the prior was not trained on (the new rows, and old rows that never
        # saw a note) starts as the mean of the programs it was trained on.
        trained = (blob["meta"].get("data") or {}).get("programs") or range(init_table)
        grow_instrument_table(state, "decoder.instrument.weight", model.config.n_instruments, trained)
    missing, unexpected = model.load_state_dict(state, strict=False)
    freeze = list(section.get("freeze", []))
    bad = [name for name in freeze if name not in FREEZABLE]
    if bad:
        raise MarsError(f"finetune.freeze: unknown part(s) {', '.join(map(str, bad))}; allowed: {', '.join(FREEZABLE)}")
    for name in freeze:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    model.frozen = tuple(freeze)


def train_tokenizer(config: Mapping[str, Any], run_dir: str | Path, quiet: bool = False,
                    stop_after: int | None = None, device: torch.device | None = None) -> Tokenizer:  # fmt: skip
    """Train (or resume) a tokenizer as configured; returns the model after this call's steps."""
    tok_cfg = TokenizerConfig.from_dict(config.get("tokenizer"))
    train_cfg = TrainConfig.from_dict(config.get("train", {}))
    notes = load_split(config, "train", tok_cfg, quiet)
    specs = np.asarray(notes.spectrograms())  # the subset fits in memory; random access is then free
    model = build_tokenizer(tok_cfg, seed=train_cfg.seed)
    apply_finetune(model, config.get("finetune"))
    augment = AugmentConfig.from_dict(config.get("augment"))
    pitches = notes.conditions["pitch"].astype(np.int64)
    instruments_np = notes.conditions["instrument"]
    instruments = torch.from_numpy(instruments_np)

    def fetch(idx):
        idx = np.sort(idx)
        device = next(model.parameters()).device
        batch = torch.from_numpy(specs[idx].astype(np.float32))[:, None]
        shifts = augment.draw(pitches[idx], train_cfg.seed, idx, movable=instruments_np[idx] < FIRST_KIT)
        if shifts.any():
            batch = pitch_shift_log_spectrogram(batch, torch.from_numpy(shifts))
        pitch = torch.from_numpy(pitches[idx] + shifts)
        return {"spec": batch.to(device), "pitch": pitch.to(device), "instrument": instruments[idx].to(device)}

    train(model, reconstruction_loss(config.get("loss", {}), tok_cfg.spectral), notes, config, run_dir, device=device,
          fetch=fetch, quiet=quiet, stop_after=stop_after)  # fmt: skip
    return model


def export_tokenizer(run_dir: str | Path, out: str | Path, recipe: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write the run's latest weights as a shipped tokenizer file; returns its metadata.

    ``recipe`` (``{"config": FILE, "stage": NAME}``) is recorded in the metadata when given.
    """
    state, tok_cfg, model = restore_run(run_dir, "tokenizer", TokenizerConfig, build_tokenizer)
    meta = {"steps": int(state["step"]), "data": state["config"].get("data", {}),
            "exported": time.strftime("%Y-%m-%d")}  # fmt: skip
    if state["config"].get("finetune"):
        meta["finetune"] = state["config"]["finetune"]
    if recipe:
        meta["recipe"] = dict(recipe)
    save_weights(out, KIND, {"tokenizer": tok_cfg.to_dict()}, model, meta)
    return meta
