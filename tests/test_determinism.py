"""A note's audio depends only on its request: never on its batch-mates, the batch size, the thread
count, the pipeline, or what the note and coarse-scale caches already hold (the shipped model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.midi.midifile import read_midi_file
from engine.midi.program_map import ProgramMap
from engine.render import RenderReport, RenderSettings, make_cache, plan_notes, render_to_array
from mars_model.api import NoteRequest, Sampling
from mars_model.generator import load_generator

MIDI = Path(__file__).resolve().parent.parent / "examples" / "piano_pedal.mid"
PRESET_SAMPLING = Sampling(temperature=0.95, top_p=0.95)  # what the shipped presets use
OTHER_SAMPLINGS = [Sampling(), Sampling(temperature=0.8, top_k=50), Sampling(top_k=20, top_p=0.9, guidance=1.5)]


@pytest.fixture(scope="module")
def generator():
    return load_generator(precision="fp32")


def _companions(generator, count: int, seed: int) -> list[NoteRequest]:
    """Other notes to share a batch with: other instruments, pitches, velocities and sampling."""
    rng = np.random.default_rng(seed)
    programs = list(generator.instruments)
    return [NoteRequest(int(rng.choice(programs)), int(rng.integers(36, 90)), int(rng.integers(1, 128)),
                        seed=int(rng.integers(1000)), sampling=OTHER_SAMPLINGS[i % 3] if i % 2 else PRESET_SAMPLING)
            for i in range(count)]  # fmt: skip


def test_a_note_is_bit_identical_alone_and_in_batches_of_3_and_16(generator):
    note = NoteRequest(0, 48, 95, seed=7, sampling=PRESET_SAMPLING)
    generator.clear_coarse_cache()
    alone = generator.generate([note])[0]
    for batch in ([note, *_companions(generator, 2, 1)],
                  [*_companions(generator, 9, 2), note, *_companions(generator, 6, 3)]):  # fmt: skip
        generator.clear_coarse_cache()
        waves = generator.generate(batch)
        assert np.array_equal(waves[batch.index(note)], alone), f"differs in a batch of {len(batch)}"
    assert np.abs(alone).max() > 1e-3  # a real note, not silence that trivially matches


def test_every_note_of_a_batch_equals_itself_alone_at_one_and_two_threads(generator):
    batch = _companions(generator, 4, 4)
    generator.clear_coarse_cache()
    together = generator.generate(batch)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            for row, note in enumerate(batch):
                generator.clear_coarse_cache()
                assert np.array_equal(generator.generate([note])[0], together[row]), (count, note)
    finally:
        torch.set_num_threads(threads)


def test_pipelined_batches_and_the_coarse_cache_change_nothing(generator):
    notes = _companions(generator, 7, 5)
    generator.clear_coarse_cache()
    plain = generator.generate_many(notes, batch_size=3, pipelined=False)
    # pipelined, and now with every coarse scale of these conditions cached
    hits = generator.coarse_hits
    piped = generator.generate_many(notes, batch_size=3, pipelined=True)
    assert generator.coarse_hits > hits
    assert np.array_equal(plain, piped)
    generator.clear_coarse_cache()
    assert np.array_equal(generator.generate_many(notes, batch_size=16), plain)


def test_a_render_with_a_partly_filled_cache_is_bit_identical_to_one_from_empty(generator, tmp_path):
    def render(cache_dir: Path) -> tuple[np.ndarray, RenderReport]:
        generator.clear_coarse_cache()
        return render_to_array(MIDI, RenderSettings(cache_dir=cache_dir, progress=False), source=generator)

    empty, first = render(tmp_path / "empty")
    assert first.cache.generated > 10

    # Fill another cache with some of the file's notes first, in a batch of their own, chosen so
    # that the render then makes the rest in batches of 16 and of 1 (the batch sizes that used
    # to round differently).
    settings = RenderSettings(cache_dir=tmp_path / "partial", progress=False)
    cache = make_cache(settings, generator)
    plan = plan_notes(read_midi_file(MIDI, settings.sample_rate), ProgramMap.load(None), cache,
                      RenderReport(sample_rate=settings.sample_rate))  # fmt: skip
    keys = list(dict.fromkeys(p.key for p in plan if p is not None))
    prefill = keys[1::2][: (len(keys) - 1) % 16]
    cache.fill(prefill)
    again, second = render(tmp_path / "partial")
    assert second.cache.generated == first.cache.generated - len(prefill) and second.cache.generated % 16 == 1
    assert np.array_equal(empty, again)
