"""Fréchet distance between two feature sets (FID on Inception pool3, CLIP-FID on CLIP embeddings).

    mu_k = row mean of F_k, Sigma_k = cov(F_k, ddof=1)
    FD = |mu_A - mu_B|^2 + tr Sigma_A + tr Sigma_B - 2 tr sqrt(Sigma_A Sigma_B)

Routes to tr sqrt(Sigma_A Sigma_B) (docs/metrics.md, section 1):
- `"eig"` (default): sum of the real parts of the complex square roots of eigvals(Sigma_A @ Sigma_B),
  torch-fidelity >= 0.4 (`torch_fidelity/metric_fid.py`), no regulariser;
- `"sqrtm"`: real part of the trace of scipy.linalg.sqrtm(Sigma_A @ Sigma_B), clean-fid / pytorch-fid,
  retrying with 1e-6 I added to both covariances when the result is not finite.
- `"gram"`: from the data, without any D x D matrix: with centred, scaled rows X_k = (F_k - mu_k) / sqrt(N_k - 1),
  Sigma_k = X_k^T X_k, and the nonzero eigenvalues of Sigma_A Sigma_B are the squared singular values of
  X_A X_B^T (N_A x N_B), so tr sqrt(Sigma_A Sigma_B) is the nuclear norm of X_A X_B^T. Exact, symmetric
  (no complex round-off), and O(N_A N_B D): far cheaper than a D x D eigendecomposition when N < D.
- `"auto"` (default of `frechet_distance`): `"gram"` when both sets have fewer rows than D, else `"eig"`.
- `"clean-fid"`: clean-fid 0.1.35's `fid.frechet_distance` arithmetic operation for operation, called as the
  paper's `evaluation/metrics.py` calls `compute_fid(real_folder, generated_folder)`: means in the features'
  own dtype (float32 from an extractor), covariances by `np.cov`, `scipy.linalg.sqrtm(Sigma_real Sigma_gen)`
  with the same 1e-6 I retry and imaginary-part check. On the same float32 features it gives clean-fid's
  number bit for bit (tested); the other routes agree with it to ~1e-7 relative.
All routes agree to ~1e-8 relative in float64 (tests check this). Everything is computed in float64 on CPU; the result is never
clamped (±1e-10 for identical sets is round-off).
"""

from __future__ import annotations

import numpy as np

from lapgen.errors import LapgenError

METHODS = ("auto", "eig", "sqrtm", "gram", "clean-fid")


def _as_features(feats: np.ndarray, what: str, dtype: type | None = np.float64) -> np.ndarray:
    arr = np.asarray(feats, dtype=dtype)
    if arr.ndim != 2:
        raise LapgenError(f"{what} must be an N x D feature array, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise LapgenError(f"{what} has {arr.shape[0]} rows; a covariance needs at least 2 images")
    if not np.isfinite(arr).all():
        raise LapgenError(f"{what} contains NaN or infinite features", hint="check the extractor weights")
    return arr


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu (D,), Sigma (D, D)) of an N x D feature array, float64, covariance with ddof = 1."""
    arr = _as_features(feats, "features")
    return arr.mean(axis=0), np.cov(arr, rowvar=False)


def _trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray, method: str) -> float:
    if method in ("eig", "auto"):
        eigenvalues = np.linalg.eigvals(sigma_a.dot(sigma_b)).astype(np.complex128)
        return float(np.sum(np.sqrt(eigenvalues).real))
    if method in ("sqrtm", "clean-fid"):
        from scipy import linalg

        covmean = linalg.sqrtm(sigma_a.dot(sigma_b))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma_a.shape[0]) * 1e-6
            covmean = linalg.sqrtm((sigma_a + offset).dot(sigma_b + offset))
        return float(np.trace(np.real(covmean)))
    raise LapgenError(f"unknown Fréchet distance method {method!r}", hint=f"use one of {', '.join(METHODS)}")


def frechet_distance_from_stats(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray, *, method: str = "eig"
) -> float:
    """Fréchet distance between two Gaussians given as (mean (D,), covariance (D, D))."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise LapgenError(f"feature dimensions differ: {mu_a.shape[-1]} vs {mu_b.shape[-1]}",
                          hint="compare features from the same extractor")
    diff = mu_a - mu_b
    tr_covmean = _trace_sqrt_product(sigma_a, sigma_b, method)
    return float(diff.dot(diff) + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_covmean)


