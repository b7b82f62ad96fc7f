"""The next-scale autoregressor and the NoteGenerator contract."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_model.api import NoteRequest, Sampling
from mars_model.errors import MarsError
from mars_model.generator import NoteGenerator, SamplingRows, filter_logits, sample_tokens
from tests.tiny_models import tiny_autoregressor, tiny_tokenizer


def make_generator(**options) -> NoteGenerator:
    options.setdefault("coarse_scales", 1)
    return NoteGenerator(tiny_tokenizer(), tiny_autoregressor(), instruments=[0, 1, 2],
                         pitch_range=(40, 80), model_id="test", vocoder_iters=2, **options)  # fmt: skip


def _conditions(b=2):
    weights = F.one_hot(torch.tensor([0, 1, 2, 1])[:b], 8).float()
    return weights, torch.tensor([60, 64, 67, 70])[:b], torch.tensor([0, 4, 2, 3])[:b]


def test_kv_cache_gives_the_full_sequence_logits():
    ar, q = tiny_autoregressor(), tiny_tokenizer().quantizer
    weights, pitch, vel = _conditions()
    indices = [torch.randint(0, 32, (2, h, w)) for h, w in q.scales]
    inputs = q.teacher_inputs(indices)
    with torch.no_grad():
        full = ar(weights, pitch, vel, inputs)
        cond = ar.condition(weights, pitch, vel)
        caches = [{} for _ in ar.blocks]
        stepped = [ar.step(cond, k, None if k == 0 else inputs[k - 1], caches) for k in range(len(q.scales))]
    assert torch.allclose(torch.cat(stepped, dim=1), full, atol=1e-5)


def test_block_causal_mask_hides_finer_scales():
    ar, q = tiny_autoregressor(), tiny_tokenizer().quantizer
    weights, pitch, vel = _conditions()
    indices = [torch.randint(0, 32, (2, h, w)) for h, w in q.scales]
    inputs = q.teacher_inputs(indices)
    changed = [x.clone() for x in inputs]
    changed[-1] += 1.0  # the input of the last scale
    with torch.no_grad():
        a, b = ar(weights, pitch, vel, inputs), ar(weights, pitch, vel, changed)
    last = ar.offsets[-2]
    assert torch.allclose(a[:, :last], b[:, :last], atol=1e-6)
    assert not torch.allclose(a[:, last:], b[:, last:])


def _randomise_condition(ar):
    # Trained models have non-zero adaLN; make the tiny one condition-sensitive too.
    with torch.no_grad():
        for block in ar.blocks:
            block.ada.weight.normal_(0, 0.2)
        ar.head_ada.weight.normal_(0, 0.2)
        ar.condition.null.normal_(0, 1.0)


def test_guidance_zero_equals_the_conditional_model():
    gen = make_generator(coarse_scales=0)
    _randomise_condition(gen.autoregressor)
    plain = NoteRequest(1, 60, 100, seed=3, sampling=Sampling(guidance=0.0))
    guided = NoteRequest(1, 60, 100, seed=3, sampling=Sampling(guidance=2.0))
    spec0 = gen.generate_spectrograms([plain])
    # The conditional model by hand: greedy-free sampling with the same seed, no null branch.
    ar, q = gen.autoregressor, gen.quantizer
    weights, pitch, vel = gen._conditions([plain])
    cond = ar.condition(weights, pitch, vel)
    caches, f_hat, rng = [{} for _ in ar.blocks], None, [torch.Generator().manual_seed(3)]
    with torch.no_grad():
        for k in range(len(q.scales)):
            logits = ar.step(cond, k, None if k == 0 else q.next_input(f_hat, k - 1), caches)
            f_hat = q.add_scale(f_hat, k, sample_tokens(logits, SamplingRows.of([plain], gen.device), rng).reshape(1, *q.scales[k]))
        by_hand = gen.tokenizer.decode_latent(f_hat, pitch)
    assert torch.equal(spec0, by_hand)
    assert not torch.equal(spec0, gen.generate_spectrograms([guided]))


def test_kv_cache_and_no_cache_paths_agree():
    gen = make_generator(coarse_scales=0)
    _randomise_condition(gen.autoregressor)
    reqs = [NoteRequest(0, 55, 60, seed=1), NoteRequest(2, 70, 127, seed=2, sampling=Sampling(guidance=1.5))]
    a = gen.generate_spectrograms(reqs, use_kv_cache=True)
    b = gen.generate_spectrograms(reqs, use_kv_cache=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_no_cache_path_on_a_deeper_pyramid():
    from mars_model.tokenizer import TokenizerConfig, build_tokenizer
    from tests.tiny_models import TINY_AR, TINY_TOKENIZER

    cfg = TokenizerConfig(**{**TINY_TOKENIZER.__dict__, "scales": ((1, 1), (1, 2), (2, 2), (2, 4), (3, 6), (4, 8))})
    tok = build_tokenizer(cfg).eval()
    from mars_model.autoregressor import build_autoregressor

    ar = build_autoregressor(TINY_AR, cfg.scales, cfg.latent_dim, cfg.codebook_size).eval()
    gen = NoteGenerator(tok, ar, [0, 1], (40, 80), "deep", vocoder_iters=1, coarse_scales=2)
    _randomise_condition(gen.autoregressor)
    reqs = [NoteRequest(1, 60, 100, seed=2, sampling=Sampling(guidance=1.0))]
    assert torch.allclose(gen.generate_spectrograms(reqs, use_kv_cache=False),
                          gen.generate_spectrograms(reqs, use_kv_cache=True), atol=1e-5)  # fmt: skip


def test_fixed_seed_gives_identical_audio_independent_of_batching():
    gen = make_generator()
    _randomise_condition(gen.autoregressor)
    a = gen.generate([NoteRequest(1, 60, 100, seed=7)])
    b = gen.generate([NoteRequest(0, 50, 30, seed=1), NoteRequest(1, 60, 100, seed=7)])
    c = gen.generate([NoteRequest(1, 60, 100, seed=8)])
    again = gen.generate([NoteRequest(1, 60, 100, seed=7)])
    assert np.array_equal(a, again), "same request, same seed: bit-identical"
    assert not np.allclose(a[0], c[0], atol=1e-3)
    assert np.allclose(a[0], b[1], atol=1e-4), "the vocoder's phase start is per note, not per batch"
    # Across batch compositions the model's output is the same note (tokens identical; only
    # BLAS rounding differs).
    fresh = make_generator(coarse_scales=0)
    _randomise_condition(fresh.autoregressor)
    alone = fresh.generate_spectrograms([NoteRequest(1, 60, 100, seed=7)])
    paired = fresh.generate_spectrograms([NoteRequest(0, 50, 30, seed=1), NoteRequest(1, 60, 100, seed=7)])
    assert torch.allclose(alone[0], paired[1], atol=1e-5)


def test_coarse_scale_cache_reuses_and_matches():
    fresh = make_generator(coarse_scales=2)
    _randomise_condition(fresh.autoregressor)
    req = NoteRequest(2, 62, 90, seed=5, sampling=Sampling(guidance=1.0, top_k=10))
    first = fresh.generate_spectrograms([req])
    assert fresh.coarse_hits == 0
    second = fresh.generate_spectrograms([req])
    assert fresh.coarse_hits == 1
    assert torch.allclose(first, second, atol=1e-6)
    uncached = fresh.generate_spectrograms([req], use_coarse_cache=False)
    assert torch.allclose(first, uncached, atol=1e-6)


def test_a_new_seed_reuses_the_conditions_coarse_scales():
    gen = make_generator(coarse_scales=2)
    _randomise_condition(gen.autoregressor)
    first = gen.generate_spectrograms([NoteRequest(2, 62, 90, seed=1)])
    other = gen.generate_spectrograms([NoteRequest(2, 62, 90, seed=2)])  # same condition, new seed
    assert gen.coarse_hits == 1, "the second note only refined the fine scales"
    assert not torch.allclose(first, other), "the fine scales follow the new seed"
    assert torch.allclose(other, gen.generate_spectrograms([NoteRequest(2, 62, 90, seed=2)], use_coarse_cache=False),
                          atol=1e-6), "cache on or off: the same note"  # fmt: skip
    gen.generate_spectrograms([NoteRequest(2, 62, 30, seed=1)])  # another velocity bucket: a new condition
    assert gen.coarse_hits == 1


def test_morph_weights_one_zero_equal_the_first_instrument():
    gen = make_generator()
    _randomise_condition(gen.autoregressor)
    alone = gen.generate([NoteRequest(1, 60, 100, seed=4)])
    morph = gen.generate([NoteRequest({1: 1.0, 2: 0.0}, 60, 100, seed=4)])
    half = gen.generate([NoteRequest({1: 0.5, 2: 0.5}, 60, 100, seed=4)])
    assert np.array_equal(alone, morph)
    assert not np.array_equal(alone, half)


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, 2, 1.0)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert not torch.isinf(filter_logits(logits, 0, 1.0)).any()


def _filter_by_sorting(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """The definition, one row at a time: sort, cut at k, cut where the mass crosses top_p."""
    if top_k and top_k < logits.shape[-1]:
        logits = logits.masked_fill(logits < logits.topk(top_k).values[..., -1:], float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        remove = probs.cumsum(-1) - probs > top_p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def test_batched_filter_matches_the_sorting_definition_row_by_row():
    """One batched pass with per-row settings keeps exactly the tokens that sorting each row
    keeps, including rows whose nucleus is wider than the first candidates looked at."""
    torch.manual_seed(1)
    settings = [(0, 0.95), (0, 1.0), (50, 1.0), (20, 0.9), (0, 0.5), (3, 0.99), (0, 0.999), (700, 0.95)]
    # peaked rows (a nucleus of a few tokens) and flat ones (a nucleus of hundreds)
    logits = torch.randn(len(settings), 40, 1024) * torch.tensor([8.0, 0.5, 3.0, 1.0, 6.0, 2.0, 0.3, 0.2])[:, None, None]
    top_k = torch.tensor([k for k, _ in settings])[:, None, None]
    top_p = torch.tensor([p for _, p in settings])[:, None, None]
    batched = filter_logits(logits, top_k, top_p)
    for row, (k, p) in enumerate(settings):
        assert torch.equal(batched[row].isinf(), _filter_by_sorting(logits[row], k, p).isinf()), (k, p)
    assert (~batched[6].isinf()).sum(-1).min() > 256  # this row needed the whole vocabulary


@pytest.mark.parametrize("request_kwargs,message", [
    ({"instrument": 1, "pitch": 90, "velocity": 100}, "outside this model's range 40..80"),
    ({"instrument": 5, "pitch": 60, "velocity": 100}, "not in this model"),
])  # fmt: skip
def test_bad_requests_are_refused(request_kwargs, message):
    with pytest.raises(MarsError, match=message):
        make_generator().generate([NoteRequest(**request_kwargs)])


def test_bad_velocity_and_sampling():
    with pytest.raises(MarsError, match="velocity must be in 1..127"):
        NoteRequest(0, 60, 0)
    with pytest.raises(MarsError, match="top_p"):
        Sampling(top_p=0.0)
    with pytest.raises(MarsError, match="backend"):
        make_generator(backend="warp-drive")


def test_sampler_draws_by_probability_and_never_outside_the_filtered_set():
    gen = make_generator()
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1, 0.0]])).expand(1, 20000, 4)
    req = NoteRequest(0, 60, 100)
    draws = sample_tokens(logits, SamplingRows.of([req], gen.device), [torch.Generator().manual_seed(0)])[0]
    counts = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert torch.allclose(counts, torch.tensor([0.7, 0.2, 0.1, 0.0]), atol=0.015)
    top1 = NoteRequest(0, 60, 100, sampling=Sampling(top_k=1))
    assert (sample_tokens(logits, SamplingRows.of([top1], gen.device), [torch.Generator().manual_seed(1)]) == 0).all()


def test_precision_choice():
    assert make_generator(precision="fp32").precision == "fp32"
    assert make_generator(precision="auto").precision in ("fp32", "bf16")
    with pytest.raises(MarsError, match="unknown precision"):
        make_generator(precision="fp16")
    gen = make_generator(precision="bf16")  # runs wherever autocast has bf16 (any CPU, slower without native bf16)
    reqs = [NoteRequest(0, 60, 100, seed=3), NoteRequest(2, 70, 90, seed=4)]
    first, second = gen.generate(reqs), gen.generate(reqs)
    assert first.shape == (2, gen.front.config.n_samples) and np.isfinite(first).all()
    assert np.array_equal(first, second)


def test_pipelined_batches_come_in_order_and_equal_the_notes_made_alone():
    gen = make_generator(precision="fp32")
    reqs = [NoteRequest(i % 3, 50 + i, 100, seed=i) for i in range(7)]
    threads = torch.get_num_threads()
    batches = list(gen.generate_batches(reqs, batch_size=3, pipelined=True))
    assert torch.get_num_threads() == threads  # restored
    assert [(first, len(waves)) for first, waves in batches] == [(0, 3), (3, 3), (6, 1)]
    alone = np.concatenate([gen.generate([r]) for r in reqs])
    assert alone.shape == (7, gen.front.config.n_samples)
    assert np.array_equal(np.concatenate([w for _, w in batches]), alone)  # bit for bit: batch-invariant
    assert np.array_equal(gen.generate_many(reqs, batch_size=3, pipelined=False), alone)
    with pytest.raises(MarsError, match="batch_size"):
        gen.generate_many(reqs, batch_size=0)
    with pytest.raises(MarsError, match="outside this model's range"):
        next(gen.generate_batches([*reqs, NoteRequest(0, 20, 100)]))  # refused before any work


def test_training_can_start_from_shipped_weights(tmp_path):
    from mars_model.autoregressor.train import start_from
    from mars_model.weights_io import save_weights
    from tests.tiny_models import TINY_AR

    q = tiny_tokenizer().quantizer
    shipped = tiny_autoregressor(seed=1)
    path = tmp_path / "ar.pt"
    save_weights(path, "autoregressor", {"autoregressor": TINY_AR.to_dict(), "scales": [list(s) for s in q.scales],
                                         "latent_dim": q.dim, "vocab": q.codebook_size}, shipped, half=False)  # fmt: skip
    fresh = tiny_autoregressor(seed=2)
    start_from(fresh, {"init": str(path)}, q)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), shipped.state_dict().values(), strict=True))
    start_from(fresh, None, q)  # no section: nothing happens
    with pytest.raises(MarsError, match="unknown key"):
        start_from(fresh, {"init": str(path), "freeze": ["blocks"]}, q)
    other = type(TINY_AR)(**{**TINY_AR.to_dict(), "depth": 3})
    from mars_model.autoregressor import build_autoregressor

    wider = build_autoregressor(other, q.scales, q.dim, q.codebook_size)
    with pytest.raises(MarsError, match="another autoregressor architecture"):
        start_from(wider, {"init": str(path)}, q)


def test_a_finetune_may_grow_the_instrument_table_and_new_rows_start_as_the_trained_mean(tmp_path):
    from mars_model.autoregressor import build_autoregressor
    from mars_model.autoregressor.train import start_from
    from mars_model.weights_io import save_weights
    from tests.tiny_models import TINY_AR

    q = tiny_tokenizer().quantizer
    shipped = tiny_autoregressor(seed=1)
    path = tmp_path / "ar.pt"
    save_weights(path, "autoregressor", {"autoregressor": TINY_AR.to_dict(), "scales": [list(s) for s in q.scales],
                                         "latent_dim": q.dim, "vocab": q.codebook_size}, shipped,
                 {"instruments": [1, 3, 4]}, half=False)  # fmt: skip
    grown = build_autoregressor(type(TINY_AR)(**{**TINY_AR.to_dict(), "n_instruments": 12}), q.scales, q.dim,
                                q.codebook_size, seed=2)  # fmt: skip
    start_from(grown, {"init": str(path)}, q)
    old, new = shipped.condition.instrument.weight, grown.condition.instrument.weight
    assert new.shape == (12, old.shape[1])
    assert torch.equal(new[[1, 3, 4]], old[[1, 3, 4]]), "trained rows kept"
    mean = old[[1, 3, 4]].mean(dim=0)
    for row in (0, 2, 5, 7, 8, 11):  # untrained old rows and the new ones
        assert torch.allclose(new[row], mean)
    rest = {k: v for k, v in grown.state_dict().items() if k != "condition.instrument.weight"}
    assert all(torch.equal(v, shipped.state_dict()[k]) for k, v in rest.items()), "everything else loaded as is"
    smaller = build_autoregressor(type(TINY_AR)(**{**TINY_AR.to_dict(), "n_instruments": 4}), q.scales, q.dim,
                                  q.codebook_size)  # fmt: skip
    with pytest.raises(MarsError, match="only n_instruments may grow"):
        start_from(smaller, {"init": str(path)}, q)


def test_a_tokenizer_with_an_instrument_prior_decodes_with_the_requests_instrument():
    from dataclasses import replace

    from mars_model.tokenizer import build_tokenizer
    from tests.tiny_models import TINY_TOKENIZER

    tok = build_tokenizer(replace(TINY_TOKENIZER, instrument_prior=True)).eval()
    with torch.no_grad():
        for film in tok.decoder.film:
            film.proj.weight.normal_(std=0.5)
    gen = NoteGenerator(tok, tiny_autoregressor(), [0, 1, 2], (40, 80), "prior", vocoder_iters=1, coarse_scales=0)
    _randomise_condition(gen.autoregressor)
    reqs = [NoteRequest(1, 60, 100, seed=3), NoteRequest({1: 0.5, 2: 0.5}, 64, 90, seed=4)]
    cached = gen.generate_spectrograms(reqs)
    assert torch.allclose(cached, gen.generate_spectrograms(reqs, use_kv_cache=False), atol=1e-5)
    # The same tokens decoded as another instrument differ: the decoder hears the request.
    f_hat = tok.quantizer.indices_to_latent(tok.encode(cached, torch.tensor([60, 64])))
    pitch = torch.tensor([60, 64])
    as_1 = tok.decode_latent(f_hat, pitch, torch.tensor([1, 1]))
    as_2 = tok.decode_latent(f_hat, pitch, torch.tensor([2, 2]))
    assert not torch.allclose(as_1, as_2)


def test_transposition_augmentation_trains_on_moved_notes_and_resumes_the_same(tmp_path):
    from mars_model.autoregressor.train import encode_split, train_autoregressor
    from mars_model.data.noteset import NoteSet
    from mars_model.spectral import SpectralFrontEnd, pitch_shift_log_spectrogram
    from mars_model.weights_io import save_weights
    from tests.tiny_models import (
        TINY_AR,
        TINY_SPECTRAL,
        TINY_TOKENIZER,
        logged_losses,
        tiny_note_set,
    )

    tiny_note_set(tmp_path / "data")
    tok = tiny_tokenizer()
    save_weights(tmp_path / "tok.pt", "tokenizer", {"tokenizer": TINY_TOKENIZER.to_dict()}, tok, half=False)
    config = {"data": {"root": str(tmp_path / "data")}, "tokenizer": {"weights": str(tmp_path / "tok.pt")},
              "augment": {"pitch_shift": 2, "probability": 0.75}, "autoregressor": TINY_AR.to_dict(),
              "train": {"steps": 6, "batch_size": 4, "lr": 1e-3, "warmup": 1, "checkpoint_every": 3,
                        "log_every": 1, "seed": 0}}  # fmt: skip
    train_autoregressor(config, tmp_path / "straight", quiet=True)
    train_autoregressor(config, tmp_path / "resumed", quiet=True, stop_after=3)
    train_autoregressor(config, tmp_path / "resumed", quiet=True)

    straight, resumed = logged_losses(tmp_path / "straight"), logged_losses(tmp_path / "resumed")
    assert len(straight) == 6 and resumed == pytest.approx(straight, rel=1e-5)
    # One token table per shift, each the moved notes' own tokens (pitch label moved too).
    caches = sorted(p.name for p in (tmp_path / "straight").glob("tokens-*.pt"))
    assert len(caches) == 5 and sum("shift" in name for name in caches) == 4
    notes = NoteSet(tmp_path / "data", "train", SpectralFrontEnd(TINY_SPECTRAL))
    specs, pitches = np.asarray(notes.spectrograms()), notes.conditions["pitch"]
    up = next((tmp_path / "straight").glob("tokens-*-shift+2.pt"))
    moved = pitch_shift_log_spectrogram(torch.from_numpy(specs.astype(np.float32))[:, None], torch.full((len(specs),), 2))
    expected = torch.cat([i.flatten(1) for i in tok.encode(moved, torch.from_numpy(pitches.astype(np.int64)) + 2)], 1)
    assert torch.equal(torch.load(up).long(), expected)
    assert torch.equal(encode_split(tok, specs, pitches), torch.load(next((tmp_path / "straight").glob("tokens-*-12.pt"))))
    assert not torch.equal(torch.load(up), encode_split(tok, specs, pitches))
