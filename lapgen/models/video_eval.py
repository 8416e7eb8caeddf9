"""`lapgen eval video` with the segmenter: the library entry point behind the command.

`evaluate_videos(VideoEvalConfig)` plans the evaluation (`lapgen.metrics.video.plan_video_eval`), builds the
YOLOv8-seg mask predictor for `mask_f1` / `mask_iou` when GEN records its conditioning masks (the same
segmenter, confidence and union-of-instances rule as `lapgen eval f1`), and runs every metric over one decode
of each video. Save the result with `lapgen.metrics.evaluate.save_result` as the other eval commands do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.metrics.video import MASK_METRICS, MaskPredictor, VideoEvalConfig, VideoPlan, plan_video_eval, run_video_eval

__all__ = ["VideoEvalConfig", "evaluate_videos", "segmenter_predictor"]


def segmenter_predictor(segmenter: str | None, *, conf: float = 0.25, imgsz: int | None = None,
                        device: str = "auto", batch_size: int = 16) -> MaskPredictor:
    """A `MaskPredictor` from a registry segmenter: the union of its tool instances with confidence >= `conf`
    per frame, at the frame's own size (`retina_masks`), as `lapgen eval f1` predicts."""
    from lapgen.models import segmentation as seg
    from lapgen.outputs import file_sha256

    target, info = seg.resolve_segmenter(segmenter)
    model = seg.load_yolo(target)
    dev = seg.ultralytics_device(device)
    size = imgsz or seg.model_imgsz(model)
    weights = Path(info["path"]) if info.get("path") else None
    if weights is not None and weights.is_dir():
        weights = seg.weights_in(weights)
    digest = file_sha256(weights) if weights is not None and weights.is_file() else None

    def predict(frames: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(frames), batch_size):
            batch = [np.ascontiguousarray(f) for f in frames[start:start + batch_size]]
            out += [union for union, _count in seg.predict_union_masks(model, batch, conf=conf, imgsz=size,
                                                                        device=dev)]
        return np.stack(out)

    return MaskPredictor(predict, {**info, "weights_sha256": digest, "conf": conf, "imgsz": size})


def _predictor_for(plan: VideoPlan) -> MaskPredictor | None:
    cfg = plan.config
    if not any(m in plan.metrics for m in MASK_METRICS):
        return None
    try:
        from lapgen.models.segmentation import resolve_segmenter

        _target, info = resolve_segmenter(cfg.segmenter)
        if info.get("random_init") and cfg.segmenter is None and not plan.explicit:
            raise LapgenError(f"the default segmenter {info['name']} has no trained weights here",
                              hint="pass --segmenter NAME (a trained YOLOv8-seg)")
        return segmenter_predictor(cfg.segmenter, conf=cfg.conf, imgsz=cfg.imgsz, device=cfg.device,
                                   batch_size=cfg.batch_size)
    except LapgenError as exc:
        for m in MASK_METRICS:
            if m in plan.metrics:
                plan.skip(m, exc.one_line())  # an error when the user asked for mask adherence by name
        return None


def evaluate_videos(cfg: VideoEvalConfig) -> dict[str, Any]:
    """Every metric of `cfg` over GEN and REAL (docs/metrics-video.md); one decode per video."""
    plan = plan_video_eval(cfg)
    return run_video_eval(plan, _predictor_for(plan))
