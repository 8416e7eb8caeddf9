"""`lapgen segment convert | train | evaluate | annotate | predict`: the YOLOv8-seg tool segmenter.

Heavy libraries (ultralytics, torch, cv2) are imported inside the command bodies only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

segment_app = typer.Typer(
    help="Tool segmentation: convert CholecSeg8k/ART-Net, train YOLOv8-seg, "
    "annotate frames with tool masks, predict masks.",
    no_args_is_help=True,
)


def _print(summary: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        from lapgen import progress

        for line in lines:
            progress.stdout.print(line, highlight=False)


@segment_app.command("convert")
def convert_cmd(
    out: Path = typer.Option(..., "--out", help="Output YOLO dataset folder (data.yaml, images/, labels/)."),
    cholecseg8k: Optional[Path] = typer.Option(
        None, "--cholecseg8k", help="CholecSeg8k folder (videoNN/...)."
    ),
    artnet: Optional[Path] = typer.Option(None, "--artnet", help="ART-Net folder (Train/, Test/)."),
    classes: str = typer.Option(
        "tool", "--classes", help="Class scheme: tool (one class) or per-tool (grasper, hook)."
    ),
    artnet_per_tool: str = typer.Option(
        "skip",
        "--artnet-per-tool",
        help="With --classes per-tool, ART-Net "
        "tools have no type: skip its positives, or extra-class (class 'tool').",
    ),
    val_videos: Optional[str] = typer.Option(
        None, "--val-videos", help="Comma-separated CholecSeg8k videos for validation (e.g. video12,video48)."
    ),
    val_fraction: float = typer.Option(
        0.2, "--val-fraction", help="Else this fraction of CholecSeg8k videos (seeded) validates."
    ),
    min_area: int = typer.Option(16, "--min-area", help="Drop tool regions smaller than this (pixels)."),
    min_hole_area: int = typer.Option(16, "--min-hole-area", help="Fill holes smaller than this (pixels)."),
    ignore_unknown_codes: bool = typer.Option(
        False,
        "--ignore-unknown-codes",
        help="Treat watershed values outside the class table as background instead of failing.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the video split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Write an ultralytics YOLO segmentation dataset from CholecSeg8k and/or ART-Net."""
    from lapgen.data.yolo_convert import ConvertConfig, convert

    config = ConvertConfig(
        out=out,
        cholecseg8k=cholecseg8k,
        artnet=artnet,
        classes=classes,
        artnet_per_tool=artnet_per_tool,
        val_videos=[v for v in (val_videos or "").split(",") if v.strip()],
        val_fraction=val_fraction,
        seed=seed,
        min_area=min_area,
        min_hole_area=min_hole_area,
        strict_codes=not ignore_unknown_codes,
        overwrite=overwrite,
    )
    s = convert(config)
    tr, va = s["splits"]["train"], s["splits"]["val"]
    _print(
        s,
        as_json,
        [
            f"wrote {out}: train {tr['images']} images ({tr['instances']} tool polygons, "
            f"{tr['empty']} without tool), "
            f"val {va['images']} images ({va['instances']} polygons, {va['empty']} without tool)",
            f"classes: {', '.join(s['names'])}; round-trip IoU min {s['round_trip_iou']['min']}",
        ],
    )


