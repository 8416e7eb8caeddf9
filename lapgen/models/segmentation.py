"""The tool segmenter: ultralytics YOLOv8-seg, offline-safe (Iliash et al. 2024 fine-tune it on
CholecSeg8k and annotate CholecT50/Cholec80 frames with the union of its tool instances).

ultralytics reaches for the network in a few places; `lapgen.models.ultralytics_setup.configure_ultralytics`
closes them before ultralytics is used (docs/segmentation.md, "Offline"), and `load_yolo` refuses `*.pt`
names that are not local files (ultralytics would download them). Loading, prediction and training are here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.models.ultralytics_setup import configure_ultralytics, seed_fonts  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from ultralytics import YOLO

# ------------------------------------------------------------------------------------------------ loading


def _builtin_config(name: str) -> bool:
    """Whether `name` is a model config ultralytics ships (e.g. yolov8n-seg.yaml)."""
    from ultralytics.cfg import DEFAULT_CFG_PATH

    cfg_root = Path(DEFAULT_CFG_PATH).parent / "models"
    stem = re.sub(r"(\d+)([nslmx])(?=[-.])", r"\1", name)  # the scale letter is not in the file name
    return any(cfg_root.rglob(name)) or any(cfg_root.rglob(stem))


def weights_in(folder: Path) -> Path | None:
    """The weights file of a segmenter folder: an ultralytics run or a lapgen `segment train` output."""
    for rel in ("weights/best.pt", "best.pt", "weights/last.pt", "last.pt"):
        if (folder / rel).is_file():
            return folder / rel
    pts = sorted(folder.glob("*.pt"))
    return pts[0] if len(pts) == 1 else None


def load_yolo(path_or_yaml: str | Path, *, task: str = "segment") -> "YOLO":
    """A YOLO segmentation model from a `.pt` file, a run folder, or a model config (random weights).

    Configs are local `.yaml` files or names ultralytics ships (`yolov8n-seg.yaml`); never downloads.
    ultralytics checkpoints are pickles: load only files you trust.
    """
    configure_ultralytics()
    from ultralytics import YOLO

    source = Path(str(path_or_yaml)).expanduser()
    if source.is_dir():
        weights = weights_in(source)
        if weights is None:
            raise LapgenError(
                "no YOLO weights (weights/best.pt) in this folder",
                path=source,
                hint="point at a `lapgen segment train` output or a .pt file",
            )
        source = weights
    if source.is_file():
        if source.suffix.lower() not in (".pt", ".yaml", ".yml"):
            raise LapgenError("not a YOLO weights (.pt) or config (.yaml) file", path=source)
        target = str(source)
    elif source.suffix.lower() in (".yaml", ".yml") and _builtin_config(source.name):
        target = source.name
    else:
        raise LapgenError(
            "segmenter weights not found",
            path=source,
            hint="download the .pt file yourself and pass its path (lapgen never downloads "
            "weights), or register it with `lapgen models add NAME PATH`",
        )
    import pickle

    try:
        model = YOLO(target)  # task inferred from the checkpoint / config, then checked
    except (RuntimeError, ValueError, KeyError, AttributeError) as exc:
        raise LapgenError(f"cannot load YOLO model ({exc.__class__.__name__}: {exc})", path=target) from exc
    except (TypeError, EOFError, OSError, pickle.UnpicklingError) as exc:  # ultralytics: TypeError
        raise LapgenError(f"cannot load YOLO model: the file is empty, truncated or not a YOLO checkpoint "
                          f"({exc.__class__.__name__})", path=source,
                          hint="re-export or re-download the .pt file") from exc
    if model.task != task:
        raise LapgenError(
            f"YOLO model is a '{model.task}' model, not a '{task}' model",
            path=target,
            hint="use a YOLO segmentation model (*-seg)",
        )
    return model


def resolve_segmenter(source: str | Path | None) -> tuple[str, dict[str, Any]]:
    """Registry name / path / None (the default segmenter) -> (path or config to `load_yolo`, info)."""
    from lapgen.registry import resolve

    text = "" if source is None else str(source)
    if text.endswith((".yaml", ".yml")) and not Path(text).expanduser().exists():
        configure_ultralytics()
        if _builtin_config(Path(text).name):  # an ultralytics model config: random weights
            return Path(text).name, {"name": Path(text).name, "config": Path(text).name, "random_init": True}
    entry = resolve(None if source is None else str(source), kind="segmenter")
    info = {"name": entry.name, "source": entry.source, "random_init": False}
    if entry.path is not None:
        info["path"] = str(entry.path)
        info["random_init"] = entry.path.suffix.lower() in (".yaml", ".yml")
        return str(entry.path), info
    config = entry.options.get("yaml")
    if config:
        info.update(config=config, random_init=True)
        return config, info
    raise LapgenError(
        f"segmenter '{entry.name}' has no local weights",
        hint=f"point it at a .pt file with `lapgen models add {entry.name} PATH`",
    )


def ultralytics_device(device: str) -> str:
    """lapgen's `auto|cpu|cuda|cuda:N` -> ultralytics' `cpu|N`."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LapgenError(
                f"--device {device} asked for but CUDA is not available", hint="use --device cpu"
            )
        return device.split(":", 1)[1] if ":" in device else "0"
    raise LapgenError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N")


