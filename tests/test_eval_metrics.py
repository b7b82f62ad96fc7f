"""The evaluation metrics on inputs whose answer is known: equal sets, shifted sets, ideal predictions."""

import numpy as np
import pytest
import scipy.linalg
import torch

from mars_model.eval import metrics as M
from mars_model.spectral import SpectralFrontEnd, log_spectral_distance


def _gaussian(n: int, d: int = 16, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# -- inception score --------------------------------------------------------------------------
def test_inception_score_of_uniform_predictions_is_one():
    assert M.inception_score(np.full((200, 11), 1 / 11)) == pytest.approx(1.0, abs=1e-9)


def test_inception_score_of_one_confident_class_is_one():
    probs = np.zeros((100, 11))
    probs[:, 3] = 1.0
    assert M.inception_score(probs) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("classes", [2, 11, 128])
def test_inception_score_of_confident_diverse_predictions_is_the_class_count(classes):
    probs = np.eye(classes)[np.arange(10 * classes) % classes]
    assert M.inception_score(probs) == pytest.approx(classes, rel=1e-6)


def test_inception_score_grows_with_confidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 11))
    scores = []
    for sharpness in (0.1, 1.0, 10.0):
        p = np.exp(sharpness * logits)
        scores.append(M.inception_score(p / p.sum(axis=1, keepdims=True)))
    assert scores[0] < scores[1] < scores[2] <= 11


# -- KID --------------------------------------------------------------------------------------
def test_kid_of_identical_sets_is_about_zero_and_different_sets_larger():
    a = _gaussian(400)
    same = M.kernel_inception_distance(a, a)
    resampled = M.kernel_inception_distance(a, _gaussian(400, seed=1))
    shifted = M.kernel_inception_distance(a, _gaussian(400, shift=1.0, seed=1))
    # The unbiased estimate of a set against itself is -2 (mean k(x, x) - mean k(x, y)) / n:
    # slightly negative, and it shrinks as 1/n.
    assert -0.05 < same <= 0 and abs(resampled) < 0.02
    assert shifted > 5.0
    assert shifted > 100 * max(abs(same), abs(resampled))
    assert abs(M.kernel_inception_distance(_gaussian(1600), _gaussian(1600))) < 0.01


def test_kid_blockwise_sum_equals_the_dense_formula():
    a, b = _gaussian(300, 8), _gaussian(250, 8, shift=0.3, seed=2)
    n, m, d = len(a), len(b), a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kaa, kbb = k(a, a), k(b, b)
    dense = ((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
             - 2 * k(a, b).mean())  # fmt: skip
    assert M.kernel_inception_distance(a, b) == pytest.approx(dense, rel=1e-9)


def test_kid_rejects_mismatched_feature_widths():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        M.kernel_inception_distance(_gaussian(10, 4), _gaussian(10, 5))


# -- Fréchet ----------------------------------------------------------------------------------
def test_frechet_of_identical_sets_is_zero_and_matches_the_reference_formula():
    a, b = _gaussian(500, 8), _gaussian(400, 8, shift=0.5, seed=3) * 1.5
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b)
                 - 2 * np.trace(np.real(scipy.linalg.sqrtm(cov_a @ cov_b))))  # fmt: skip
    assert M.frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)
    assert M.frechet_distance(a, b) > 1.0


def test_frechet_survives_dead_features():
    a, b = _gaussian(200, 8), _gaussian(200, 8, seed=4)
    a[:, :3] = 0.0  # dead ReLU units: singular covariance
    b[:, :3] = 0.0
    value = M.frechet_distance(a, b)
    assert np.isfinite(value) and 0 <= value < 0.5


# -- NDB --------------------------------------------------------------------------------------
def test_ndb_is_zero_for_identical_sets_and_high_for_a_shifted_set():
    ref = _gaussian(1000, 8)
    assert M.ndb(ref, ref, k=20)["ndb"] == 0
    shifted = M.ndb(ref, _gaussian(1000, 8, shift=1.0, seed=5), k=20)
    assert shifted["ndb_over_k"] > 0.5


def test_ndb_is_low_for_a_fresh_sample_of_the_same_distribution():
    result = M.ndb(_gaussian(2000, 8), _gaussian(2000, 8, seed=6), k=20)
    assert result["ndb_over_k"] <= 0.15  # alpha = 0.05: about 1 bin in 20 by chance


def test_ndb_counts_a_missing_mode():
    rng = np.random.default_rng(7)
    centres = np.eye(4) * 10
    ref = centres[rng.integers(0, 4, 800)] + rng.normal(size=(800, 4))
    collapsed = centres[rng.integers(0, 3, 800)] + rng.normal(size=(800, 4))  # mode 3 never made
    result = M.ndb(ref, collapsed, k=4)
    assert result["ndb"] >= 1
    assert min(result["candidate_proportions"]) == 0.0


def test_kmeans_is_deterministic_and_finds_separated_clusters():
    rng = np.random.default_rng(8)
    labels_true = rng.integers(0, 3, 300)
    x = np.eye(3)[labels_true] * 20 + rng.normal(size=(300, 3))
    c1, l1 = M.kmeans(x, 3, seed=1)
    c2, l2 = M.kmeans(x, 3, seed=1)
    np.testing.assert_array_equal(l1, l2)
    # Each found cluster is exactly one true cluster.
    for j in range(3):
        assert len(set(labels_true[l1 == j])) == 1


# -- accuracy and paired errors ---------------------------------------------------------------
def test_accuracy_of_true_and_shuffled_labels():
    labels = np.arange(1000) % 10
    probs = np.eye(10)[labels]
    assert M.accuracy(probs, labels) == 1.0
    shuffled = np.random.default_rng(9).permutation(labels)
    assert M.accuracy(probs, shuffled) == pytest.approx(0.1, abs=0.04)


def test_paired_errors_of_identical_and_offset_spectrograms():
    rng = np.random.default_rng(10)
    ref = rng.uniform(-0.5, 0.8, size=(5, 64, 32))
    same = M.paired_spectrogram_errors(ref, ref.copy())
    assert same == {"mse": 0.0, "mae": 0.0, "lsd_db": 0.0}
    off = M.paired_spectrogram_errors(ref, ref + 0.1)
    assert off["mse"] == pytest.approx(0.01) and off["mae"] == pytest.approx(0.1)
    assert off["lsd_db"] == pytest.approx(5.0)  # 0.1 on the normalised scale = 5 dB everywhere


def test_paired_lsd_matches_the_front_end_on_magnitudes():
    rng = np.random.default_rng(11)
    ref = rng.uniform(-1, 1, size=(3, 64, 16)).astype(np.float32)
    cand = np.clip(ref + rng.normal(scale=0.2, size=ref.shape), -1, 1).astype(np.float32)
    mags = [SpectralFrontEnd.log_to_magnitude(torch.from_numpy(x)) for x in (ref, cand)]
    expected = log_spectral_distance(*mags, floor_db=-80.0).mean().item()
    assert M.paired_spectrogram_errors(ref, cand)["lsd_db"] == pytest.approx(expected, rel=1e-4)


def test_paired_errors_refuse_different_shapes():
    with pytest.raises(ValueError, match="shape"):
        M.paired_spectrogram_errors(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))
