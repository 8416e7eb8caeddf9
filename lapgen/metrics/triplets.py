"""Action-triplet mean average precision with the semantics of CAMMA's ivtmetrics.

Reference: CAMMA-public/ivtmetrics (`ivtmetrics/recognition.py`, `disentangle.py`), the metric of the
CholecT50 benchmarks and of Rendezvous (Nwoye et al., Medical Image Analysis 2022); docs/metrics-map.md.

- AP per class is scikit-learn's `average_precision_score` (step-wise, not interpolated).
- Video-wise mode (the CholecT50 benchmark default): AP per class and video, mean over videos per class,
  mean over classes. Global mode: AP per class over all frames pooled, mean over classes.
- Components `i`, `v`, `t`, `iv`, `it` reduce the 100 triplet columns per frame by the max over the
  triplets of each component id (the official maps); columns follow the sorted ids that occur
  (i 6, v 10, t 15, iv 26, it 59), so column k of `iv`/`it` is not id k (`class_ids` gives the ids).
- Absent classes (no positive in a video, or for global in the pool) follow `absent_classes`:
  `"ignore"` (default): no AP, NaN, left out of every mean. This is ivtmetrics on GitHub, whose
  `resolve_nan` turns every AP of 0 into NaN (with scikit-learn >= 1.x only absent classes score 0), and
  ivtmetrics' README ("nan ... for classes with no occurrence"). lapgen masks the classes explicitly.
  `"zero"`: AP 0, averaged in. This is ivtmetrics 0.1.5 from PyPI with current scikit-learn: its
  `resolve_nan` only maps the string "-0.0" to NaN, and scikit-learn returns +0.0 for a class without
  positives. On sets with absent classes the two differ by a lot; the paper pinned neither.
- `ignore_null` drops triplets 94-99 (instrument, null_verb, null_target) for `ivt` only.

Only numpy is imported at module level; scikit-learn is imported when a score is computed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lapgen.data import vocab
from lapgen.errors import LapgenError

COMPONENTS: tuple[str, ...] = ("ivt", "i", "v", "t", "iv", "it")
ABSENT_CLASSES = ("ignore", "zero")
_MAP_COLUMN = {"ivt": 0, "i": 1, "v": 2, "t": 3, "iv": 4, "it": 5}


def component_ids(component: str) -> tuple[int, ...]:
    """The ids of `component` that occur in the triplet map, ascending (the result columns)."""
    _check_component(component)
    col = _MAP_COLUMN[component]
    return tuple(sorted({row[col] for row in vocab.triplet_maps()}))


def _check_component(component: str) -> None:
    if component not in _MAP_COLUMN:
        raise LapgenError(f"unknown triplet component {component!r}", hint="valid: " + ", ".join(COMPONENTS))


def reduce_component(x: np.ndarray, component: str) -> np.ndarray:
    """(N, 100) triplet labels or scores -> (N, K) for `component`: max over the triplets of each id.

    Same reduction for labels (0/1) and scores, as ivtmetrics' `Disentangle.extract`.
    """
    _check_component(component)
    x = np.asarray(x)
    if component == "ivt":
        return x
    col = _MAP_COLUMN[component]
    maps = np.asarray(vocab.triplet_maps())  # (100, 6): IVT, I, V, T, IV, IT
    ids = component_ids(component)
    out = np.empty((x.shape[0], len(ids)), dtype=x.dtype)
    for k, cid in enumerate(ids):
        out[:, k] = x[:, maps[:, col] == cid].max(axis=1)
    return out


def _as_arrays(labels, scores, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or s.ndim != 2:
        raise LapgenError(f"labels and scores must be 2-D (frames x classes), got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise LapgenError(f"labels {y.shape} and scores {s.shape} have different shapes")
    if n_classes is not None and y.shape[1] != n_classes:
        raise LapgenError(f"expected {n_classes} classes (columns), got {y.shape[1]}")
    if y.shape[0] == 0:
        raise LapgenError("no frames to score (empty labels)")
    if not np.isin(y, (0, 1)).all():
        raise LapgenError("labels must be binary 0/1", hint="pass one multi-hot row per frame")
    if not np.isfinite(s).all():
        raise LapgenError("scores contain NaN or infinite values")
    return y.astype(np.int64), s


def _ap_columns(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AP per column with scikit-learn; NaN for columns without a positive."""
    from sklearn.metrics import average_precision_score

    ap = np.full(y.shape[1], np.nan)
    has_pos = y.sum(axis=0) > 0
    if has_pos.any():
        ap[has_pos] = np.atleast_1d(average_precision_score(y[:, has_pos], s[:, has_pos], average=None))
    return ap


