"""Procedural laparoscopic-looking frames for synthetic datasets (tests, `lapgen demo`).

A frame = a tissue texture (fractal value noise mapped to a pink/red/yellow palette, moist specular
highlights, darker vessels, an endoscope vignette) seen through a slowly drifting camera, with metallic
instruments drawn on top: a dark insulated shaft entering from the image border and a tool-specific
metal tip (grasper jaws, bipolar jaws with blue insulation, L-hook, scissors blades, clip applier,
irrigator tube). Every primitive is drawn with the same call into the RGB image and into the tool's
mask, so the masks cover the drawn tools exactly (and nothing else).

Everything is deterministic in (seed, video, frame, size). Sizes are (width, height) in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Tools the renderer can draw: the six CholecT50 instruments (ids 0-5) plus Cholec80's specimen bag.
TOOL_NAMES: tuple[str, ...] = ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator", "specimenbag")
_MARGIN = 1.25  # texture is this much larger than the frame, for camera drift


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def _value_noise(rng: np.random.Generator, width: int, height: int, octaves: int = 5) -> np.ndarray:
    """Fractal value noise in [0, 1], shape (height, width), float32 (bicubic-upsampled random grids)."""
    out = np.zeros((height, width), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 3 * 2**o
        grid = rng.random((max(2, cells * height // width), cells)).astype(np.float32)
        up = Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC)
        out += amp * np.asarray(up)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


@lru_cache(maxsize=8)
def _vignette(width: int, height: int) -> np.ndarray:
    """Endoscope light fall-off, (H, W, 1) uint16 multiplier in 1/256 units (256 = unchanged)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2) * 0.75)
    v = np.clip(1.15 - 0.55 * r**2, 0.15, 1.0)
    return (v * 256).astype(np.uint16)[..., None]


@lru_cache(maxsize=8)
def tissue_texture(seed: int, video: int, width: int, height: int) -> np.ndarray:
    """A (round(H*1.25), round(W*1.25), 3) uint8 tissue texture for one video (cached)."""
    tw, th = round(width * _MARGIN), round(height * _MARGIN)
    rng = _rng(seed, video, 1)
    base, fat, dark = (_value_noise(rng, tw, th, octaves=7 if k == 0 else 5) for k in range(3))
    # palette (RGB): peritoneum pink, liver dark red, fat yellow
    pink = np.array([196, 92, 84], np.float32)
    liver = np.array([110, 28, 24], np.float32)
    yellow = np.array([214, 170, 96], np.float32)
    w_fat = np.clip((fat - 0.6) * 3.0, 0, 1)[..., None]
    w_dark = np.clip((dark - 0.55) * 2.5, 0, 1)[..., None]
    img = pink * (0.75 + 0.45 * base[..., None])
    img = img * (1 - w_dark) + liver * (0.8 + 0.4 * base[..., None]) * w_dark
    img = img * (1 - w_fat) + yellow * (0.85 + 0.3 * base[..., None]) * w_fat
    s = max(tw, th) / 128  # pixels per 1/128 of the frame
    vessels = Image.new("L", (tw, th), 0)  # thin winding vessels: a random walk of the heading
    draw = ImageDraw.Draw(vessels)
    for _ in range(int(rng.integers(3, 7))):
        x, y = rng.random(2) * (tw, th)
        heading, pts = rng.uniform(0, 2 * math.pi), []
        for _k in range(60):
            pts.append((x, y))
            heading += rng.normal(0, 0.18)
            x, y = x + math.cos(heading) * s, y + math.sin(heading) * s
        draw.line(pts, fill=255, width=max(1, round(s * rng.uniform(0.3, 0.7))))
    highlights = Image.new("L", (tw, th), 0)  # wet specular reflections
    draw = ImageDraw.Draw(highlights)
    for _ in range(int(rng.integers(8, 16))):
        cx, cy = rng.random(2) * (tw, th)
        rx, ry = s * rng.uniform(0.4, 1.8), s * rng.uniform(0.3, 1.0)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
    if s >= 2:
        vessels = vessels.filter(ImageFilter.GaussianBlur(0.4 * s))
        highlights = highlights.filter(ImageFilter.GaussianBlur(0.25 * s))
    a_v = np.asarray(vessels, np.float32)[..., None] / 255 * 0.55
    a_h = np.asarray(highlights, np.float32)[..., None] / 255 * 0.9
    img = img * (1 - a_v) + np.array([140, 30, 36], np.float32) * a_v
    img = img * (1 - a_h) + np.array([250, 238, 230], np.float32) * a_h
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return np.asarray(pil)


@dataclass(frozen=True)
class ToolPose:
    """Where a tool is: entry point on (or beyond) the border and tip, in pixels; plus jaw opening."""

    entry: tuple[float, float]
    tip: tuple[float, float]
    opening: float  # radians, half-angle between the jaws


