"""The pure metric functions against independent computations on the same inputs."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import linalg
from sklearn.metrics import f1_score

from lapgen.errors import LapgenError
from lapgen.metrics import cmmd, cmmd_unbiased, frechet_distance, kid, mask_f1
from lapgen.metrics.confidence import bootstrap_f1, disjoint_splits, split_values, summarize
from lapgen.metrics.masks import mask_counts


def _gauss(n, d, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + shift


def _fid_scipy(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_fid_matches_scipy_sqrtm_formula():
    a, b = _gauss(300, 16, seed=1), _gauss(250, 16, shift=0.4, seed=2)
    ref = _fid_scipy(a, b)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(ref, rel=1e-10)


def test_fid_routes_and_symmetric_cross_check_agree():
    a, b = _gauss(200, 12, seed=3), _gauss(200, 12, shift=0.2, seed=4)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s1).real
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
    ref = float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)
    assert frechet_distance(a, b, method="eig") == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, b, method="eig") == pytest.approx(frechet_distance(a, b, method="sqrtm"), rel=1e-6)


def test_fid_gram_route_for_fewer_rows_than_dimensions():
    from lapgen.metrics.fid import resolve_method

    a, b = _gauss(40, 64, seed=30), _gauss(50, 64, shift=0.2, seed=31)  # rank-deficient covariances
    assert resolve_method("auto", 40, 50, 64) == "gram" and resolve_method("auto", 80, 50, 64) == "eig"
    ref = _fid_scipy(a, b)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, b, method="gram") == pytest.approx(frechet_distance(a, b, method="eig"), rel=1e-6)


def test_fid_equals_torch_fidelity_and_clean_fid_statistics_functions():
    from cleanfid.fid import frechet_distance as cf_fd
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    a, b = _gauss(120, 10, seed=5), _gauss(90, 10, shift=0.3, seed=6)
    st1 = fid_features_to_statistics(torch.from_numpy(a))
    st2 = fid_features_to_statistics(torch.from_numpy(b))
    tf = fid_statistics_to_metric(st1, st2, verbose=False)["frechet_inception_distance"]
    assert frechet_distance(a, b, method="eig") == tf  # same float64 route, bit for bit
    assert frechet_distance(a, b, method="gram") == pytest.approx(tf, rel=1e-8)
    cf = cf_fd(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(cf, rel=1e-10)


def test_fid_invariants_zero_and_growing():
    a = _gauss(200, 8, seed=7)
    assert abs(frechet_distance(a, a)) < 1e-8
    values = [frechet_distance(a, _gauss(200, 8, shift=s, seed=8)) for s in (0.0, 0.5, 1.0)]
    assert values[0] < values[1] < values[2]


def test_fid_errors():
    with pytest.raises(LapgenError, match="dimensions differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(LapgenError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def _kid_direct(a, b, subsets, m, seed):
    """Unbiased MMD^2 with explicit double sums over the same draws as torch-fidelity."""
    rng = np.random.RandomState(seed)
    d = a.shape[1]
    k = lambda x, y: (float(np.dot(x, y)) / d + 1.0) ** 3
    vals = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
        syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
        vals.append((sxx + syy) / (m * (m - 1)) - 2 * sxy / m**2)
    return float(np.mean(vals)), float(np.std(vals))


def test_kid_matches_direct_unbiased_mmd():
    a, b = _gauss(40, 6, seed=9), _gauss(35, 6, shift=0.5, seed=10)
    ref_mean, ref_std = _kid_direct(a, b, 5, 12, 3)
    for method in ("subset", "precomputed"):
        mean, std = kid(a, b, subsets=5, subset_size=12, seed=3, method=method)
        assert mean == pytest.approx(ref_mean, rel=1e-10)
        assert std == pytest.approx(ref_std, rel=1e-8)


def test_kid_equals_torch_fidelity_bit_for_bit():
    from torch_fidelity.metric_kid import kid_features_to_metric

    a, b = _gauss(60, 8, seed=11), _gauss(50, 8, shift=0.2, seed=12)
    for dtype in (np.float64, np.float32):
        tf = kid_features_to_metric(torch.from_numpy(a.astype(dtype)), torch.from_numpy(b.astype(dtype)),
                                    kid_subsets=7, kid_subset_size=20, rng_seed=2020, verbose=False,
                                    kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                    kid_kernel_poly_coef0=1)
        mine = kid(a.astype(dtype), b.astype(dtype), subsets=7, subset_size=20, seed=2020, dtype=dtype,
                   method="subset")
        assert mine == (tf["kernel_inception_distance_mean"], tf["kernel_inception_distance_std"])
        fast = kid(a.astype(dtype), b.astype(dtype), subsets=7, subset_size=20, seed=2020, dtype=dtype)
        assert fast == pytest.approx(mine, rel=1e-12 if dtype == np.float64 else 1e-5)


def test_kid_invariants_and_errors():
    a = _gauss(80, 6, seed=13)
    near = kid(a, _gauss(80, 6, seed=14), subsets=10, subset_size=40)[0]
    far = kid(a, _gauss(80, 6, shift=1.0, seed=14), subsets=10, subset_size=40)[0]
    assert far > near and far > 0
    with pytest.raises(LapgenError, match="subset size 100"):
        kid(a, a, subset_size=100)


def _cmmd_direct(x, y, sigma=10.0):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    k = lambda u, v: math.exp(-float(((u - v) ** 2).sum()) / (2 * sigma**2))
    kxx = np.mean([k(u, v) for u in x for v in x])
    kyy = np.mean([k(u, v) for u in y for v in y])
    kxy = np.mean([k(u, v) for u in x for v in y])
    return 1000 * (kxx + kyy - 2 * kxy)


def test_cmmd_matches_direct_formula():
    x, y = _gauss(30, 8, seed=15), _gauss(25, 8, shift=0.5, seed=16)
    assert cmmd(x, y) == pytest.approx(_cmmd_direct(x, y), rel=1e-9)


def test_cmmd_zero_for_same_set_and_bias_gap():
    x, y = _gauss(30, 8, seed=17), _gauss(40, 8, shift=0.3, seed=18)
    assert cmmd(x, x) == 0.0
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    k = lambda u: np.exp(-((u[:, None] - u[None]) ** 2).sum(-1) / 200.0)
    kxx, kyy = k(xn), k(yn)
    off = lambda m: (m.sum() - np.trace(m)) / (len(m) * (len(m) - 1))
    gap = 1000 * ((1 - off(kxx)) / len(x) + (1 - off(kyy)) / len(y))
    assert cmmd(x, y) - cmmd_unbiased(x, y) == pytest.approx(gap, rel=1e-6)
    assert cmmd(x, y * 3.0) == pytest.approx(cmmd(x, y), rel=1e-12)  # L2-normalised


def _cmmd_dense(x, y, sigma=10.0):
    """The whole-matrix form (three N x N kernels at once), as the reference code computes it."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    sq = lambda a, b: (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    k = lambda a, b: np.exp(-sq(a, b) / (2 * sigma**2))
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return 1000 * (kxx.mean() + kyy.mean() - 2 * kxy.mean()), kxx, kyy, kxy


