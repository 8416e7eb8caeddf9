"""`lapgen eval video`: mask adherence, temporal consistency and FVD of a generated video set against real ones.

`plan_video_eval(config)` lists and checks both sets and resolves every metric's inputs and weights before
any frame is decoded; `run_video_eval(plan, predictor)` then decodes every video once and hands that one
decode to every metric (per video: warp errors, per-frame CLIP features, I3D and VideoMAE clip features and,
with a mask predictor, per-frame mask counts). Each per-video piece is cached under
`$LAPGEN_HOME/cache/video/` keyed by the video's content and everything that shapes the piece, so an
interrupted evaluation resumes and a second GEN against the same REAL reads REAL's pieces. The result is one
dict in lapgen's eval schema whose `metrics` maps `mask_f1`, `mask_iou`, `warp_error`, `frame_consistency`,
`fvd` and `cd_fvd` to GEN's values; `details` holds, per metric, REAL's value where it has one, N, intervals
and the protocol (docs/metrics-video.md).

Metrics that need a model this layer does not own (the segmenter of `mask_f1` / `mask_iou`) take a
`MaskPredictor`; `lapgen.models.video_eval.evaluate_videos` builds it from the registry.
`evaluate_videos(config, predictor=None)` here runs the rest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.metrics.video_sets import VideoSet, open_video_set

VIDEO_METRICS = ("mask_f1", "mask_iou", "warp_error", "frame_consistency", "fvd", "cd_fvd")
MASK_METRICS = ("mask_f1", "mask_iou")
CACHE_VERSION = 1
CLIP_PROTOCOL = "clip-fid"  # OpenAI CLIP's own transform (resize the short side, centre crop), as VBench


@dataclass
class VideoEvalConfig:
    """What `lapgen eval video GEN REAL` computes."""

    gen: Path  # generated videos (see lapgen.metrics.video_sets)
    real: Path  # real videos, e.g. a `lapgen masks clips` output
    metrics: tuple[str, ...] | None = None  # None: every metric whose inputs and weights are here
    segmenter: str | None = None  # mask adherence: registry name, run folder or .pt (None: the default)
    conf: float = 0.25
    imgsz: int | None = None  # segmenter inference size (None: its training size)
    clip: str = "clip-vit-b-32"  # frame_consistency extractor
    clip_weights: str | None = None
    i3d: str = "i3d-kinetics400"  # FVD extractor
    i3d_weights: str | None = None
    videomae: str = "videomae-v2-g"  # CD-FVD extractor
    videomae_weights: str | None = None
    fvd_frames: int = 16  # frames per FVD clip (I3D); CD-FVD takes the VideoMAE's own (16)
    fvd_stride: int = 1  # take every k-th frame inside a clip
    fvd_clips: str = "all"  # all: consecutive non-overlapping clips of every video | first: the first only
    fid_method: str = "auto"  # the Fréchet route of lapgen.metrics.fid
    n_boot: int = 1000  # video-level bootstrap replicates (0: none)
    seed: int = 0
    device: str = "auto"
    batch_size: int = 16  # frames per CLIP call, clips per I3D / VideoMAE call
    workers: int = 2
    use_cache: bool = True
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass
class MaskPredictor:
    """Frames (T, H, W, 3) uint8 -> predicted tool masks (T, H, W) bool, and what identifies it."""

    predict: Callable[[np.ndarray], np.ndarray]
    info: dict[str, Any]  # name, weights SHA-256, conf, imgsz, ...: recorded, and the cache key's part


@dataclass
class VideoPlan:
    config: VideoEvalConfig
    gen: VideoSet
    real: VideoSet
    metrics: list[str]  # what will be computed, in VIDEO_METRICS order
    explicit: bool  # the user named the metrics (missing weights are then errors)
    skipped: dict[str, str] = field(default_factory=dict)  # metric -> why (auto mode)
    device: str = "cpu"
    clip: Any = None  # FeatureExtractor for frame_consistency
    i3d: Any = None  # VideoFeatureExtractor
    videomae: Any = None

    def skip(self, metric: str, why: str) -> None:
        """Leave `metric` out with a note, or, when the user asked for it, stop with that reason."""
        if self.explicit:
            raise LapgenError(f"cannot compute {metric}: {why}")
        if metric in self.metrics:
            self.metrics.remove(metric)
        self.skipped[metric] = why


def _check_config(cfg: VideoEvalConfig) -> None:
    from lapgen.metrics.fid import METHODS

    unknown = [m for m in cfg.metrics or () if m not in VIDEO_METRICS]
    if unknown:
        raise LapgenError(f"unknown video metric(s) {', '.join(unknown)}", hint=f"use {', '.join(VIDEO_METRICS)}")
    if cfg.metrics is not None and not cfg.metrics:
        raise LapgenError("no metric asked for", hint=f"use any of {', '.join(VIDEO_METRICS)}")
    if cfg.fid_method not in METHODS:
        raise LapgenError(f"unknown Fréchet distance method {cfg.fid_method!r}", hint=f"use one of {', '.join(METHODS)}")
    if not 0.0 <= cfg.conf <= 1.0:
        raise LapgenError(f"--conf must be in [0, 1], got {cfg.conf}")
    if cfg.batch_size < 1 or cfg.n_boot < 0:
        raise LapgenError("--batch-size must be at least 1 and --boot at least 0")
    from lapgen.metrics.video_networks import cut_clips

    cut_clips(1, cfg.fvd_frames, stride=cfg.fvd_stride, policy=cfg.fvd_clips)  # validates the FVD options


def fvd_clip_count(video_set: VideoSet, frames: int, stride: int, policy: str) -> int:
    from lapgen.metrics.video_networks import cut_clips

    return sum(len(cut_clips(item.n_frames, frames, stride=stride, policy=policy)) for item in video_set.items)


def plan_video_eval(cfg: VideoEvalConfig) -> VideoPlan:
    """Open both sets and resolve every metric's inputs and weights; nothing is decoded or loaded yet."""
    from lapgen.device import resolve_device

    _check_config(cfg)
    gen = open_video_set(cfg.gen, what="GEN")
    real = open_video_set(cfg.real, what="REAL")
    explicit = cfg.metrics is not None
    wanted = [m for m in VIDEO_METRICS if m in (cfg.metrics or VIDEO_METRICS)]
    plan = VideoPlan(cfg, gen, real, list(wanted), explicit, device=str(resolve_device(cfg.device)))
    if any(m in wanted for m in MASK_METRICS) and not gen.has_masks:
        why = "GEN does not record the conditioning mask of every frame"
        if explicit:
            raise LapgenError(f"cannot compute mask adherence: {why}", path=gen.root,
                              hint="evaluate a `lapgen sample-video` set or `lapgen video --save-frames` frames")
        for m in MASK_METRICS:
            plan.skip(m, why)
    if any(m in wanted for m in ("warp_error", "frame_consistency")):
        short = [s.root for s in (gen, real) if all(i.n_frames < 2 for i in s.items)]
        if short:
            for m in ("warp_error", "frame_consistency"):
                if m in plan.metrics:
                    plan.skip(m, f"{short[0]} has no video of 2 frames or more")
    if "frame_consistency" in plan.metrics:
        from lapgen.metrics.features import FeatureExtractor

        try:
            plan.clip = FeatureExtractor(cfg.clip, weights=cfg.clip_weights, device=plan.device)
        except LapgenError as exc:  # name this command's flag in the hint
            plan.skip("frame_consistency", exc.one_line().replace("--weights", "--clip-weights", 1))
    for metric, name, weights, attr in (("fvd", cfg.i3d, cfg.i3d_weights, "i3d"),
                                        ("cd_fvd", cfg.videomae, cfg.videomae_weights, "videomae")):
        if metric not in plan.metrics:
            continue
        from lapgen.metrics.video_networks import VideoFeatureExtractor

        try:
            ext = VideoFeatureExtractor(name, weights=weights, device=plan.device)
        except LapgenError as exc:
            plan.skip(metric, exc.one_line())
            continue
        length = ext.clip_frames or cfg.fvd_frames
        counts = [fvd_clip_count(s, length, cfg.fvd_stride, cfg.fvd_clips) for s in (gen, real)]
        if min(counts) < 2:
            plan.skip(metric, f"{metric} needs at least 2 clips of {length} frames per set; GEN gives {counts[0]}, "
                              f"REAL {counts[1]}")
            continue
        setattr(plan, attr, ext)
    if not plan.metrics:
        raise LapgenError("no video metric can be computed: " + "; ".join(f"{k}: {v}" for k, v in plan.skipped.items()))
    return plan


