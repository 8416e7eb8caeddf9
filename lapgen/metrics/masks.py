"""Tool-mask F1 between predicted masks on generated images and their conditioning masks.

docs/metrics.md, section 4. For image k with conditioning mask G_k and predicted mask P_k (boolean, same
size):

    TP_k = |G & P|,  FP_k = |~G & P|,  FN_k = |G & ~P|
    micro = 2 sum TP / (2 sum TP + sum FP + sum FN)          pooled over all images: the headline number
    macro = mean_k 2 TP_k / (2 TP_k + FP_k + FN_k)           secondary

Empty-mask rule (macro): an image where G and P are both empty is excluded (and counted in
`n_both_empty`) unless `empty_as_one=True`, which scores it 1.0. If only one of them is empty its score is 0.
Micro F1 is NaN only when every mask is empty. F1 equals Dice; IoU = F1 / (2 - F1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lapgen.errors import LapgenError


def binarize_conditioning(mask: np.ndarray) -> np.ndarray:
    """Foreground of a binary 0/255 conditioning mask: value > 127 (first channel if RGB)."""
    arr = np.asarray(mask)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr > 127


def mask_counts(pred: Sequence[np.ndarray] | np.ndarray,
                target: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image (TP, FP, FN) pixel counts, three int64 arrays of shape (K,)."""
    if len(pred) != len(target):
        raise LapgenError(f"{len(pred)} predicted masks but {len(target)} target masks")
    tp = np.zeros(len(pred), np.int64)
    fp = np.zeros(len(pred), np.int64)
    fn = np.zeros(len(pred), np.int64)
    for k, (p, g) in enumerate(zip(pred, target)):
        p = np.asarray(p, dtype=bool)
        g = np.asarray(g, dtype=bool)
        if p.shape != g.shape:
            raise LapgenError(f"mask {k}: predicted shape {p.shape} differs from target shape {g.shape}",
                              hint="compare at the conditioning resolution (resize with nearest neighbour)")
        tp[k] = np.count_nonzero(p & g)
        fp[k] = np.count_nonzero(p & ~g)
        fn[k] = np.count_nonzero(~p & g)
    return tp, fp, fn


def micro_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """Pooled F1 from per-image counts; NaN when every mask is empty."""
    denom = 2 * int(np.sum(tp)) + int(np.sum(fp)) + int(np.sum(fn))
    return float("nan") if denom == 0 else 2 * int(np.sum(tp)) / denom


def per_image_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, *, empty_as_one: bool = False) -> np.ndarray:
    """Per-image F1, (K,) float64; NaN marks a both-empty image excluded from the macro mean."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    scores = np.full(len(tp), 1.0 if empty_as_one else np.nan)
    nonzero = denom > 0
    scores[nonzero] = 2 * tp[nonzero] / denom[nonzero]
    return scores


def mask_f1(pred: Sequence[np.ndarray] | np.ndarray, target: Sequence[np.ndarray] | np.ndarray, *,
            empty_as_one: bool = False) -> dict[str, Any]:
    """Pixel F1 of predicted vs target masks (sequences of K boolean H x W arrays, equal shapes per pair).

    Returns `micro` (headline), `macro`, `n_images`, `n_scored` (images in the macro mean), `n_both_empty`,
    `empty_as_one`, and the pooled `tp`, `fp`, `fn`.
    """
    if len(target) == 0:
        raise LapgenError("no masks to compare")
    tp, fp, fn = mask_counts(pred, target)
    scores = per_image_f1(tp, fp, fn, empty_as_one=empty_as_one)
    both_empty = int(np.count_nonzero((2 * tp + fp + fn) == 0))
    scored = scores[~np.isnan(scores)]
    return {
        "micro": micro_f1(tp, fp, fn),
        "macro": float(scored.mean()) if len(scored) else float("nan"),
        "n_images": len(tp),
        "n_scored": len(scored),
        "n_both_empty": both_empty,
        "empty_as_one": bool(empty_as_one),
        "tp": int(tp.sum()),
        "fp": int(fp.sum()),
        "fn": int(fn.sum()),
    }
