"""ART-Net reader (Hasan et al., Medical Image Analysis 70:101994, 2021; `kamruleee51/ART-Net`).

The release layout is only partly public (Hasan et al., Medical Image Analysis 70:101994, 2021), so files are found by name
pattern rather than by fixed paths:

- split: the nearest ancestor folder called `Train*`/`Test*` (case-insensitive);
- positive images: folders whose name holds `Pos` (`Train_Positive`, `TrainPos`) and not `Mask`,
  `Tip` or `Line`; negatives: folders whose name holds `Neg`;
- tool masks: `<stem>_Tool_Mask.<ext>` anywhere under the split (`Train_Positive_Tool_Mask/`),
  greyscale, non-zero = tool, possibly at another size than the image (resized NEAREST on read).

Negatives are images without tools (empty masks). Geometric-primitive maps (tip, edge/mid lines) are
ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lapgen.errors import LapgenError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_MASK_RE = re.compile(r"^(?P<stem>.+)_tool_mask$", re.IGNORECASE)
_SKIP_WORDS = ("mask", "tip", "line", "edge", "mid")


@dataclass(frozen=True)
class ArtNetSample:
    """One ART-Net image: a positive (with tool mask) or a negative (no tool)."""

    split: str  # "train" | "test"
    positive: bool
    image: Path
    mask: Path | None  # None for negatives

    @property
    def key(self) -> str:
        """Unique name: `artnet_train_pos_<stem>`."""
        return f"artnet_{self.split}_{'pos' if self.positive else 'neg'}_{self.image.stem}"


def _split_of(path: Path, root: Path) -> str | None:
    for part in reversed(path.relative_to(root).parts[:-1]):
        low = part.lower()
        if low.startswith("train"):
            return "train"
        if low.startswith("test"):
            return "test"
    return None


def _role_of(folder: str) -> str | None:
    low = folder.lower()
    if any(word in low for word in _SKIP_WORDS):
        return None
    if "pos" in low:
        return "pos"
    if "neg" in low:
        return "neg"
    return None


def find_samples(root: str | Path) -> list[ArtNetSample]:
    """All ART-Net samples under `root`, sorted by (split, positive first, name)."""
    root = Path(root)
    if not root.is_dir():
        raise LapgenError(
            "ART-Net folder not found", path=root, hint="pass the folder holding Train/ and Test/"
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    masks: dict[tuple[str, str], Path] = {}
    images: list[tuple[str, str, Path]] = []
    for path in files:
        split = _split_of(path, root)
        match = _MASK_RE.match(path.stem)
        if match is not None:
            if split is not None:
                masks[(split, match.group("stem"))] = path
            continue
        role = _role_of(path.parent.name)
        if role is not None and split is not None:
            images.append((split, role, path))
    if not images:
        found = sorted({str(p.parent.relative_to(root)) for p in files})[:6]
        raise LapgenError(
            f"no ART-Net images found in *Positive*/*Negative* folders (saw folders: {found})",
            path=root,
            hint="pass the folder holding Train/Train_Positive, Train/Train_Negative, ...",
        )
    samples = []
    for split, role, path in images:
        mask = None
        if role == "pos":
            mask = masks.get((split, path.stem))
            if mask is None:
                raise LapgenError(
                    f"no tool mask {path.stem}_Tool_Mask.png for this positive image",
                    path=path,
                    hint="restore the *_Tool_Mask folder of this split",
                )
        samples.append(ArtNetSample(split, role == "pos", path, mask))
    samples.sort(key=lambda s: (s.split != "train", not s.positive, s.image.name))
    return samples


def read_tool_mask(sample: ArtNetSample) -> tuple[tuple[int, int], np.ndarray]:
    """`((width, height) of the image, (H, W) bool tool mask)`; empty for negatives.

    Masks at another size than their image are resized with NEAREST (the release is reported to mix
    sizes).
    """
    try:
        with Image.open(sample.image) as img:
            size = img.size
    except OSError as exc:
        raise LapgenError(f"cannot read image ({exc})", path=sample.image) from exc
    if sample.mask is None:
        return size, np.zeros((size[1], size[0]), dtype=bool)
    try:
        with Image.open(sample.mask) as img:
            grey = img.convert("L")
            if grey.size != size:
                grey = grey.resize(size, Image.NEAREST)
            values = np.asarray(grey)
    except OSError as exc:
        raise LapgenError(f"cannot read tool mask ({exc})", path=sample.mask) from exc
    return size, values > 0
