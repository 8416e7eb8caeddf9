"""Binary tool masks: read, write, threshold (and, below, mask sequences).

A lapgen mask is a single-channel 8-bit PNG whose pixels are 0 (background) or 255 (tool), the same size
as its image: the conditioning image of the paper's 2024 ControlNet dataset (Iliash et al. 2024, union of
all YOLOv8 tool instances). In memory a mask is a `(H, W)` bool array. Masks are always resized with
nearest-neighbour sampling, never interpolated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
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
# thresholded at 127 on reading (removes codec noise, data-formats.md section 6).

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


# ---- authoring: a tool mask moved along a keyframed trajectory ----

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


# ---- extraction: real clips -> mask sequences (paper route, data-formats.md section 6) ----

SegmentFn = Callable[[list[np.ndarray]], list[tuple[np.ndarray, int]]]  # RGB frames -> (union mask, count)


def segment_with_reuse(segment: SegmentFn, frames: list[np.ndarray], previous: np.ndarray | None
                       ) -> tuple[list[np.ndarray], int]:
    """Union masks of `frames`; a frame without detections reuses the previous mask (empty at the start).
    Returns (masks, number of frames that reused)."""
    out, reused = [], 0
    for rgb, (mask, count) in zip(frames, segment(frames)):
        if count == 0:
            mask = previous if previous is not None else np.zeros(rgb.shape[:2], bool)
            reused += 1
        out.append(mask)
        previous = mask
    return out, reused


def resize_frame(rgb: np.ndarray, size: int) -> np.ndarray:
    """RGB `(H, W, 3)` -> `(size, size, 3)`, Pillow bilinear with antialiasing (as `lapgen prepare`)."""
    if rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR, reducing_gap=None))


def clip_windows(prompts: dict[int, str], seconds: int = 10) -> list[tuple[int, int, str]]:
    """Cut runs of identical prompts over consecutive seconds into non-overlapping windows.

    `prompts`: T-index (1 fps) -> prompt. Each run is cut into `seconds`-long windows from its start, a
    shorter remainder dropped (a run of 25 s gives [0-9] and [10-19]). Returns (start, end inclusive, prompt).
    """
    if seconds < 1:
        raise LapgenError("--seconds must be at least 1")
    windows = []
    keys = sorted(prompts)
    i = 0
    while i < len(keys):
        j = i
        while j + 1 < len(keys) and keys[j + 1] == keys[j] + 1 and prompts[keys[j + 1]] == prompts[keys[i]]:
            j += 1
        run_start, run_len = keys[i], j - i + 1
        for w in range(run_len // seconds):
            s = run_start + w * seconds
            windows.append((s, s + seconds - 1, prompts[keys[i]]))
        i = j + 1
    return windows


@dataclass
class ClipSpec:
    video: int  # shared CholecT50 / Cholec80 video id
    t_start: int  # first second (T-index)
    t_end: int  # last second, inclusive
    prompt: str

    def c_range(self, fps: int = 25) -> range:
        """Cholec80 frame indices `fps·s ... fps·(e+1) - 1` (250 frames for 10 s at 25 fps)."""
        return range(fps * self.t_start, fps * (self.t_end + 1))


def plan_clips(cholect50: str | Path, cholec80: str | Path, *, seconds: int = 10, n: int = 50, seed: int = 0,
               prompt_format: str = "paper") -> tuple[list[ClipSpec], int]:
    """Seeded choice of up to `n` windows over the videos in both datasets. Returns (clips, windows found)."""
    from lapgen.data.cholec80 import video_files
    from lapgen.data.cholect50 import find_videos, read_cholect50
    from lapgen.data.prompts import triplet_prompt

    if n < 1:
        raise LapgenError("--n must be at least 1")
    shared = sorted(set(find_videos(cholect50)) & set(video_files(cholec80)))
    if not shared:
        raise LapgenError("no video is in both CholecT50 and Cholec80", path=cholect50,
                          hint="pass the two releases' root folders (the 45 shared videos qualify)")
    candidates = []
    for video in read_cholect50(cholect50, shared):
        prompts = {f.frame: triplet_prompt(f.triplets, f.phase, prompt_format) for f in video.frames}
        candidates += [ClipSpec(video.video, s, e, p) for s, e, p in clip_windows(prompts, seconds)]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(candidates), size=min(n, len(candidates)), replace=False).tolist()) \
        if candidates else []
    clips = sorted((candidates[i] for i in chosen), key=lambda c: (c.video, c.t_start))
    return clips, len(candidates)


def write_clips(clips: list[ClipSpec], cholec80: str | Path, stage: str | Path, segment: SegmentFn, *,
                size: int = 128, fps: int = 25, advance: Callable[[int], None] | None = None) -> list[dict]:
    """Per clip `clip_NNN/`: `prompt.txt`, `masks/NNNNNN.png`, `frames/NNNNNN.png`, `clip.json`.

    Frames are decoded sequentially from the Cholec80 MP4 (C-index = decoded frame index) and resized to
    `size`; masks are the segmenter's union masks on the resized frames (previous mask reused when none).
    Finished clips (with `clip.json`) are skipped, so an interrupted run resumes.
    """
    from lapgen.data.cholec80 import video_files
    from lapgen.data.video import iter_frames

    stage = Path(stage)
    files = video_files(cholec80)
    records: list[dict] = []
    by_video: dict[int, list[tuple[int, ClipSpec]]] = {}
    for k, clip in enumerate(clips):
        by_video.setdefault(clip.video, []).append((k, clip))
    for video, items in by_video.items():
        todo = [(k, c) for k, c in items if not (stage / f"clip_{k:03d}" / "clip.json").exists()]
        buffers: dict[int, list[np.ndarray]] = {k: [] for k, _ in todo}
        last = max((c.c_range(fps).stop for _, c in todo), default=0)
        if todo:
            for idx, rgb in enumerate(iter_frames(files[video])):
                if idx >= last:
                    break
                for k, c in todo:
                    if idx in c.c_range(fps):
                        buffers[k].append(resize_frame(rgb, size))
        for k, c in items:
            folder = stage / f"clip_{k:03d}"
            if (folder / "clip.json").exists():
                records.append(json.loads((folder / "clip.json").read_text()))
                continue
            frames = buffers[k]
            if len(frames) != len(c.c_range(fps)):
                raise LapgenError(f"video {video:02d} ends before frame {c.c_range(fps).stop - 1} "
                                  f"(clip {k}, seconds {c.t_start}-{c.t_end})", path=files[video],
                                  hint="the Cholec80 video and CholecT50 labels disagree in length")
            masks, reused = [], 0
            previous = None
            for s in range(0, len(frames), 16):
                part, r = segment_with_reuse(segment, frames[s:s + 16], previous)
                masks += part
                reused += r
                previous = masks[-1]
            write_mask_sequence(folder / "masks", masks)
            for i, rgb in enumerate(frames):
                with atomic_file(folder / "frames" / f"{i:06d}.png") as fh:
                    Image.fromarray(rgb).save(fh, format="PNG")
            (folder / "prompt.txt").write_text(c.prompt + "\n")
            record = {"clip": folder.name, "video": c.video, "t_start": c.t_start, "t_end": c.t_end,
                      "c_start": c.c_range(fps).start, "c_end": c.c_range(fps).stop - 1, "frames": len(frames),
                      "fps": fps, "prompt": c.prompt, "reused_masks": reused}
            with atomic_file(folder / "clip.json", "w") as fh:
                json.dump(record, fh)
            records.append(record)
            if advance:
                advance(1)
    return records
