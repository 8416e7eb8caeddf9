"""Kernel Inception Distance with torch-fidelity 0.4.0's definition (docs/metrics.md, section 1).

    k(x, y) = (x.y / d + 1)^3                                   (polynomial, degree 3, gamma 1/d, coef0 1)
    MMD2_u  = [sum_{i!=j} k(x_i,x_j) + sum_{i!=j} k(y_i,y_j)] / (m(m-1)) - 2 sum_{i,j} k(x_i,y_j) / m^2

over `subsets` random subsets of size m drawn without replacement (subsets overlap). The random draws follow
torch-fidelity exactly: `np.random.RandomState(seed)`, and per subset first the A indices then the B indices
with `choice(n, m, replace=False)`, so the same features and seed give torch-fidelity's numbers
(`torch_fidelity/metric_kid.py`, after Binkowski et al.'s MMD-GAN code). Output: mean and population std
(ddof 0) over subsets; the std is subset spread, not a confidence interval. Values are not clamped: slightly
negative KID is valid.

`estimator="clean-fid"` is clean-fid 0.1.35's `kernel_distance` instead, the KID the paper reported: the
same kernel and unbiased estimator, but the kernels in the features' own dtype (float32 from an extractor),
its own summation order, and its draw order for `compute_kid(real_folder, generated_folder)` as the paper
called it (per subset the generated indices, then the real ones). clean-fid draws from NumPy's global RNG
unseeded; lapgen draws from `RandomState(seed)`, the generator `np.random.seed(seed)` sets, so after
`np.random.seed(seed)` clean-fid returns lapgen's number bit for bit (tested).
"""

from __future__ import annotations

import numpy as np

from lapgen.errors import LapgenError

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000
DEFAULT_SEED = 2020  # torch-fidelity's default rng_seed


