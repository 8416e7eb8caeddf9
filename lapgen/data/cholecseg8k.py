"""CholecSeg8k reader (Hong et al. 2020; Kaggle `newslab/cholecseg8k`).

Layout (Kaggle `newslab/cholecseg8k`; docs/data-formats.md): `ROOT/videoNN/videoNN_FFFFF/frame_<n>_endo.png` (RGB 854x480) beside
`frame_<n>_endo_watershed_mask.png`, whose grey value is a class code (the same in every channel; some
files carry a constant 4th channel). Only the watershed masks are read: the colour masks are
anti-aliased and the two tool colours differ by a few units.

Tool pixels are those with the exact watershed codes 31 (Grasper) and 32 (L-hook Electrocautery). The
1-pixel image border (255) and unannotated pixels (0) are never a class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lapgen.errors import LapgenError

# watershed code -> (class id, class name); torch-em `LABEL_MAPS` (constantinpape/torch-em,
# torch_em/data/datasets/medical/cholecseg8k.py)
WATERSHED_CLASSES: dict[int, tuple[int, str]] = {
    50: (0, "Black Background"),
    11: (1, "Abdominal Wall"),
    21: (2, "Liver"),
    13: (3, "Gastrointestinal Tract"),
    12: (4, "Fat"),
    31: (5, "Grasper"),
    23: (6, "Connective Tissue"),
    24: (7, "Blood"),
    25: (8, "Cystic Duct"),
    32: (9, "L-hook Electrocautery"),
    22: (10, "Gallbladder"),
    33: (11, "Hepatic Vein"),
    5: (12, "Liver Ligament"),
}
BORDER_CODE = 255  # the 1-pixel white frame around every mask: not a class
UNANNOTATED_CODE = 0  # pixels the annotators left out: not a class
IGNORED_CODES = frozenset({BORDER_CODE, UNANNOTATED_CODE})
# the only tool classes of CholecSeg8k, by lapgen tool name (CholecT50 instrument vocabulary)
TOOL_CODES: dict[str, int] = {"grasper": 31, "hook": 32}

_FRAME_RE = re.compile(r"^frame_(\d+)_endo\.png$")
_VIDEO_RE = re.compile(r"^video(\d+)$")
_CLIP_RE = re.compile(r"^video(\d+)_\d+$")


@dataclass(frozen=True)
class SegFrame:
    """One annotated CholecSeg8k frame."""

    video: str  # "video01"
    clip: str  # "video01_00080"
    frame: int  # unpadded number from the file name (reported to be a Cholec80 25-fps index)
    image: Path  # frame_<n>_endo.png
    watershed: Path  # frame_<n>_endo_watershed_mask.png

    @property
    def key(self) -> str:
        """Unique, sortable name: `video01_000080`."""
        return f"{self.video}_{self.frame:06d}"


def find_frames(root: str | Path) -> list[SegFrame]:
    """All frames under `root`, sorted by (video, frame). Fails on a frame without its watershed mask."""
    root = Path(root)
    if not root.is_dir():
        raise LapgenError(
            "CholecSeg8k folder not found", path=root, hint="pass the folder holding video01/, video09/, ..."
        )
    frames: list[SegFrame] = []
    for image in sorted(root.rglob("frame_*_endo.png")):
        match = _FRAME_RE.match(image.name)
        if match is None:
            continue
        clip_dir = image.parent
        video_match = _VIDEO_RE.match(clip_dir.parent.name) or _CLIP_RE.match(clip_dir.name)
        if video_match is None:
            raise LapgenError(
                "cannot tell which video this frame belongs to",
                path=image,
                hint="keep the release layout videoNN/videoNN_FFFFF/frame_N_endo.png",
            )
        video = f"video{int(video_match.group(1)):02d}"
        watershed = image.with_name(f"frame_{match.group(1)}_endo_watershed_mask.png")
        if not watershed.exists():
            raise LapgenError(
                "watershed mask missing for this frame",
                path=image,
                hint=f"expected {watershed.name} beside it; restore it or remove the frame",
            )
        frames.append(SegFrame(video, clip_dir.name, int(match.group(1)), image, watershed))
    if not frames:
        raise LapgenError(
            "no CholecSeg8k frames (frame_*_endo.png) found",
            path=root,
            hint="pass the folder holding video01/, video09/, ...",
        )
    frames.sort(key=lambda f: (f.video, f.frame, f.clip))
    return frames


def read_watershed(path: str | Path, *, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Watershed mask -> `(H, W)` uint8 codes. `expected_size` = `(width, height)` of the frame image.

    Grey PNGs are read as is; RGB/RGBA ones must carry the same value in R, G and B (a 4th channel is
    dropped once checked constant), otherwise the file is not a watershed mask.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            size = img.size
            if img.mode in ("L", "P", "I", "I;16"):
                codes = np.asarray(img.convert("L") if img.mode != "L" else img)
            else:
                arr = np.asarray(img.convert("RGBA"))
                if img.mode in ("RGBA", "LA") and arr[..., 3].min() != arr[..., 3].max():
                    raise LapgenError(
                        "watershed mask has a non-constant alpha channel",
                        path=path,
                        hint="read the *_watershed_mask.png files, not colour masks",
                    )
                rgb = arr[..., :3]
                if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
                    raise LapgenError(
                        "watershed mask channels differ (is this a colour mask?)",
                        path=path,
                        hint="CholecSeg8k watershed masks carry one grey code per pixel",
                    )
                codes = rgb[..., 0]
    except FileNotFoundError as exc:
        raise LapgenError("watershed mask not found", path=path) from exc
    except LapgenError:
        raise
    except OSError as exc:
        raise LapgenError(f"cannot read watershed mask ({exc})", path=path) from exc
    if expected_size is not None and size != tuple(expected_size):
        raise LapgenError(
            f"watershed mask is {size[0]}x{size[1]} but its frame is {expected_size[0]}x{expected_size[1]}",
            path=path,
            hint="masks must match their frame; re-extract this clip",
        )
    return np.ascontiguousarray(codes, dtype=np.uint8)


def unknown_codes(codes: np.ndarray) -> list[int]:
    """Watershed values that are neither a class nor border/unannotated (sorted)."""
    values = np.unique(codes)
    return [int(v) for v in values if int(v) not in WATERSHED_CLASSES and int(v) not in IGNORED_CODES]


def tool_masks(
    codes: np.ndarray, *, path: str | Path | None = None, strict: bool = True
) -> dict[str, np.ndarray]:
    """`(H, W)` watershed codes -> `{"grasper": (H, W) bool, "hook": (H, W) bool}` by exact code.

    Border (255) and unannotated (0) pixels are background. With `strict`, any value outside the class
    table is an error (a corrupt or non-watershed file); otherwise such pixels are background too.
    """
    if strict:
        bad = unknown_codes(codes)
        if bad:
            raise LapgenError(
                f"watershed mask holds values that are no CholecSeg8k class: {bad[:8]}",
                path=path,
                hint="check the file, or pass --ignore-unknown-codes",
            )
    return {name: codes == code for name, code in TOOL_CODES.items()}


def image_size(path: str | Path) -> tuple[int, int]:
    """`(width, height)` of an image file without decoding it."""
    try:
        with Image.open(path) as img:
            return img.size
    except OSError as exc:
        raise LapgenError(f"cannot read image ({exc})", path=path) from exc


def read_frame_masks(
    frame: SegFrame, *, strict: bool = True
) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
    """Check one frame and return `((width, height), tool masks)`."""
    size = image_size(frame.image)
    codes = read_watershed(frame.watershed, expected_size=size)
    return size, tool_masks(codes, path=frame.watershed, strict=strict)


def videos(frames: list[SegFrame]) -> list[str]:
    """Sorted distinct video ids of `frames`."""
    return sorted({f.video for f in frames})
