"""The frames dataset: the folder `lapgen prepare` writes and finetune / segment annotate / sample / eval /
train-recognizer read.

Layout (compatible with `datasets.load_dataset("imagefolder", data_dir=DIR)`, i.e. what diffusers'
training scripts expect: `file_name` + `text` in `metadata.jsonl`):

    DIR/metadata.jsonl          one JSON object per line (keys below)
    DIR/images/VID01/000012.png RGB PNGs (128x128 from prepare)
    DIR/masks/VID01/000012.png  optional: binary 0/255 single-channel tool masks (ControlNet datasets)
    DIR/lapgen.yaml             provenance card, kind `frames-dataset`

Keys: `file_name` (relative to DIR), `text`, `source` (cholect50|cholec80), `video` (VID01, video03),
`frame` (the source's own index: T-index at 1 fps, C-index at 25 fps), `split` (train|val|test), `phase`
(CholecT50 phase id 0-6), `tools` (names), for CholecT50 `triplets`, `instruments`, `verbs`, `targets`
(sorted id lists), and for ControlNet datasets `conditioning_image_file_name`.
Generated sets (`lapgen sample`) use the same layout; only `file_name` and `text` are required there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from lapgen.data import vocab
from lapgen.errors import LapgenError

METADATA = "metadata.jsonl"
SPLITS = ("train", "val", "test")
SOURCES = ("cholect50", "cholec80")
CARD_KIND = "frames-dataset"
# Canonical key order of a line (other keys follow in their own order).
KEY_ORDER = ("file_name", "conditioning_image_file_name", "text", "source", "video", "frame", "split", "phase",
             "tools", "triplets", "instruments", "verbs", "targets")
_ID_LISTS = {"triplets": vocab.NUM_TRIPLETS, "instruments": vocab.NUM_INSTRUMENTS, "verbs": vocab.NUM_VERBS,
             "targets": vocab.NUM_TARGETS}


def _check_relpath(value: Any, key: str, where: str, root: Path, check_files: bool) -> None:
    if not isinstance(value, str) or not value:
        raise LapgenError(f"{where}: `{key}` must be a non-empty string", path=root / METADATA,
                          hint="fix the line or re-run lapgen prepare")
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts:
        raise LapgenError(f"{where}: `{key}` {value!r} must be relative to the dataset folder",
                          path=root / METADATA, hint="fix the line or re-run lapgen prepare")
    if check_files and not (root / value).is_file():
        raise LapgenError(f"{where}: `{key}` {value!r} does not exist", path=root / METADATA,
                          hint="the dataset is incomplete; re-run the command that wrote it")


def validate_record(rec: Any, where: str, root: Path, *, check_files: bool = True) -> dict:
    """Check one metadata line (types, ranges, referenced files); returns it."""
    bad = lambda msg: LapgenError(f"{where}: {msg}", path=root / METADATA,  # noqa: E731
                                  hint="fix the line or re-run the command that wrote the dataset")
    if not isinstance(rec, dict):
        raise bad("line is not a JSON object")
    for key in ("file_name", "text"):
        if key not in rec:
            raise bad(f"missing key `{key}`")
    _check_relpath(rec["file_name"], "file_name", where, root, check_files)
    if "conditioning_image_file_name" in rec:
        _check_relpath(rec["conditioning_image_file_name"], "conditioning_image_file_name", where, root,
                       check_files)
    if not isinstance(rec["text"], str):
        raise bad("`text` must be a string")
    if "split" in rec and rec["split"] not in SPLITS:
        raise bad(f"`split` must be one of {', '.join(SPLITS)}, got {rec['split']!r}")
    if "source" in rec and rec["source"] not in SOURCES:
        raise bad(f"`source` must be one of {', '.join(SOURCES)}, got {rec['source']!r}")
    if "frame" in rec and (not isinstance(rec["frame"], int) or rec["frame"] < 0):
        raise bad(f"`frame` must be a non-negative integer, got {rec['frame']!r}")
    if "phase" in rec and rec["phase"] is not None and (
            not isinstance(rec["phase"], int) or not 0 <= rec["phase"] < vocab.NUM_PHASES):
        raise bad(f"`phase` must be a CholecT50 phase id 0..{vocab.NUM_PHASES - 1}, got {rec['phase']!r}")
    if "tools" in rec and (not isinstance(rec["tools"], list) or not all(isinstance(t, str) for t in rec["tools"])):
        raise bad("`tools` must be a list of names")
    for key, n in _ID_LISTS.items():
        if key in rec:
            ids = rec[key]
            if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < n for i in ids):
                raise bad(f"`{key}` must be a list of ids in 0..{n - 1}, got {ids!r}")
    return rec


def metadata_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON value) of every non-blank line of a metadata.jsonl file, in order; a line
    that is not JSON is an error naming its number (what the value must hold is the caller's check)."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LapgenError(f"line {n} is not valid JSON ({exc.msg})", path=path,
                                  hint="fix the line or re-run the command that wrote the dataset") from exc
            yield n, value


def read_records(folder: str | Path, split: str | None = None, *, check_files: bool = True) -> list[dict]:
    """All records of a frames dataset (validated), optionally only one split (`train`, `val`, `test`)."""
    root = Path(folder)
    meta = root / METADATA
    if not root.is_dir():
        raise LapgenError("frames dataset folder not found", path=root,
                          hint="run `lapgen prepare` first or check the path")
    if not meta.is_file():
        raise LapgenError(f"no {METADATA} in the frames dataset folder", path=root,
                          hint="point at a folder written by `lapgen prepare` or `lapgen sample`")
    if split is not None and split not in SPLITS:
        raise LapgenError(f"unknown split {split!r}", hint="valid: " + ", ".join(SPLITS))
    records = []
    for n, rec in metadata_lines(meta):
        validate_record(rec, f"line {n}", root, check_files=check_files)
        if split is not None:
            if "split" not in rec:
                raise LapgenError(f"line {n} has no `split`, cannot select split {split!r}", path=meta,
                                  hint="omit the split option to use all records")
            if rec["split"] != split:
                continue
        records.append(rec)
    if not records:
        what = f"split {split!r}" if split else "the dataset"
        raise LapgenError(f"{what} holds no records", path=meta, hint="check the split or the dataset")
    return records


def ordered(rec: dict) -> dict:
    """The record with keys in the canonical order (stable bytes in metadata.jsonl)."""
    out = {k: rec[k] for k in KEY_ORDER if k in rec}
    out.update({k: v for k, v in rec.items() if k not in out})
    return out


def record_line(rec: dict) -> str:
    """One metadata.jsonl line (no trailing newline)."""
    return json.dumps(ordered(rec), ensure_ascii=False, separators=(", ", ": "))


def write_records(folder: str | Path, records: Iterable[dict], *, check_files: bool = True) -> Path:
    """Validate `records` and write `folder/metadata.jsonl` atomically; returns its path."""
    from lapgen.outputs import atomic_file

    root = Path(folder)
    lines = []
    for n, rec in enumerate(records, start=1):
        validate_record(rec, f"record {n}", root, check_files=check_files)
        lines.append(record_line(rec) + "\n")
    with atomic_file(root / METADATA, "w") as fh:
        fh.writelines(lines)
    return root / METADATA


def _load_resized(path: str | Path, mode: str, what: str, size: int | tuple[int, int] | None, resample: int,
                  **resize_kwargs: Any):
    """The image at `path` converted to `mode`, resized with `resample` when `size` differs from its own."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
    except OSError as exc:
        raise LapgenError(f"cannot read {what} ({exc})", path=path,
                          hint="the file is corrupt; re-create it") from exc
    if size is not None:
        wh = (size, size) if isinstance(size, int) else tuple(size)
        if im.size != wh:
            im = im.resize(wh, resample, **resize_kwargs)
    return im


