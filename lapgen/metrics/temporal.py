"""Per-video scores of `lapgen eval video`, pure functions of one decoded video (docs/metrics-video.md).

- `warp_errors(frames)`: temporal consistency by flow warping. For each consecutive pair (t, t+1) OpenCV's DIS
  optical flow (Kroeger et al. 2016; no learnt weights) is computed from frame t+1 back to frame t on the grey
  frames, frame t is warped onto frame t+1 with it (bilinear `remap`), and the error is the mean absolute RGB
  difference, in [0, 1] (pixel values / 255), over the pixels whose flow lands inside frame t. Lower is better;
  real clips give the floor (sensor noise and true occlusions).
- `consistency_scores(features)`: VBench's subject / background consistency (Huang et al. 2024,
  Vchitect/VBench `subject_consistency.py`) on per-frame image features: for every frame i >= 1,
  (max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))) / 2. The set value is VBench's: the mean over every such
  frame of every video.
- `mask_scores(pred, target)`: per-frame pixel F1 and IoU of predicted against conditioning masks (frames where
  both are empty are left out and counted, as in `lapgen.metrics.masks`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lapgen.metrics.masks import mask_counts

FLOW_ID = "opencv-dis-medium/backward/bilinear-remap/in-bounds-mean-abs-rgb/255"


def warp_errors(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T - 1,) float64 warp errors of consecutive frames (NaN if no pixel lands in)."""
    import cv2

    frames = np.asarray(frames)
    t, h, w = frames.shape[:3]
    if t < 2:
        return np.zeros(0, np.float64)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = np.empty(t - 1, np.float64)
    for i in range(t - 1):
        flow = dis.calc(grey[i + 1], grey[i], None)  # (H, W, 2): frame i+1 at x ~ frame i at x + flow(x)
        map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
        warped = cv2.remap(np.ascontiguousarray(frames[i]), map_x, map_y, interpolation=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
        inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
        diff = np.abs(warped.astype(np.float64) - frames[i + 1].astype(np.float64)).mean(axis=2) / 255.0
        out[i] = diff[inside].mean() if inside.any() else np.nan
    return out


def consistency_scores(features: np.ndarray) -> np.ndarray:
    """(T, D) per-frame features -> (T - 1,) VBench consistency of frames 1..T-1 (float64)."""
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        return np.zeros(0, np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    previous = np.maximum(0.0, np.sum(f[1:] * f[:-1], axis=1))
    first = np.maximum(0.0, f[1:] @ f[0])
    return (previous + first) / 2


def mask_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame pixel counts and scores of (T, h, w) bool masks: tp, fp, fn (int64), f1 and iou (float64, NaN
    where both masks are empty)."""
    tp, fp, fn = mask_counts(list(pred), list(target))
    denom = (2 * tp + fp + fn).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
        union = (tp + fp + fn).astype(np.float64)
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    return {"tp": tp, "fp": fp, "fn": fn, "f1": f1, "iou": iou}


def pooled_mean(per_video: list[np.ndarray]) -> float:
    """The mean over every finite value of every video (NaN when there is none)."""
    values = np.concatenate([np.asarray(v, np.float64) for v in per_video]) if per_video else np.zeros(0)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def video_bootstrap(per_video: list[np.ndarray], *, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, Any] | None:
    """Percentile interval of `pooled_mean` when whole videos are resampled with replacement (None for < 2)."""
    sums = np.array([np.nansum(np.asarray(v, np.float64)) for v in per_video])
    counts = np.array([np.count_nonzero(np.isfinite(np.asarray(v, np.float64))) for v in per_video])
    if len(per_video) < 2 or n_boot < 1 or counts.sum() == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(per_video), size=(n_boot, len(per_video)))  # (B, V)
    n = counts[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(n > 0, sums[idx].sum(axis=1) / np.maximum(n, 1), np.nan)
    means = means[np.isfinite(means)]
    alpha = (1 - level) / 2
    return {"method": "video-bootstrap-percentile", "unit": "video", "n_boot": int(n_boot), "seed": int(seed),
            "level": float(level), "low": float(np.quantile(means, alpha)),
            "high": float(np.quantile(means, 1 - alpha))}
