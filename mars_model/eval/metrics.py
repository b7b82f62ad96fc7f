"""Set-level and paired metrics for generated or reconstructed notes (pure numpy/scipy).

Distribution metrics compare a candidate set with a reference set of real notes:

* :func:`inception_score` — ``exp(E_x KL(p(y|x) || p(y)))`` (Salimans et al. 2016); 1 for
  uniform or constant predictions, the number of classes for confident, evenly spread ones.
* :func:`kernel_inception_distance` — unbiased MMD² with the cubic polynomial kernel
  ``k(x, y) = (x·y / d + 1)³`` (Bińkowski et al. 2018); about 0 for sets from one
  distribution (it can be slightly negative).
* :func:`frechet_distance` — ``|mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^½)`` on our
  classifier's embeddings (the FID formula; not VGGish FAD).
* :func:`ndb` — number of statistically different bins (Richardson & Weiss 2018): k-means
  on the reference, a two-proportion z-test per bin, reported as NDB/k.

Paired metrics (:func:`paired_spectrogram_errors`) compare note ``i`` of one set with note
``i`` of the other (reconstructions).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from mars_model.spectral import DB_SCALE


def _check_features(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"{name}: features must be [N, D] and [M, D], got {a.shape} and {b.shape}")
    return a, b


def inception_score(probs: np.ndarray, eps: float = 1e-12) -> float:
    """Inception score of class predictions.

    Args:
        probs: ``[N, C]`` rows of class probabilities (each sums to 1).
    Returns:
        ``exp(mean_i KL(probs_i || mean_j probs_j))``, in ``[1, C]``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"inception_score: probs must be a non-empty [N, C] array, got {p.shape}")
    marginal = p.mean(axis=0, keepdims=True)
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(axis=1)
    return float(np.exp(kl.mean()))


def _kernel_sum(x: np.ndarray, y: np.ndarray, degree: int, coef: float, block: int = 2048):
    """Sum of ``(x·y / D + coef) ** degree`` over all pairs, and over the diagonal if square.

    Blockwise, so 20 000 notes need a few MB instead of a 3 GB kernel matrix.
    """
    d = x.shape[1]
    total = 0.0
    for i in range(0, len(x), block):
        for j in range(0, len(y), block):
            total += ((x[i : i + block] @ y[j : j + block].T / d + coef) ** degree).sum()
    return total


def kernel_inception_distance(
    features_a: np.ndarray, features_b: np.ndarray, degree: int = 3, coef: float = 1.0
) -> float:
    """Unbiased squared MMD with a polynomial kernel (KID), over all pairs (no subsets).

    Args:
        features_a: ``[N, D]`` features of one set (N >= 2).
        features_b: ``[M, D]`` features of the other (M >= 2).
        degree, coef: kernel ``(x·y / D + coef) ** degree``.
    Returns:
        the unbiased MMD² estimate (about 0 for equal distributions; may be slightly < 0).
    """
    a, b = _check_features(features_a, features_b, "kernel_inception_distance")
    n, m, d = len(a), len(b), a.shape[1]
    if n < 2 or m < 2:
        raise ValueError("kernel_inception_distance needs at least 2 notes per set")
    diag_a = ((np.einsum("ij,ij->i", a, a) / d + coef) ** degree).sum()
    diag_b = ((np.einsum("ij,ij->i", b, b) / d + coef) ** degree).sum()
    mean_aa = (_kernel_sum(a, a, degree, coef) - diag_a) / (n * (n - 1))
    mean_bb = (_kernel_sum(b, b, degree, coef) - diag_b) / (m * (m - 1))
    mean_ab = _kernel_sum(a, b, degree, coef) / (n * m)
    return float(mean_aa + mean_bb - 2.0 * mean_ab)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    Args:
        features_a: ``[N, D]``; features_b: ``[M, D]`` (N, M >= 2).
    Returns:
        ``|mu_a - mu_b|² + tr(S_a + S_b - 2 sqrtm(S_a S_b))`` (>= 0 up to rounding).
    """
    a, b = _check_features(features_a, features_b, "frechet_distance")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance needs at least 2 notes per set")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr(sqrtm(S_a S_b)) = tr(sqrtm(R S_b R)) with R = sqrtm(S_a): a symmetric PSD problem,
    # stable even when dead ReLU units make the covariances singular.
    root_a = _psd_sqrt(cov_a)
    eig = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_covmean
    return float(max(value, 0.0))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def kmeans(
    features: np.ndarray, k: int, seed: int = 0, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding (deterministic for a seed).

    Args:
        features: ``[N, D]`` (N >= k).
    Returns:
        centres ``[k, D]`` and the label of every row ``[N]``.
    """
    x = np.asarray(features, dtype=np.float64)
    if len(x) < k:
        raise ValueError(f"k-means with k={k} needs at least {k} points, got {len(x)}")
    rng = np.random.default_rng(seed)
    sq = (x**2).sum(axis=1)
    centres = [x[rng.integers(len(x))]]
    nearest = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        pick = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
        nearest = np.minimum(nearest, ((x - x[pick]) ** 2).sum(axis=1))
    c = np.stack(centres)
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        dist = sq[:, None] - 2 * x @ c.T + (c**2).sum(axis=1)[None]
        new = dist.argmin(axis=1)
        if (new == labels).all():
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(axis=0)
    return c, labels


