"""Inference depends on no training code: making notes or decoding audio never imports a trainer."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What the engine and the codec CLI use to make sound from the shipped weights.
INFERENCE_MODULES = [
    "mars_model", "mars_model.api", "mars_model.generator", "mars_model.spectral", "mars_model.cmx",
    "mars_model.weights_io", "mars_model.tokenizer", "mars_model.tokenizer.model",
    "mars_model.autoregressor", "mars_model.autoregressor.model", "mars_model.codec",
    "mars_model.codec.model", "mars_model.codec.coding", "mars_model.commands.codec",
]  # fmt: skip

SCRIPT = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
from mars_model.weights_io import load_autoregressor, load_codec, load_tokenizer, shipped_path
load_tokenizer(shipped_path("tokenizer.pt"))
load_autoregressor(shipped_path("autoregressor.pt"))
load_codec()
print(json.dumps(sorted(sys.modules)))
"""


def is_training_code(name: str) -> bool:
    """``mars_model.training`` and every ``train`` / ``training`` module (trainers, the classifier's)."""
    return name.startswith("mars_model.") and name.rsplit(".", 1)[-1] in ("train", "training")


def test_inference_modules_and_loading_the_shipped_weights_import_no_training_code():
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(modules=INFERENCE_MODULES)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "mars_model.generator" in loaded and "mars_model.codec.model" in loaded
    assert [name for name in loaded if is_training_code(name)] == []