@pytest.mark.parametrize("tile", [1, 7, 64, 100_000])
def test_cmmd_tiles_equal_the_dense_kernels(tile):
    """Tiled sums (ragged last tiles, m != n) equal the three dense kernels to 1e-9 relative; so does the
    unbiased variant, whose diagonal comes from the tiles that hold it."""
    x, y = _gauss(230, 48, seed=21), _gauss(170, 48, shift=0.2, seed=22)
    dense, kxx, kyy, kxy = _cmmd_dense(x, y)
    assert cmmd(x, y, tile=tile) == pytest.approx(dense, rel=1e-9)
    off = lambda m: (m.sum() - np.trace(m)) / (len(m) * (len(m) - 1))
    unbiased = 1000 * (off(kxx) + off(kyy) - 2 * kxy.mean())
    assert cmmd_unbiased(x, y, tile=tile) == pytest.approx(unbiased, rel=1e-9)
    assert cmmd(x, x, tile=tile) == 0.0


def test_cmmd_grows_with_shift():
    x = _gauss(50, 8, seed=19)
    vals = [cmmd(x, _gauss(50, 8, shift=s, seed=20)) for s in (0.0, 0.5, 2.0)]
    assert 0 < vals[0] < vals[1] < vals[2]


def _random_masks(k, seed=0, p=0.3, size=(16, 16)):
    rng = np.random.default_rng(seed)
    return [rng.random(size) < p for _ in range(k)]


