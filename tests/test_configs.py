"""The shipped training configs parse, and the tokenizer chain that made the shipped weights agrees."""

from pathlib import Path

import pytest
import yaml

from mars_model.autoregressor import ARConfig
from mars_model.tokenizer import TokenizerConfig
from mars_model.training import TrainConfig
from mars_model.weights_io import load_weights, shipped_path

CONFIGS = Path(__file__).resolve().parent.parent / "mars_model" / "configs"


def load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_config_parses(name):
    config = load(name)
    TrainConfig.from_dict(config["train"])
    if "tokenizer" in config and isinstance(config["tokenizer"], dict) and "cmx" in config["tokenizer"]:
        TokenizerConfig.from_dict(config["tokenizer"]).check()
    if "autoregressor" in config:
        ARConfig.from_dict(config["autoregressor"])


def test_decoder_finetunes_share_the_base_tokenizer_and_the_shipped_weights_match_it():
    base = TokenizerConfig.from_dict(load("tokenizer.yaml")["tokenizer"])
    for name in ("tokenizer_decoder.yaml", "tokenizer_decoder2.yaml", "tokenizer_decoder3.yaml",
                 "tokenizer_decoder4.yaml", "tokenizer_decoder5.yaml", "tokenizer_decoder6.yaml"):
        config = load(name)
        assert TokenizerConfig.from_dict(config["tokenizer"]) == base, name
        assert config["finetune"]["freeze"] == ["encoder", "quantizer"], name
        assert config["data"] == load("tokenizer.yaml")["data"], name
    shipped = load_weights(shipped_path("tokenizer.pt"), "tokenizer")
    assert shipped["config"]["tokenizer"] == base.to_dict()