def model_imgsz(model: "YOLO", default: int = 640) -> int:
    """The image size a model was trained at (its checkpoint's train args), else `default`."""
    args = getattr(model, "ckpt", None) or {}
    size = (args.get("train_args") or {}).get("imgsz") if isinstance(args, dict) else None
    size = size or (model.overrides or {}).get("imgsz")
    if isinstance(size, (list, tuple)):
        size = max(size)
    return int(size) if size else default


# ------------------------------------------------------------------------------------------------ predict


def predict_union_masks(
    model: "YOLO",
    images: list[np.ndarray],
    *,
    conf: float = 0.25,
    imgsz: int = 640,
    device: str = "cpu",
    iou: float = 0.7,
) -> list[tuple[np.ndarray, int]]:
    """RGB uint8 images `(H, W, 3)` -> per image `(union tool mask (H, W) bool, instance count)`.

    One ultralytics batch; `retina_masks=True` gives masks at each image's own size (un-letterboxed).
    """
    if not images:
        return []
    from lapgen.device import keep_torch_threads

    half = device != "cpu"
    bgr = [np.ascontiguousarray(img[..., ::-1]) for img in images]  # ultralytics reads arrays as BGR
    with keep_torch_threads():
        results = model.predict(
            bgr,
            conf=conf,
            iou=iou,
            imgsz=imgsz,
            device=device,
            half=half,
            retina_masks=True,
            verbose=False,
            save=False,
            stream=False,
        )
    out = []
    for img, res in zip(images, results):
        h, w = img.shape[:2]
        if res.masks is None or len(res.masks) == 0:
            out.append((np.zeros((h, w), bool), 0))
            continue
        union = (res.masks.data > 0.5).any(dim=0).cpu().numpy()  # (N, h, w) uint8/float -> (h, w)
        if union.shape != (h, w):  # older ultralytics: letterboxed size; resize NEAREST
            from lapgen.data.masks import resize_mask

            union = resize_mask(union, (w, h))
        out.append((union, int(len(res.masks))))
    return out


# ------------------------------------------------------------------------------------------------ train


@dataclass
class TrainConfig:
    """Options of `lapgen segment train` (ultralytics train arguments where the names match)."""

    data: Path  # a `segment convert` folder (with data.yaml) or a data.yaml
    out: Path  # run folder: weights/best.pt, weights/last.pt, results.csv, lapgen.yaml
    base: str = "yolov8n-seg"  # segmenter registry name, .pt path, or model config (.yaml)
    epochs: int = 50
    imgsz: int = 640
    batch: int = 16
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    patience: int = 50
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    plots: bool = True
    register_name: str | None = None  # registry name of the result (becomes the default segmenter)
    overwrite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # further ultralytics train arguments
    callbacks: dict[str, Any] = field(default_factory=dict)  # ultralytics event name -> function(trainer)


def data_yaml(data: str | Path) -> Path:
    """The data.yaml of a YOLO dataset folder (or the file itself), checked to exist."""
    data = Path(data)
    path = data / "data.yaml" if data.is_dir() else data
    if not path.is_file():
        raise LapgenError(
            "no data.yaml found", path=data, hint="pass a `lapgen segment convert` output folder"
        )
    return path


