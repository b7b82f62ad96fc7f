"""The shipped training configs parse, and the tokenizer chain that made the shipped weights agrees."""

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mars_model.autoregressor import ARConfig
from mars_model.tokenizer import TokenizerConfig
from mars_model.training import AugmentConfig, TrainConfig
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
    AugmentConfig.from_dict(config.get("augment"))


#: The decoder fine-tunes, in order; from round 7 on the decoder also has the instrument prior,
#: rounds 10 and 11 add transposition augmentation (up to 2, then 4 semitones).
ROUNDS = ["tokenizer_decoder.yaml", *(f"tokenizer_decoder{n}.yaml" for n in range(2, 12))]


def test_decoder_finetunes_share_the_base_tokenizer_and_the_shipped_weights_match_it():
    base = TokenizerConfig.from_dict(load("tokenizer.yaml")["tokenizer"])
    with_instrument = replace(base, instrument_prior=True)
    for round_, name in enumerate(ROUNDS, start=1):
        config = load(name)
        assert TokenizerConfig.from_dict(config["tokenizer"]) == (base if round_ < 7 else with_instrument), name
        assert config["finetune"]["freeze"] == ["encoder", "quantizer"], name
        assert config["data"] == load("tokenizer.yaml")["data"], name
        assert config["finetune"]["init"] == ("runs/tokenizer_base.pt" if round_ == 1 else f"runs/tokenizer_dec{round_ - 1}.pt")
        assert AugmentConfig.from_dict(config.get("augment")).pitch_shift == {10: 2, 11: 4}.get(round_, 0), name
    shipped = load_weights(shipped_path("tokenizer.pt"), "tokenizer")
    assert shipped["config"]["tokenizer"] == with_instrument.to_dict()
    assert shipped["meta"]["finetune"] == load(ROUNDS[-1])["finetune"]  # the last round made it


def test_autoregressor_chain_shares_one_architecture_and_ends_in_the_shipped_weights():
    chain = {"autoregressor.yaml": None, "autoregressor_more.yaml": "runs/ar_base.pt",
             "autoregressor_aug.yaml": "runs/ar_more.pt", "autoregressor_aug2.yaml": "runs/ar_aug.pt",
             "autoregressor_aug3.yaml": "runs/ar_aug2.pt"}  # fmt: skip
    first = load("autoregressor.yaml")
    for name, init in chain.items():
        config = load(name)
        assert config["autoregressor"] == first["autoregressor"] and config["data"] == first["data"], name
        assert config.get("finetune", {}).get("init") == init, name
        assert AugmentConfig.from_dict(config.get("augment")).pitch_shift == (4 if "aug" in name else 0), name
    shipped = load_weights(shipped_path("autoregressor.pt"), "autoregressor")
    assert shipped["meta"]["finetune"] == load("autoregressor_aug3.yaml")["finetune"]
    assert shipped["config"]["autoregressor"] == ARConfig.from_dict(first["autoregressor"]).to_dict()
