"""Spatial control: tool-mask F1 of generated images against their conditioning masks (the pieces that need
no model; `lapgen.models.mask_f1.evaluate_mask_f1` runs the segmenter and puts them together).

docs/metrics.md, section 4. For every image of a generated set (metadata.jsonl rows with
`conditioning_image_file_name`), a YOLOv8-seg segmenter predicts the union of tool instances with confidence
>= `conf` (`lapgen.models.segmentation.predict_union_masks`, `retina_masks=True`, mask value > 0.5). The
prediction is compared with the conditioning mask (value > 127) at the conditioning resolution (predictions
resized with nearest neighbour when sizes differ): pixel micro F1 (headline), macro F1 (empty-mask rule in
`lapgen.metrics.masks`), and an image-level bootstrap interval.

`instance=True` adds the paper code's number, `f1_instance_yolo_val`: each conditioning mask becomes a YOLO
label as in `mask2yolo` (buma13/dgm4miccai24_laparoscopicvideos, `evaluation/controlnet_eval_datasets.py`:
resize to 640x640 bilinear, > 127, the one contour with the most vertices, class 0, written even when it has
only 1 or 2 vertices, as the paper's code writes it), then ultralytics `val` with
`single_cls=True` matches instances at mask IoU 0.5 and reports F1 at the confidence maximising the mean F1
curve. It is instance-level although the paper's text says pixel-wise; only it compares with the paper's 0.71.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.metrics.images import ImageSet

MASK2YOLO_SIZE = 640  # mask2yolo resizes every conditioning mask to 640x640 before contour extraction


@dataclass
class F1Config:
    gen: Path
    segmenter: str | None = None  # registry name, run folder or .pt; None: the default segmenter
    conf: float = 0.25
    imgsz: int | None = None  # None: the segmenter's training size
    empty_as_one: bool = False
    n_boot: int = 1000
    seed: int = 0
    instance: bool = False
    batch_size: int = 16
    device: str = "auto"
    labels: dict[str, Any] = field(default_factory=dict)


def conditioning_mask(path: Path) -> np.ndarray:
    """A binary conditioning mask (0/255, single channel or grey RGB) -> (H, W) bool, foreground > 127."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L") if img.mode in ("1", "P", "LA") else img)
    except OSError as exc:
        raise LapgenError(f"cannot read conditioning mask ({exc})", path=path,
                          hint="re-create the mask or remove its image from the set") from exc
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise LapgenError("conditioning mask is a colour image, not a binary mask", path=path,
                              hint="convert colour label maps by exact class colours first (a grey threshold "
                                   "would also select organs)")
        arr = rgb[..., 0]
    return arr > 127


def mask_pairs(image_set: ImageSet) -> list[Path]:
    """The conditioning mask path of every image (checked to exist) of a generated set."""
    meta = image_set.root / "metadata.jsonl"
    if image_set.records is None:
        raise LapgenError("GEN has no metadata.jsonl, so the conditioning masks are unknown", path=image_set.root,
                          hint="eval f1 needs a ControlNet `lapgen sample` output (conditioning_image_file_name)")
    paths = []
    for rec in image_set.records:
        rel = rec.get("conditioning_image_file_name")
        if not rel:
            raise LapgenError(f"{rec['file_name']} has no conditioning_image_file_name", path=meta,
                              hint="eval f1 needs images generated from masks (ControlNet sampling)")
        path = image_set.root / rel
        if not path.is_file():
            raise LapgenError(f"conditioning mask of {rec['file_name']} is missing", path=path)
        paths.append(path)
    return paths