def test_mask_f1_matches_sklearn():
    pred, target = _random_masks(6, seed=1), _random_masks(6, seed=2)
    res = mask_f1(pred, target)
    micro = f1_score(np.concatenate([t.ravel() for t in target]), np.concatenate([p.ravel() for p in pred]))
    macro = np.mean([f1_score(t.ravel(), p.ravel()) for p, t in zip(pred, target)])
    assert res["micro"] == pytest.approx(micro, rel=1e-12)
    assert res["macro"] == pytest.approx(macro, rel=1e-12)
    assert res["n_images"] == 6 and res["n_both_empty"] == 0


def test_mask_f1_empty_rules():
    empty = np.zeros((8, 8), bool)
    full = np.ones((8, 8), bool)
    res = mask_f1([empty, empty, full], [empty, full, full])
    assert res["n_both_empty"] == 1 and res["n_scored"] == 2
    assert res["macro"] == pytest.approx(0.5)  # (0 + 1) / 2, the both-empty image excluded
    assert res["micro"] == pytest.approx(f1_score(np.r_[empty.ravel(), full.ravel(), full.ravel()],
                                                  np.r_[empty.ravel(), empty.ravel(), full.ravel()]))
    res1 = mask_f1([empty, empty, full], [empty, full, full], empty_as_one=True)
    assert res1["macro"] == pytest.approx(2 / 3) and res1["n_scored"] == 3
    assert math.isnan(mask_f1([empty], [empty])["micro"])
    with pytest.raises(LapgenError, match="differs from target shape"):
        mask_f1([empty], [np.zeros((4, 4), bool)])


def test_bootstrap_f1_matches_direct_resampling():
    pred, target = _random_masks(12, seed=3), _random_masks(12, seed=4)
    tp, fp, fn = mask_counts(pred, target)
    res = bootstrap_f1(tp, fp, fn, n_boot=200, seed=5)
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 12, size=(200, 12))
    micro = [mask_f1([pred[i] for i in row], [target[i] for i in row])["micro"] for row in idx]
    assert res["micro_ci"] == pytest.approx([np.quantile(micro, 0.025), np.quantile(micro, 0.975)], rel=1e-12)
    point = mask_f1(pred, target)["micro"]
    assert res["micro_ci"][0] <= point <= res["micro_ci"][1]
    assert bootstrap_f1(tp, fp, fn, n_boot=200, seed=5) == res


def test_disjoint_splits_and_summary():
    splits = disjoint_splits(23, 3, seed=1)
    assert [len(s) for s in splits] == [7, 7, 7]
    assert len(set(np.concatenate(splits))) == 21
    a, b = _gauss(60, 4, seed=21), _gauss(60, 4, shift=0.5, seed=22)
    out = split_values(a, b, frechet_distance, 3, seed=0)
    assert out["n"] == 3 and out["n_gen_per_split"] == 20 and out["method"] == "disjoint-splits"
    assert out["mean"] == pytest.approx(np.mean(out["values"]))
    assert summarize([1.0, 3.0])["sd"] == pytest.approx(math.sqrt(2))
    with pytest.raises(LapgenError, match="disjoint splits"):
        disjoint_splits(5, 3)


def test_import_lapgen_metrics_is_light():
    code = ("import sys, lapgen.metrics; print('torch' in sys.modules, 'scipy.linalg' in sys.modules); "
            "f = lapgen.metrics.triplet_map; print(callable(f), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True", "False"]  # triplet_map loads lazily, torch-free
