"""The tokenizer's perceptual distance: zero on identical notes, grows with blur, trains only the input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mars_model.errors import MarsError
from mars_model.eval.classifier import load_classifier
from mars_model.spectral import SpectralConfig
from mars_model.tokenizer.perceptual import (
    DEFAULT_PERCEPTUAL_WEIGHTS,
    PERCEPTUAL_CONFIG,
    load_perceptual,
)
from mars_model.tokenizer.train import reconstruction_loss


def harmonic_note(pitch: int, n_harmonics: int = 12, decay: float = 0.7) -> torch.Tensor:
    """A clean harmonic note as a normalised log spectrogram ``[1, 1, 512, 256]`` (no network needed)."""
    spectral = SpectralConfig()
    bins = np.arange(spectral.n_bins)
    f0_bins = 440.0 * 2 ** ((pitch - 69) / 12) / (spectral.sample_rate / spectral.n_fft)
    mag = np.full(spectral.n_bins, 1e-4)
    for k in range(1, n_harmonics + 1):
        mag += decay ** (k - 1) * np.exp(-0.5 * ((bins - k * f0_bins) / 0.8) ** 2)
    envelope = np.exp(-np.arange(spectral.n_frames) / 120.0)
    log = np.log(mag[:, None] * envelope[None] + 1e-5)
    spec = 2 * (log - log.min()) / (log.max() - log.min()) - 1
    return torch.from_numpy(spec.astype(np.float32))[None, None]


def blur_frequency(spec: torch.Tensor, bins: int) -> torch.Tensor:
    return F.avg_pool2d(spec, (2 * bins + 1, 1), stride=1, padding=(bins, 0), count_include_pad=False)


@pytest.fixture(scope="module")
def distance():
    return load_perceptual()


def test_the_shipped_perceptual_net_is_not_the_evaluation_classifier():
    net, evaluator = load_classifier(DEFAULT_PERCEPTUAL_WEIGHTS), load_classifier()
    assert net.config == PERCEPTUAL_CONFIG
    assert net.config != evaluator.config
    assert net.info["label"] == "instrument"  # GM program, not the family the evaluation scores


def test_distance_is_zero_on_identical_notes_and_grows_with_frequency_blur(distance):
    note = torch.cat([harmonic_note(p) for p in (45, 60, 72)])
    with torch.no_grad():
        same = distance(note, note).item()
        slight = distance(blur_frequency(note, 1), note).item()
        strong = distance(blur_frequency(note, 4), note).item()
    assert same == pytest.approx(0.0, abs=1e-6)
    assert 0 < slight < strong


def test_gradients_reach_the_reconstruction_and_never_the_frozen_network(distance):
    note = harmonic_note(60)
    recon = blur_frequency(note, 2).requires_grad_(True)
    distance.train()  # a training loop calls train() on everything: the network must stay in eval
    assert not distance.net.training
    distance(recon, note).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in distance.net.parameters())


def test_the_loss_section_accepts_the_perceptual_term_and_names_what_is_allowed():
    loss_fn = reconstruction_loss({"l1": 1.0, "perceptual": 0.5})
    assert callable(loss_fn)
    with pytest.raises(MarsError, match="perceptual_net"):
        reconstruction_loss({"perceptul": 1.0})
    with pytest.raises(MarsError, match="no perceptual network at"):
        reconstruction_loss({"perceptual": 1.0, "perceptual_net": "/nonexistent/perceptual.pt"})
