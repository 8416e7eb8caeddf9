"""Labelled image sets for Rendezvous: preprocessing, label vectors and a torch Dataset.

Sets are folders with a `metadata.jsonl` (lapgen's frames-dataset layout): a prepared frames dataset
(`lapgen prepare`, card kind `frames-dataset`) or a generated set (`lapgen sample`). Each line names an image (`file_name`)
and, for CholecT50 content, sorted id lists `triplets` (0-99) and optionally `instruments` (0-5),
`verbs` (0-9), `targets` (0-14); component lists missing from a line are derived from its triplets.

Preprocessing follows CAMMA-public/rendezvous (`pytorch/dataloader.py`): Resize to the model's
(height, width) (256x448 for the released weights), ToTensor, ImageNet normalisation. Training adds the
reference augmentations: vertical and horizontal flips (p 0.4), autocontrast (p 0.5; the reference's
effective 'contrast' entry), rotation up to 90 degrees with expansion, then Resize again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lapgen.data import vocab
from lapgen.errors import LapgenError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABEL_KEYS = {"triplets": vocab.NUM_TRIPLETS, "instruments": vocab.NUM_INSTRUMENTS,
              "verbs": vocab.NUM_VERBS, "targets": vocab.NUM_TARGETS}


def parse_size(value: str | int | Sequence[int]) -> tuple[int, int]:
    """`128` -> (128, 128); `256x448` -> (256, 448) (height x width)."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return int(value[0]), int(value[1])
    text = str(value).lower().replace(" ", "")
    try:
        parts = [int(p) for p in text.split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 32:
        raise LapgenError(f"invalid input size {value!r}",
                          hint="use N (square, >= 32) or HEIGHTxWIDTH, e.g. 256x448")
    return parts[0], parts[1]


def preprocess_id(image_size: tuple[int, int]) -> str:
    """A short id of the preprocessing, recorded with every result."""
    return f"rdv-resize-{image_size[0]}x{image_size[1]}-bilinear-antialias-imagenet-norm"


def eval_transform(image_size: tuple[int, int]) -> Callable:
    """PIL RGB image -> normalised float tensor [3, H, W] (the reference test transform)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(tuple(image_size)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(image_size: tuple[int, int], augment: bool = True) -> Callable:
    """The reference training transform (augmentations between two resizes)."""
    from torchvision import transforms as T

    if not augment:
        return eval_transform(image_size)
    size = tuple(image_size)
    return T.Compose([
        T.Resize(size), T.RandomVerticalFlip(0.4), T.RandomHorizontalFlip(0.4), T.RandomAutocontrast(p=0.5),
        T.RandomRotation(90, expand=True), T.Resize(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def read_metadata(folder: str | Path) -> list[dict]:
    """The validated records of `folder/metadata.jsonl` (frames-dataset contract, `lapgen.data.frames`):
    one-line errors for a missing folder/file, bad JSON, missing images and ids out of range."""
    from lapgen.data.frames import read_records

    return read_records(folder)


def _ids(rec: dict, key: str, limit: int, where: str) -> list[int]:
    values = rec.get(key)
    ints = isinstance(values, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if not ints:
        raise LapgenError(f"{where}: `{key}` must be a list of integer ids, got {values!r}")
    bad = [v for v in values if not 0 <= v < limit]
    if bad:
        raise LapgenError(f"{where}: {key} ids out of range {bad} (valid 0-{limit - 1})",
                          hint="the labels must use the CholecT50 vocabulary")
    return list(values)


def label_matrix(records: Sequence[dict], source: str | Path = "metadata.jsonl") -> dict[str, np.ndarray]:
    """Multi-hot label matrices `ivt` (N,100), `i` (N,6), `v` (N,10), `t` (N,15) of labelled records."""
    n = len(records)
    out = {"ivt": np.zeros((n, 100), np.int64), "i": np.zeros((n, 6), np.int64),
           "v": np.zeros((n, 10), np.int64), "t": np.zeros((n, 15), np.int64)}
    unlabeled = [r["file_name"] for r in records if "triplets" not in r]
    if unlabeled:
        raise LapgenError(f"{len(unlabeled)} of {n} images have no `triplets` labels (first: {unlabeled[0]})",
                          path=source, hint="action mAP needs CholecT50 triplet labels: generate from CholecT50 "
                          "prompts or pick a CholecT50 split")
    comps = vocab.TRIPLET_COMPONENTS
    for k, rec in enumerate(records):
        where = f"{Path(source).name} ({rec['file_name']})"
        trip = _ids(rec, "triplets", 100, where)
        out["ivt"][k, trip] = 1
        for key, col, idx in (("instruments", "i", 0), ("verbs", "v", 1), ("targets", "t", 2)):
            ids = _ids(rec, key, LABEL_KEYS[key], where) if key in rec else [comps[t][idx] for t in trip]
            out[col][k, ids] = 1
    return out


def select_split(records: list[dict], split: str | None, source: str | Path) -> list[dict]:
    """Records of `split` (all when None); error when the split is empty."""
    if split is None:
        return records
    chosen = [r for r in records if r.get("split") == split]
    if not chosen:
        found = sorted({str(r.get("split")) for r in records})
        raise LapgenError(f"no images in split {split!r}", path=source, hint="splits present: " + ", ".join(found))
    return chosen


class RecognitionDataset:
    """torch-style Dataset: image tensor and the four label vectors (float) of each record."""

    def __init__(self, root: str | Path, records: Sequence[dict], transform: Callable):
        self.root = Path(root)
        self.records = list(records)
        self.labels = label_matrix(self.records, self.root / "metadata.jsonl")
        self.transform = transform
        missing = [r["file_name"] for r in self.records if not (self.root / r["file_name"]).is_file()]
        if missing:
            raise LapgenError(f"{len(missing)} images listed in metadata.jsonl are missing (first: {missing[0]})",
                              path=self.root)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, k: int):
        import torch
        from PIL import Image

        with Image.open(self.root / self.records[k]["file_name"]) as im:
            image = self.transform(im.convert("RGB"))
        labels = tuple(torch.from_numpy(self.labels[c][k]).float() for c in ("i", "v", "t", "ivt"))
        return image, labels

    def video_ids(self) -> list[str] | None:
        """Video of each record, or None when any record has none."""
        vids = [r.get("video") for r in self.records]
        return None if any(v is None for v in vids) else [str(v) for v in vids]
