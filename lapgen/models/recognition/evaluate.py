"""`lapgen eval map`: run a Rendezvous recognizer over a labelled image set and score it.

The set is a generated set (`lapgen sample`: each image carries the triplet ids of the prompt it was
generated from) or a prepared CholecT50 frames dataset split (the paper's "CholecT50 (RDV)" row).
Protocol (docs/metrics-map.md; CAMMA-public/rendezvous run.py, CAMMA-public/ivtmetrics):
- scores = sigmoid of the logits; AP_ivt, AP_iv, AP_it from the triplet logits through the official maps;
  AP_i, AP_v, AP_t from the tool / verb / target heads (`components_from="heads"`, the RDV paper), or all
  from the triplet logits (`"triplet"`, the CholecTriplet challenge, usually with `ignore_null`);
- mode `video` (CholecT50 benchmark: AP per video, averaged) or `global` (all frames pooled). `auto`
  uses `video` for frames datasets and `global` for generated sets: the paper put every generated image
  into one pseudo-video, so its action mAP equals lapgen's `map[global,ivt]`;
- classes without a positive: `absent_classes="ignore"` (left out; ivtmetrics on GitHub) or `"zero"` (AP 0;
  ivtmetrics 0.1.5 from PyPI with current scikit-learn), recorded, and named in the key when "zero";
- confidence: percentile bootstrap, resampling whole videos when the set has >= 2, else frames
  (docs/metrics.md, "Confidence"); B, seed, unit and method are recorded;
- the recognizer runs in fp32 with TF32 switched off (`lapgen.metrics.precision.strict_fp32`).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError

SCHEMA = "lapgen.eval/1"
ORDER = ("ivt", "i", "v", "t", "iv", "it")


@dataclass
class MapEvalConfig:
    images: str  # generated set or frames dataset folder
    recognizer: str | None = None  # registry name, path or None (the default recognizer)
    split: str | None = None  # None: "test" for frames datasets with splits, all images otherwise
    mode: str = "auto"  # auto | video | global
    ignore_null: bool = False
    absent_classes: str = "ignore"  # ignore (ivtmetrics on GitHub) | zero (ivtmetrics 0.1.5 from PyPI)
    components_from: str = "heads"  # heads | triplet
    n_boot: int = 1000
    seed: int = 0
    confidence: float = 0.95
    batch_size: int = 32
    device: str = "auto"
    workers: int = 0
    labels: dict | None = None  # report labels `model`, `setup`, `epoch` overriding the set's card


def _check(cfg: MapEvalConfig) -> None:
    if cfg.mode not in ("auto", "video", "global"):
        raise LapgenError(f"unknown mAP mode {cfg.mode!r}", hint="use auto, video or global")
    if cfg.components_from not in ("heads", "triplet"):
        raise LapgenError(f"unknown component source {cfg.components_from!r}", hint="use heads or triplet")
    if cfg.n_boot < 0 or not 0 < cfg.confidence < 1:
        raise LapgenError("--boot must be >= 0 and the confidence level in (0, 1)")
    from lapgen.metrics.triplets import check_absent_classes

    check_absent_classes(cfg.absent_classes)


def load_labelled_set(cfg: MapEvalConfig) -> tuple[Path, list[dict], dict | None, str | None, int]:
    """(root, records, card, split, n_skipped) with validated triplet labels; raises before model work.
    Images without `triplets` are skipped with a warning when others have them (n_skipped)."""
    from lapgen.cards import read_card
    from lapgen.models.recognition.data import label_matrix, read_metadata, select_split

    root = Path(cfg.images)
    records = read_metadata(root)
    card = read_card(root, required=False) if root.is_dir() else None
    is_frames = bool(card) and card.get("kind") == "frames-dataset"
    split = cfg.split
    if split is None and is_frames and any("split" in r for r in records):
        split = "test"
    records = select_split(records, split, root / "metadata.jsonl")
    labelled = [r for r in records if "triplets" in r]
    n_skipped = len(records) - len(labelled) if labelled else 0
    if n_skipped:  # e.g. a set mixing CholecT50 and Cholec80 prompts
        from lapgen.progress import warn

        warn(f"{len(records) - len(labelled)} of {len(records)} images have no triplet labels "
             "(prompts without CholecT50 labels) and are not scored")
        records = labelled
    label_matrix(records, root / "metadata.jsonl")  # labels present (all-missing is an error) and in range
    return root, records, card, split, n_skipped


def _recognizer(cfg: MapEvalConfig):
    from lapgen.models.recognition.checkpoint import load_recognizer
    from lapgen.registry import resolve

    entry = resolve(cfg.recognizer, kind="recognizer")  # one-line error for unknown names / other kinds
    return entry, load_recognizer(cfg.recognizer, device=cfg.device)


def _weights_file(path: Path | None) -> Path | None:
    if path is None:
        return None
    if path.is_dir():
        from lapgen.models.recognition.checkpoint import WEIGHTS_NAME

        found = [path / WEIGHTS_NAME] if (path / WEIGHTS_NAME).is_file() else sorted(path.glob("*.pth"))
        return found[0] if found else None
    return path


def _json_float(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def evaluate_map(cfg: MapEvalConfig) -> dict[str, Any]:
    """Score the set; returns the JSON-ready result (`metric`, `key`, `value`, `components`, `ci`, ...)."""
    from lapgen.cards import library_versions
    from lapgen.metrics.triplets import bootstrap_map, class_map, component_ids, reduce_component
    from lapgen.models.recognition.data import RecognitionDataset, eval_transform, preprocess_id
    from lapgen.models.recognition.train import predict_scores
    from lapgen.outputs import file_sha256

    _check(cfg)
    root, records, card, split, n_skipped = load_labelled_set(cfg)
    entry, model = _recognizer(cfg)
    size = tuple(model.config.image_size)
    dataset = RecognitionDataset(root, records, eval_transform(size))
    from lapgen.metrics.precision import device_id, strict_fp32

    with strict_fp32():
        scores = predict_scores(model, dataset, batch_size=cfg.batch_size, workers=cfg.workers,
                                progress_label="recognizing")
    labels = dataset.labels
    videos = dataset.video_ids()
    is_frames = bool(card) and card.get("kind") == "frames-dataset"
    mode = cfg.mode if cfg.mode != "auto" else ("video" if is_frames and videos else "global")
    if mode == "video" and videos is None:
        raise LapgenError("video-wise mAP needs a `video` on every record", path=root / "metadata.jsonl",
                          hint="use --mode global")
    from lapgen.progress import track

    components: dict[str, Any] = {}
    for comp in (track(ORDER, f"mAP + bootstrap (B={cfg.n_boot})") if cfg.n_boot else ORDER):
        if comp in ("i", "v", "t") and cfg.components_from == "heads":
            y, s = labels[comp], scores[comp]
        else:
            y, s = reduce_component(labels["ivt"], comp), reduce_component(scores["ivt"], comp)
        ids = list(component_ids(comp))
        if cfg.ignore_null and comp == "ivt":
            keep = [k for k in ids if k < 94]
            y, s, ids = y[:, keep], s[:, keep], keep
        res = class_map(y, s, video_ids=videos if mode == "video" else None, absent_classes=cfg.absent_classes)
        ci = None
        if cfg.n_boot > 0 and res["n_classes_scored"] > 0:
            ci = bootstrap_map(y, s, video_ids=videos, mode=mode, n_boot=cfg.n_boot, seed=cfg.seed,
                               confidence=cfg.confidence, absent_classes=cfg.absent_classes)
            ci = {k: _json_float(v) if isinstance(v, float) else v for k, v in ci.items()}
        components[comp] = {
            "mAP": _json_float(res["mAP"]), "ci": ci, "n_classes": len(ids),
            "n_classes_scored": res["n_classes_scored"], "n_classes_absent": res["n_classes_absent"],
            "scores_from": "heads" if comp in ("i", "v", "t") and cfg.components_from == "heads" else "triplet",
            "per_class": {str(cid): _json_float(ap) for cid, ap in zip(ids, res["per_class"])},
        }
    weights = _weights_file(entry.path)
    n_videos = len(set(videos)) if videos else None
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "metric": "map",
        "key": f"map[{mode},ivt]" if cfg.absent_classes == "ignore" else f"map[{mode},ivt,absent=zero]",
        "variant": mode,
        "component": "ivt",
        "value": components["ivt"]["mAP"],
        "ci": components["ivt"]["ci"],
        "components": components,
        "ignore_null": cfg.ignore_null,
        "absent_classes": cfg.absent_classes,
        "components_from": cfg.components_from,
        "mode": mode,
        "protocol": mode,
        "n_gen": len(records),
        "n_real": None,
        "real": None,
        "n_unlabelled_skipped": n_skipped,
        "n_videos": n_videos,
        "gen": str(root),
        "set_kind": "frames-dataset" if is_frames else "generated",
        "split": split,
        "recognizer": {"name": entry.name, "path": str(entry.path) if entry.path else None,
                       "image_size": list(size), "use_ln": model.config.use_ln},
        "extractor": entry.name,
        "architecture": "rendezvous-resnet18",
        "weights_sha256": file_sha256(weights) if weights else None,
        "preprocessing": preprocess_id(size),
        "precision": "fp32",
        "tf32": False,
        "device": device_id(str(next(model.parameters()).device)),
        "batch_size": cfg.batch_size,
        "libraries": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    if is_frames:  # the report's "real CholecT50 frames (RDV)" row
        result.update(model=root.name, setup="real")
    elif card:
        from lapgen.metrics.evaluate import card_labels

        result.update(card_labels(card))
    result.update({k: v for k, v in (cfg.labels or {}).items() if v is not None})
    return result


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(component, mAP, CI, classes scored) rows for the console table."""
    rows = []
    for comp in ORDER:
        c = result["components"][comp]
        m = "nan" if c["mAP"] is None else f"{c['mAP']:.4f}"
        ci = c["ci"]
        band = "-"
        if ci and ci["low"] is not None:
            band = f"[{ci['low']:.4f}, {ci['high']:.4f}] ({ci['unit']}s, B={ci['n_boot']})"
        rows.append((comp, m, band, f"{c['n_classes_scored']}/{c['n_classes']}"))
    return rows


def as_array(per_class: dict[str, float | None]) -> np.ndarray:
    """A component's per-class dict back to an array (None -> NaN)."""
    return np.array([np.nan if v is None else v for v in per_class.values()], dtype=np.float64)