def resolve_method(method: str, n_a: int, n_b: int, dim: int) -> str:
    """The concrete route `"auto"` stands for at these sizes."""
    if method not in METHODS:
        raise LapgenError(f"unknown Fréchet distance method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if method == "auto":
        return "gram" if max(n_a, n_b) < dim else "eig"
    return method


def frechet_distance_cleanfid(feats_gen: np.ndarray, feats_real: np.ndarray) -> float:
    """clean-fid 0.1.35's FID arithmetic on generated and real features, in the paper's argument order.

    clean-fid's `compute_fid(fdir1, fdir2)` evaluates `frechet_distance(mu1, sigma1, mu2, sigma2)` with set 1
    the first folder; the paper passed the real folder first. The means stay in the features' dtype (float32
    for extractor output, as clean-fid's `np.mean`), so this equals clean-fid bit for bit only on the same
    float32 features; float64 input is computed in float64.
    """
    from scipy import linalg

    f2 = _as_features(feats_gen, "features A", dtype=None)  # checked, in their own dtype
    f1 = _as_features(feats_real, "features B", dtype=None)
    if f1.shape[1] != f2.shape[1]:
        raise LapgenError(f"feature dimensions differ: {f2.shape[1]} vs {f1.shape[1]}",
                          hint="compare features from the same extractor")
    mu1, sigma1 = np.mean(f1, axis=0), np.cov(f1, rowvar=False)
    mu2, sigma2 = np.mean(f2, axis=0), np.cov(f2, rowvar=False)
    diff = mu1 - mu2
    import warnings

    with warnings.catch_warnings():  # scipy warns about the singular products of N < D sets; clean-fid too
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * 1e-6
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise LapgenError(f"FID: sqrt(Sigma_real Sigma_gen) has an imaginary part of "
                              f"{np.max(np.abs(covmean.imag)):.3g} (clean-fid raises here too)",
                              hint="use more images (N > feature dimension) or --fid-method eig")
        covmean = covmean.real
    tr_covmean = np.trace(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, *, method: str = "auto") -> float:
    """Fréchet distance between feature sets A (N_A x D) and B (N_B x D), float64.

    `method="eig"` is torch-fidelity's route, `"sqrtm"` clean-fid's square root in float64, `"gram"` the data
    route, `"clean-fid"` clean-fid's arithmetic exactly with A = generated, B = real (see the module
    docstring); `"auto"` picks `"gram"` when both N < D, else `"eig"`.
    """
    if method == "clean-fid":
        return frechet_distance_cleanfid(feats_a, feats_b)
    a = _as_features(feats_a, "features A")
    b = _as_features(feats_b, "features B")
    if a.shape[1] != b.shape[1]:
        raise LapgenError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}",
                          hint="compare features from the same extractor")
    method = resolve_method(method, len(a), len(b), a.shape[1])
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    if method == "gram":
        xa = (a - mu_a) / np.sqrt(len(a) - 1)  # (N_A, D), Sigma_A = xa^T xa
        xb = (b - mu_b) / np.sqrt(len(b) - 1)
        tr_covmean = float(np.linalg.svd(xa @ xb.T, compute_uv=False).sum())  # nuclear norm
        diff = mu_a - mu_b
        return float(diff.dot(diff) + np.sum(xa * xa) + np.sum(xb * xb) - 2.0 * tr_covmean)
    return frechet_distance_from_stats(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False),
                                       method=method)
