"""``mars-synth train MODEL``: train a model from a stage of its recipe (or a plain YAML config), resumable, then export its weights."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from mars_model.commands import add_model_device_argument

#: model name -> (module, trainer, exporter); the module also has ``CONFIG_SECTIONS``.
TRAINERS = {
    "tokenizer": ("mars_model.tokenizer.train", "train_tokenizer", "export_tokenizer"),
    "codec": ("mars_model.codec.train", "train_codec", "export_codec"),
    "autoregressor": ("mars_model.autoregressor.train", "train_autoregressor", "export_autoregressor"),
}

EPILOG = """\
A recipe (mars_model/configs/MODEL.yaml) is a model's base config and the list of stages
that made its shipped weights; each stage names the stage it starts from and lists only what
it changes. --stage picks one; the stages run in the recipe's order, each exporting the
weights the next one starts from:

  mars-synth train tokenizer --config mars_model/configs/tokenizer.yaml --stage base \\
      --run runs/tokenizer --export runs/tokenizer_base.pt
  mars-synth train tokenizer --config mars_model/configs/tokenizer.yaml --stage dec1 \\
      --run runs/tok_dec1 --export runs/tokenizer_dec1.pt
  mars-synth train tokenizer --config mars_model/configs/tokenizer.yaml --stage dec3 --show-config

A plain config (the sections alone: data, train, ...) is taken as it is, without --stage.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a model from a stage of its recipe (or a plain YAML config). Running the same\n"
        "command again resumes from RUN/last.pt with the same loss trajectory; a different config\n"
        "is refused. Under torchrun, each process takes a share of every batch (DDP)."
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", choices=sorted(TRAINERS), help="what to train")
    parser.add_argument("--config", type=Path, required=True, metavar="FILE",
                        help="the model's recipe (mars_model/configs/MODEL.yaml) or a plain YAML config")
    parser.add_argument("--stage", metavar="NAME", help="the recipe's stage to run (a recipe lists its stages)")
    parser.add_argument("--run", type=Path, metavar="DIR",
                        help="run directory: checkpoints, config copy, log.jsonl (required to train)")
    parser.add_argument("--show-config", action="store_true",
                        help="print the stage's full config (YAML) and exit without training")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="override the config's note set: data.root (data.notes_root for the codec)")
    parser.add_argument("--steps", type=int, help="override train.steps (the schedule length)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of this call (checkpointed; run again to go on)")
    add_model_device_argument(parser, why="; under torchrun, auto gives each process its own GPU")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: the config's train.threads)")
    parser.add_argument("--export", type=Path, metavar="FILE",
                        help="after training, write the weight file here (a later stage starts from "
                             "the stage's export path)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mars_model.config import load_config
    from mars_model.errors import MarsError

    module_name, train_name, export_name = TRAINERS[args.model]
    module = importlib.import_module(module_name)
    config = load_config(args.config, args.stage, model=args.model, sections=module.CONFIG_SECTIONS)
    if args.data:
        config.setdefault("data", {})["notes_root" if args.model == "codec" else "root"] = str(args.data)
    if args.steps:
        config.setdefault("train", {})["steps"] = args.steps
    if args.threads:
        config.setdefault("train", {})["threads"] = args.threads
    if args.show_config:
        import yaml

        print(yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=120), end="")
        return 0
    if args.run is None:
        raise MarsError("give a run directory: --run DIR (or --show-config to only print the config)")

    from mars_model.training import init_distributed, pick_device

    dist_info = init_distributed()
    getattr(module, train_name)(config, args.run, quiet=args.quiet, stop_after=args.stop_after,
                                device=pick_device(args.model_device, dist_info))  # fmt: skip
    if args.export and dist_info.is_main:
        recipe = {"config": str(args.config), "stage": args.stage} if args.stage else None
        meta = getattr(module, export_name)(args.run, args.export, recipe=recipe)
        print(f"mars-synth train: exported {args.model} after {meta['steps']} steps to {args.export}",
              file=sys.stderr)
    return 0