def load_image(path: str | Path, size: int | tuple[int, int] | None = None):
    """An RGB PIL image, resized with antialiasing (Pillow bilinear, area-aware) when `size` differs."""
    from PIL import Image

    return _load_resized(path, "RGB", "image", size, Image.BILINEAR, reducing_gap=None)


def load_mask(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """A binary mask (H, W) bool from a 0/255 PNG (any value >= 128 is tool), resized NEAREST."""
    from PIL import Image

    return np.asarray(_load_resized(path, "L", "mask", size, Image.NEAREST)) >= 128


class FramesDataset:
    """Map-style dataset (works with `torch.utils.data.DataLoader`) over a frames dataset folder.

    Item: `{"pixel_values": float tensor (3, H, W) in [-1, 1], "text": str, "index": int}` plus
    `"conditioning_pixel_values"`: float tensor (3, H, W) in {0, 1} (the binary mask repeated over 3
    channels, resized NEAREST) when `conditioning` is true, or "auto" and the records carry
    `conditioning_image_file_name`. `size` (int or (w, h)) resizes images (antialiased) and masks.
    `transform(item) -> item` runs last (e.g. a joint random flip).
    """

    def __init__(self, folder: str | Path, split: str | None = None, *, size: int | tuple[int, int] | None = None,
                 conditioning: bool | str = "auto", records: Sequence[dict] | None = None,
                 transform: Callable[[dict], dict] | None = None):
        self.root = Path(folder)
        self.records = list(records) if records is not None else read_records(self.root, split)
        has = all("conditioning_image_file_name" in r for r in self.records)
        if conditioning == "auto":
            conditioning = has
        elif conditioning and not has:
            raise LapgenError("records have no `conditioning_image_file_name` (not a ControlNet dataset)",
                              path=self.root / METADATA, hint="run `lapgen segment annotate` on the dataset first")
        self.conditioning = bool(conditioning)
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        import torch

        rec = self.records[index]
        img = np.asarray(load_image(self.root / rec["file_name"], self.size), dtype=np.float32)
        item = {"pixel_values": torch.from_numpy(img / 127.5 - 1.0).permute(2, 0, 1).contiguous(),
                "text": rec["text"], "index": index}
        if self.conditioning:
            h, w = img.shape[:2]
            mask = load_mask(self.root / rec["conditioning_image_file_name"], (w, h))
            item["conditioning_pixel_values"] = torch.from_numpy(mask.astype(np.float32))[None].repeat(3, 1, 1)
        return self.transform(item) if self.transform else item


def attach_masks(folder: str | Path, mask_root: str | Path, *, drop_empty: bool = True) -> int:
    """Turn a frames dataset into a ControlNet dataset from ground-truth masks, in place.

    `mask_root/<video>/<frame:06d>.png` holds a mask per frame (e.g. `synthetic.write_cholect50(masks_dir=)`).
    Each is written as `masks/<video>/<frame:06d>.png` (binary 0/255, single channel, resized NEAREST to
    the image size) and referenced by `conditioning_image_file_name`. Records without a mask file, and
    with `drop_empty` those whose mask is empty (no tool, as the paper drops frames without detection),
    are removed. Returns the number of records kept.
    """
    from PIL import Image

    root = Path(folder)
    kept = []
    for rec in read_records(root):
        src = Path(mask_root) / rec["video"] / f"{rec['frame']:06d}.png"
        if not src.is_file():
            continue
        with Image.open(root / rec["file_name"]) as im:
            size = im.size
        mask = load_mask(src, size)
        if drop_empty and not mask.any():
            continue
        rel = f"masks/{rec['video']}/{rec['frame']:06d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((mask * 255).astype(np.uint8), mode="L").save(root / rel)
        kept.append({**rec, "conditioning_image_file_name": rel})
    if not kept:
        raise LapgenError("no record has a (non-empty) mask", path=mask_root,
                          hint="masks must be named <video>/<frame:06d>.png like the dataset's records")
    write_records(root, kept)
    return len(kept)