def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """(x y^T * gamma + coef0)^degree, gamma defaulting to 1/d; (N_x, N_y)."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (np.matmul(x, y.T) * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD^2 from m x m kernel matrices (diagonals of K_xx, K_yy dropped, K_xy kept whole)."""
    m = k_xx.shape[0]
    kt_xx_sum = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()
    kt_yy_sum = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
    k_xy_sum = k_xy.sum(axis=0).sum()
    return float((kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy_sum / (m * m))


PRECOMPUTE_MAX_N = 3000  # full kernel matrices up to 3000 x 3000 (3 x 72 MB float64)


def kid_subset_values(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    *,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = DEFAULT_SEED,
    method: str = "auto",
) -> np.ndarray:
    """The per-subset unbiased MMD^2 values, shape (subsets,).

    `method="subset"` computes the three m x m kernels per subset, as torch-fidelity does;
    `"precomputed"` computes the full kernel matrices once and slices each subset out of them (the kernel
    is elementwise in the dot products, so the values are the same up to summation order, ~1e-15
    relative); `"auto"` precomputes when both sets have at most PRECOMPUTE_MAX_N rows.
    """
    a = np.asarray(feats_a)
    b = np.asarray(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise LapgenError(f"KID needs two N x D feature arrays of equal D, got {a.shape} and {b.shape}")
    if subset_size < 2:
        raise LapgenError(f"KID subset size must be at least 2, got {subset_size}")
    if subsets < 1:
        raise LapgenError(f"KID needs at least 1 subset, got {subsets}")
    if method not in ("auto", "subset", "precomputed"):
        raise LapgenError(f"unknown KID method {method!r}", hint="use auto, subset or precomputed")
    n_a, n_b = len(a), len(b)
    if n_a < subset_size or n_b < subset_size:
        raise LapgenError(
            f"KID subset size {subset_size} is larger than a set (N_gen={n_a}, N_real={n_b})",
            hint=f"pass --kid-subset-size {min(n_a, n_b)} or less, or use more images")
    if method == "auto":
        method = "precomputed" if max(n_a, n_b) <= PRECOMPUTE_MAX_N else "subset"
    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    if method == "precomputed":
        k_aa, k_bb, k_ab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    for i in range(subsets):
        ia = rng.choice(n_a, subset_size, replace=False)  # draw order as torch-fidelity: A, then B
        ib = rng.choice(n_b, subset_size, replace=False)
        if method == "precomputed":
            values[i] = mmd2_unbiased(k_aa[np.ix_(ia, ia)], k_ab[np.ix_(ia, ib)], k_bb[np.ix_(ib, ib)])
        else:
            xa, xb = a[ia], b[ib]
            values[i] = mmd2_unbiased(polynomial_kernel(xa, xa), polynomial_kernel(xa, xb),
                                      polynomial_kernel(xb, xb))
    return values


ESTIMATORS = ("torch-fidelity", "clean-fid")


def kid_cleanfid(feats_gen: np.ndarray, feats_real: np.ndarray, *, subsets: int = DEFAULT_SUBSETS,
                 subset_size: int = DEFAULT_SUBSET_SIZE, seed: int = DEFAULT_SEED) -> tuple[float, float]:
    """clean-fid 0.1.35's `kernel_distance(feats_real, feats_gen)` with a seeded draw: (mean, subset std).

    The mean is clean-fid's number, computed with its operations in its order (float32 features stay
    float32); the std (population, over the per-subset values) is lapgen's addition, not part of clean-fid.
    """
    feats1, feats2 = np.asarray(feats_real), np.asarray(feats_gen)
    if feats1.ndim != 2 or feats2.ndim != 2 or feats1.shape[1] != feats2.shape[1]:
        raise LapgenError(f"KID needs two N x D feature arrays of equal D, got {feats2.shape} and {feats1.shape}")
    if subsets < 1:
        raise LapgenError(f"KID needs at least 1 subset, got {subsets}")
    n = feats1.shape[1]
    m = min(min(feats1.shape[0], feats2.shape[0]), subset_size)
    if m < 2:
        raise LapgenError(f"KID subset size must be at least 2, got {m}")
    rng = np.random.RandomState(seed)
    t = 0
    per_subset = []
    for _ in range(subsets):
        x = feats2[rng.choice(feats2.shape[0], m, replace=False)]  # generated first, as clean-fid draws them
        y = feats1[rng.choice(feats1.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        term = (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
        t += term
        per_subset.append(float(term) / m)
    value = t / subsets / m
    return float(value), float(np.std(per_subset))


def kid(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    *,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = DEFAULT_SEED,
    dtype: type = np.float64,
    method: str = "auto",
    estimator: str = "torch-fidelity",
) -> tuple[float, float]:
    """KID (mean, std over subsets) between A (N_A x D, generated) and B (N_B x D, real).

    The kernels run in `dtype` (float64 by default, as lapgen's protocol asks). torch-fidelity computes them in
    the features' own dtype (float32 from its extractors); `dtype=np.float32, method="subset"` reproduces its
    `calculate_metrics` output bit for bit from the same float32 features. `estimator="clean-fid"` is
    `kid_cleanfid` (`dtype` and `method` do not apply: it keeps the features' dtype, as clean-fid does).
    """
    if estimator not in ESTIMATORS:
        raise LapgenError(f"unknown KID estimator {estimator!r}", hint=f"use one of {', '.join(ESTIMATORS)}")
    if estimator == "clean-fid":
        if len(feats_a) < subset_size or len(feats_b) < subset_size:
            raise LapgenError(
                f"KID subset size {subset_size} is larger than a set (N_gen={len(feats_a)}, N_real={len(feats_b)})",
                hint=f"pass --kid-subset-size {min(len(feats_a), len(feats_b))} or less, or use more images")
        return kid_cleanfid(feats_a, feats_b, subsets=subsets, subset_size=subset_size, seed=seed)
    values = kid_subset_values(np.asarray(feats_a, dtype=dtype), np.asarray(feats_b, dtype=dtype),
                               subsets=subsets, subset_size=subset_size, seed=seed, method=method)
    return float(np.mean(values)), float(np.std(values))
