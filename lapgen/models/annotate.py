"""`lapgen segment annotate` and `lapgen segment predict`: tool masks from a YOLO segmenter.

Both write, per image, the binary union of all predicted tool instances as a 0/255 single-channel PNG
at the image's own resolution (ultralytics `retina_masks=True`: un-letterboxed), the paper's 2024
ControlNet conditioning (Iliash et al. 2024, and the layout of the paper's ControlNet dataset in
buma13/dgm4miccai24_laparoscopicvideos; docs/data-formats.md, "Frames dataset").

- annotate: frames dataset -> ControlNet dataset. Images are carried over (hard link, else copy), masks
  go to `masks/<video>/<frame>.png`, `metadata.jsonl` adds `conditioning_image_file_name`; frames without
  any tool are dropped (the paper kept 84,857 samples this way) unless `keep_empty`.
- predict: any folder of images (or a dataset's `metadata.jsonl` images) -> `MASKS/<relative path>.png`
  plus `metadata.jsonl` (`file_name` = mask, `image` = source image, `instances`, `tool_fraction`).

Work is batched and resumable: every finished batch appends its results to `progress.jsonl` in the
staging folder, and a re-run skips what is already there. The staging folder also records the options
that shape the masks (source, split, segmenter, conf, iou, imgsz; `outputs.claim_stage`), and a re-run
with other values is refused rather than mixing masks of two settings. `keep_empty` only decides what
the final dataset holds, so it may change between an interrupted run and its re-run.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from lapgen import cards, progress
from lapgen.data.masks import write_mask
from lapgen.errors import LapgenError
from lapgen.outputs import claim_stage, finalize_output_dir, prepare_output_dir, release_stage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
PROGRESS = "progress.jsonl"
# (RGB images) -> [(union mask (H, W) bool, instance count)]
Predictor = Callable[[list[np.ndarray]], list[tuple[np.ndarray, int]]]


@dataclass
class MaskConfig:
    """Options shared by annotate and predict."""

    source: Path  # frames dataset (annotate) or image folder (predict)
    out: Path
    segmenter: str | None = None  # registry name / path; None = the default segmenter
    conf: float = 0.25  # ultralytics confidence threshold
    iou: float = 0.7  # ultralytics NMS IoU threshold
    imgsz: int | None = None  # inference size; None = the segmenter's training size
    batch: int = 16
    device: str = "auto"
    keep_empty: bool = False  # annotate only: keep frames without a tool (with an empty mask)
    split: str | None = None  # annotate only: one split of the frames dataset
    overwrite: bool = False


def mask_name(file_name: str) -> str:
    """`images/VID01/000012.png` -> `masks/VID01/000012.png` (frames-dataset layout)."""
    parts = PurePosixPath(file_name).parts
    rest = PurePosixPath(*parts[1:]) if parts[0] == "images" and len(parts) > 1 else PurePosixPath(file_name)
    return str(PurePosixPath("masks") / rest.with_suffix(".png"))


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _check(config: MaskConfig) -> None:
    if not 0.0 <= config.conf <= 1.0 or not 0.0 <= config.iou <= 1.0:
        raise LapgenError("--conf and --iou must be in [0, 1]")
    if config.batch < 1 or (config.imgsz is not None and config.imgsz < 32):
        raise LapgenError("--batch must be >= 1 and --imgsz >= 32")


def load_predictor(config: MaskConfig) -> tuple[Predictor, dict[str, Any]]:
    """Resolve and load the segmenter (one-line errors before any output) -> (predictor, card info)."""
    from lapgen.models.segmentation import (
        load_yolo,
        model_imgsz,
        predict_union_masks,
        resolve_segmenter,
        ultralytics_device,
    )

    target, info = resolve_segmenter(config.segmenter)
    device = ultralytics_device(config.device)
    model = load_yolo(target)
    if info.get("random_init"):
        progress.warn(
            f"segmenter {info['name']} has random weights (no weights file found); its masks are noise"
        )
    imgsz = config.imgsz or model_imgsz(model)
    info.update(imgsz=imgsz, conf=config.conf, iou=config.iou, device=device, names=dict(model.names))

    def predict(images: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        return predict_union_masks(
            model, images, conf=config.conf, iou=config.iou, imgsz=imgsz, device=device
        )

    return predict, info


def _read_progress(stage: Path) -> dict[str, dict]:
    done = {}
    path = stage / PROGRESS
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption: redo that item
                continue
            done[row["key"]] = row
    return done


def _signature(config: MaskConfig, source: Path, info: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: everything that shapes the masks."""
    segmenter = {k: v for k, v in info.items() if k not in ("device", "conf", "iou", "imgsz")}
    return {
        "source": str(source.absolute()),
        "segmenter": segmenter,
        "conf": config.conf,
        "iou": config.iou,
        "imgsz": info.get("imgsz", config.imgsz),
        **extra,
    }


def _run(
    items: list[tuple[str, Path, str]],
    stage: Path,
    predict: Predictor,
    batch: int,
    write: Callable[[str, Path, str, np.ndarray, int], dict],
    description: str,
) -> dict[str, dict]:
    """Predict `items` = [(key, image path, mask rel path)] in batches; resumable via progress.jsonl."""
    from lapgen.data.frames import load_image

    done = _read_progress(stage)
    todo = [it for it in items if it[0] not in done]
    with open(stage / PROGRESS, "a", encoding="utf-8") as log, progress.make_progress() as bar:
        task = bar.add_task(description, total=len(items), completed=len(items) - len(todo))
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            images = [np.asarray(load_image(path)) for _, path, _ in chunk]  # (H, W, 3) uint8 RGB
            for (key, path, rel), (mask, count) in zip(chunk, predict(images)):
                row = {"key": key, **write(key, path, rel, mask, count)}
                log.write(json.dumps(row) + "\n")
                done[key] = row
            log.flush()
            bar.advance(task, len(chunk))
    return done


