"""The training recipes: every stage resolves to the config that was run, the chains are consistent,
the shipped weights' metadata names the final stage, and bad recipes fail in one line."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mars_model.autoregressor import ARConfig
from mars_model.autoregressor.train import CONFIG_SECTIONS as AR_SECTIONS
from mars_model.codec import CodecConfig
from mars_model.codec.data import CodecDataConfig
from mars_model.codec.train import CONFIG_SECTIONS as CODEC_SECTIONS
from mars_model.config import load_config, load_recipe, merge
from mars_model.errors import MarsError
from mars_model.tokenizer import TokenizerConfig
from mars_model.tokenizer.train import CONFIG_SECTIONS as TOKENIZER_SECTIONS
from mars_model.training import AugmentConfig, TrainConfig
from mars_model.weights_io import file_hash, load_weights, shipped_path

CONFIGS = Path(__file__).resolve().parent.parent / "mars_model" / "configs"
SECTIONS = {"tokenizer": TOKENIZER_SECTIONS, "autoregressor": AR_SECTIONS, "codec": CODEC_SECTIONS}


def recipe(model: str):
    return load_recipe(CONFIGS / f"{model}.yaml", SECTIONS[model])


def test_one_recipe_per_model_and_nothing_else():
    assert sorted(p.name for p in CONFIGS.iterdir()) == ["autoregressor.yaml", "codec.yaml", "tokenizer.yaml"]
    for model in SECTIONS:
        assert recipe(model).model == model


@pytest.mark.parametrize("model,stage", [(m, s) for m in SECTIONS for s in recipe(m).names])
def test_every_stage_resolves_to_a_valid_config(model, stage):
    config = recipe(model).resolve(stage)
    TrainConfig.from_dict(config["train"])
    AugmentConfig.from_dict(config.get("augment"))
    if model == "tokenizer":
        TokenizerConfig.from_dict(config["tokenizer"])
    elif model == "autoregressor":
        ARConfig.from_dict(config["autoregressor"])
    else:
        CodecConfig.from_dict(config["codec"])
        CodecDataConfig.from_dict(config["data"])


#: SHA-256 (first 16 hex digits) of each stage's full config (JSON, sorted keys), taken from the
#: full-copy YAML files the shipped weights were trained with before they became this recipe
#: (tokenizer_decoder{,2..11}.yaml, autoregressor{,_more,_aug,_aug2,_aug3}.yaml, codec{,_real}.yaml).
#: A stage that resolves to anything else would not reproduce its weights.
RUN_CONFIG_HASHES = {
    ("tokenizer", "base"): "458f17c8f6dce9ed",
    ("tokenizer", "dec1"): "60fe65c818e1e5ec",
    ("tokenizer", "dec2"): "32f24a642e6158fb",
    ("tokenizer", "dec3"): "0bc671f95104828f",
    ("tokenizer", "dec4"): "0e56af144e248870",
    ("tokenizer", "dec5"): "dd5e3369613119e2",
    ("tokenizer", "dec6"): "68cab1bf35ddd89f",
    ("tokenizer", "dec7"): "43402f545d572308",
    ("tokenizer", "dec8"): "51df39a1c71798fc",
    ("tokenizer", "dec9"): "ce8fda4e5239317c",
    ("tokenizer", "dec10"): "ec62058a8a0ab06e",
    ("tokenizer", "dec11"): "a997f9e964e06741",
    ("tokenizer", "gm1"): "14442be32db36552",  # General MIDI coverage: not trained yet
    ("autoregressor", "base"): "67ba2a483bfc06e2",
    ("autoregressor", "more"): "31acf2d4af61510e",
    ("autoregressor", "aug"): "48c0d966c7ee8448",
    ("autoregressor", "aug2"): "d899cbad37bb74d8",
    ("autoregressor", "aug3"): "1a462e62e2610a81",
    ("autoregressor", "gm1"): "c02c2f9235b5be12",  # General MIDI coverage: running, not shipped yet
    ("codec", "eulerodec"): "c39725ce0ea79aab",
    ("codec", "real"): "cd0e149fd4ab4ac3",
}


def test_every_stage_resolves_to_exactly_the_config_it_was_trained_with():
    stages = [(model, stage) for model in SECTIONS for stage in recipe(model).names]
    assert sorted(stages) == sorted(RUN_CONFIG_HASHES)
    for key in stages:
        config = recipe(key[0]).resolve(key[1])
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        assert digest == RUN_CONFIG_HASHES[key], f"{key} resolves to another config:\n{yaml.safe_dump(config)}"


def assert_chain(model: str, final: str) -> list[dict]:
    """The stages leading to ``final`` are the recipe's first stages, in order, each starting from the
    one before (stages after ``final`` are training runs that have not shipped)."""
    rec = recipe(model)
    chain = rec.chain(final)
    assert [s.name for s in chain] == rec.names[: rec.names.index(final) + 1]
    configs = [rec.resolve(s.name) for s in chain]
    assert "finetune" not in configs[0]
    for before, stage, config in zip(chain, chain[1:], configs[1:], strict=False):
        assert stage.start_from == before.name
        assert config["finetune"]["init"] == before.export, stage.name
        assert config["data"] == configs[0]["data"], stage.name
    return configs


def test_tokenizer_chain_keeps_its_tokens_and_ends_in_the_shipped_weights():
    configs = assert_chain("tokenizer", "dec11")
    base = TokenizerConfig.from_dict(configs[0]["tokenizer"])
    for round_, config in enumerate(configs[1:], start=1):
        # One architecture throughout; round 7 turns on the instrument prior (decoder only).
        assert TokenizerConfig.from_dict(config["tokenizer"]) == replace(base, instrument_prior=round_ >= 7), round_
        assert config["finetune"]["freeze"] == ["encoder", "quantizer"], round_
        assert AugmentConfig.from_dict(config.get("augment")).pitch_shift == {10: 2, 11: 4}.get(round_, 0), round_
    final = configs[-1]
    assert recipe("tokenizer").stage("dec11").export == "mars_model/weights/tokenizer.pt"
    shipped = load_weights(shipped_path("tokenizer.pt"), "tokenizer")
    assert TokenizerConfig.from_dict(shipped["config"]["tokenizer"]) == TokenizerConfig.from_dict(final["tokenizer"])
    meta = shipped["meta"]
    assert (meta["finetune"], meta["data"], meta["steps"]) == (final["finetune"], final["data"], final["train"]["steps"])


def test_autoregressor_chain_shares_one_architecture_and_ends_in_the_shipped_weights():
    configs = assert_chain("autoregressor", "aug3")
    for config in configs:
        assert config["autoregressor"] == configs[0]["autoregressor"]
        assert config["tokenizer"] == {"weights": "mars_model/weights/tokenizer.pt"}
    assert [AugmentConfig.from_dict(c.get("augment")).pitch_shift for c in configs] == [0, 0, 4, 4, 4]
    final = configs[-1]
    assert recipe("autoregressor").stage("aug3").export == "mars_model/weights/autoregressor.pt"
    shipped = load_weights(shipped_path("autoregressor.pt"), "autoregressor")
    assert shipped["config"]["autoregressor"] == ARConfig.from_dict(final["autoregressor"]).to_dict()
    meta = shipped["meta"]
    assert (meta["finetune"], meta["data"], meta["steps"]) == (final["finetune"], final["data"], final["train"]["steps"])
    assert meta["instruments"] == sorted(final["data"]["programs"])
    assert meta["tokenizer_hash"] == file_hash(final["tokenizer"]["weights"]), "trained on the shipped tokenizer"


def test_the_general_midi_stage_grows_the_shipped_model_to_every_program_and_kit():
    rec = recipe("autoregressor")
    shipped, gm = rec.resolve("aug3"), rec.resolve("gm1")
    assert rec.stage("gm1").start_from == "aug3" and gm["finetune"]["init"] == "mars_model/weights/autoregressor.pt"
    assert gm["data"] == {"root": "data/gm", "programs": None}, "every melodic program and every kit"
    grown = ARConfig.from_dict(gm["autoregressor"])
    assert grown == replace(ARConfig.from_dict(shipped["autoregressor"]), n_instruments=177), "128 programs + kits 0-48"
    assert gm["tokenizer"] == shipped["tokenizer"], "the same token pyramid"
    assert AugmentConfig.from_dict(gm["augment"]).pitch_shift == 0, "a drum key is not a pitch"
    assert not rec.stage("gm1").export.startswith("mars_model/weights/"), "not shipped until it beats the shipped model"
    tok = recipe("tokenizer")
    decoder = tok.resolve("gm1")
    assert tok.stage("gm1").start_from == "dec11" and decoder["finetune"]["freeze"] == ["encoder", "quantizer"]
    assert decoder["data"] == gm["data"], "the decoder learns the notes the autoregressor learns"
    shipped_tok = TokenizerConfig.from_dict(tok.resolve("dec11")["tokenizer"])
    assert TokenizerConfig.from_dict(decoder["tokenizer"]) == replace(shipped_tok, n_instruments=grown.n_instruments)


def test_codec_stages_are_the_shipped_eulerodec_and_its_real_twin():
    rec = recipe("codec")
    eulerodec, real = rec.resolve("eulerodec"), rec.resolve("real")
    assert real == merge(eulerodec, {"codec": {"algebra": "real"}})
    assert rec.stage("real").start_from is None, "the baseline trains from scratch"
    shipped = load_weights(shipped_path("eulerodec.pt"), "codec")
    assert rec.stage("eulerodec").export == "mars_model/weights/eulerodec.pt"
    assert shipped["config"]["codec"] == CodecConfig.from_dict(eulerodec["codec"]).to_dict()
    meta = shipped["meta"]
    assert (meta["data"], meta["loss"], meta["train"]) == (eulerodec["data"], eulerodec["loss"], eulerodec["train"])


def test_merge_is_deep_for_mappings_and_replaces_everything_else():
    base = {"train": {"lr": 1.0, "steps": 10}, "data": {"programs": [0, 1]}}
    out = merge(base, {"train": {"lr": 2.0}, "data": {"programs": [5]}, "augment": {"pitch_shift": 2}})
    assert out == {"train": {"lr": 2.0, "steps": 10}, "data": {"programs": [5]}, "augment": {"pitch_shift": 2}}
    assert base == {"train": {"lr": 1.0, "steps": 10}, "data": {"programs": [0, 1]}}, "inputs untouched"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


RECIPE = """\
model: tokenizer
base:
  data: {root: data/x}
  train: {steps: 10, lr: 1.0e-3}