def _nanmean(x: np.ndarray, axis=None):
    with np.errstate(all="ignore"):
        finite = np.isfinite(x)
        count = finite.sum(axis=axis)
        total = np.where(finite, x, 0.0).sum(axis=axis)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _group(video_ids: Sequence, n: int) -> tuple[list, np.ndarray]:
    vids = np.asarray(list(video_ids), dtype=object)
    if vids.shape != (n,):
        raise LapgenError(f"video_ids has {vids.size} entries for {n} frames")
    order: dict = {}
    index = np.array([order.setdefault(v, len(order)) for v in vids], dtype=np.int64)
    return list(order), index


def per_video_ap(labels, scores, video_ids: Sequence) -> tuple[list, np.ndarray]:
    """(videos in first-seen order, AP matrix V x C) with NaN where a video has no positive of a class."""
    y, s = _as_arrays(labels, scores, None)
    videos, index = _group(video_ids, y.shape[0])
    table = np.stack([_ap_columns(y[index == k], s[index == k]) for k in range(len(videos))])
    return videos, table


def check_absent_classes(absent_classes: str) -> str:
    if absent_classes not in ABSENT_CLASSES:
        raise LapgenError(f"unknown absent-class convention {absent_classes!r}",
                          hint="use ignore (ivtmetrics on GitHub) or zero (ivtmetrics 0.1.5 from PyPI)")
    return absent_classes


def _absent_as(x: np.ndarray, absent_classes: str) -> np.ndarray:
    """AP values with the absent ones (NaN) left as NaN ("ignore") or scored 0 ("zero")."""
    return np.where(np.isnan(x), 0.0, x) if absent_classes == "zero" else x


def class_map(labels, scores, *, video_ids: Sequence | None = None, absent_classes: str = "ignore") -> dict:
    """mAP of already-reduced (N, C) labels/scores with the ivtmetrics rules (video-wise or global)."""
    check_absent_classes(absent_classes)
    y, s = _as_arrays(labels, scores, None)
    if video_ids is None:
        ap = _ap_columns(y, s)
        absent = np.isnan(ap)
        per_class = _absent_as(ap, absent_classes)
        mode, n_videos = "global", None
    else:
        videos, table = per_video_ap(y, s, video_ids)
        absent = np.isnan(table).all(axis=0)
        per_class = _nanmean(_absent_as(table, absent_classes), axis=0)  # mean over videos (ignore: where present)
        mode, n_videos = "video", len(videos)
    m = _nanmean(per_class)
    return {
        "mAP": float(m),
        "per_class": per_class,
        "mode": mode,
        "n_frames": int(y.shape[0]),
        "n_videos": n_videos,
        "n_classes_scored": int(np.isfinite(per_class).sum()),
        "n_classes_absent": int(absent.sum()),
        "absent": absent,
        "absent_classes": absent_classes,
    }


def triplet_map(labels, scores, *, video_ids: Sequence | None = None, component: str = "ivt",
                ignore_null: bool = False, absent_classes: str = "ignore") -> dict:
    """Triplet (or component) mAP of (N, 100) multi-hot `labels` and `scores` (sigmoid outputs).

    With `video_ids` (one per frame) AP is computed per video and averaged as ivtmetrics'
    `compute_video_AP`; otherwise over all frames (`compute_global_AP`). `absent_classes` is "ignore"
    (classes without a positive have no AP; ivtmetrics on GitHub) or "zero" (they score 0; ivtmetrics
    0.1.5 from PyPI with current scikit-learn). Returns a dict with `mAP` (float; NaN if no class has a
    positive under "ignore"), `per_class` (array over `class_ids`; NaN = no positives under "ignore"),
    `class_ids`, `component`, `mode` ("video"|"global"), `n_frames`, `n_videos`, `n_classes_scored`,
    `absent` (bool per class: no positive anywhere) and its count `n_classes_absent`, `absent_classes`.
    """
    _check_component(component)
    y, s = _as_arrays(labels, scores, vocab.NUM_TRIPLETS)
    result = class_map(reduce_component(y, component), reduce_component(s, component), video_ids=video_ids,
                       absent_classes=absent_classes)
    ids = list(component_ids(component))
    if ignore_null and component == "ivt":
        keep = [k for k, cid in enumerate(ids) if cid not in vocab.NULL_TRIPLETS]
        result["per_class"] = result["per_class"][keep]
        result["absent"] = result["absent"][keep]
        ids = [ids[k] for k in keep]
        result["mAP"] = float(_nanmean(result["per_class"]))
        result["n_classes_scored"] = int(np.isfinite(result["per_class"]).sum())
        result["n_classes_absent"] = int(result["absent"].sum())
    result.update(class_ids=ids, component=component, ignore_null=bool(ignore_null))
    return result


