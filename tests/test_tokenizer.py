"""The shared multi-scale tokenizer and the training loop it uses."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from mars_model.errors import MarsError
from mars_model.tokenizer import TokenizerConfig, build_tokenizer
from mars_model.tokenizer.model import harmonic_comb
from mars_model.tokenizer.train import apply_finetune, reconstruction_loss
from mars_model.training import load_checkpoint, train
from mars_model.weights_io import load_tokenizer, save_weights
from tests.tiny_models import TINY_SPECTRAL, TINY_TOKENIZER, tiny_tokenizer


def test_default_config_shapes_through_every_scale():
    cfg = TokenizerConfig()
    tok = build_tokenizer(cfg).eval()
    spec = torch.randn(2, 1, 512, 256).clamp(-1, 1)
    recon, indices, vq = tok(spec)
    assert recon.shape == spec.shape
    assert [tuple(i.shape) for i in indices] == [(2, h, w) for h, w in cfg.scales]
    assert cfg.latent_grid == cfg.scales[-1]
    assert all(int(i.max()) < cfg.codebook_size for i in indices)
    assert vq.dim() == 0


def test_one_codebook_is_shared_by_all_scales():
    tok = tiny_tokenizer()
    codebooks = [n for n, p in tok.named_parameters() if "codebook" in n]
    assert codebooks == ["quantizer.codebook"]
    spec = torch.randn(3, 1, 32, 64)
    pitch = torch.tensor([60, 64, 67])
    indices = tok.encode(spec, pitch)
    before = tok.decode(indices, pitch)
    # Changing the one code used by the coarsest scale changes the decoding, and every
    # scale's indices point into the same table.
    code = int(indices[0][0, 0, 0])
    with torch.no_grad():
        tok.quantizer.codebook[code] += 1.0
    assert not torch.allclose(tok.decode(indices, pitch)[0], before[0])
    assert all(i.max() < tok.quantizer.codebook.shape[0] for i in indices)


def test_decode_of_encode_equals_forward():
    tok = tiny_tokenizer()
    spec, pitch = torch.randn(2, 1, 32, 64), torch.tensor([50, 70])
    recon, _, _ = tok(spec, pitch)
    assert torch.allclose(tok.decode(tok.encode(spec, pitch), pitch), recon, atol=1e-5)


def test_teacher_inputs_match_incremental_inference():
    q = tiny_tokenizer().quantizer
    indices = [torch.randint(0, 32, (2, h, w)) for h, w in q.scales]
    teacher = q.teacher_inputs(indices)
    f_hat = None
    for k in range(len(q.scales) - 1):
        f_hat = q.add_scale(f_hat, k, indices[k])
        assert torch.allclose(q.next_input(f_hat, k), teacher[k])


def test_dead_codes_are_restarted():
    tok = tiny_tokenizer().train()
    q = tok.quantizer
    q.usage_decay = 0.9  # forget faster than the default 0.99 so the test needs few steps
    with torch.no_grad():
        q.codebook[5:] = 100.0  # far from any latent: never chosen
    for _ in range(60):
        tok(torch.randn(4, 1, 32, 64), torch.full((4,), 60))
    assert (q.codebook[5:] < 50).any(), "unused codes were moved next to real latents"


def _dataset(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [{"spec": torch.randn(1, 32, 64, generator=gen).clamp(-1, 1), "pitch": torch.tensor(48 + i),
             "instrument": torch.tensor(i % 4)} for i in range(n)]  # fmt: skip


def _config(steps=6):
    return {"tokenizer": json.loads(json.dumps(TINY_TOKENIZER.to_dict())),
            "train": {"steps": steps, "batch_size": 4, "lr": 1e-3, "warmup": 2, "checkpoint_every": 3,
                      "log_every": 1, "seed": 0}}  # fmt: skip


def test_training_resumes_with_the_same_loss_trajectory(tmp_path):
    data, config = _dataset(), _config()
    loss_fn = reconstruction_loss({})
    straight = train(tiny_tokenizer().train(), loss_fn, data, config, tmp_path / "a", quiet=True)
    first = train(tiny_tokenizer().train(), loss_fn, data, config, tmp_path / "b", quiet=True, stop_after=3)
    rest = train(tiny_tokenizer(seed=99).train(), loss_fn, data, config, tmp_path / "b", quiet=True)
    assert [r["step"] for r in first + rest] == list(range(6))
    assert [r["loss"] for r in first + rest] == pytest.approx([r["loss"] for r in straight], rel=1e-5)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 6


def test_checkpoint_from_another_config_is_refused(tmp_path):
    data, config = _dataset(), _config()
    train(tiny_tokenizer().train(), reconstruction_loss({}), data, config, tmp_path, quiet=True, stop_after=3)
    other = _config()
    other["tokenizer"]["beta"] = 0.5
    with pytest.raises(MarsError, match="different config"):
        train(tiny_tokenizer().train(), reconstruction_loss({}), data, other, tmp_path, quiet=True)


def _shipped_tiny(tmp_path, seed=0):
    path = tmp_path / "base.pt"
    save_weights(path, "tokenizer", {"tokenizer": TINY_TOKENIZER.to_dict()}, tiny_tokenizer(seed), half=False)
    return path


def test_a_decoder_finetune_keeps_every_token_and_changes_only_the_decoder(tmp_path):
    data, config = _dataset(), _config(steps=8)
    config["finetune"] = {"init": str(_shipped_tiny(tmp_path)), "freeze": ["encoder", "quantizer"]}
    model = tiny_tokenizer(seed=5)  # overwritten by the init weights
    apply_finetune(model, config["finetune"])
    specs = torch.stack([d["spec"] for d in data])
    pitch = torch.stack([d["pitch"] for d in data])
    tokens_before = model.encode(specs, pitch)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    records = train(model.train(), reconstruction_loss({"vq": 0.0, "logfreq": 1.0}, TINY_SPECTRAL), data, config,
                    tmp_path / "run", quiet=True)  # fmt: skip
    assert all(r["logfreq"] > 0 for r in records)
    model.eval()
    assert all(torch.equal(a, b) for a, b in zip(model.encode(specs, pitch), tokens_before, strict=True))
    for key, value in model.state_dict().items():
        changed = not torch.equal(value, state_before[key])
        if key.startswith(("encoder.", "quantizer.")):
            assert not changed, key  # weights, codebook and usage statistics alike
    assert any(not torch.equal(v, state_before[k]) for k, v in model.state_dict().items() if k.startswith("decoder."))


def test_a_decoder_finetune_may_grow_the_instrument_table_keeping_the_trained_rows(tmp_path):

    with_prior = replace(TINY_TOKENIZER, instrument_prior=True, n_instruments=8)
    shipped = build_tokenizer(with_prior, seed=1).eval()
    with torch.no_grad():
        shipped.decoder.instrument.weight.normal_()
    path = tmp_path / "prior.pt"
    save_weights(path, "tokenizer", {"tokenizer": with_prior.to_dict()}, shipped, {"data": {"programs": [2, 5]}},
                 half=False)  # fmt: skip
    grown = build_tokenizer(replace(with_prior, n_instruments=12), seed=2)
    apply_finetune(grown, {"init": str(path), "freeze": ["encoder", "quantizer"]})
    old, new = shipped.decoder.instrument.weight, grown.decoder.instrument.weight
    assert new.shape[0] == 12 and torch.equal(new[[2, 5]], old[[2, 5]]), "trained rows kept"
    untrained = [0, 1, 3, 4, 6, 7, *range(8, 12)]
    assert all(torch.allclose(new[row], old[[2, 5]].mean(dim=0)) for row in untrained), "the others: the trained mean"
    # Decoding a program the old table has gives the old decoder's output; weights over the old
    # table only (an autoregressor with fewer rows) are padded.
    z, pitch = torch.randn(2, TINY_TOKENIZER.latent_dim, *TINY_TOKENIZER.latent_grid), torch.tensor([60, 62])
    with torch.no_grad():
        assert torch.allclose(grown.eval().decode_latent(z, pitch, torch.tensor([5, 2])),
                              shipped.decode_latent(z, pitch, torch.tensor([5, 2])), atol=1e-6)  # fmt: skip
        weights = torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.0, 0.5]])
        assert torch.allclose(grown.decode_latent(z[:1], pitch[:1], weights),
                              shipped.decode_latent(z[:1], pitch[:1], weights), atol=1e-6)  # fmt: skip
        # An instrument past the old table (a drum kit for a 128-row decoder) decodes with no
        # instrument embedding, as cut weights do, rather than failing.
        assert torch.allclose(shipped.decode_latent(z[:1], pitch[:1], torch.tensor([11])),
                              shipped.decode_latent(z[:1], pitch[:1], torch.zeros(1, 8)), atol=1e-6)  # fmt: skip
    with pytest.raises(MarsError, match="only instrument_prior may be turned on and n_instruments grown"):
        apply_finetune(build_tokenizer(replace(with_prior, n_instruments=4)), {"init": str(path)})


def test_finetune_and_loss_sections_are_checked(tmp_path):
    base = _shipped_tiny(tmp_path)
    with pytest.raises(MarsError, match="different tokenizer config"):
        other = TokenizerConfig.from_dict({**TINY_TOKENIZER.to_dict(), "beta": 0.5})
        apply_finetune(build_tokenizer(other), {"init": str(base)})
    with pytest.raises(MarsError, match="allowed: encoder, quantizer, decoder"):
        apply_finetune(tiny_tokenizer(), {"init": str(base), "freeze": ["codebook"]})
    with pytest.raises(MarsError, match="needs init"):
        apply_finetune(tiny_tokenizer(), {"freeze": ["encoder"]})
    with pytest.raises(MarsError, match="unknown term"):
        reconstruction_loss({"l3": 1.0})


def test_shipped_weight_round_trip_and_corrupt_file(tmp_path):
    tok = tiny_tokenizer()
    path = tmp_path / "tok.pt"
    save_weights(path, "tokenizer", {"tokenizer": TINY_TOKENIZER.to_dict()}, tok, half=False)
    loaded = load_tokenizer(path)
    spec, pitch = torch.randn(1, 1, 32, 64), torch.tensor([60])
    assert torch.allclose(loaded(spec, pitch)[0], tok(spec, pitch)[0], atol=1e-6)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(MarsError, match="corrupt or truncated"):
        load_tokenizer(path)


def test_bad_config_key_names_key_and_allowed(tmp_path):
    with pytest.raises(MarsError, match="unknown key.*codebok_size.*allowed"):
        TokenizerConfig.from_dict({"codebok_size": 10})


def test_train_cli_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "empty" / "train").mkdir(parents=True)
    config = _config()
    config["data"] = {"root": str(tmp_path / "empty")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "engine.bindings.cli", "train", "tokenizer", "--config",
                           str(tmp_path / "c.yaml"), "--run", str(tmp_path / "run"), "--quiet"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "examples.json" in proc.stderr


def test_noteset_program_filter_rejects_unknown(tmp_path):
    from mars_model.data.noteset import NoteSet

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "examples.json").write_text(json.dumps(
        {"a": {"instrument": 1, "instrument_family": 0, "pitch": 60, "velocity": 50}}))
    assert len(NoteSet(tmp_path, "train", programs=[1])) == 1
    with pytest.raises(MarsError, match="no notes of instruments"):
        NoteSet(tmp_path, "train", programs=[7])
    assert np.array_equal(NoteSet(tmp_path, "train").conditions["pitch"], [60])


def test_harmonic_comb_peaks_on_the_harmonics():
    from mars_model.spectral import SpectralConfig

    cfg = SpectralConfig()
    comb = harmonic_comb(torch.tensor([69, 45]), cfg)  # A4 = 440 Hz, A2 = 110 Hz
    assert comb.shape == (2, 1, 512, 256)
    bin_hz = cfg.sample_rate / cfg.n_fft
    for row, f0 in enumerate((440.0, 110.0)):
        for k in (1, 2, 5):
            assert comb[row, 0, round(k * f0 / bin_hz), 0] > 0.7
        assert comb[row, 0, round(1.5 * f0 / bin_hz), 0] < 0.05  # between harmonics
        assert comb[row, 0, : round(0.5 * f0 / bin_hz), 0].max() < 0.05  # nothing below f0
    assert torch.equal(comb[..., 0], comb[..., 100])


def test_pitch_prior_needs_the_pitch():
    tok = tiny_tokenizer()
    with pytest.raises(MarsError, match="pitch prior"):
        tok(torch.randn(2, 1, 32, 64))
    spec = torch.randn(1, 1, 32, 64)
    low = tok(spec, torch.tensor([40]))[0]
    high = tok(spec, torch.tensor([80]))[0]
    assert not torch.allclose(low, high), "the decoder uses the pitch"


def test_instrument_prior_starts_as_the_identity_and_needs_the_instrument():
    with_prior = build_tokenizer(replace(TINY_TOKENIZER, instrument_prior=True)).eval()
    with_prior.load_state_dict(tiny_tokenizer().state_dict(), strict=False)
    spec, pitch = torch.randn(2, 1, 32, 64), torch.tensor([50, 70])
    with pytest.raises(MarsError, match="instrument prior"):
        with_prior(spec, pitch)
    programs = torch.tensor([0, 48])
    recon = with_prior(spec, pitch, programs)[0]
    assert torch.allclose(recon, tiny_tokenizer()(spec, pitch)[0], atol=1e-6), "FiLM layers start at zero"
    # [B] programs, [B, 128] one-hot and a shorter weight table (a small autoregressor's) agree.
    one_hot = torch.nn.functional.one_hot(programs, 128).float()
    with torch.no_grad():
        for film in with_prior.decoder.film:
            film.proj.weight.normal_()
        latent = torch.randn(2, 8, 4, 8)
        by_index = with_prior.decode_latent(latent, pitch, programs)
        assert torch.allclose(by_index, with_prior.decode_latent(latent, pitch, one_hot), atol=1e-6)
        assert torch.allclose(by_index, with_prior.decode_latent(latent, pitch, one_hot[:, :49]), atol=1e-6)
        other = with_prior.decode_latent(latent, pitch, torch.tensor([5, 5]))
        assert not torch.allclose(other, by_index), "the decoder uses the instrument"


def test_a_finetune_may_add_the_instrument_prior_and_keeps_every_token(tmp_path):
    data, config = _dataset(), _config(steps=8)
    config["tokenizer"]["instrument_prior"] = True
    config["finetune"] = {"init": str(_shipped_tiny(tmp_path)), "freeze": ["encoder", "quantizer"]}
    model = build_tokenizer(TokenizerConfig.from_dict(config["tokenizer"]), seed=5)
    apply_finetune(model, config["finetune"])
    specs, pitch = torch.stack([d["spec"] for d in data]), torch.stack([d["pitch"] for d in data])
    tokens_before = model.encode(specs, pitch)
    train(model.train(), reconstruction_loss({"vq": 0.0}, TINY_SPECTRAL), data, config, tmp_path / "run", quiet=True)
    model.eval()
    assert all(torch.equal(a, b) for a, b in zip(model.encode(specs, pitch), tokens_before, strict=True))
    latent = model.quantizer.indices_to_latent(tokens_before)[:2]
    as_0 = model.decode_latent(latent, pitch[:2], torch.tensor([0, 0]))
    as_1 = model.decode_latent(latent, pitch[:2], torch.tensor([1, 1]))
    assert not torch.allclose(as_0, as_1), "training moved the instrument embeddings and FiLM layers"
    # Anything else that differs from the init's config is still refused.
    config["tokenizer"]["beta"] = 0.5
    with pytest.raises(MarsError, match="only instrument_prior may be turned on"):
        apply_finetune(build_tokenizer(TokenizerConfig.from_dict(config["tokenizer"])), config["finetune"])


def test_pitch_shift_moves_every_harmonic_and_pads_with_the_floor():
    from mars_model.spectral import SpectralConfig, pitch_shift_log_spectrogram

    cfg = SpectralConfig()
    low, high = harmonic_comb(torch.tensor([45, 57]), cfg) * 2.0 - 1.0  # A2 and A3, in [-1, 1]
    up, same, down = pitch_shift_log_spectrogram(torch.stack([low, low, high]), torch.tensor([12, 0, -12]))
    assert torch.equal(same, low)
    # An octave up lands the A2 comb's partials on the A3 comb's. Stretching the frequency axis
    # also doubles each bump's width (a real transposition keeps the window's width), hence 0.8.
    peaks = high[0, :, 0] > 0.9
    assert (up[0, peaks, 0] > 0.5).all()
    assert torch.corrcoef(torch.stack([up[0, :, 0], high[0, :, 0]]))[0, 1] > 0.8
    # An octave down reads nothing above the top bin for the upper half: it gets the floor.
    assert torch.equal(down[0, 257:], torch.full_like(down[0, 257:], -1.0))
    assert torch.corrcoef(torch.stack([down[0, :256, 0], low[0, :256, 0]]))[0, 1] > 0.8


def test_augment_draw_is_reproducible_bounded_and_checked():
    from mars_model.training import AugmentConfig

    aug = AugmentConfig.from_dict({"pitch_shift": 2, "probability": 0.5})
    pitches, idx = np.full(4000, 60), np.arange(4000)
    shifts = aug.draw(pitches, seed=0, idx=idx)
    assert np.array_equal(shifts, aug.draw(pitches, seed=0, idx=idx))
    assert not np.array_equal(shifts, aug.draw(pitches, seed=1, idx=idx))
    assert set(np.unique(shifts)) == {-2, -1, 0, 1, 2}
    assert abs((shifts != 0).mean() - 0.5) < 0.03
    edge = aug.draw(np.array([0, 127] * 200), seed=0, idx=np.arange(400))
    assert (edge[0::2] >= 0).all() and (edge[1::2] <= 0).all()  # never below MIDI 0 or above 127
    assert not AugmentConfig.from_dict(None).draw(pitches, 0, idx).any()
    # Drum notes (movable False) stay where they are; the melodic ones draw exactly as before.
    drums = idx % 3 == 0
    kept = aug.draw(pitches, seed=0, idx=idx, movable=~drums)
    assert not kept[drums].any() and np.array_equal(kept[~drums], shifts[~drums])
    with pytest.raises(MarsError, match="pitch_shift must be 0..12"):
        AugmentConfig.from_dict({"pitch_shift": 13})
    with pytest.raises(MarsError, match=r"probability must be in \[0, 1\]"):
        AugmentConfig.from_dict({"pitch_shift": 1, "probability": 2})
    with pytest.raises(MarsError, match="augment: unknown key"):
        AugmentConfig.from_dict({"semitones": 1})


def test_tokenizer_training_with_transposition_resumes_the_same(tmp_path):
    from mars_model.tokenizer.train import train_tokenizer
    from tests.tiny_models import logged_losses, tiny_note_set

    tiny_note_set(tmp_path / "data")
    config = {**_config(steps=6), "data": {"root": str(tmp_path / "data")},
              "augment": {"pitch_shift": 3, "probability": 0.75}}  # fmt: skip
    train_tokenizer(config, tmp_path / "straight", quiet=True)
    train_tokenizer(config, tmp_path / "resumed", quiet=True, stop_after=3)
    train_tokenizer(config, tmp_path / "resumed", quiet=True)

    straight = logged_losses(tmp_path / "straight")
    assert len(straight) == 6 and logged_losses(tmp_path / "resumed") == pytest.approx(straight, rel=1e-5)
    without = {**config, "augment": {"pitch_shift": 0}}
    train_tokenizer(without, tmp_path / "plain", quiet=True)
    assert logged_losses(tmp_path / "plain") != pytest.approx(straight, rel=1e-5)  # the moved notes were trained on


def test_train_cli_runs_a_recipe_stage_from_the_weights_of_the_stage_before(tmp_path, capsys):
    from engine.bindings.cli import main
    from mars_model.config import load_config
    from mars_model.weights_io import load_weights
    from tests.tiny_models import tiny_note_set

    tiny_note_set(tmp_path / "data")
    recipe = {"model": "tokenizer", "base": {**_config(steps=2), "data": {"root": str(tmp_path / "data")}},
              "stages": [{"name": "first", "export": str(tmp_path / "first.pt")},
                         {"name": "second", "from": "first", "export": str(tmp_path / "second.pt"),
                          "set": {"finetune": {"freeze": ["encoder", "quantizer"]}, "loss": {"vq": 0.0}}}]}  # fmt: skip
    path = tmp_path / "tokenizer.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train = ["train", "tokenizer", "--config", str(path), "--quiet"]
    for stage in ("first", "second"):
        assert main([*train, "--stage", stage, "--run", str(tmp_path / stage), "--export", str(tmp_path / f"{stage}.pt")]) == 0
    first, second = (load_weights(tmp_path / f"{s}.pt", "tokenizer") for s in ("first", "second"))
    assert second["meta"]["finetune"] == {"init": str(tmp_path / "first.pt"), "freeze": ["encoder", "quantizer"]}
    assert second["meta"]["recipe"] == {"config": str(path), "stage": "second"}
    frozen = [k for k in first["state"] if k.startswith(("encoder.", "quantizer.codebook"))]
    assert frozen and all(torch.equal(first["state"][k], second["state"][k]) for k in frozen), "tokens unchanged"

    capsys.readouterr()
    assert main([*train, "--stage", "second", "--show-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == load_config(path, "second")
    assert main([*train, "--run", str(tmp_path / "x")]) == 1  # a recipe needs --stage
    assert "choose a stage with --stage (first, second)" in capsys.readouterr().err
