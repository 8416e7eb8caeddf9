"""`lapgen segment evaluate`: how well a tool segmenter finds tools, as pixel F1 against ground truth.

Every F1 that lapgen reports for generated images (`lapgen eval f1`, the video's mask adherence) is
measured WITH a segmenter, so it means something only if that segmenter finds tools on real frames. This
scores a segmenter on a split of a `lapgen segment convert` dataset (by default `val`: CholecSeg8k's held-out
videos and ART-Net's Test split), whose label polygons are the ground truth:

- ground truth: the union of an image's label polygons, each filled with `cv2.fillPoly` as ultralytics
  rasterises them (a keyhole-cut hole stays empty);
- prediction: the union of the segmenter's tool instances with confidence >= `conf`
  (`predict_union_masks`, masks at the image's own size);
- pixel F1 (Dice) pooled over the images (micro, the headline) and the mean of per-image F1 (macro),
  with `lapgen.metrics.masks.mask_f1`, overall and per source (`cholecseg8k`, `artnet`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class SegmenterEvalConfig:
    data: Path  # a `lapgen segment convert` folder
    segmenter: str | None = None  # registry name or path; None: the default segmenter
    split: str = "val"
    conf: float = 0.25
    iou: float = 0.7
    imgsz: int | None = None  # None: the segmenter's training size
    batch: int = 16
    device: str = "auto"


def label_mask(label: Path, width: int, height: int) -> np.ndarray:
    """(H, W) bool: the union of a YOLO-seg label file's polygons (no file: background only).

    Coordinates are rounded back to the pixel outlines `lapgen segment convert` traced
    (`lapgen.data.yolo_seg.read_label_file`) and filled with `cv2.fillPoly` as ultralytics does.
    """
    from lapgen.data.yolo_seg import polygons_to_mask, read_label_file

    try:
        polygons = [poly for _cls, poly in read_label_file(label, (width, height))]
    except ValueError as exc:
        raise LapgenError("a label line holds a value that is not a number", path=label,
                          hint="re-create the dataset with `lapgen segment convert`") from exc
    return polygons_to_mask(polygons, (width, height))


def source_of(key: str, cholecseg8k_videos: set[str]) -> str:
    """Which release an image of a converted dataset came from, by its key (`video12_000080`, `artnet_...`)."""
    if key.startswith("artnet_"):
        return "artnet"
    if key.split("_", 1)[0] in cholecseg8k_videos:
        return "cholecseg8k"
    return "other"


def evaluate_segmenter(config: SegmenterEvalConfig) -> dict[str, Any]:
    """Pixel F1 of a segmenter on one split of a converted dataset -> summary (plain data)."""
    from PIL import Image

    from lapgen.cards import read_card
    from lapgen.metrics.masks import mask_f1
    from lapgen.models.segmentation import (
        data_yaml, load_yolo, model_imgsz, predict_union_masks, resolve_segmenter, ultralytics_device,
    )
    from lapgen.progress import track

    if not 0 <= config.conf <= 1:
        raise LapgenError(f"--conf must lie in [0, 1] (got {config.conf})")
    root = data_yaml(config.data).parent
    folder = root / "images" / config.split
    if not folder.is_dir():
        raise LapgenError(f"the dataset has no '{config.split}' split", path=root,
                          hint="pass --split train or val, or re-create it with `lapgen segment convert`")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise LapgenError(f"the '{config.split}' split has no images", path=folder)
    summary = (read_card(root, required=False) or {}).get("summary") or {}
    seg8k = summary.get("cholecseg8k") or {}
    videos = set(seg8k.get("train_videos", [])) | set(seg8k.get("val_videos", []))
    target, info = resolve_segmenter(config.segmenter)
    model = load_yolo(target)
    imgsz = config.imgsz or model_imgsz(model)
    device = ultralytics_device(config.device)
    preds, truths, sources = [], [], []
    batches = [images[i:i + config.batch] for i in range(0, len(images), config.batch)]
    for batch in track(batches, "segmenting"):
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in batch]
        for path, array, (pred, _n) in zip(batch, arrays, predict_union_masks(
                model, arrays, conf=config.conf, iou=config.iou, imgsz=imgsz, device=device)):
            h, w = array.shape[:2]
            preds.append(pred)
            truths.append(label_mask(root / "labels" / config.split / f"{path.stem}.txt", w, h))
            sources.append(source_of(path.stem, videos))
    result: dict[str, Any] = {
        "segmenter": info["name"],
        "data": str(root),
        "split": config.split,
        "conf": config.conf,
        "iou": config.iou,
        "imgsz": imgsz,
        "overall": mask_f1(preds, truths),
        "by_source": {},
    }
    for src in sorted(set(sources)):
        idx = [i for i, s in enumerate(sources) if s == src]
        result["by_source"][src] = mask_f1([preds[i] for i in idx], [truths[i] for i in idx])
    return result
