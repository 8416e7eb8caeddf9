"""Binary masks <-> ultralytics YOLO segmentation polygons.

ultralytics' segment labels (`labels/<split>/<stem>.txt`) hold one instance per line,
`class x1 y1 x2 y2 ...`, coordinates normalised by the image width/height, at least 3 points, and no
holes: a polygon is one simple outline filled with `cv2.fillPoly` (`ultralytics/data/utils.py,
polygon2mask`, pixel coordinate = normalised value x size, truncated).

Rules lapgen applies (docs/segmentation.md):
- every 8-connected region of a class mask becomes one polygon (one instance);
- regions smaller than `min_area` pixels are dropped as annotation fragments;
- holes smaller than `min_hole_area` pixels are filled; larger holes are kept by a zero-width
  "keyhole" cut: the outline walks to the nearest hole point, around the hole and back, so the
  even-odd fill of `cv2.fillPoly` leaves the hole empty;
- outlines are traced through boundary pixel centres (`cv2.findContours`, `CHAIN_APPROX_SIMPLE`), so
  rasterising a label at the source resolution gives back the region exactly, up to 1-pixel slivers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lapgen.errors import LapgenError

DEFAULT_MIN_AREA = 16  # px; smaller regions are annotation fragments (CholecSeg8k frames are 854x480)
DEFAULT_MIN_HOLE_AREA = 16  # px; smaller holes are filled


def _bridge_hole(outline: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Splice `hole` (M, 2) into `outline` (N, 2) at their closest pair of points (keyhole polygon)."""
    dist = ((outline[:, None, :].astype(np.int64) - hole[None, :, :]) ** 2).sum(-1)  # (N, M)
    i, j = np.unravel_index(int(dist.argmin()), dist.shape)
    return np.concatenate([outline[: i + 1], hole[j:], hole[: j + 1], outline[i:]])


def mask_to_polygons(
    mask: np.ndarray, *, min_area: int = DEFAULT_MIN_AREA, min_hole_area: int = DEFAULT_MIN_HOLE_AREA
) -> list[np.ndarray]:
    """`(H, W)` bool mask -> list of `(N, 2)` int32 pixel-coordinate (x, y) polygons, one per region."""
    import cv2

    mask = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    polygons = []
    for comp in range(1, count):
        if stats[comp, cv2.CC_STAT_AREA] < min_area:
            continue
        x, y, w, h = (int(v) for v in stats[comp, :4])
        # pad by 1 so outlines never touch the crop edge; offset back afterwards
        crop = np.zeros((h + 2, w + 2), np.uint8)
        crop[1:-1, 1:-1] = labels[y : y + h, x : x + w] == comp
        contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        outer = [k for k in range(len(contours)) if hierarchy[0][k][3] < 0]
        # one 8-connected component has one outer outline; keep the longest if OpenCV splits it
        k_outer = max(outer, key=lambda k: len(contours[k]))
        outline = contours[k_outer][:, 0, :]
        for k, cnt in enumerate(contours):
            if hierarchy[0][k][3] != k_outer:
                continue
            hole_pixels = cv2.contourArea(cnt)  # area inside the inner outline ~ hole size in px
            if hole_pixels >= min_hole_area:
                outline = _bridge_hole(outline, cnt[:, 0, :])
        if len(outline) < 3:  # a 1-2 pixel line: give it a sliver polygon of 3 points
            outline = np.concatenate([outline, outline[-1:], outline[:1]])[:3]
        polygons.append((outline + np.array([x - 1, y - 1])).astype(np.int32))
    return polygons


def polygons_to_mask(polygons: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Rasterise pixel polygons like ultralytics does -> `(H, W)` bool; `size` = (width, height)."""
    import cv2

    out = np.zeros((size[1], size[0]), np.uint8)
    for poly in polygons:
        cv2.fillPoly(out, [np.asarray(poly, dtype=np.int32).reshape(-1, 1, 2)], 1)
    return out.astype(bool)


def label_line(cls: int, polygon: np.ndarray, size: tuple[int, int]) -> str:
    """One YOLO segment label line; coordinates normalised by (width, height), 6 decimals."""
    norm = np.asarray(polygon, dtype=np.float64) / np.array(size, dtype=np.float64)
    norm = np.clip(norm, 0.0, 1.0)
    return " ".join([str(int(cls)), *(f"{v:.6f}" for v in norm.reshape(-1))])


def read_label_file(path: str | Path, size: tuple[int, int]) -> list[tuple[int, np.ndarray]]:
    """Parse a YOLO segment label file -> `[(class, (N, 2) pixel polygon)]`; a missing file is empty.

    Pixel coordinates are `round(normalised x size)`: label lines carry 6 decimals, so this inverts
    `label_line` exactly for images up to 10^5 px wide.
    """
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 7 or len(parts) % 2 == 0:
            raise LapgenError(f"line {n} is not 'class x1 y1 x2 y2 x3 y3 ...'", path=path)
        coords = np.asarray([float(v) for v in parts[1:]]).reshape(-1, 2) * np.array(size)
        out.append((int(parts[0]), np.rint(coords).astype(np.int32)))
    return out


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
