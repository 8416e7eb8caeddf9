"""Binary tool masks and mask sequences: read, write, threshold, resize.

A lapgen mask is a single-channel 8-bit PNG whose pixels are 0 (background) or 255 (tool), the same size
as its image: the conditioning image of the paper's 2024 ControlNet dataset (Iliash et al. 2024, union of
all YOLOv8 tool instances). In memory a mask is a `(H, W)` bool array. Masks are always resized with
nearest-neighbour sampling, never interpolated.

Moving a mask along keyframes is `lapgen.data.mask_motion`; real clips -> mask sequences is
`lapgen.data.mask_clips`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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
# A mask sequence is a `(F, H, W)` bool array: one binary tool mask per video frame. On disk it is a folder
# of 0/255 PNGs named in frame order (`000000.png`, ...; read in natural order) or a (greyscale) video,
# thresholded at 127 on reading (removes codec noise; the paper's mask2yolo thresholds at 127 too).

MASK_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v")


def natural_key(name: str) -> list:
    """Sort key that orders `f2.png` before `f10.png`."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


@dataclass
class MaskSequence:
    """Masks `(F, H, W)` bool plus what reading them did (for notices and cards)."""

    masks: np.ndarray
    source: str
    fps: float | None = None
    files: list[str] = field(default_factory=list)
    thresholded: int = 0  # frames that were not strictly binary
    resized_from: tuple[int, int] | None = None  # (width, height) before NEAREST resizing


def _binary_and_mask(values: np.ndarray) -> tuple[np.ndarray, bool]:
    grey = values if values.ndim == 2 else values[..., :3].max(axis=-1)
    is_binary = bool(np.isin(grey, (0, 255)).all())
    return binarize(values), not is_binary


def read_mask_sequence(source: str | Path, *, size: tuple[int, int] | None = None,
                       frames: int | None = None) -> MaskSequence:
    """Read masks from a folder of images (natural sort) or a video; `size` = (width, height), NEAREST.

    Non-binary masks are thresholded at 127 (counted in `thresholded`). `frames` keeps the first N and
    errors when fewer exist. Frames of different sizes are an error naming the first odd file.
    """
    source = Path(source)
    arrays: list[np.ndarray] = []
    files: list[str] = []
    fps = None
    if source.is_dir():
        files = sorted((p.name for p in source.iterdir() if p.suffix.lower() in MASK_SUFFIXES), key=natural_key)
        if not files:
            raise LapgenError("mask folder holds no images", path=source,
                              hint=f"put one mask per frame ({', '.join(MASK_SUFFIXES)}) in it")
        for name in files[:frames] if frames else files:
            try:
                with Image.open(source / name) as img:
                    arrays.append(np.asarray(img.convert("L") if img.mode not in ("L", "RGB") else img))
            except OSError as exc:
                raise LapgenError(f"cannot read mask image ({exc})", path=source / name) from exc
    elif source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        from lapgen.data.video import iter_frames, probe

        fps = probe(source).fps
        for i, rgb in enumerate(iter_frames(source)):
            if frames and i >= frames:
                break
            arrays.append(rgb)
    elif source.exists():
        raise LapgenError("masks must be a folder of images or a video file", path=source,
                          hint=f"video suffixes: {', '.join(VIDEO_SUFFIXES)}")
    else:
        raise LapgenError("masks not found", path=source, hint="pass a folder of mask PNGs or a mask video")
    if frames and len(arrays) < frames:
        raise LapgenError(f"asked for {frames} frames but the masks hold only {len(arrays)}", path=source,
                          hint="lower --frames or add masks")
    if not arrays:
        raise LapgenError("no mask frames found", path=source)
    for i, a in enumerate(arrays):  # one sequence, one frame size: never stretch frames to each other
        if a.shape[:2] != arrays[0].shape[:2]:
            (h0, w0), (h, w) = arrays[0].shape[:2], a.shape[:2]
            odd, first_name = (source / files[i], files[0]) if files else (source, "frame 0")
            raise LapgenError(f"mask frames differ in size: this one is {w}x{h}, the first ({first_name}) is "
                              f"{w0}x{h0}", path=odd, hint="give every frame of the sequence the same size")
    masks, thresholded = [], 0
    for a in arrays:
        m, changed = _binary_and_mask(a)
        thresholded += changed
        masks.append(m)
    first = (masks[0].shape[1], masks[0].shape[0])
    target = tuple(size) if size else first
    resized = None
    if target != first:
        resized = first
        masks = [resize_mask(m, target) for m in masks]
    return MaskSequence(np.stack(masks), str(source), fps, files, thresholded, resized)


def write_mask_sequence(folder: str | Path, masks: np.ndarray | Sequence[np.ndarray], start: int = 0) -> list[Path]:
    """Write masks as `folder/NNNNNN.png` (0/255, single channel), numbered from `start`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_mask(folder / f"{start + i:06d}.png", m) for i, m in enumerate(masks)]