def annotate(config: MaskConfig, predictor: tuple[Predictor, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Frames dataset -> ControlNet dataset with binary tool masks (see module doc) -> summary."""
    from lapgen.data.frames import read_records, record_line

    _check(config)
    source = Path(config.source)
    records = read_records(source, config.split)
    predict, info = predictor or load_predictor(config)
    stage = prepare_output_dir(config.out, overwrite=config.overwrite)
    claim_stage(stage, _signature(config, source, info, split=config.split))
    items = [
        (str(i), source / rec["file_name"], mask_name(rec["file_name"])) for i, rec in enumerate(records)
    ]

    def write(key: str, path: Path, rel: str, mask: np.ndarray, count: int) -> dict:
        write_mask(stage / rel, mask)  # every mask; which frames stay is decided at the end
        return {"instances": count, "tool_pixels": int(mask.sum())}

    done = _run(items, stage, predict, config.batch, write, "annotating")
    keep = [done[str(i)]["tool_pixels"] > 0 or config.keep_empty for i in range(len(records))]
    if not any(keep):
        shutil.rmtree(stage, ignore_errors=True)  # a finished run with nothing to keep: leave nothing
        raise LapgenError(
            f"the segmenter found no tool in any of the {len(records)} frames",
            path=source,
            hint="lower --conf, check the segmenter, or pass --keep-empty",
        )
    lines, kept, instances = [], 0, 0
    for i, rec in enumerate(records):
        instances += done[str(i)]["instances"]
        if keep[i]:
            kept += 1
            _link_or_copy(items[i][1], stage / rec["file_name"])
            lines.append(record_line({**rec, "conditioning_image_file_name": items[i][2]}) + "\n")
        else:
            (stage / items[i][2]).unlink(missing_ok=True)
    _remove_empty_dirs(stage)
    (stage / "metadata.jsonl").write_text("".join(lines), encoding="utf-8")
    empty = sum(1 for i in range(len(records)) if done[str(i)]["tool_pixels"] == 0)
    summary = {
        "out": str(config.out),
        "frames": len(records),
        "kept": kept,
        "dropped_empty": len(records) - kept,
        "empty": empty,
        "instances": instances,
    }
    parent = cards.read_card(source, required=False) or {}
    return _publish(
        stage,
        config.out,
        cards.make_card(
            "frames-dataset",
            conditioning={
                "kind": "tool-mask",
                "format": "binary 0/255 PNG, union of instances",
                "segmenter": info,
            },
            parent={
                "path": str(source.absolute()),
                "kind": parent.get("kind"),
                "created": parent.get("created"),
            },
            inherited={k: parent[k] for k in ("prompt_format", "resolution", "sources") if k in parent},
            config=config,
            summary=summary,
        ),
        summary,
    )


def _publish(stage: Path, out: str | Path, card: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Finish a run: write its card, drop the progress log, release the staging folder and move it to `out`."""
    cards.write_card(stage, card)
    (stage / PROGRESS).unlink()
    release_stage(stage)
    finalize_output_dir(out)
    return summary


def _remove_empty_dirs(root: Path) -> None:
    """Remove folders under `root` left empty by dropped frames (deepest first)."""
    for folder, _dirs, _files in os.walk(root, topdown=False):
        if Path(folder) != root and not any(Path(folder).iterdir()):
            Path(folder).rmdir()


def list_images(folder: Path) -> list[str]:
    """Relative POSIX paths of the images to segment: a dataset's `file_name`s, else every image file."""
    if not folder.is_dir():
        raise LapgenError("image folder not found", path=folder)
    meta = folder / "metadata.jsonl"
    if meta.is_file():
        from lapgen.data.frames import read_records

        names = [rec["file_name"] for rec in read_records(folder)]
    else:
        names = sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
    if not names:
        raise LapgenError(
            "no images (png, jpg, ...) found in this folder",
            path=folder,
            hint="point at a folder of images or a dataset with metadata.jsonl",
        )
    return names


def predict_folder(
    config: MaskConfig, predictor: tuple[Predictor, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Masks for every image of a folder (see module doc) -> summary."""
    _check(config)
    source = Path(config.source)
    names = list_images(source)
    predict, info = predictor or load_predictor(config)
    stage = prepare_output_dir(config.out, overwrite=config.overwrite)
    claim_stage(stage, _signature(config, source, info))
    items = [(name, source / name, str(PurePosixPath(name).with_suffix(".png"))) for name in names]

    def write(key: str, path: Path, rel: str, mask: np.ndarray, count: int) -> dict:
        write_mask(stage / rel, mask)
        return {"file_name": rel, "image": key, "instances": count, "tool_fraction": float(mask.mean())}

    done = _run(items, stage, predict, config.batch, write, "segmenting")
    rows = [{k: v for k, v in done[name].items() if k != "key"} for name in names]
    (stage / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = {
        "out": str(config.out),
        "images": len(names),
        "empty": sum(1 for r in rows if r["instances"] == 0),
        "instances": sum(r["instances"] for r in rows),
    }
    return _publish(
        stage,
        config.out,
        cards.make_card(
            "mask-set",
            source={"path": str(source.absolute())},
            segmenter=info,
            config=config,
            summary=summary,
        ),
        summary,
    )