def check_dataset(data: str | Path) -> dict[str, Any]:
    """Run ultralytics' own dataset check (`check_det_dataset`, no download) -> its parsed dict."""
    configure_ultralytics()
    from ultralytics.data.utils import check_det_dataset

    path = data_yaml(data)
    try:
        return check_det_dataset(str(path), autodownload=False)
    except (FileNotFoundError, SyntaxError, KeyError, ValueError) as exc:
        raise LapgenError(
            f"ultralytics rejects the dataset: {' '.join(str(exc).split())[:300]}",
            path=path,
            hint="re-create it with `lapgen segment convert`",
        ) from exc


def _float_metrics(metrics: dict[str, Any] | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float, np.floating))}


def train(config: TrainConfig) -> dict[str, Any]:
    """Train a YOLO segmenter with ultralytics (staged, resumable) -> summary with validation metrics."""
    import torch

    from lapgen import cards, progress, registry
    from lapgen.device import keep_torch_threads
    from lapgen.outputs import file_sha256, finalize_output_dir, prepare_output_dir

    if config.register_name is not None:
        registry.check_name(config.register_name)
    if config.epochs < 1 or config.imgsz < 32 or config.batch < 1:
        raise LapgenError("--epochs and --batch must be >= 1 and --imgsz >= 32")
    info = check_dataset(config.data)
    yaml_path = data_yaml(config.data)
    device = ultralytics_device(config.device)
    target, base_info = resolve_segmenter(config.base)
    model = load_yolo(target)  # fails before any staging on a bad base
    out = Path(config.out)
    stage = prepare_output_dir(out, overwrite=config.overwrite)
    last = stage / "weights" / "last.pt"
    args = dict(
        data=str(yaml_path.absolute()),
        epochs=config.epochs,
        imgsz=config.imgsz,
        batch=config.batch,
        device=device,
        workers=config.workers,
        seed=config.seed,
        deterministic=True,
        patience=config.patience,
        pretrained=not base_info["random_init"],
        amp=bool(config.amp and device != "cpu"),
        plots=config.plots,
        verbose=False,
        project=str(stage.parent.absolute()),
        name=stage.name,
        exist_ok=True,
    )
    args.update(config.extra)
    deterministic = torch.are_deterministic_algorithms_enabled()
    resuming = last.is_file()  # an interrupted run: ultralytics resumes epochs, optimiser and EMA
    if resuming:
        model = load_yolo(last)
    with progress.make_progress() as bar:
        task = bar.add_task("training", total=config.epochs)

        def on_epoch_end(trainer: Any) -> None:  # ultralytics callback, per finished epoch
            # ultralytics fires it once more after the final validation of best.pt: stay at the total
            bar.update(task, completed=min(trainer.epoch + 1, config.epochs))

        model.add_callback("on_fit_epoch_end", on_epoch_end)
        for event, function in config.callbacks.items():
            model.add_callback(event, function)
        with keep_torch_threads() as threads:
            if device == "cpu" and config.workers == 0:
                # ultralytics keeps a core free for data-loading workers; without workers, use every core
                model.add_callback("on_train_start", lambda trainer: torch.set_num_threads(threads))
            try:
                if resuming:
                    model.train(resume=True, device=device, workers=config.workers)
                else:
                    model.train(**args)
            finally:
                torch.use_deterministic_algorithms(deterministic)
    trainer = model.trainer
    best = stage / "weights" / "best.pt"
    if not best.is_file():
        best = last
    metrics = _float_metrics(getattr(trainer, "metrics", None))
    data_card = cards.read_card(yaml_path.parent, required=False) or {}
    card = cards.make_card(
        "segmenter",
        description=f"YOLO tool segmenter ({base_info['name']}) trained on {yaml_path.parent.name}",
        weights=str(best.relative_to(stage)),
        weights_sha256=file_sha256(best),
        task="segment",
        names=[info["names"][k] for k in sorted(info["names"])],
        imgsz=config.imgsz,
        base=base_info,
        data={"path": str(yaml_path.parent.absolute()), "summary": data_card.get("summary")},
        config={k: v for k, v in vars(config).items() if k != "callbacks"},
        metrics=metrics,
        library="ultralytics",
        resumed=resuming,
    )
    cards.write_card(stage, card)
    finalize_output_dir(out)
    summary = {
        "out": str(out),
        "weights": str(out / card["weights"]),
        "metrics": metrics,
        "names": card["names"],
        "epochs": config.epochs,
    }
    if config.register_name is not None:
        registry.register_artifact(config.register_name, "segmenter", out, card)
        summary["registered"] = config.register_name
    return summary
