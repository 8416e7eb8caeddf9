"""The result of `lapgen eval video` from the per-video pieces (`lapgen.metrics.video`): values, N, intervals,
protocol, in lapgen's eval schema (`lapgen.eval/1`, `"metric": "video"`).

    {"metric": "video", "metrics": {"mask_f1": ..., "warp_error": ..., "fvd": ...},   GEN's values
     "details": {"warp_error": {"value": GEN, "real": REAL, "ci": ..., "n_gen": ..., ...}, ...},
     "skipped": {"cd_fvd": "why"}, "n_gen": videos, "n_real": videos, ...}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lapgen.metrics.temporal import consistency_scores, pooled_mean, video_bootstrap

SCHEMA = "lapgen.eval/1"


def _per_video(values: list[np.ndarray]) -> list[float | None]:
    out = []
    for v in values:
        v = np.asarray(v, np.float64)
        v = v[np.isfinite(v)]
        out.append(float(v.mean()) if v.size else None)
    return out


def _pooled(plan: Any, gen: list[np.ndarray], real: list[np.ndarray] | None) -> dict[str, Any]:
    """Value (GEN), REAL's value, the video-level bootstrap interval of GEN's, and per-video means."""
    cfg = plan.config
    out: dict[str, Any] = {"value": pooled_mean(gen), "real": pooled_mean(real) if real is not None else None,
                           "ci": video_bootstrap(gen, n_boot=cfg.n_boot, seed=cfg.seed) if cfg.n_boot else None,
                           "real_ci": (video_bootstrap(real, n_boot=cfg.n_boot, seed=cfg.seed)
                                       if cfg.n_boot and real is not None else None),
                           "per_video": _per_video(gen)}
    out["n_gen"] = int(sum(np.count_nonzero(np.isfinite(v)) for v in gen))
    out["n_real"] = int(sum(np.count_nonzero(np.isfinite(v)) for v in real)) if real is not None else None
    return out


def _mask_details(plan: Any, pieces: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, dict[str, Any]]:
    """mask_f1 / mask_iou of one set from per-frame (TP, FP, FN) counts."""
    counts = [p["masks"] for p in pieces]
    tp, fp, fn = (np.concatenate([c[:, k] for c in counts]).astype(np.int64) for k in range(3))
    f1s, ious = [], []
    for c in counts:
        t, f, n = c[:, 0].astype(np.float64), c[:, 1].astype(np.float64), c[:, 2].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1s.append(np.where(2 * t + f + n > 0, 2 * t / np.maximum(2 * t + f + n, 1), np.nan))
            ious.append(np.where(t + f + n > 0, t / np.maximum(t + f + n, 1), np.nan))
    both_empty = int(np.count_nonzero(tp + fp + fn == 0))
    denom = 2 * int(tp.sum()) + int(fp.sum()) + int(fn.sum())
    out = {}
    for metric, per_frame in (("mask_f1", f1s), ("mask_iou", ious)):
        worst = None
        for name, values in zip(names, per_frame):
            finite = np.where(np.isfinite(values))[0]
            if finite.size:
                k = int(finite[np.argmin(values[finite])])
                if worst is None or values[k] < worst["value"]:
                    worst = {"video": name, "frame": k, "value": float(values[k])}
        d = _pooled(plan, per_frame, None)
        d.update(worst_frame=worst, n_frames=int(len(tp)), n_scored=d.pop("n_gen"), n_both_empty=both_empty,
                 n_videos=len(counts))
        d.pop("n_real"), d.pop("real"), d.pop("real_ci")
        if metric == "mask_f1":
            d["pooled"] = (2 * int(tp.sum()) / denom) if denom else float("nan")  # micro F1 over every pixel
            d.update(tp=int(tp.sum()), fp=int(fp.sum()), fn=int(fn.sum()))
        out[metric] = d
    return out


def _fvd(plan: Any, name: str, gen: list[dict[str, np.ndarray]], real: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    from lapgen.metrics.fid import frechet_distance, resolve_method

    cfg = plan.config
    ext = getattr(plan, name)
    a = np.concatenate([p[name] for p in gen])
    b = np.concatenate([p[name] for p in real])
    method = resolve_method(cfg.fid_method, len(a), len(b), a.shape[1])
    frames = ext.clip_frames or cfg.fvd_frames
    return {"value": float(frechet_distance(a, b, method=cfg.fid_method)),
            "n_gen": int(len(a)), "n_real": int(len(b)),
            "protocol": {"frames_per_clip": frames, "stride": cfg.fvd_stride, "clips": cfg.fvd_clips,
                         "cut": ("consecutive non-overlapping clips of every video from frame 0, shorter "
                                 "remainder dropped") if cfg.fvd_clips == "all" else "the first clip of every video",
                         "resolution": list(plan.gen.size), "real_resolution": list(plan.real.size),
                         "network_input": ext.input_size, "preprocessing": ext.preprocessing()},
            "extractor": ext.name, "network": ext.spec.loader, "weights_sha256": ext.weights_sha256,
            "dim": int(a.shape[1]), "fid_method": method, "ddof": 1, "batch_size": cfg.batch_size}


def build_result(plan: Any, gen: list[dict[str, np.ndarray]], real: list[dict[str, np.ndarray]],
                 predictor: Any) -> dict[str, Any]:
    from lapgen.cards import library_versions
    from lapgen.metrics.evaluate import card_labels

    cfg = plan.config
    details: dict[str, dict[str, Any]] = {}
    if any(m in plan.metrics for m in ("mask_f1", "mask_iou")):
        names = [item.name for item in plan.gen.items]
        details.update(_mask_details(plan, gen, names))
        if plan.real.has_masks:  # the segmenter on real frames against their masks: the ceiling to read GEN by
            for metric, d in _mask_details(plan, real, [i.name for i in plan.real.items]).items():
                details[metric].update(real=d["value"], real_ci=d["ci"], n_real=d["n_scored"])
                if "pooled" in d:
                    details[metric]["real_pooled"] = d["pooled"]
        for metric in ("mask_f1", "mask_iou"):
            details[metric].update(segmenter=predictor.info, protocol="per-frame pixel score at the conditioning "
                                   "resolution, frames with both masks empty left out; mean over frames")
        details = {m: d for m, d in details.items() if m in plan.metrics}
    if "warp_error" in plan.metrics:
        from lapgen.metrics.temporal import FLOW_ID

        details["warp_error"] = {**_pooled(plan, [p["warp"] for p in gen], [p["warp"] for p in real]),
                                 "protocol": FLOW_ID, "unit": "mean absolute RGB difference / 255, per frame pair"}
    if "frame_consistency" in plan.metrics:
        from lapgen.metrics.features import preprocessing_id

        ext = plan.clip
        details["frame_consistency"] = {
            **_pooled(plan, [consistency_scores(p["clip"]) for p in gen], [consistency_scores(p["clip"]) for p in real]),
            "protocol": "VBench subject consistency: (max(0, cos(f[i-1], f[i])) + max(0, cos(f[0], f[i]))) / 2, "
                        "mean over frames 1.. of every video",
            "extractor": ext.name, "weights_sha256": ext.weights_sha256,
            "preprocessing": preprocessing_id(ext.spec, "clip-fid", plan.gen.size)}
    for metric, name in (("fvd", "i3d"), ("cd_fvd", "videomae")):
        if metric in plan.metrics:
            details[metric] = _fvd(plan, name, gen, real)
    metrics = {m: details[m]["value"] for m in plan.metrics}
    short = ",".join(f"{m}" for m in plan.metrics)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "metric": "video",
        "key": f"video[{short}]",
        "metrics": metrics,
        "details": details,
        "skipped": dict(plan.skipped),
        "gen": str(plan.gen.root),
        "real": str(plan.real.root),
        "n_gen": len(plan.gen),
        "n_real": len(plan.real),
        "gen_frames": plan.gen.n_frames,
        "real_frames": plan.real.n_frames,
        "gen_size": list(plan.gen.size),
        "real_size": list(plan.real.size),
        "gen_kind": plan.gen.kind,
        "real_kind": plan.real.kind,
        "device": plan.device,
        "precision": "fp32",
        "tf32": False,
        "n_boot": cfg.n_boot,
        "seed": cfg.seed,
        "libraries": library_versions(),
    }
    result.update(card_labels(plan.gen.card))
    result.update({k: v for k, v in cfg.labels.items() if v is not None})
    return result
