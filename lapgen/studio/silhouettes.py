"""Built-in tool silhouettes: binary masks of the six CholecT50 instruments, drawn from simple shapes.

They are a starting point for authoring a mask sequence when no real mask is at hand: the studio moves a
silhouette along the user's keyframes with `lapgen.data.mask_motion.animate_mask`, exactly like
`lapgen masks animate --mask tool.png`. Each silhouette is a laparoscopic tool as it appears in a
Cholec80 frame: a straight shaft entering from the lower-right border, with the instrument's tip near
the image centre. They are schematic (not learnt from data) and drawn at any square size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lapgen.errors import LapgenError

# CholecT50 instrument order (lapgen.data.vocab.INSTRUMENTS).
SILHOUETTES: tuple[str, ...] = ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator")

# Geometry in a unit frame: the tip at the origin, the shaft along +u (towards the border), v across it.
# Lengths are fractions of the image size.
_SHAFT_ANGLE = 35.0  # degrees below the +x axis: the shaft comes from the lower-right corner
_SHAFT_LENGTH = 0.8
_SHAFT_WIDTH = {
    "grasper": 0.075,
    "bipolar": 0.07,
    "hook": 0.06,
    "scissors": 0.075,
    "clipper": 0.09,
    "irrigator": 0.085,
}

Polygon = list[tuple[float, float]]


def _tip_shapes(name: str) -> list[Polygon]:
    """Polygons of the tool tip in the unit frame (u along the shaft towards the border, v across)."""
    if name == "grasper":  # two opened, slightly fenestrated jaws
        return [
            [(0.0, -0.035), (-0.16, -0.075), (-0.17, -0.05), (0.0, -0.005)],
            [(0.0, 0.035), (-0.16, 0.075), (-0.17, 0.05), (0.0, 0.005)],
        ]
    if name == "bipolar":  # two thin parallel prongs
        return [
            [(0.0, -0.03), (-0.15, -0.028), (-0.15, -0.012), (0.0, -0.008)],
            [(0.0, 0.03), (-0.15, 0.028), (-0.15, 0.012), (0.0, 0.008)],
        ]
    if name == "hook":  # a thin rod bent at a right angle (L-hook electrode)
        return [
            [(0.0, -0.012), (-0.13, -0.012), (-0.13, 0.06), (-0.105, 0.06), (-0.105, 0.012), (0.0, 0.012)]
        ]
    if name == "scissors":  # two curved blades, nearly closed
        return [
            [(0.0, -0.03), (-0.08, -0.03), (-0.17, 0.005), (-0.09, -0.0), (0.0, 0.0)],
            [(0.0, 0.03), (-0.07, 0.028), (-0.16, 0.02), (-0.08, 0.008), (0.0, 0.0)],
        ]
    if name == "clipper":  # broad, short parallel jaws holding a clip gap
        return [
            [(0.0, -0.045), (-0.12, -0.045), (-0.12, -0.012), (0.0, -0.012)],
            [(0.0, 0.045), (-0.12, 0.045), (-0.12, 0.012), (0.0, 0.012)],
        ]
    if name == "irrigator":  # a plain tube with a rounded end (drawn as an ellipse below)
        return []
    raise LapgenError(f"unknown tool silhouette {name!r}", hint="valid: " + ", ".join(SILHOUETTES))


def tool_silhouette(name: str, size: int = 128, *, angle: float = _SHAFT_ANGLE) -> np.ndarray:
    """The silhouette of instrument `name` as a `(size, size)` bool mask (True = tool).

    `angle` (degrees, clockwise from +x in image coordinates) is the direction from the tip to the border.
    """
    if name not in SILHOUETTES:
        raise LapgenError(f"unknown tool silhouette {name!r}", hint="valid: " + ", ".join(SILHOUETTES))
    if size < 16:
        raise LapgenError(f"silhouette size must be at least 16 px (got {size})")
    a = math.radians(angle)
    du = (math.cos(a), math.sin(a))  # unit vector along the shaft, image coordinates (y down)
    dv = (-math.sin(a), math.cos(a))
    tip = _origin(size)  # px; the shaft then runs past the lower-right border

    def to_px(poly: Polygon) -> list[tuple[float, float]]:
        return [
            (tip[0] + size * (u * du[0] + v * dv[0]), tip[1] + size * (u * du[1] + v * dv[1]))
            for u, v in poly
        ]

    half = _SHAFT_WIDTH[name] / 2
    shaft = [(0.0, -half), (_SHAFT_LENGTH, -half), (_SHAFT_LENGTH, half), (0.0, half)]
    # Supersample 4x so oblique edges are clean, then threshold back to binary (NEAREST resize).
    scale = 4
    img = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(img)
    for poly in [shaft, *_tip_shapes(name)]:
        draw.polygon([(x * scale, y * scale) for x, y in to_px(poly)], fill=255)
    if name == "irrigator":  # rounded end of the tube
        r = half * size * scale
        cx, cy = tip[0] * scale, tip[1] * scale
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    small = img.resize((size, size), Image.BOX)
    return np.asarray(small) > 127


def _origin(size: int) -> tuple[float, float]:
    """(x, y) px where the shaft meets the tip shapes (the unit frame's origin)."""
    return 0.44 * size, 0.44 * size


def tip_position(name: str, size: int = 128, *, angle: float = _SHAFT_ANGLE) -> tuple[float, float]:
    """(x, y) px of the tool's working end in its `(size, size)` silhouette: the point of the tip shapes
    farthest from the border along the shaft (the jaws' ends, the hook's bend, the tube's rounded end)."""
    if name not in SILHOUETTES:
        raise LapgenError(f"unknown tool silhouette {name!r}", hint="valid: " + ", ".join(SILHOUETTES))
    reach = min((u for poly in _tip_shapes(name) for u, _v in poly), default=0.0)
    if name == "irrigator":
        reach = -_SHAFT_WIDTH[name] / 2  # the rounded end
    a = math.radians(angle)
    x0, y0 = _origin(size)
    return round(x0 + size * reach * math.cos(a), 2), round(y0 + size * reach * math.sin(a), 2)


def save_silhouette(name: str, out: str | Path, *, size: int = 128, angle: float = _SHAFT_ANGLE,
                    overwrite: bool = False) -> Path:
    """Write the silhouette of `name` as a 0/255 greyscale PNG at `out` (written to a temporary name and
    renamed); an existing `out` needs `overwrite`. Returns `out`."""
    from lapgen.outputs import atomic_file, check_writable_parent

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise LapgenError("a silhouette is written as a PNG", path=out, hint="give --out a .png name")
    mask = tool_silhouette(name, size, angle=angle)  # checks the name and the size before touching disk
    if out.exists() and not overwrite:
        raise LapgenError("output already exists", path=out, hint="pass --overwrite or choose another --out")
    check_writable_parent(out)
    with atomic_file(out) as fh:
        Image.fromarray(mask.astype(np.uint8) * 255).save(fh, format="PNG")  # (H, W) uint8: mode L
    return out