stages:
  - name: first
    export: runs/first.pt
  - name: second
    from: first
    set:
      train: {lr: 5.0e-4}
"""


def test_a_stage_is_its_from_stage_plus_its_overrides_starting_from_its_weights(tmp_path):
    config = load_config(write(tmp_path, RECIPE), "second", model="tokenizer", sections=TOKENIZER_SECTIONS)
    assert config == {"data": {"root": "data/x"}, "train": {"steps": 10, "lr": 5.0e-4},
                      "finetune": {"init": "runs/first.pt"}}  # fmt: skip


@pytest.mark.parametrize("edit,needle", [
    (("lr: 5.0e-4", "lr: 5.0e-4, lrr: 1"), "stage second: unknown key train.lrr"),
    (("  data: {root: data/x}", "  data: {root: data/x}\n  agument: {pitch_shift: 2}"), "base: unknown key agument"),
    (("tokenizer", "tokenizer\nextra: 1"), "unknown key extra"),
    (("from: first", "from: third"), "from 'third' is not an earlier stage"),
    (("train: {lr: 5.0e-4}", "finetune: {init: x.pt}"), "finetune.init is the export of its from stage"),
    (("    set:", "    sett:"), "stage second: unknown key sett"),
])  # fmt: skip
def test_a_bad_recipe_is_one_line_naming_the_file_and_the_key(tmp_path, edit, needle):
    path = write(tmp_path, RECIPE.replace(*edit))
    with pytest.raises(MarsError, match=needle) as err:
        load_config(path, "second", model="tokenizer", sections=TOKENIZER_SECTIONS)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_choosing_a_stage(tmp_path):
    path = write(tmp_path, RECIPE)
    with pytest.raises(MarsError, match=r"choose a stage with --stage \(first, second\)"):
        load_config(path, None, model="tokenizer")
    with pytest.raises(MarsError, match="no stage 'third'; stages: first, second"):
        load_config(path, "third", model="tokenizer")
    with pytest.raises(MarsError, match="a recipe for the tokenizer, not the codec"):
        load_config(path, "first", model="codec")
    plain = tmp_path / "plain.yaml"
    plain.write_text("data: {root: data/x}\ntrain: {steps: 3}\n")
    assert load_config(plain, model="tokenizer", sections=TOKENIZER_SECTIONS) == {"data": {"root": "data/x"},
                                                                                "train": {"steps": 3}}  # fmt: skip
    with pytest.raises(MarsError, match="plain config"):
        load_config(plain, "first")
