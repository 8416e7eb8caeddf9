"""Binary tool masks: read, write, threshold (and, below, mask sequences).

A lapgen mask is a single-channel 8-bit PNG whose pixels are 0 (background) or 255 (tool), the same size
as its image: the conditioning image of the paper's 2024 ControlNet dataset (Iliash et al. 2024, union of
all YOLOv8 tool instances). In memory a mask is a `(H, W)` bool array. Masks are always resized with
nearest-neighbour sampling, never interpolated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lapgen.errors import LapgenError
from lapgen.outputs import atomic_file

MASK_THRESHOLD = 127  # a pixel > 127 is tool; survives lossy storage (e.g. greyscale MP4) of 0/255 masks


def binarize(values: np.ndarray, threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """`(H, W)` or `(H, W, C)` array -> `(H, W)` bool mask (`value > threshold`; any channel for colour)."""
    values = np.asarray(values)
    if values.dtype == bool:
        mask = values
    else:
        mask = values > threshold
    if mask.ndim == 3:
        mask = mask[..., :3].any(axis=-1) if mask.shape[-1] in (3, 4) else mask.any(axis=-1)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W) or (H, W, C), got shape {values.shape}")
    return mask


def read_mask(path: str | Path, *, size: tuple[int, int] | None = None,
              threshold: int = MASK_THRESHOLD) -> np.ndarray:
    """Read a mask image -> `(H, W)` bool. `size` is `(width, height)`; other sizes are resized (NEAREST)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("1", "L", "I", "I;16", "P"):
                img = img.convert("RGB")
            elif img.mode != "L":
                img = img.convert("L")
            if size is not None and img.size != tuple(size):
                img = img.resize(tuple(size), Image.NEAREST)
            values = np.asarray(img)
    except FileNotFoundError as exc:
        raise LapgenError("mask file not found", path=path) from exc
    except OSError as exc:
        raise LapgenError(f"cannot read mask image ({exc})", path=path, hint="re-create the mask file") from exc
    return binarize(values, threshold)


def mask_to_image(mask: np.ndarray) -> Image.Image:
    """`(H, W)` bool/0-255 array -> single-channel 'L' PIL image with values 0/255."""
    return Image.fromarray(np.where(binarize(mask), 255, 0).astype(np.uint8), mode="L")


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Write `mask` as a binary 0/255 single-channel PNG, atomically (temp name, then rename)."""
    path = Path(path)
    with atomic_file(path) as fh:
        mask_to_image(mask).save(fh, format="PNG")
    return path


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a bool mask to `size` = `(width, height)` with nearest-neighbour sampling."""
    mask = binarize(mask)
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return np.asarray(mask_to_image(mask).resize(tuple(size), Image.NEAREST)) > MASK_THRESHOLD


# ---- mask sequences (video) below ----