def tool_pose(seed: int, video: int, tool: int, t: float, width: int, height: int) -> ToolPose:
    """The pose of `tool` at time `t` (seconds) in `video`: a fixed entry port, a smoothly moving tip."""
    rng = _rng(seed, video, 100 + tool)
    side = int(rng.integers(0, 3))  # 0 left, 1 right, 2 top (ports are never at the bottom)
    u = float(rng.uniform(0.1, 0.9))
    entry = [(-0.1 * width, u * height), (1.1 * width, u * height), (u * width, -0.1 * height)][side]
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.35, 0.7) * height
    f1, f2, p1, p2 = rng.uniform(0.15, 0.4), rng.uniform(0.1, 0.3), rng.uniform(0, 6.3), rng.uniform(0, 6.3)
    tip = (cx + 0.12 * width * math.sin(f1 * t + p1), cy + 0.1 * height * math.sin(f2 * t + p2))
    opening = 0.12 + 0.2 * (0.5 + 0.5 * math.sin(0.9 * t + p1 + p2))
    return ToolPose(entry=entry, tip=tip, opening=opening)


class _Canvas:
    """Draws each primitive into the RGB image and into the current tool's mask with the same call."""

    def __init__(self, rgb: Image.Image):
        self.rgb = ImageDraw.Draw(rgb)
        self.mask_img = Image.new("L", rgb.size, 0)
        self.mask = ImageDraw.Draw(self.mask_img)

    def polygon(self, pts, color) -> None:
        pts = [(float(x), float(y)) for x, y in pts]
        self.rgb.polygon(pts, fill=tuple(int(c) for c in color))
        self.mask.polygon(pts, fill=255)

    def line(self, pts, color, width: int) -> None:
        pts = [(float(x), float(y)) for x, y in pts]
        self.rgb.line(pts, fill=tuple(int(c) for c in color), width=width)
        self.mask.line(pts, fill=255, width=width)


def _rod(canvas: _Canvas, a, b, half_width: float, dark: float, light: float, bands: int = 5) -> None:
    """A cylinder from a to b drawn as parallel bands, bright in the middle (metallic shading)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6)
    for k in range(bands):
        lo, hi = -1 + 2 * k / bands, -1 + 2 * (k + 1) / bands
        shade = dark + (light - dark) * math.cos(0.5 * math.pi * (lo + hi) / 2) ** 2
        pts = [a + n * lo * half_width, b + n * lo * half_width, b + n * hi * half_width, a + n * hi * half_width]
        canvas.polygon(pts, (shade, shade, shade * 1.03))


def _jaw(canvas: _Canvas, base, direction, normal, length, width, angle, color) -> None:
    """One jaw: a tapered quad rotated by `angle` from the axis around `base`."""
    c, s = math.cos(angle), math.sin(angle)
    d = direction * c + normal * s
    n = np.array([-d[1], d[0]])
    tip = base + d * length
    canvas.polygon([base + n * width / 2, tip + n * width / 6, tip - n * width / 6, base - n * width / 2], color)


def draw_tool(canvas: _Canvas, tool: str, pose: ToolPose, width: int, scale: float = 1.0) -> None:
    """Draw one tool (name in TOOL_NAMES) at `pose`; `width` = frame width (sets the scale).

    `scale` multiplies the tool's thickness and tip length (1.0: a shaft about 4.4 % of the frame width
    wide; real Cholec80 graspers are often wider, `lapgen demo` draws them at 1.8)."""
    entry, tip = np.asarray(pose.entry, float), np.asarray(pose.tip, float)
    axis = tip - entry
    dist = max(np.hypot(*axis), 1e-6)
    d = axis / dist
    n = np.array([-d[1], d[0]])
    shaft_w = max(1.5, 0.022 * width * scale)  # half width of the shaft, pixels
    tip_len = 0.1 * width * min(scale, 1.5)
    base = tip - d * tip_len
    metal = (205, 205, 212)
    if tool == "specimenbag":  # a whitish plastic pouch held near the port
        pts = [tip + 0.09 * width * np.array([math.cos(a), 0.7 * math.sin(a)]) * (1 + 0.15 * math.sin(3 * a))
               for a in np.linspace(0, 2 * math.pi, 14, endpoint=False)]
        canvas.polygon(pts, (218, 222, 214))
        canvas.line([entry, tip], (190, 196, 190), max(1, round(shaft_w)))
        return
    if tool == "irrigator":
        _rod(canvas, entry, tip, shaft_w * 0.8, 110, 235)
        canvas.line([tip - d * tip_len * 0.5 - n * shaft_w * 0.8, tip - d * tip_len * 0.5 + n * shaft_w * 0.8],
                    (60, 60, 64), max(1, round(shaft_w * 0.5)))
        return
    _rod(canvas, entry, base, shaft_w, 25, 95)  # black insulated shaft
    _rod(canvas, base - d * shaft_w, base + d * shaft_w * 0.5, shaft_w * 1.05, 120, 230)  # metal collar
    if tool == "grasper":
        for sgn in (1, -1):
            _jaw(canvas, base, d, n, tip_len, shaft_w * 1.2, sgn * pose.opening, metal)
    elif tool == "bipolar":
        for sgn in (1, -1):
            _jaw(canvas, base, d, n, tip_len, shaft_w * 0.9, sgn * pose.opening * 0.7, (70, 96, 170))
            _jaw(canvas, base + d * tip_len * 0.6, d, n, tip_len * 0.4, shaft_w * 0.5, sgn * pose.opening * 0.7,
                 metal)
    elif tool == "hook":
        rod_w = max(1, round(shaft_w * 0.55))
        bend = base + d * tip_len
        canvas.line([base, bend], (180, 182, 188), rod_w)
        canvas.line([bend, bend + n * tip_len * 0.45], (200, 200, 206), rod_w)
    elif tool == "scissors":
        for sgn in (1, -1):
            _jaw(canvas, base, d, n, tip_len * 1.1, shaft_w * 0.7, sgn * pose.opening * 0.5, metal)
    elif tool == "clipper":
        for sgn in (1, -1):
            _jaw(canvas, base + n * sgn * shaft_w * 0.5, d, n, tip_len, shaft_w * 0.9, 0.0, metal)
        clip_c = base + d * tip_len * 0.7
        canvas.polygon([clip_c - n * shaft_w * 0.9, clip_c + n * shaft_w * 0.9,
                        clip_c + n * shaft_w * 0.9 + d * 2, clip_c - n * shaft_w * 0.9 + d * 2], (212, 180, 90))
    else:
        raise ValueError(f"unknown tool {tool!r}")


def draw_tools(img: Image.Image, seed: int, video: int, t: float, tools: list[str],
               tool_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Draw `tools` (names from TOOL_NAMES) onto `img` in place at time `t` (seconds).

    Returns `{tool: (H, W) uint8 0/255}` of the visible pixels of each tool (a tool drawn later hides
    earlier ones; the specimen bag is drawn first, under the instruments).
    """
    width, height = img.size
    canvas = _Canvas(img)
    order = sorted(tools, key=lambda name: name != "specimenbag")
    per_tool: dict[str, np.ndarray] = {}
    for name in order:
        canvas.mask_img.paste(0, (0, 0, width, height))
        draw_tool(canvas, name, tool_pose(seed, video, TOOL_NAMES.index(name), t, width, height), width,
                  tool_scale)
        per_tool[name] = np.asarray(canvas.mask_img).copy()
    for k, name in enumerate(order):  # keep only what is visible
        for other in order[k + 1:]:
            per_tool[name] = per_tool[name] & ~per_tool[other]
    return per_tool


