"""Spread and confidence for lapgen's metrics (docs/metrics.md, "Confidence").

Naive bootstrap is wrong for FID, KID and CMMD: resampling with replacement duplicates images, lowers the
effective N and shifts the (N-biased) value upward. lapgen therefore offers:
- `summarize(values)`: mean and sample sd over R independent generation seeds at full N (`--seeds`);
- `disjoint_splits(n, k, seed)`: k disjoint index splits without replacement, the metric on each split
  pair, spread labelled at size N/k (`--splits`);
- `bootstrap_f1(tp, fp, fn)`: image-level bootstrap of mask F1 (micro from resampled TP/FP/FN sums, macro
  from resampled per-image scores), percentile interval, B >= 1000, fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.metrics.masks import per_image_f1


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample sd (ddof 1; 0 for one value), min, max and the values themselves."""
    arr = np.asarray(list(values), np.float64)
    if arr.size == 0:
        raise LapgenError("no values to summarize")
    return {
        "values": [float(v) for v in arr],
        "mean": float(arr.mean()),
        "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


def disjoint_splits(n: int, k: int, *, seed: int = 0) -> list[np.ndarray]:
    """k disjoint, equally sized index arrays drawn without replacement from range(n) (remainder dropped)."""
    if k < 2:
        raise LapgenError(f"--splits must be at least 2, got {k}")
    size = n // k
    if size < 2:
        raise LapgenError(f"cannot make {k} disjoint splits of {n} images (need at least 2 per split)",
                          hint="use fewer splits or more images")
    order = np.random.RandomState(seed).permutation(n)
    return [np.sort(order[i * size:(i + 1) * size]) for i in range(k)]


def split_values(feats_a: np.ndarray, feats_b: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
                 k: int, *, seed: int = 0) -> dict[str, Any]:
    """The metric on k disjoint split pairs (split i of A against split i of B); values at size N/k."""
    splits_a = disjoint_splits(len(feats_a), k, seed=seed)
    splits_b = disjoint_splits(len(feats_b), k, seed=seed + 1)
    values = [metric(feats_a[ia], feats_b[ib]) for ia, ib in zip(splits_a, splits_b)]
    out = summarize(values)
    out.update(method="disjoint-splits", k=k, seed=seed, n_gen_per_split=len(splits_a[0]),
               n_real_per_split=len(splits_b[0]))
    return out


def bootstrap_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, empty_as_one: bool = False) -> dict[str, Any]:
    """Image-level percentile bootstrap of micro and macro mask F1 from per-image counts (K,)."""
    tp, fp, fn = (np.asarray(v, np.int64) for v in (tp, fp, fn))
    if len(tp) == 0:
        raise LapgenError("no images to bootstrap")
    if n_boot < 1:
        raise LapgenError(f"the bootstrap needs at least 1 replicate, got {n_boot}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(tp), size=(n_boot, len(tp)))  # (B, K) resampled image indices
    s_tp, s_fp, s_fn = tp[idx].sum(1), fp[idx].sum(1), fn[idx].sum(1)
    denom = 2 * s_tp + s_fp + s_fn
    micro = np.where(denom > 0, 2 * s_tp / np.maximum(denom, 1), np.nan)
    scores = per_image_f1(tp, fp, fn, empty_as_one=empty_as_one)[idx]  # (B, K), NaN = excluded
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(scores)
        macro = np.where(valid.any(1), np.nansum(scores, 1) / np.maximum(valid.sum(1), 1), np.nan)
    alpha = (1 - level) / 2

    def interval(values: np.ndarray) -> list[float]:
        values = values[~np.isnan(values)]
        if values.size == 0:
            return [float("nan"), float("nan")]
        return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]

    return {"method": "image-bootstrap-percentile", "n_boot": int(n_boot), "seed": int(seed),
            "level": float(level), "unit": "image", "micro_ci": interval(micro), "macro_ci": interval(macro),
            "micro_sd": float(np.nanstd(micro, ddof=1)) if n_boot > 1 else 0.0}
