"""Training and export of the codec (``mars-synth train codec``); loading: :func:`mars_model.weights_io.load_codec`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mars_model.codec.config import KBPS_CHOICES, CodecConfig
from mars_model.codec.data import CodecDataConfig, CropSet
from mars_model.codec.losses import CodecLoss
from mars_model.codec.model import CodecModel, build_codec
from mars_model.errors import MarsError
from mars_model.training import TrainConfig, restore_run, train
from mars_model.weights_io import save_weights

KIND = "codec"

#: What a codec training config may hold (checked by :func:`mars_model.config.load_config`).
CONFIG_SECTIONS = {"data": CodecDataConfig, "codec": CodecConfig, "loss": tuple(CodecLoss.DEFAULTS), "train": TrainConfig}


def train_codec(config: Mapping[str, Any], run_dir: str | Path, quiet: bool = False,
                stop_after: int | None = None, device: torch.device | None = None) -> CodecModel:  # fmt: skip
    """Train (or resume) a codec as configured; returns the model after this call's steps."""
    codec_cfg = CodecConfig.from_dict(config.get("codec"))
    data_cfg = CodecDataConfig.from_dict(config.get("data"))
    train_cfg = TrainConfig.from_dict(config.get("train", {}))
    if data_cfg.crop % codec_cfg.samples_per_frame:
        raise MarsError(f"data.crop must be a multiple of {codec_cfg.samples_per_frame} samples")
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    crops = CropSet(data_cfg, codec_cfg.sample_rate, quiet)
    model = build_codec(codec_cfg, seed=train_cfg.seed)
    stages = sorted({codec_cfg.stages_for(k) for k in KBPS_CHOICES})
    loss_fn = CodecLoss(config.get("loss", {}) or {}, stages, codec_cfg.sample_rate, train_cfg.seed)

    def fetch(idx):
        return crops.batch(idx, next(model.parameters()).device)

    train(
        model,
        loss_fn,
        crops,
        config,
        run_dir,
        device=device,
        fetch=fetch,
        quiet=quiet,
        stop_after=stop_after,
    )
    return model


def export_codec(run_dir: str | Path, out: str | Path, recipe: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write the run's latest weights as a shipped codec file; returns its metadata.

    ``recipe`` (``{"config": FILE, "stage": NAME}``) is recorded in the metadata when given.
    """
    state, codec_cfg, model = restore_run(run_dir, "codec", CodecConfig, build_codec)
    config = state["config"]
    meta = {"steps": int(state["step"]), "data": config.get("data", {}), "loss": config.get("loss", {}),
            "train": config.get("train", {}), "exported": time.strftime("%Y-%m-%d")}  # fmt: skip
    if recipe:
        meta["recipe"] = dict(recipe)
    # fp16 like every shipped file; encoder and decoder both read these same rounded codebooks
    save_weights(out, KIND, {"codec": codec_cfg.to_dict()}, model, meta)
    return meta
