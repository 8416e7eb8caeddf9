"""`lapgen segment convert`: CholecSeg8k and/or ART-Net -> an ultralytics YOLO segmentation dataset.

Output (the `ultralytics` segment dataset layout, docs.ultralytics.com "Instance Segmentation Datasets"):

```
OUT/data.yaml                      path: <absolute OUT>, train: images/train, val: images/val, names: {...}
OUT/images/{train,val}/<key>.png   the source frames, copied unchanged
OUT/labels/{train,val}/<key>.txt   one polygon per tool region; an empty file = no tool
OUT/lapgen.yaml                    card: sources, classes, split videos, rules, counts, round-trip IoU
```

CholecSeg8k is split by video (a surgery is never in both train and val); ART-Net keeps its own
Train/Test split (Test -> val). Class schemes: `tool` (one class, the paper's binary conditioning mask)
or `per-tool` (grasper, hook; ART-Net tools carry no type, see `ARTNET_PER_TOOL_RULES`).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from lapgen import cards, progress
from lapgen.data import artnet, cholecseg8k
from lapgen.data.yolo_seg import (
    DEFAULT_MIN_AREA,
    DEFAULT_MIN_HOLE_AREA,
    label_line,
    mask_iou,
    mask_to_polygons,
    polygons_to_mask,
)
from lapgen.errors import LapgenError
from lapgen.outputs import atomic_file, finalize_output_dir, prepare_output_dir

CLASS_SCHEMES = ("tool", "per-tool")
# per-tool scheme: what happens to ART-Net positives, whose tools have no type label
ARTNET_PER_TOOL_RULES = ("skip", "extra-class")


@dataclass
class ConvertConfig:
    """Options of `lapgen segment convert`."""

    out: Path
    cholecseg8k: Path | None = None  # folder with videoNN/ clips
    artnet: Path | None = None  # folder with Train/ and Test/
    classes: str = "tool"  # "tool" | "per-tool"
    artnet_per_tool: str = "skip"  # per-tool only: "skip" ART-Net positives, or give them class "tool"
    val_videos: list[str] = field(default_factory=list)  # CholecSeg8k videos for val, e.g. ["video12"]
    val_fraction: float = 0.2  # else this fraction of CholecSeg8k videos (>= 1) goes to val, seeded
    seed: int = 0
    min_area: int = DEFAULT_MIN_AREA  # px; smaller regions are dropped
    min_hole_area: int = DEFAULT_MIN_HOLE_AREA  # px; smaller holes are filled
    strict_codes: bool = True  # unknown watershed values are an error (else background)
    overwrite: bool = False


def class_names(classes: str, artnet_per_tool: str = "skip") -> list[str]:
    """Class names by id for a scheme."""
    if classes == "tool":
        return ["tool"]
    if classes == "per-tool":
        return ["grasper", "hook"] + (["tool"] if artnet_per_tool == "extra-class" else [])
    raise LapgenError(f"unknown class scheme {classes!r}", hint=f"use one of {', '.join(CLASS_SCHEMES)}")


def _normalise_video(name: str) -> str:
    digits = "".join(ch for ch in name if ch.isdigit())
    if not digits:
        raise LapgenError(f"not a video id: {name!r}", hint="use names like video12 or 12")
    return f"video{int(digits):02d}"


def split_videos(
    videos: list[str], *, val_videos: list[str], val_fraction: float, seed: int, has_other_val: bool
) -> tuple[list[str], list[str]]:
    """Video-level train/val split of CholecSeg8k videos -> (train videos, val videos)."""
    if val_videos:
        wanted = sorted({_normalise_video(v) for v in val_videos})
        missing = [v for v in wanted if v not in videos]
        if missing:
            raise LapgenError(f"--val-videos {missing} not in the CholecSeg8k folder (it has {videos})")
        val = wanted
    elif not 0.0 <= val_fraction < 1.0:
        raise LapgenError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    elif val_fraction == 0.0 or (len(videos) < 2 and has_other_val):
        val = []
    else:
        if len(videos) < 2:
            raise LapgenError(
                f"CholecSeg8k holds one video ({videos[0]}), so no video-disjoint "
                "validation split is possible",
                hint="add --artnet (its Test split validates) or more videos",
            )
        n_val = min(len(videos) - 1, max(1, round(val_fraction * len(videos))))
        val = sorted(random.Random(seed).sample(sorted(videos), n_val))
    train = [v for v in videos if v not in val]
    if not train:
        raise LapgenError("no CholecSeg8k video left for training", hint="name fewer --val-videos")
    return train, val


def _plan(config: ConvertConfig) -> tuple[list[tuple[str, str, object]], dict]:
    """Find and check all inputs (cheap: headers only) -> [(split, key, item)], split info."""
    if config.cholecseg8k is None and config.artnet is None:
        raise LapgenError("no source given", hint="pass --cholecseg8k PATH and/or --artnet PATH")
    class_names(config.classes, config.artnet_per_tool)
    if config.artnet_per_tool not in ARTNET_PER_TOOL_RULES:
        raise LapgenError(
            f"unknown --artnet-per-tool rule {config.artnet_per_tool!r}",
            hint=f"use one of {', '.join(ARTNET_PER_TOOL_RULES)}",
        )
    items: list[tuple[str, str, object]] = []
    info: dict = {}
    samples = artnet.find_samples(config.artnet) if config.artnet is not None else []
    has_artnet_val = any(s.split == "test" for s in samples)
    if config.cholecseg8k is not None:
        frames = cholecseg8k.find_frames(config.cholecseg8k)
        for frame in frames:
            size = cholecseg8k.image_size(frame.image)
            if cholecseg8k.image_size(frame.watershed) != size:
                cholecseg8k.read_watershed(frame.watershed, expected_size=size)  # raises the one-line error
        train_v, val_v = split_videos(
            cholecseg8k.videos(frames),
            val_videos=config.val_videos,
            val_fraction=config.val_fraction,
            seed=config.seed,
            has_other_val=has_artnet_val,
        )
        info["cholecseg8k"] = {"train_videos": train_v, "val_videos": val_v, "frames": len(frames)}
        items += [("val" if f.video in val_v else "train", f.key, f) for f in frames]
    if samples:
        skipped = 0
        for s in samples:
            if config.classes == "per-tool" and s.positive and config.artnet_per_tool == "skip":
                skipped += 1
                continue
            items.append(("val" if s.split == "test" else "train", s.key, s))
        info["artnet"] = {"samples": len(samples), "positives_skipped_untyped": skipped}
    if not any(split == "val" for split, _, _ in items):
        raise LapgenError(
            "the validation split would be empty",
            hint="name --val-videos, raise --val-fraction, or add --artnet with a Test split",
        )
    return items, info


def _class_masks(item: object, config: ConvertConfig) -> tuple[tuple[int, int], dict[int, np.ndarray]]:
    """-> ((width, height), {class id: (H, W) bool})."""
    if isinstance(item, cholecseg8k.SegFrame):
        size, tools = cholecseg8k.read_frame_masks(item, strict=config.strict_codes)
        if config.classes == "tool":
            return size, {0: tools["grasper"] | tools["hook"]}
        return size, {0: tools["grasper"], 1: tools["hook"]}
    size, mask = artnet.read_tool_mask(item)  # type: ignore[arg-type]
    return size, {2 if config.classes == "per-tool" else 0: mask}


def convert(config: ConvertConfig) -> dict:
    """Write the YOLO dataset at `config.out` (staged, resumable) and return the summary."""
    items, info = _plan(config)
    names = class_names(config.classes, config.artnet_per_tool)
    out = Path(config.out)
    stage = prepare_output_dir(out, overwrite=config.overwrite)
    counts = {s: {"images": 0, "empty": 0, "instances": 0} for s in ("train", "val")}
    ious: list[float] = []
    dropped = 0
    for split, key, item in progress.track(items, "converting"):
        src = item.image  # type: ignore[attr-defined]
        image_dst = stage / "images" / split / f"{key}{src.suffix.lower()}"
        label_dst = stage / "labels" / split / f"{key}.txt"
        size, masks = _class_masks(item, config)
        lines: list[str] = []
        for cls, mask in masks.items():
            polys = mask_to_polygons(mask, min_area=config.min_area, min_hole_area=config.min_hole_area)
            lines += [label_line(cls, p, size) for p in polys]
            if mask.any():
                ious.append(mask_iou(polygons_to_mask(polys, size), mask))
                dropped += int(_count_regions(mask) - len(polys))
        counts[split]["images"] += 1
        counts[split]["instances"] += len(lines)
        counts[split]["empty"] += int(not lines)
        if label_dst.exists() and image_dst.exists():  # done by an interrupted run
            continue
        image_dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, image_dst)
        with atomic_file(label_dst, "w") as fh:  # label last: its presence marks the item complete
            fh.write("".join(line + "\n" for line in lines))
    data = {
        "path": str(out.absolute()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(names)),
    }
    (stage / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    summary = {
        "out": str(out),
        "classes": config.classes,
        "names": names,
        "splits": counts,
        **info,
        "fragments_dropped": dropped,
        "round_trip_iou": {
            "mean": float(np.mean(ious)) if ious else None,
            "min": float(np.min(ious)) if ious else None,
            "masks": len(ious),
        },
    }
    cards.write_card(
        stage,
        cards.make_card(
            "yolo-seg-dataset",
            config=config,
            summary=summary,
            rules={
                "tool_codes": cholecseg8k.TOOL_CODES,
                "ignored_codes": sorted(cholecseg8k.IGNORED_CODES),
                "region": "8-connected region -> one polygon",
                "min_area_px": config.min_area,
                "min_hole_area_px": config.min_hole_area,
                "holes": "keyhole cut",
            },
        ),
    )
    finalize_output_dir(out)
    return summary


def _count_regions(mask: np.ndarray) -> int:
    import cv2

    return int(cv2.connectedComponents(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8)[0] - 1)
