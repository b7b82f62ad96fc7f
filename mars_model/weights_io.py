"""Shipped weight files: one ``.pt`` holding a model's kind, config, fp16 weights and provenance."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from mars_model.errors import MarsError

FORMAT_VERSION = 1


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