def vignette(rgb: np.ndarray) -> np.ndarray:
    """Apply the endoscope light fall-off to an (H, W, 3) uint8 image."""
    h, w = rgb.shape[:2]
    return (rgb.astype(np.uint16) * _vignette(w, h) >> 8).astype(np.uint8)


def instrument_union(per_tool: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Union of the instrument masks (the specimen bag is not an instrument), (H, W) uint8 0/255."""
    union = np.zeros(shape, np.uint8)
    for name, m in per_tool.items():
        if name != "specimenbag":
            union |= m
    return union


def render_frame(seed: int, video: int, t: float, tools: list[str], width: int, height: int,
                 tool_masks: bool = False, tool_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray | dict[str, np.ndarray]]:
    """Render one frame at time `t` (seconds) with `tools` (names from TOOL_NAMES) drawn on tissue.

    Returns `(rgb, mask)`: rgb (H, W, 3) uint8; mask (H, W) uint8 0/255 = union of the visible
    instruments (the specimen bag is not an instrument and stays out of it). With `tool_masks=True` the
    second item is `{tool name: (H, W) uint8 0/255}` instead (the bag included).
    """
    tex = tissue_texture(seed, video, width, height)
    th, tw = tex.shape[:2]
    ox = int(round((tw - width) * (0.5 + 0.5 * math.sin(0.05 * t + video))))  # camera drift, pixels
    oy = int(round((th - height) * (0.5 + 0.5 * math.sin(0.037 * t + 2 * video))))
    img = Image.fromarray(tex[oy:oy + height, ox:ox + width])
    per_tool = draw_tools(img, seed, video, t, tools, tool_scale)
    rgb = vignette(np.asarray(img))
    return rgb, (per_tool if tool_masks else instrument_union(per_tool, (height, width)))


def solid_color_regions(seed: int, key: int, width: int, height: int, n_classes: int) -> np.ndarray:
    """A (H, W) int map of `n_classes` smooth organic regions (argmax of noise fields), for segmentation."""
    rng = _rng(seed, key, 7)
    fields = np.stack([_value_noise(rng, width, height, octaves=3) for _ in range(n_classes)])
    return fields.argmax(axis=0)