def assign_bins(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest centre of every row: ``[N, D]``, ``[k, D]`` -> ``[N]`` ints."""
    x = np.asarray(features, dtype=np.float64)
    dist = (x**2).sum(axis=1)[:, None] - 2 * x @ centres.T + (centres**2).sum(axis=1)[None]
    return dist.argmin(axis=1)


def ndb(
    reference: np.ndarray,
    candidate: np.ndarray,
    k: int = 50,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Number of statistically different bins (Richardson & Weiss 2018).

    The reference features are clustered into ``k`` bins; both sets are assigned to the
    nearest centre; each bin's two occupancy proportions are compared with a two-sided
    two-proportion z-test (pooled variance) at level ``alpha``.

    Args:
        reference: ``[N, D]`` features of real notes (N >= k).
        candidate: ``[M, D]`` features of the notes under test.
    Returns:
        ``{"ndb": int, "ndb_over_k": float, "k": k, "reference_proportions": [k],
        "candidate_proportions": [k]}``.
    """
    ref, cand = _check_features(reference, candidate, "ndb")
    if len(cand) == 0:
        raise ValueError("ndb: the candidate set is empty")
    centres, ref_labels = kmeans(ref, k, seed=seed)
    cand_labels = assign_bins(cand, centres)
    n, m = len(ref), len(cand)
    p_ref = np.bincount(ref_labels, minlength=k) / n
    p_cand = np.bincount(cand_labels, minlength=k) / m
    pooled = (p_ref * n + p_cand * m) / (n + m)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
    z = np.divide(p_ref - p_cand, se, out=np.zeros(k), where=se > 0)
    different = int((np.abs(z) > NormalDist().inv_cdf(1 - alpha / 2)).sum())
    return {
        "ndb": different,
        "ndb_over_k": different / k,
        "k": k,
        "reference_proportions": p_ref.tolist(),
        "candidate_proportions": p_cand.tolist(),
    }


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``[N, C]`` predictions against ``[N]`` integer labels."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    if len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(f"accuracy: {len(probs)} predictions for {len(labels)} labels")
    return float((probs.argmax(axis=1) == labels).mean())


def paired_spectrogram_errors(
    reference: np.ndarray,
    candidate: np.ndarray,
    floor_db: float = -80.0,
    batch_size: int = 64,
    progress=None,
) -> dict:
    """Note-for-note errors between two sets of normalised log spectrograms.

    Args:
        reference: ``[N, F, T]`` log spectrograms of the real notes (values in [-1, 1]).
        candidate: ``[N, F, T]`` the reconstructions, in the same order.
        floor_db: dB floor for the log-spectral distance (quiet bins do not dominate).
    Returns:
        ``{"mse": ..., "mae": ...}`` on the normalised log spectrogram (mean over all
        values and notes) and ``"lsd_db"``: the log-spectral distance in dB (per frame the
        RMS over bins of the dB difference, averaged over frames, then notes).
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"paired sets differ in shape: {reference.shape} vs {candidate.shape}")
    floor = floor_db / DB_SCALE + 1.0  # the dB floor on the normalised scale
    sq = ab = lsd = 0.0
    for start in range(0, len(reference), batch_size):
        r = np.asarray(reference[start : start + batch_size], dtype=np.float64)
        c = np.asarray(candidate[start : start + batch_size], dtype=np.float64)
        diff = r - c
        sq += (diff**2).mean(axis=(1, 2)).sum()
        ab += np.abs(diff).mean(axis=(1, 2)).sum()
        db = (np.maximum(r, floor) - np.maximum(c, floor)) * DB_SCALE
        lsd += np.sqrt((db**2).mean(axis=1)).mean(axis=1).sum()
        if progress:
            progress(len(r))
    n = len(reference)
    return {"mse": sq / n, "mae": ab / n, "lsd_db": lsd / n}