# --- the one pass over every video ---------------------------------------------------------------------------

def _cache_file(key_parts: dict[str, Any]) -> Path:
    from lapgen.metrics.weights import cache_root

    key = hashlib.sha256(json.dumps({**key_parts, "version": CACHE_VERSION}, sort_keys=True).encode()).hexdigest()
    return cache_root() / "video" / f"{key}.npy"


def _component_keys(plan: VideoPlan, item: Any, digest: str, predictor: MaskPredictor | None,
                    mask_digest: str | None) -> dict[str, dict[str, Any]]:
    """What shapes each per-video piece of `item`, for the ones this evaluation needs."""
    from lapgen.metrics.temporal import FLOW_ID

    cfg, keys = plan.config, {}
    if "warp_error" in plan.metrics:
        import cv2

        keys["warp"] = {"video": digest, "flow": FLOW_ID, "opencv": cv2.__version__}
    if plan.clip is not None:
        from lapgen.metrics.features import feature_key, preprocessing_id

        prep = preprocessing_id(plan.clip.spec, CLIP_PROTOCOL, item.size)
        keys["clip"] = {"video": digest, "features": feature_key("per-frame", plan.clip, prep)}
    for attr in ("i3d", "videomae"):
        ext = getattr(plan, attr)
        if ext is not None:
            network = {k: v for k, v in ext.describe().items() if k != "weights"}  # the hash, not the path
            keys[attr] = {"video": digest, **network, "frames": ext.clip_frames or cfg.fvd_frames,
                          "stride": cfg.fvd_stride, "clips": cfg.fvd_clips, "batch": cfg.batch_size}
    if predictor is not None and mask_digest is not None:
        keys["masks"] = {"video": digest, "masks": mask_digest, "predictor": predictor.info}
    return keys


