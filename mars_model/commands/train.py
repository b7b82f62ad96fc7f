"""``mars-synth train MODEL``: train a model from a YAML config, resumable, then export its weights."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from mars_model.commands import add_model_device_argument

#: model name -> module with ``train_from_args(config, args)`` semantics (see :func:`run`).
TRAINERS = {
    "tokenizer": ("mars_model.tokenizer.train", "train_tokenizer", "export_tokenizer"),
    "codec": ("mars_model.codec.train", "train_codec", "export_codec"),
    "autoregressor": ("mars_model.autoregressor.train", "train_autoregressor", "export_autoregressor"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a model from a YAML config. Running the same command again resumes from RUN/last.pt "
        "with the same loss trajectory; a different config is refused. Under torchrun, each process "
        "takes a share of every batch (DistributedDataParallel)."
    )
    parser.add_argument("model", choices=sorted(TRAINERS), help="what to train")
    parser.add_argument("--config", type=Path, required=True, help="YAML config (see mars_model/configs/)")
    parser.add_argument("--run", type=Path, required=True, metavar="DIR",
                        help="run directory: checkpoints, config copy, log.jsonl")
    parser.add_argument("--data", type=Path, metavar="DIR", help="override data.root of the config")
    parser.add_argument("--steps", type=int, help="override train.steps (the schedule length)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of this call (checkpointed; run again to go on)")
    add_model_device_argument(parser, why="; under torchrun, auto gives each process its own GPU")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: the config's train.threads)")
    parser.add_argument("--export", type=Path, metavar="FILE",
                        help="after training, write the shipped weight file here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mars_model.training import init_distributed, load_yaml, pick_device

    config = load_yaml(args.config)
    if args.data:
        config.setdefault("data", {})["root"] = str(args.data)
    if args.steps:
        config.setdefault("train", {})["steps"] = args.steps
    if args.threads:
        config.setdefault("train", {})["threads"] = args.threads
    module_name, train_name, export_name = TRAINERS[args.model]
    module = importlib.import_module(module_name)
    dist_info = init_distributed()
    getattr(module, train_name)(config, args.run, quiet=args.quiet, stop_after=args.stop_after,
                                device=pick_device(args.model_device, dist_info))  # fmt: skip
    if args.export and dist_info.is_main:
        meta = getattr(module, export_name)(args.run, args.export)
        print(f"mars-synth train: exported {args.model} after {meta['steps']} steps to {args.export}",
              file=sys.stderr)
    return 0
