"""Mask-sequence authoring for the studio's Tools panel: tool masks, keyframes, the click canvas, previews.

A *track* is one tool: a binary mask (an upload, a built-in silhouette or a mask segmented from a real
frame) and its keyframes (position of the mask's centroid in px, rotation in degrees counter-clockwise,
scale). The sequence is the union over tracks of `lapgen.data.mask_motion.animate_mask`, which is what
`lapgen masks animate --mask ... --path ... --rotate ... --scale ...` does with several `--mask/--path`
pairs; `masks_animate_command` writes that command for the page.

A click places the tool's tip by default (where a surgeon points), or its centre. The tip of a built-in
silhouette is known; for an uploaded or segmented mask it is estimated as the mask pixel farthest from
where the tool enters the image (`estimate_tip`); a mask that touches no border has no tip, and a click
places its centre. A keyframe still stores the centroid position that `--path` takes.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lapgen.errors import LapgenError

DISPLAY_SIZE = 384  # px; the click canvas is shown larger than the 128 px masks
TRACK_COLOURS = ((80, 200, 255), (255, 170, 60), (140, 255, 120), (255, 110, 200), (250, 240, 90))


ANCHORS = ("tip", "centre")  # what a click on the canvas places


@dataclass
class Keyframe:
    x: float  # px, canvas coordinates (x right): the mask's centroid, as `--path` takes it
    y: float  # px (y down)
    rotation: float = 0.0  # degrees, counter-clockwise, about the mask's centroid
    scale: float = 1.0
    at: tuple[float, float] | None = None  # the clicked point (the tip) when it is not the centroid


@dataclass
class ToolTrack:
    label: str  # "grasper silhouette", "uploaded mask", "mask from frame"
    mask: np.ndarray  # (H, W) bool, canvas size
    keyframes: list[Keyframe] = field(default_factory=list)
    tip: tuple[float, float] | None = None  # (x, y) px of the tool's tip in `mask`; None: unknown


def estimate_tip(mask: np.ndarray) -> tuple[float, float] | None:
    """The tip of a tool mask: the mask pixel farthest from the mean of its pixels on the image border
    (where the shaft enters). None when the mask touches no border (a floating shape has no entry side)."""
    h, w = mask.shape
    border = np.zeros_like(mask, dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    entry = np.argwhere(mask & border)
    if entry.size == 0:
        return None
    ey, ex = entry.mean(axis=0)
    ys, xs = np.nonzero(mask)
    far = int(np.argmax((xs - ex) ** 2 + (ys - ey) ** 2))
    return float(xs[far]), float(ys[far])


def centroid_for(track: ToolTrack, x: float, y: float, rotation: float, scale: float,
                 anchor: str = "tip") -> tuple[float, float]:
    """Where the mask's centroid goes so that the `anchor` point (tip or centre) of the rotated, scaled mask
    lands on (x, y); the same affine map as `animate_mask` (OpenCV's rotation about the centroid)."""
    import cv2

    from lapgen.data.mask_motion import mask_centroid

    if anchor not in ANCHORS:
        raise LapgenError(f"unknown anchor {anchor!r}", hint="valid: " + ", ".join(ANCHORS))
    if anchor == "centre" or track.tip is None:
        return float(x), float(y)
    cx, cy = mask_centroid(track.mask)
    linear = cv2.getRotationMatrix2D((0.0, 0.0), float(rotation), float(scale))[:, :2]
    dx, dy = linear @ np.array([track.tip[0] - cx, track.tip[1] - cy])
    return round(float(x - dx), 2), round(float(y - dy), 2)


def fit_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A mask at the canvas size `size` x `size` (nearest neighbour), refusing an empty one."""
    from lapgen.data.masks import binarize, resize_mask

    mask = resize_mask(binarize(mask), (size, size))
    if not mask.any():
        raise LapgenError("the tool mask is empty", hint="the tool must be white (255) on black")
    return mask


def add_track(tracks: list[ToolTrack], label: str, mask: np.ndarray, size: int,
              tip: tuple[float, float] | None = None) -> list[ToolTrack]:
    """`tracks` plus a new tool (its tip given, e.g. a silhouette's, or estimated); clicks on the canvas then
    add keyframes to it."""
    fitted = fit_mask(mask, size)
    if tip is None:
        tip = estimate_tip(fitted)
    return [*tracks, ToolTrack(label, fitted, tip=tip)]


def add_keyframe(
    tracks: list[ToolTrack], x: float, y: float, rotation: float = 0.0, scale: float = 1.0, anchor: str = "tip"
) -> list[ToolTrack]:
    """Add a keyframe to the last (current) tool: its `anchor` (tip or centre) at the click (x, y)."""
    if not tracks:
        raise LapgenError("add a tool first (a silhouette, an uploaded mask or a mask from a frame)")
    if scale <= 0:
        raise LapgenError(f"scale must be positive (got {scale:g})")
    last = tracks[-1]
    cx, cy = centroid_for(last, x, y, rotation, scale, anchor)
    at = None if (cx, cy) == (float(x), float(y)) else (float(x), float(y))
    key = Keyframe(cx, cy, float(rotation), float(scale), at)
    return [*tracks[:-1], ToolTrack(last.label, last.mask, [*last.keyframes, key], last.tip)]


def undo_keyframe(tracks: list[ToolTrack]) -> list[ToolTrack]:
    """Remove the last keyframe of the current tool, or the tool itself when it has none."""
    if not tracks:
        return []
    last = tracks[-1]
    if not last.keyframes:
        return tracks[:-1]
    return [*tracks[:-1], ToolTrack(last.label, last.mask, last.keyframes[:-1], last.tip)]


def display_to_canvas(x: float, y: float, size: int, display: int = DISPLAY_SIZE) -> tuple[float, float]:
    """A click on the displayed canvas (px of the shown image) -> mask coordinates (px of `size`)."""
    return (round(x * size / display, 1), round(y * size / display, 1))


def path_text(keyframes: list[Keyframe]) -> str:
    """`"x0,y0;x1,y1;..."` as `lapgen masks animate --path` takes it."""
    return ";".join(f"{k.x:g},{k.y:g}" for k in keyframes)


def pose_range(values: list[float]) -> str:
    """`"v0:vK"` as `--rotate` / `--scale` take it when the values change linearly over the keyframes (what
    `animate_mask` does); otherwise one value per keyframe `"v0:v1:...:vK"`."""
    ramp = np.linspace(values[0], values[-1], len(values))
    if np.allclose(values, ramp):
        return f"{values[0]:g}:{values[-1]:g}"
    return ":".join(f"{v:g}" for v in values)


def animate_track(track: ToolTrack, frames: int, size: int) -> np.ndarray:
    """`(frames, size, size)` bool: the track's mask moved through its keyframes by `animate_mask`, with
    one rotation and scale per keyframe (piecewise linear between keyframes), which is what
    `lapgen masks animate --rotate r0:...:rK --scale s0:...:sK` does."""
    from lapgen.data.mask_motion import animate_mask

    keys = track.keyframes
    if not keys:
        raise LapgenError(f"tool '{track.label}' has no keyframe", hint="click on the canvas to place it")
    return animate_mask(
        track.mask,
        [(k.x, k.y) for k in keys],
        frames,
        rotate=[k.rotation for k in keys],
        scale=[k.scale for k in keys],
        size=(size, size),
    )


def animate_tracks(tracks: list[ToolTrack], frames: int, size: int) -> np.ndarray:
    """The union over tools: `(frames, size, size)` bool."""
    if not tracks:
        raise LapgenError("no tool yet", hint="add a tool and click on the canvas to place keyframes")
    if not 1 <= frames <= 1000:
        raise LapgenError(f"frames must be in 1..1000 (got {frames})")
    out = np.zeros((frames, size, size), bool)
    for track in tracks:
        out |= animate_track(track, frames, size)
    return out


def render_canvas(
    tracks: list[ToolTrack], size: int, display: int = DISPLAY_SIZE, background: np.ndarray | None = None
) -> np.ndarray:
    """The click canvas, `(display, display, 3)` uint8: each tool drawn at each keyframe pose in its colour,
    the current tool's unplaced mask faintly when it has no keyframe yet, keyframes numbered."""
    from lapgen.data.mask_motion import animate_mask

    base = np.zeros((size, size, 3), np.float32) + 24
    if background is not None:
        base = np.asarray(Image.fromarray(background).convert("RGB").resize((size, size)), np.float32) * 0.6
    for t, track in enumerate(tracks):
        colour = np.array(TRACK_COLOURS[t % len(TRACK_COLOURS)], np.float32)
        if not track.keyframes:
            base[track.mask] = 0.6 * base[track.mask] + 0.4 * colour
        for k in track.keyframes:
            placed = animate_mask(
                track.mask,
                [(k.x, k.y)],
                1,
                rotate=(k.rotation, k.rotation),
                scale=(k.scale, k.scale),
                size=(size, size),
            )[0]
            base[placed] = 0.35 * base[placed] + 0.65 * colour
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize((display, display), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    f = display / size
    for t, track in enumerate(tracks):
        colour = TRACK_COLOURS[t % len(TRACK_COLOURS)]
        centres = [((k.at or (k.x, k.y))[0] * f, (k.at or (k.x, k.y))[1] * f) for k in track.keyframes]
        if len(centres) > 1:
            draw.line(centres, fill=colour, width=2)
        for n, (cx, cy) in enumerate(centres):
            draw.ellipse([cx - 6, cy - 6, cx + 6, cy + 6], fill=(255, 255, 255), outline=colour, width=2)
            draw.text((cx + 8, cy - 8), f"{t + 1}.{n + 1}", fill=(255, 255, 255))
    return np.asarray(img)


def tracks_summary(tracks: list[ToolTrack]) -> str:
    """Markdown list of tools and keyframes for the page."""
    if not tracks:
        return "No tool yet: pick a silhouette, upload a mask or extract one from a frame."
    lines = []
    for t, track in enumerate(tracks):
        keys = ", ".join(f"({k.x:g}, {k.y:g}; {k.rotation:g}°, ×{k.scale:g})" for k in track.keyframes)
        lines.append(f"- **tool {t + 1}** ({track.label}): {keys or 'click the canvas to place it'}")
    return "\n".join(lines)


def masks_animate_command(tracks: list[ToolTrack], tool_files: list[Path], frames: int, out: Path) -> str:
    """The `lapgen masks animate` command that writes the same sequence (tool masks saved as files)."""
    parts = ["lapgen", "masks", "animate"]
    rotated = any(k.rotation for t in tracks for k in t.keyframes)
    scaled = any(k.scale != 1 for t in tracks for k in t.keyframes)
    for track, file in zip(tracks, tool_files):  # the CLI takes --rotate/--scale once per --mask, or never
        parts += ["--mask", str(file), "--path", path_text(track.keyframes)]
        if rotated:
            parts += ["--rotate", pose_range([k.rotation for k in track.keyframes])]
        if scaled:
            parts += ["--scale", pose_range([k.scale for k in track.keyframes])]
    parts += ["--frames", str(frames), "--out", str(out)]
    return shlex.join(parts)


def preview_gif(masks: np.ndarray, path: Path, fps: float) -> Path:
    """The mask sequence as a GIF (white tools on black) for the preview before any generation."""
    from lapgen.data.video import write_gif

    frames = np.repeat((masks[..., None] * 255).astype(np.uint8), 3, axis=-1)  # (F, H, W, 3)
    return write_gif(frames, path, fps=min(float(fps), 50.0))