def mask2yolo_polygon(mask: np.ndarray) -> np.ndarray | None:
    """The paper's label recipe: a (K, 2) polygon normalised to [0, 1], K >= 1, or None for an empty mask.

    As the paper's `mask2yolo`: resize to 640x640 bilinear, > 127, `findContours(RETR_TREE,
    CHAIN_APPROX_SIMPLE)`, and keep the contour with the most vertices (the first on ties). That is
    usually, not always, the largest tool: a straight-edged large region has few vertices. Its comparison
    is against the length of the kept contour after `squeeze()`, which is 2 for a 1-vertex contour (its x
    and y), so a later 2-vertex contour does not replace a 1-vertex one; lapgen follows that too. Contours
    of 1 or 2 vertices (a lone pixel, a thin line) are kept: the paper writes them.
    """
    import cv2

    grey = np.where(mask, 255, 0).astype(np.uint8)
    grey = cv2.resize(grey, (MASK2YOLO_SIZE, MASK2YOLO_SIZE), interpolation=cv2.INTER_LINEAR)
    binary = np.where(grey > 127, 255, 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    chosen, chosen_len = None, 0
    for contour in contours:
        if len(contour) > chosen_len:
            chosen, chosen_len = contour, (2 if len(contour) == 1 else len(contour))
    if chosen is None:  # no region at all
        return None
    return chosen.reshape(-1, 2).astype(np.float64) / MASK2YOLO_SIZE


def mask2yolo_label(mask: np.ndarray) -> str | None:
    """The YOLO label text the paper's `mask2yolo` writes for `mask` ("0 x1 y1 x2 y2 ...", Python float
    repr, no trailing newline), or None when it writes no file (an empty mask).

    With 1 or 2 vertices this is "0 x y" or "0 x1 y1 x2 y2": ultralytics reads neither as a polygon (a
    segment needs more than 6 columns), so its `val` skips a 3-column label file as corrupt and reads a
    5-column one as a box. That is what the paper's code measured, so lapgen writes the same text.
    """
    poly = mask2yolo_polygon(mask)
    if poly is None:
        return None
    return "0 " + " ".join(map(str, poly.ravel().tolist()))


def instance_f1_yolo_val(model: Any, image_set: ImageSet, masks: list[np.ndarray], *, imgsz: int, device: str,
                         batch_size: int) -> dict[str, Any]:
    """ultralytics `val` on the generated images with mask2yolo labels (single class): F1 at IoU 0.5.

    The labels are the paper's, 1- and 2-vertex ones included; how many there are is recorded
    (`labels_by_vertices`), since ultralytics skips a 1-vertex label's image as corrupt and refuses a
    segment dataset holding a 2-vertex (5-column, box-like) row.
    """
    import shutil

    counts = {"none": 0, "1": 0, "2": 0, "3+": 0}
    with tempfile.TemporaryDirectory(prefix="lapgen-f1-val-") as tmp:
        root = Path(tmp) / "data"
        (root / "images" / "val").mkdir(parents=True)
        (root / "labels" / "val").mkdir(parents=True)
        for i, mask in enumerate(masks):
            name = f"{i:06d}"
            shutil.copyfile(image_set.path(i), root / "images" / "val" / f"{name}{image_set.path(i).suffix}")
            text = mask2yolo_label(mask)
            vertices = 0 if text is None else (len(text.split()) - 1) // 2
            counts["none" if text is None else str(vertices) if vertices < 3 else "3+"] += 1
            if text is not None:  # the paper writes no label file for an empty mask (background image)
                (root / "labels" / "val" / f"{name}.txt").write_text(text)
        (root / "data.yaml").write_text(f"path: {root}\ntrain: images/val\nval: images/val\nnames:\n  0: tool\n")
        from lapgen.device import keep_torch_threads

        try:
            with keep_torch_threads():
                metrics = model.val(data=str(root / "data.yaml"), split="val", single_cls=True, imgsz=imgsz,
                                    batch=batch_size, device=device, plots=False, verbose=False, workers=0,
                                    project=str(Path(tmp) / "runs"), name="val", exist_ok=True,
                                    save_json=False)
        except ValueError as exc:
            if "boxes and segments" not in str(exc):
                raise
            raise LapgenError(
                f"{counts['2']} conditioning mask(s) give a 2-vertex label, written as the paper's mask2yolo "
                "writes it, and this ultralytics refuses a segment dataset with such (box-like) rows",
                path=image_set.root, hint="the instance F1 cannot be computed the paper's way for these masks; "
                "use the pixel F1, or masks at the paper's 128 px (upsampled to 640, no 2-vertex contours)") from exc
        seg = metrics.seg
        f1 = np.asarray(seg.f1, dtype=np.float64)
        return {"value": float(f1.mean()) if f1.size else 0.0, "precision": float(seg.mp), "recall": float(seg.mr),
                "map50": float(seg.map50), "single_cls": True, "match_iou": 0.5, "label_recipe": "mask2yolo",
                "labels_by_vertices": counts, "imgsz": imgsz}
