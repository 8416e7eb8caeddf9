"""Image sets for evaluation: a plain image folder or a lapgen dataset (folder with metadata.jsonl).

lapgen lists files itself (docs/metrics.md, introduction): sorted, explicit extensions, not recursive for
plain folders; for a lapgen dataset the files are the `file_name` entries of `metadata.jsonl` (optionally
one `split`, optionally a seeded sample). Images are read with PIL as RGB uint8. Every image of a set must
have the same size, checked from the file headers before any feature is computed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
METADATA_NAME = "metadata.jsonl"


@dataclass
class ImageSet:
    """An ordered list of images to evaluate, with the metadata rows when the folder is a lapgen dataset."""

    root: Path
    files: list[str]  # paths relative to root, in evaluation order
    records: list[dict[str, Any]] | None = None  # metadata.jsonl rows aligned with `files`
    card: dict[str, Any] | None = None  # the folder's lapgen.yaml, when present
    size: tuple[int, int] = (0, 0)  # (width, height) in pixels, the same for every image
    selection: dict[str, Any] = field(default_factory=dict)  # split / limit / seed used to pick the files
    _digest: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        return self.root / self.files[i]

    def digest(self) -> str:
        """`set_digest(self)`, computed once per object (file hashes are the cache key's image part)."""
        if self._digest is None:
            self._digest = set_digest(self)
        return self._digest

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.root), "n": len(self), "size": list(self.size), **self.selection}


def read_metadata(root: Path) -> list[dict[str, Any]]:
    """The rows of `root/metadata.jsonl` (one JSON object per line; blank lines skipped)."""
    from lapgen.data.frames import metadata_lines

    path = root / METADATA_NAME
    rows: list[dict[str, Any]] = []
    for number, row in metadata_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise LapgenError(f"line {number} has no 'file_name'", path=path,
                              hint="every metadata line needs a file_name relative to the folder")
        rows.append(row)
    return rows


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image, read from its header; a one-line error for an unreadable file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise LapgenError("cannot read image", path=path, hint="remove or replace the file") from exc


def open_image_set(path: str | Path, *, what: str = "images", split: str | None = None,
                   limit: int | None = None, sample_seed: int = 42, check_sizes: bool = True) -> ImageSet:
    """List and validate the images of a folder or lapgen dataset.

    `split` keeps metadata rows with that `split` (datasets only). `limit` keeps a random sample of that many
    images drawn with `np.random.RandomState(sample_seed).choice(n, limit, replace=False)` over the listed
    order (the draw `pandas.DataFrame.sample(n=limit, random_state=sample_seed)` makes on metadata order, the
    paper's 10,000 real frames with seed 42).
    """
    root = Path(path)
    if not root.exists():
        raise LapgenError(f"{what} folder does not exist", path=root, hint="check the path")
    if not root.is_dir():
        raise LapgenError(f"{what} is not a folder", path=root,
                          hint="pass a folder of images or a lapgen dataset folder")
    records: list[dict[str, Any]] | None = None
    if (root / METADATA_NAME).is_file():
        records = read_metadata(root)
        if split is not None:
            records = [r for r in records if r.get("split") == split]
        files = [r["file_name"] for r in records]
        missing = [f for f in files if not (root / f).is_file()]
        if missing:
            raise LapgenError(f"{len(missing)} image(s) listed in metadata.jsonl are missing, e.g. {missing[0]}",
                              path=root, hint="regenerate the dataset or fix metadata.jsonl")
    else:
        if split is not None:
            raise LapgenError(f"--split needs a lapgen dataset but {what} has no metadata.jsonl", path=root)
        files = sorted(p.name for p in root.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise LapgenError(f"{what} folder has no images" + (f" in split {split!r}" if split else ""),
                          path=root, hint=f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}")
    selection: dict[str, Any] = {}
    if split is not None:
        selection["split"] = split
    if limit is not None:
        if limit < 1 or limit > len(files):
            raise LapgenError(f"cannot sample {limit} images from {len(files)}", path=root,
                              hint=f"use a limit between 1 and {len(files)}")
        chosen = np.sort(np.random.RandomState(sample_seed).choice(len(files), limit, replace=False))
        files = [files[i] for i in chosen]
        records = None if records is None else [records[i] for i in chosen]
        selection.update(limit=limit, sample_seed=sample_seed)
    if records is not None:  # evaluation order: sorted by file name, records kept aligned
        order = sorted(range(len(files)), key=lambda i: files[i])
        files = [files[i] for i in order]
        records = [records[i] for i in order]
    size = image_size(root / files[0])
    if check_sizes:
        for f in files[1:]:
            other = image_size(root / f)
            if other != size:
                raise LapgenError(f"mixed image sizes: {files[0]} is {size[0]}x{size[1]} but {f} is "
                                  f"{other[0]}x{other[1]}", path=root,
                                  hint="resize the set to one size first (the paper used 128x128)")
    from lapgen.cards import read_card

    return ImageSet(root=root, files=files, records=records, card=read_card(root, required=False),
                    size=size, selection=selection)


def load_rgb(path: str | Path) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError as exc:  # e.g. a truncated PNG: its header (checked up front) reads, its pixels do not
        raise LapgenError(f"cannot read image ({exc})", path=path, hint="remove or replace the file") from exc


def set_digest(image_set: ImageSet) -> str:
    """SHA-256 over the ordered (relative path, file SHA-256) list: the image part of a feature-cache key."""
    from lapgen.outputs import file_sha256

    h = hashlib.sha256()
    for rel in image_set.files:
        h.update(rel.encode())
        h.update(b"\0")
        h.update(file_sha256(image_set.root / rel).encode())
        h.update(b"\n")
    return h.hexdigest()
