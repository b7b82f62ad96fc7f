"""Command-line front ends for the model-side tools (dataset, eval, codec, train).

These are part of ``mars_model``'s public surface so that ``engine``'s CLI can
offer them without reaching into model internals. Each module defines
``add_arguments(parser)`` and ``run(args) -> int`` and imports heavy
dependencies (torch) inside ``run`` so that ``mars-synth --help`` stays fast.

Options shared by several subcommands are defined here once, so that one option name
has one meaning everywhere: ``--model-device`` is always the torch device a model runs on.
"""

from __future__ import annotations

import argparse
import re

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def model_device(text: str) -> str:
    """argparse type of ``--model-device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_model_device_argument(parser, default: str = "auto", why: str = "", what: str = "the model") -> None:
    """Register ``--model-device`` (the torch device the model runs on) on ``parser``.

    ``what`` names the model in the help; ``why`` follows the default (``", because ..."``).
    """
    parser.add_argument("--model-device", type=model_device, default=default, metavar="auto|cpu|cuda[:N]",
                        help=f"torch device {what} runs on; auto: the GPU when there is one, else the CPU "
                             f"(default %(default)s{why})")  # fmt: skip


def resolve_model_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; a CUDA device without a GPU is a MarsError."""
    import torch

    from mars_model.errors import MarsError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MarsError(f"--model-device {name}: no CUDA GPU is available here; use cpu or auto")
    return name
