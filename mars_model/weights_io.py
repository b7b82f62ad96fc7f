"""Weight files: one ``.pt`` holding a model's kind, config, fp16 weights and provenance, and the one
path that turns such a file back into a model for inference (:func:`load_model`).

    from mars_model.weights_io import load_tokenizer, shipped_path
    tokenizer = load_tokenizer(shipped_path("tokenizer.pt"))      # eval mode, on the CPU
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from mars_model.autoregressor.model import ARConfig, build_autoregressor
from mars_model.codec.config import CodecConfig
from mars_model.codec.model import CodecModel, build_codec
from mars_model.errors import MarsError
from mars_model.tokenizer.model import Tokenizer, TokenizerConfig, build_tokenizer

FORMAT_VERSION = 1

#: The weight file each model kind ships as, in ``mars_model/weights``.
SHIPPED = {"tokenizer": "tokenizer.pt", "autoregressor": "autoregressor.pt", "codec": "eulerodec.pt"}


def shipped_path(name: str) -> Path:
    """Path of a weight file shipped in ``mars_model/weights`` (it may not exist)."""
    return Path(str(resources.files("mars_model").joinpath("weights", name)))


def save_weights(path: str | os.PathLike, kind: str, config: dict[str, Any], model: torch.nn.Module,
                 meta: dict[str, Any] | None = None, half: bool = True) -> None:  # fmt: skip
    """Write ``model``'s weights (fp16 by default: half the size, no audible change) with its config."""
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": FORMAT_VERSION, "kind": kind, "config": config, "state": state, "meta": meta or {}}, tmp)
    os.replace(tmp, path)


def load_weights(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Read a weight file written by :func:`save_weights`, checking it holds a ``kind`` model."""
    path = Path(path)
    if not path.is_file():
        raise MarsError(f"weight file {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a corrupt zip/pickle raises many different types
        raise MarsError(f"weight file {path} is corrupt or truncated ({type(err).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT_VERSION or "state" not in blob:
        raise MarsError(f"{path} is not a mars-synth weight file (format {FORMAT_VERSION})")
    if blob.get("kind") != kind:
        raise MarsError(f"{path} holds a {blob.get('kind')!r} model, expected a {kind!r} model")
    blob["state"] = {k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()}
    return blob


def file_hash(path: str | os.PathLike) -> str:
    """Short SHA-256 of a file, used as a model id in cache keys."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def build_from_file_config(kind: str, config: Mapping[str, Any], where: str) -> torch.nn.Module:
    """A freshly built model of ``kind`` for the ``config`` of a weight file (its sections, checked).

    Args:
        kind: ``tokenizer``, ``autoregressor`` or ``codec``.
        config: the file's ``config`` (``{"tokenizer": {...}}``; the autoregressor's also holds
            its tokenizer's ``scales``, ``latent_dim`` and ``vocab``).
        where: the file, for error messages.
    """
    try:
        if kind == "tokenizer":
            return build_tokenizer(TokenizerConfig.from_dict(config["tokenizer"], where=f"{where}: tokenizer"))
        if kind == "autoregressor":
            ar_cfg = ARConfig.from_dict(config["autoregressor"], where=f"{where}: autoregressor")
            scales = [tuple(s) for s in config["scales"]]
            return build_autoregressor(ar_cfg, scales, int(config["latent_dim"]), int(config["vocab"]))
        if kind == "codec":
            return build_codec(CodecConfig.from_dict(config["codec"], where=f"{where}: codec"))
    except KeyError as err:
        raise MarsError(f"{where}: its config has no {err.args[0]!r}") from None
    raise MarsError(f"no model kind {kind!r}; kinds: {', '.join(SHIPPED)}")


@dataclass
class LoadedModel:
    """A model read from a weight file, with what the file says about it.

    Attributes:
        model: the module, in eval mode, with the file's weights.
        config: the file's ``config`` sections.
        meta: the file's provenance (steps, data, finetune, ...; ``instruments`` and
            ``pitch_range`` for an autoregressor).
        path: the file.
    """

    model: torch.nn.Module
    config: dict[str, Any]
    meta: dict[str, Any]
    path: Path


def load_model(path: str | os.PathLike, kind: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Read a weight file of ``kind`` and build its model for inference (eval mode, on ``device``).

    Raises:
        MarsError: the file is missing, corrupt, of another kind, or its weights do not fit its config.
    """
    path = Path(path)
    blob = load_weights(path, kind)
    model = build_from_file_config(kind, blob["config"], str(path))
    try:
        model.load_state_dict(blob["state"])
    except RuntimeError:
        raise MarsError(f"{path}: weights do not match its {kind} config") from None
    return LoadedModel(model.to(device).eval(), blob["config"], blob.get("meta", {}), path)


def load_tokenizer(path: str | os.PathLike, device: str | torch.device = "cpu") -> Tokenizer:
    """A tokenizer weight file as a model, for inference (eval mode)."""
    return load_model(path, "tokenizer", device).model


def load_autoregressor(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """An autoregressor weight file: ``.model`` (a :class:`NextScaleTransformer`, eval mode) and
    ``.meta`` (its ``instruments`` and ``pitch_range``)."""
    return load_model(path, "autoregressor", device)


def load_codec(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> CodecModel:
    """A codec weight file (default: the shipped EuleroDec) as a model, for inference (eval mode)."""
    path = Path(path) if path else shipped_path(SHIPPED["codec"])
    if not path.is_file() and path == shipped_path(SHIPPED["codec"]):
        raise MarsError(f"no shipped codec weights at {path}; train them: mars-synth train codec "
                        f"--config mars_model/configs/codec.yaml --stage eulerodec --run runs/codec --export {path}")  # fmt: skip
    return load_model(path, "codec", device).model