@segment_app.command("train")
def train_cmd(
    data: Path = typer.Option(..., "--data", help="YOLO dataset from `lapgen segment convert`."),
    out: Path = typer.Option(..., "--out", help="Run folder (weights/best.pt, results.csv, lapgen.yaml)."),
    name: Optional[str] = typer.Option(
        None, "--name", help="Register the result under this name (it becomes the default segmenter)."
    ),
    base: str = typer.Option(
        "yolov8n-seg",
        "--base",
        help="Start from: segmenter name, .pt file, or model config .yaml (random weights).",
    ),
    epochs: int = typer.Option(50, "--epochs"),
    imgsz: int = typer.Option(640, "--imgsz", help="Training image size (pixels)."),
    batch: int = typer.Option(16, "--batch"),
    workers: int = typer.Option(2, "--workers", help="Data-loading worker processes."),
    patience: int = typer.Option(50, "--patience", help="Early-stopping patience (epochs)."),
    mosaic: Optional[float] = typer.Option(
        None, "--mosaic", help="ultralytics mosaic augmentation probability (default: ultralytics' 1.0)."
    ),
    warmup_epochs: Optional[float] = typer.Option(
        None, "--warmup-epochs", help="ultralytics warm-up epochs (default: ultralytics' 3)."
    ),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="Mixed precision on CUDA."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write ultralytics' training plots."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Train a YOLO segmenter (ultralytics, offline) and register it."""
    from lapgen.models.segmentation import TrainConfig, train

    s = train(
        TrainConfig(
            data=data,
            out=out,
            base=base,
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            device=device,
            workers=workers,
            seed=seed,
            patience=patience,
            amp=amp,
            plots=plots,
            register_name=name,
            overwrite=overwrite,
            extra={k: v for k, v in (("mosaic", mosaic), ("warmup_epochs", warmup_epochs)) if v is not None},
        )
    )
    m = s["metrics"]
    _print(
        s,
        as_json,
        [
            f"trained {out} ({s['epochs']} epochs): mask mAP50 {m.get('metrics/mAP50(M)', 'n/a')}, "
            f"mAP50-95 {m.get('metrics/mAP50-95(M)', 'n/a')}"
            + (f"; registered as '{s['registered']}'" if "registered" in s else "")
        ],
    )


def _mask_options(**kwargs):
    from lapgen.models.annotate import MaskConfig

    return MaskConfig(**kwargs)


@segment_app.command("annotate")
def annotate_cmd(
    data: Path = typer.Option(..., "--data", help="Frames dataset (from `lapgen prepare`)."),
    out: Path = typer.Option(..., "--out", help="Output ControlNet dataset folder."),
    segmenter: Optional[str] = typer.Option(
        None, "--segmenter", help="Segmenter name or path (default: the registry's default segmenter)."
    ),
    conf: float = typer.Option(0.25, "--conf", help="Confidence threshold of tool instances."),
    iou: float = typer.Option(0.7, "--iou", help="NMS IoU threshold."),
    imgsz: Optional[int] = typer.Option(
        None, "--imgsz", help="Inference size (default: the segmenter's training size)."
    ),
    batch: int = typer.Option(16, "--batch"),
    keep_empty: bool = typer.Option(False, "--keep-empty", help="Keep frames without any tool (empty mask)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split (train, val, test)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Add binary tool masks to a frames dataset (the ControlNet training set); drops tool-less frames."""
    from lapgen.models.annotate import annotate

    s = annotate(
        _mask_options(
            source=data,
            out=out,
            segmenter=segmenter,
            conf=conf,
            iou=iou,
            imgsz=imgsz,
            batch=batch,
            device=device,
            keep_empty=keep_empty,
            split=split,
            overwrite=overwrite,
        )
    )
    _print(
        s,
        as_json,
        [
            f"wrote {out}: {s['kept']} of {s['frames']} frames with masks; "
            f"{s['empty']} without a tool ({s['dropped_empty']} dropped)"
        ],
    )


@segment_app.command("predict")
def predict_cmd(
    images: Path = typer.Argument(..., help="Folder of images (or a dataset with metadata.jsonl)."),
    out: Path = typer.Option(..., "--out", help="Output folder of masks."),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", help="Segmenter name or path."),
    conf: float = typer.Option(0.25, "--conf", help="Confidence threshold of tool instances."),
    iou: float = typer.Option(0.7, "--iou", help="NMS IoU threshold."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Inference size (default: the segmenter's)."),
    batch: int = typer.Option(16, "--batch"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Write a binary tool mask (0/255 PNG, image resolution) for every image of a folder."""
    from lapgen.models.annotate import predict_folder

    s = predict_folder(
        _mask_options(
            source=images,
            out=out,
            segmenter=segmenter,
            conf=conf,
            iou=iou,
            imgsz=imgsz,
            batch=batch,
            device=device,
            overwrite=overwrite,
        )
    )
    _print(s, as_json, [f"wrote {out}: {s['images']} masks ({s['empty']} without a tool)"])


@segment_app.command("evaluate")
def evaluate_cmd(
    data: Path = typer.Option(..., "--data", help="A `lapgen segment convert` dataset (its labels are the truth)."),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", help="Segmenter name or path (default: the "
                                            "registry's default segmenter)."),
    split: str = typer.Option("val", "--split", help="Which split to score (train or val)."),
    conf: float = typer.Option(0.25, "--conf", help="Confidence threshold of tool instances."),
    iou: float = typer.Option(0.7, "--iou", help="NMS IoU threshold."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Inference size (default: the segmenter's)."),
    batch: int = typer.Option(16, "--batch"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Pixel F1 of a segmenter against a converted dataset's ground-truth masks, overall and per source."""
    from lapgen.models.segmenter_eval import SegmenterEvalConfig, evaluate_segmenter

    r = evaluate_segmenter(SegmenterEvalConfig(data=data, segmenter=segmenter, split=split, conf=conf, iou=iou,
                                               imgsz=imgsz, batch=batch, device=device))
    lines = [f"{r['segmenter']} on {r['split']} of {data}: pixel F1 {r['overall']['micro']:.3f} "
             f"(per-image mean {r['overall']['macro']:.3f}, {r['overall']['n_images']} images)"]
    lines += [f"  {src}: pixel F1 {v['micro']:.3f} ({v['n_images']} images)" for src, v in r["by_source"].items()]
    _print(r, as_json, lines)


def register(app: typer.Typer) -> None:
    app.add_typer(segment_app, name="segment")
