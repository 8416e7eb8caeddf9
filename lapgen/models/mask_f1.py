"""`lapgen eval f1`: a YOLOv8-seg segmenter predicts the tools of every generated image, scored against the
image's conditioning mask (pixel micro/macro F1, bootstrap interval, optionally the paper code's instance F1).

The scoring pieces are model-free and live in `lapgen.metrics.spatial` (conditioning masks, mask2yolo labels,
the ultralytics `val` route) and `lapgen.metrics.masks`; this module adds the segmenter
(`lapgen.models.segmentation`). docs/metrics.md, section 4.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.metrics.confidence import bootstrap_f1
from lapgen.metrics.images import load_rgb, open_image_set
from lapgen.metrics.masks import mask_counts, mask_f1
from lapgen.metrics.spatial import F1Config, conditioning_mask, instance_f1_yolo_val, mask_pairs

__all__ = ["F1Config", "evaluate_mask_f1"]


def evaluate_mask_f1(cfg: F1Config) -> dict[str, Any]:
    """Pixel (and optionally instance) F1 of a generated set's predicted vs conditioning tool masks."""
    from lapgen.cards import library_versions
    from lapgen.data.masks import resize_mask
    from lapgen.outputs import file_sha256
    from lapgen.progress import make_progress

    if not 0.0 <= cfg.conf <= 1.0:
        raise LapgenError(f"--conf must be in [0, 1], got {cfg.conf}")
    image_set = open_image_set(cfg.gen, what="GEN", check_sizes=False)
    mask_paths = mask_pairs(image_set)  # validated before loading the segmenter
    from lapgen.models import segmentation as seg

    target, info = seg.resolve_segmenter(cfg.segmenter)
    model = seg.load_yolo(target)
    device = seg.ultralytics_device(cfg.device)
    imgsz = cfg.imgsz or seg.model_imgsz(model)
    targets = [conditioning_mask(p) for p in mask_paths]
    preds: list[np.ndarray] = []
    with make_progress() as progress:
        task = progress.add_task("segmenting GEN", total=len(image_set))
        for start in range(0, len(image_set), cfg.batch_size):
            idx = range(start, min(start + cfg.batch_size, len(image_set)))
            images = [load_rgb(image_set.path(i)) for i in idx]
            for i, (union, _count) in zip(idx, seg.predict_union_masks(model, images, conf=cfg.conf, imgsz=imgsz,
                                                                       device=device)):
                h, w = targets[i].shape
                preds.append(union if union.shape == (h, w) else resize_mask(union, (w, h)))
            progress.advance(task, len(idx))
    res = mask_f1(preds, targets, empty_as_one=cfg.empty_as_one)
    ci = None
    if cfg.n_boot > 0:
        ci = bootstrap_f1(*mask_counts(preds, targets), n_boot=cfg.n_boot, seed=cfg.seed,
                          empty_as_one=cfg.empty_as_one)
    weights = info.get("path")
    weights_file = Path(weights) if weights else None
    if weights_file is not None and weights_file.is_dir():
        weights_file = seg.weights_in(weights_file)
    result: dict[str, Any] = {
        "schema": "lapgen.eval/1",
        "metric": "f1",
        "key": f"f1_pixel_micro[segmenter={info['name']},conf={cfg.conf}]",
        "variant": "pixel-micro",
        "value": res["micro"],
        "macro": res["macro"],
        **{k: res[k] for k in ("n_scored", "n_both_empty", "empty_as_one", "tp", "fp", "fn")},
        "ci": ci,
        "spread": None,
        "protocol": "pixel-f1@conditioning-resolution",
        "extractor": info["name"],
        "segmenter": info,
        "weights_sha256": file_sha256(weights_file) if weights_file and weights_file.is_file() else None,
        "conf": cfg.conf,
        "imgsz": imgsz,
        "n_gen": len(image_set),
        "n_real": None,
        "gen": str(image_set.root),
        "real": None,
        "instance": None,
        "libraries": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if cfg.instance:
        result["instance"] = instance_f1_yolo_val(model, image_set, targets, imgsz=imgsz, device=device,
                                                  batch_size=cfg.batch_size)
        result["instance"]["key"] = "f1_instance_yolo_val"
    from lapgen.metrics.evaluate import card_labels

    result.update(card_labels(image_set.card))
    result.update({k: v for k, v in cfg.labels.items() if v is not None})
    return result
