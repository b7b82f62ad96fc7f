"""The token probe of tools/diagnose_tokenizer.py reads a label that is in the latents, and only then."""

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "diagnose_tokenizer", Path(__file__).resolve().parent.parent / "tools" / "diagnose_tokenizer.py"
)
diagnose = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagnose)


def _latents(n, seed):
    """Latents ``[n, 8, 4, 2]`` whose class (of 4) shifts one channel in one corner."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.randn(n, 8, 4, 2, generator=gen)
    x[torch.arange(n), y, 0, 0] += 3.0
    return x, y


def test_the_probe_reads_a_label_carried_by_the_latents_on_new_samples():
    x, y = _latents(512, seed=0)
    predict = diagnose.train_probe(x, y, n_classes=4, epochs=8)
    x_new, y_new = _latents(256, seed=1)
    assert (predict(x_new) == y_new).float().mean() > 0.9


def test_the_probe_is_at_chance_when_the_labels_are_shuffled():
    x, y = _latents(512, seed=0)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(2))]
    predict = diagnose.train_probe(x, shuffled, n_classes=4, epochs=8)
    x_new, y_new = _latents(256, seed=1)
    assert (predict(x_new) == y_new).float().mean() < 0.4  # chance is 0.25


def test_the_label_swap_always_names_another_family():
    from mars_model.config import load_recipe
    from mars_model.data.build import FamilyMap

    root = Path(__file__).resolve().parent.parent
    programs = load_recipe(root / "mars_model/configs/tokenizer.yaml").base["data"]["programs"]
    family = {p: info.family for p, info in FamilyMap.load().programs.items()}
    swap = diagnose.swapped_programs(programs)
    assert sorted(swap) == sorted(programs) and sorted(swap.values()) == sorted(programs)
    assert all(family[p] != family[q] for p, q in swap.items())