# ------------------------------------------------------------------------------------------ bootstrap


class _SortedAP:
    """Weighted AP of fixed (N, C) scores under many frame weightings (bootstrap multiplicities).

    Scores are sorted once per column; for weights w (N,) the AP equals scikit-learn's
    `average_precision_score(y, s, sample_weight=w)`: tied scores form one threshold, and
    AP = sum_i w_i y_i P(end of i's tie group) / sum_i w_i y_i.
    """

    def __init__(self, y: np.ndarray, s: np.ndarray):
        n, _c = s.shape
        self.order = np.argsort(-s, axis=0, kind="stable")  # (N, C) descending score
        ss = np.take_along_axis(s, self.order, axis=0)
        self.ys = np.take_along_axis(y, self.order, axis=0).astype(np.float64)
        is_end = np.ones_like(ss, dtype=bool)
        is_end[:-1] = ss[:-1] != ss[1:]
        idx = np.where(is_end, np.arange(n)[:, None], n)
        self.end_of = np.minimum.accumulate(idx[::-1], axis=0)[::-1]  # last index of each tie group

    def __call__(self, w: np.ndarray) -> np.ndarray:
        ws = w[self.order]  # (N, C) weights in each column's score order
        wp = ws * self.ys  # weighted positives
        tp = np.cumsum(wp, axis=0)
        seen = np.cumsum(ws, axis=0)  # tp + fp
        prec = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
        prec_end = np.take_along_axis(prec, self.end_of, axis=0)  # precision at the tie group's threshold
        pos = tp[-1]
        contrib = (wp * prec_end).sum(axis=0)
        return np.divide(contrib, pos, out=np.full_like(pos, np.nan), where=pos > 0)


def weighted_ap(labels, scores, weights) -> np.ndarray:
    """AP per column with non-negative frame weights (NaN where the weighted positives are 0)."""
    y, s = _as_arrays(labels, scores, None)
    return _SortedAP(y, s)(np.asarray(weights, dtype=np.float64))


def bootstrap_map(labels, scores, *, video_ids: Sequence | None = None, mode: str | None = None,
                  n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
                  absent_classes: str = "ignore") -> dict:
    """Percentile bootstrap interval of `class_map` on reduced (N, C) arrays (docs/metrics-map.md).

    Resampling unit: whole videos when `video_ids` has >= 2 videos, else frames (one pseudo-video).
    `mode` "video" (default with videos) averages the per-video AP table over the resampled videos;
    "global" pools the resampled frames (weights = multiplicities). Classes without positives in a
    replicate follow `absent_classes`, as in the point estimate (skipped, or scored 0).
    """
    check_absent_classes(absent_classes)
    y, s = _as_arrays(labels, scores, None)
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    videos, index = _group(video_ids, n) if video_ids is not None else ([None], np.zeros(n, dtype=np.int64))
    unit = "video" if len(videos) >= 2 else "frame"
    mode = mode or ("video" if video_ids is not None else "global")
    if mode not in ("video", "global"):
        raise LapgenError(f"unknown mAP mode {mode!r}", hint="valid: video, global")
    values = np.empty(n_boot)
    if mode == "video" and unit == "video":
        _, table = per_video_ap(y, s, video_ids)
        table = _absent_as(table, absent_classes)
        for b in range(n_boot):
            pick = rng.integers(0, len(videos), len(videos))
            values[b] = _nanmean(_nanmean(table[pick], axis=0))
    else:
        ap = _SortedAP(y, s)
        for b in range(n_boot):
            if unit == "video":
                counts = np.bincount(rng.integers(0, len(videos), len(videos)), minlength=len(videos))
                w = counts[index].astype(np.float64)
            else:
                w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
            values[b] = _nanmean(_absent_as(ap(w), absent_classes))
    alpha = (1.0 - confidence) / 2
    finite = values[np.isfinite(values)]
    low, high = (np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (np.nan, np.nan))
    return {
        "low": float(low), "high": float(high), "level": confidence, "method": "percentile",
        "unit": unit, "n_boot": int(n_boot), "seed": int(seed), "std": float(finite.std(ddof=1))
        if finite.size > 1 else float("nan"),
    }
