"""A tool mask moved along a keyframed trajectory: `lapgen masks animate` and the studio's canvas.

Keyframes are pixel positions of the mask's centroid (`"x0,y0;x1,y1;..."`); the path between them is a
Catmull-Rom spline through every keyframe, and rotation (degrees, counter-clockwise) and scale change
piecewise linearly between keyframes, about the centroid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lapgen.data.masks import MASK_THRESHOLD, binarize
from lapgen.errors import LapgenError


def parse_points(text: str) -> list[tuple[float, float]]:
    """`"x0,y0;x1,y1;..."` (pixels, x right, y down) -> [(x, y), ...]; at least one point."""
    points = []
    for part in (p for p in text.replace(" ", "").split(";") if p):
        xy = part.split(",")
        try:
            if len(xy) != 2:
                raise ValueError
            points.append((float(xy[0]), float(xy[1])))
        except ValueError:
            raise LapgenError(f"bad trajectory point {part!r} in {text!r}",
                              hint='write points as "x0,y0;x1,y1;..." in pixels') from None
    if not points:
        raise LapgenError(f"empty trajectory {text!r}", hint='write points as "x0,y0;x1,y1;..."')
    return points


def parse_poses(text: str | None, default: float) -> tuple[float, ...]:
    """`"v0:v1:...:vK"` (or a single value) -> (v0, ..., vK); None or "" -> (default,).

    One value holds for every frame, two ramp linearly from the first frame to the last, and one value per
    keyframe is interpolated linearly between keyframes (see `pose_curve`)."""
    if text is None or text == "":
        return (default,)
    try:
        return tuple(float(p) for p in text.split(":"))
    except ValueError:
        raise LapgenError(f"bad pose values {text!r}",
                          hint='write "start:end" (e.g. "0:30") or one value per keyframe ("0:90:0")') from None


def pose_curve(values: Sequence[float], keyframes: int, frames: int, what: str = "value") -> np.ndarray:
    """`(frames,)` per-frame rotation or scale from `parse_poses` values for a path of `keyframes` points.

    1 value: constant. 2 values: a linear ramp from the first frame to the last (for any number of
    keyframes). One value per keyframe (K > 2): piecewise linear between keyframes, which sit where
    `smooth_trajectory` puts them, at frame k·(frames-1)/(K-1).
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 1:
        return np.full(frames, v[0])
    if len(v) == 2:
        return v[0] + (v[1] - v[0]) * (np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1))
    if len(v) != keyframes:
        raise LapgenError(f"{len(v)} {what} values for a path of {keyframes} keyframes",
                          hint="give one value, two (start:end) or one per keyframe")
    if frames == 1:
        return v[:1].copy()
    return np.interp(np.linspace(0, keyframes - 1, frames), np.arange(keyframes), v)


def smooth_trajectory(points: Sequence[tuple[float, float]], frames: int) -> np.ndarray:
    """`(frames, 2)` positions through the keyframes with a uniform Catmull-Rom spline.

    Keyframe k sits at frame round(k·(frames-1)/(K-1)): the first frame is the first point and the last
    frame the last point exactly; between keys the path is C1-smooth.
    """
    if frames < 1:
        raise LapgenError("--frames must be at least 1")
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 1 or frames == 1:
        return np.repeat(p[:1], frames, axis=0)
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])  # reflected end tangents
    s = np.linspace(0, len(p) - 1, frames)  # segment coordinate per frame
    seg = np.minimum(s.astype(int), len(p) - 2)
    u = (s - seg)[:, None]
    p0, p1, p2, p3 = ext[seg], ext[seg + 1], ext[seg + 2], ext[seg + 3]
    out = 0.5 * ((2 * p1) + (-p0 + p2) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * u**3)
    out[0], out[-1] = p[0], p[-1]
    return out


def mask_centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(binarize(mask))
    if len(xs) == 0:
        raise LapgenError("the tool mask is empty", hint="draw the tool in white (255) on black")
    return float(xs.mean()), float(ys.mean())


def animate_mask(mask: np.ndarray, points: Sequence[tuple[float, float]], frames: int,
                 rotate: Sequence[float] = (0.0,), scale: Sequence[float] = (1.0,),
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """Move a tool mask so its centroid follows the trajectory; rotate (degrees, counter-clockwise) and
    scale about the centroid. `rotate`/`scale`: one value, `(start, end)` (a linear ramp over the frames)
    or one value per keyframe (piecewise linear, `pose_curve`). Returns `(frames, H, W)` bool."""
    import cv2

    mask = binarize(mask)
    width, height = size or (mask.shape[1], mask.shape[0])
    cx, cy = mask_centroid(mask)
    path = smooth_trajectory(points, frames)
    angles = pose_curve(rotate, len(points), frames, "rotation")
    factors = pose_curve(scale, len(points), frames, "scale")
    src = mask.astype(np.uint8) * 255
    out = np.zeros((frames, height, width), bool)
    for i in range(frames):
        angle, factor = float(angles[i]), float(factors[i])
        if factor <= 0:
            raise LapgenError(f"scale must stay positive (got {factor:g} at frame {i})")
        affine = cv2.getRotationMatrix2D((cx, cy), angle, factor)  # about the centroid
        affine[:, 2] += (path[i, 0] - cx, path[i, 1] - cy)  # then move the centroid onto the path
        warped = cv2.warpAffine(src, affine, (width, height), flags=cv2.INTER_NEAREST, borderValue=0)
        out[i] = warped > MASK_THRESHOLD
    return out