def _clip_features(plan: VideoPlan, frames: np.ndarray, pool: Any) -> np.ndarray:
    from lapgen.metrics.features import preprocess

    ext, rows = plan.clip, []
    for start in range(0, len(frames), plan.config.batch_size):
        batch = np.stack(list(pool.map(lambda f: preprocess(ext.spec, CLIP_PROTOCOL, f),
                                       frames[start:start + plan.config.batch_size])))
        rows.append(ext.forward(batch, CLIP_PROTOCOL))
    return np.concatenate(rows).astype(np.float32)


def _video_clip_features(plan: VideoPlan, ext: Any, frames: np.ndarray) -> np.ndarray:
    from lapgen.metrics.video_networks import cut_clips

    cfg = plan.config
    clips = cut_clips(len(frames), ext.clip_frames or cfg.fvd_frames, stride=cfg.fvd_stride, policy=cfg.fvd_clips)
    rows = [ext.forward(frames[np.asarray(clips[s:s + cfg.batch_size])])  # (b, T, H, W, 3)
            for s in range(0, len(clips), cfg.batch_size)]
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, ext.spec.dim), np.float32)


def _mask_counts(predictor: MaskPredictor, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    from lapgen.data.masks import resize_mask

    pred = predictor.predict(frames)
    h, w = masks.shape[1:]
    pred = np.stack([p if p.shape == (h, w) else resize_mask(p, (w, h)) for p in pred])  # conditioning size
    from lapgen.metrics.temporal import mask_scores

    s = mask_scores(pred, masks)
    return np.stack([s["tp"], s["fp"], s["fn"]], axis=1)  # (T, 3) int64


def video_pieces(plan: VideoPlan, video_set: VideoSet, predictor: MaskPredictor | None, label: str,
                 ) -> list[dict[str, np.ndarray]]:
    """Per video of `video_set`, every piece this evaluation needs, from the cache or from one decode."""
    from concurrent.futures import ThreadPoolExecutor

    from lapgen.metrics.temporal import warp_errors
    from lapgen.metrics.video_sets import decode, item_digest, masks_digest, read_masks
    from lapgen.outputs import atomic_file
    from lapgen.progress import make_progress

    use_masks = predictor is not None and video_set.has_masks
    out: list[dict[str, np.ndarray]] = []
    with make_progress() as progress, ThreadPoolExecutor(max(1, plan.config.workers)) as pool:
        task = progress.add_task(f"{label} videos", total=len(video_set))
        for item in video_set.items:
            cached = plan.config.use_cache  # content hashes are read only for the cache
            keys = _component_keys(plan, item, item_digest(item) if cached else "", predictor if use_masks else None,
                                   (masks_digest(item) if cached else "") if use_masks else None)
            files = {name: _cache_file(parts) for name, parts in keys.items()} if cached else {}
            pieces = {name: np.load(f) for name, f in files.items() if f.exists()}
            todo = [name for name in keys if name not in pieces]
            if todo:
                frames = decode(item)  # the one decode of this video
                for name in todo:
                    if name == "warp":
                        pieces[name] = warp_errors(frames)
                    elif name == "clip":
                        pieces[name] = _clip_features(plan, frames, pool)
                    elif name in ("i3d", "videomae"):
                        pieces[name] = _video_clip_features(plan, getattr(plan, name), frames)
                    else:
                        pieces[name] = _mask_counts(predictor, frames, read_masks(item))
                    if cached:
                        with atomic_file(files[name]) as fh:
                            np.save(fh, pieces[name])
            out.append(pieces)
            progress.advance(task)
    return out


def evaluate_videos(cfg: VideoEvalConfig, predictor: MaskPredictor | None = None) -> dict[str, Any]:
    """Every metric of `cfg` that this layer can compute; mask adherence needs `predictor` (see the module
    docstring). With the metrics named and mask adherence among them, a missing predictor is an error."""
    plan = plan_video_eval(cfg)
    if predictor is None and any(m in plan.metrics for m in MASK_METRICS):
        for m in MASK_METRICS:
            if m in plan.metrics:
                plan.skip(m, "no mask predictor was given (lapgen.models.video_eval.evaluate_videos builds the "
                             "segmenter's)")
    return run_video_eval(plan, predictor)


def run_video_eval(plan: VideoPlan, predictor: MaskPredictor | None = None) -> dict[str, Any]:
    """Decode every video once, compute the planned metrics, and return the result dict."""
    from lapgen.metrics.video_results import build_result
    from lapgen.progress import notice

    for metric, why in plan.skipped.items():
        notice(f"{metric} skipped: {why}")
    for note in plan.gen.notes + plan.real.notes:
        notice(note)
    gen = video_pieces(plan, plan.gen, predictor, "GEN")
    real = video_pieces(plan, plan.real, predictor, "REAL")
    result = build_result(plan, gen, real, predictor)
    result["created"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return result
