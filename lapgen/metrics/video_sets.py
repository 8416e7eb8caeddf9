"""Video sets for `lapgen eval video`: which videos a folder holds, their masks, and one decode of each.

A set (GEN or REAL) is a folder of one of these kinds, found in this order:

- a **video set** written by `lapgen sample-video` (`metadata.jsonl` rows with `video` / `frames_dir` /
  `masks`): one video per clip, read from its lossless PNG frames when present, else its MP4;
- **one video's frames** written by `lapgen video --save-frames` (`NNNNNN.png`, `masks/`, `metadata.jsonl` rows
  with `frame` and `conditioning_image_file_name`), or any folder whose own files are images: a set of one;
- a **clip folder set** written by `lapgen masks clips` (`clip_NNN/frames/`, `clip_NNN/masks/`, `prompt.txt`);
- a folder of **MP4 files and/or frame folders** (each sub-folder of images is one video, with `masks/` when it
  has one). `X_frames/` beside `X.mp4` (what `lapgen video --save-frames` writes) is the same video: the
  lossless frames are read and the MP4 skipped, as are `X_side_by_side.mp4` previews and GIFs. An MP4 written
  by `lapgen video` takes its masks from its card when they are still there with the recorded SHA-256.

Frames are sorted naturally (`f2.png` before `f10.png`), read with PIL as RGB uint8; videos are decoded with
PyAV. Everything cheap is checked before any frame is decoded: at least one video, one frame size for the
whole set, and a mask per frame where masks are recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.metrics.images import image_size

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_FILE_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")  # not .gif: lapgen's previews


@dataclass
class VideoItem:
    """One video of a set: its frames (files) or a video file, and its per-frame masks if recorded."""

    name: str  # relative to the set's folder
    n_frames: int
    size: tuple[int, int]  # (width, height)
    frames: list[Path] | None = None  # PNG/JPEG frames in order
    video: Path | None = None  # else a video file
    masks: list[Path] | None = None  # one mask image per frame
    mask_source: str | None = None  # or a mask folder / video verified against the card of an MP4
    mask_check: dict[str, Any] | None = None  # {sha256, size, frames} of `mask_source`
    prompt: str | None = None

    @property
    def has_masks(self) -> bool:
        return self.masks is not None or self.mask_source is not None


@dataclass
class VideoSet:
    root: Path
    kind: str  # "video-set" | "frames" | "clips" | "folder"
    items: list[VideoItem]
    card: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def size(self) -> tuple[int, int]:
        return self.items[0].size

    @property
    def has_masks(self) -> bool:
        return all(item.has_masks for item in self.items)

    @property
    def n_frames(self) -> int:
        return sum(item.n_frames for item in self.items)


def natural_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    from lapgen.data.masks import natural_key

    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes
                   and not p.name.startswith(".")), key=lambda p: natural_key(p.name))


def _frames_item(name: str, frames: list[Path], masks: list[Path] | None, prompt: str | None = None,
                 where: Path | None = None) -> VideoItem:
    if not frames:
        raise LapgenError("video folder holds no frames", path=where or Path(name), hint="put its frames in as PNGs")
    size = image_size(frames[0])
    for f in frames[1:]:
        other = image_size(f)
        if other != size:
            raise LapgenError(f"frames of one video differ in size: {f.name} is {other[0]}x{other[1]}, "
                              f"{frames[0].name} is {size[0]}x{size[1]}", path=f,
                              hint="give every frame of a video the same size")
    return VideoItem(name=name, n_frames=len(frames), size=size, frames=frames, masks=masks, prompt=prompt)


def _mask_files(folder: Path) -> list[Path] | None:
    return natural_files(folder) if folder.is_dir() else None


def _read_prompt(folder: Path) -> str | None:
    path = folder / "prompt.txt"
    return path.read_text().strip() if path.is_file() else None


def _frame_folder(folder: Path, root: Path) -> VideoItem:
    """A folder that is one video: a clip folder (frames/ + masks/), save-frames output, or images."""
    from lapgen.data.frames import metadata_lines

    name = str(folder.relative_to(root)) if folder != root else folder.name
    if (folder / "frames").is_dir():  # `lapgen masks clips` clip folder
        return _frames_item(name, natural_files(folder / "frames"), _mask_files(folder / "masks"),
                            _read_prompt(folder), folder / "frames")
    meta = folder / "metadata.jsonl"
    if meta.is_file():  # `lapgen video --save-frames`: frames paired with their conditioning masks
        rows = [row for _, row in metadata_lines(meta) if isinstance(row, dict)]
        if rows and all("file_name" in r and "frame" in r for r in rows):
            rows.sort(key=lambda r: int(r["frame"]))
            frames = [folder / r["file_name"] for r in rows]
            missing = [f for f in frames if not f.is_file()]
            if missing:
                raise LapgenError(f"{len(missing)} frame(s) listed in metadata.jsonl are missing, e.g. "
                                  f"{missing[0].name}", path=folder)
            masks = None
            if all(r.get("conditioning_image_file_name") for r in rows):
                masks = [folder / r["conditioning_image_file_name"] for r in rows]
            return _frames_item(name, frames, masks, rows[0].get("text"))
    return _frames_item(name, natural_files(folder), _mask_files(folder / "masks"), _read_prompt(folder), folder)


def _video_item(path: Path, root: Path, masks: list[Path] | None = None) -> VideoItem:
    from lapgen.data.video import probe

    info = probe(path, count=True)  # demux only; a corrupt or unreadable file is a one-line error here
    if info.frames < 1:
        raise LapgenError("video has no frames", path=path, hint="re-encode or remove it")
    item = VideoItem(name=str(path.relative_to(root)), n_frames=info.frames, size=info.size, video=path,
                     masks=masks)
    if masks is None:
        _masks_from_card(item)
    return item


def _masks_from_card(item: VideoItem) -> None:
    """Masks of an MP4 written by `lapgen video`: its card names them and their SHA-256 after resizing."""
    from lapgen.cards import read_card

    try:
        card = read_card(item.video, required=False) or {}
    except LapgenError:
        return
    masks = card.get("masks")
    masks = masks[0] if isinstance(masks, list) and masks else masks
    config = card.get("config") or {}
    if not isinstance(masks, dict) or not masks.get("source") or not Path(masks["source"]).exists():
        return
    res = config.get("resolution")
    item.mask_source = str(masks["source"])
    item.mask_check = {"sha256": masks.get("sha256"), "size": [res, res] if res else None,
                       "frames": masks.get("frames")}


def _set_rows(root: Path) -> list[dict[str, Any]] | None:
    from lapgen.data.frames import metadata_lines

    meta = root / "metadata.jsonl"
    if not meta.is_file():
        return None
    rows = [row for _, row in metadata_lines(meta)]
    if rows and all(isinstance(r, dict) and ("video" in r or "frames_dir" in r) for r in rows):
        return rows
    return None


def _from_video_set(root: Path, rows: list[dict[str, Any]]) -> list[VideoItem]:
    items = []
    for row in rows:
        frames_dir = root / row["frames_dir"] if row.get("frames_dir") else None
        masks = _mask_files(root / row["masks"]) if row.get("masks") else None
        if frames_dir is not None and frames_dir.is_dir():
            item = _frames_item(str(frames_dir.relative_to(root)), natural_files(frames_dir), masks, row.get("prompt"))
        elif row.get("video") and (root / row["video"]).is_file():
            item = _video_item(root / row["video"], root, masks)
            item.prompt = row.get("prompt")
        else:
            raise LapgenError(f"video {row.get('frames_dir') or row.get('video')} listed in metadata.jsonl is "
                              "missing", path=root, hint="re-run `lapgen sample-video` to finish the set")
        items.append(item)
    return items


def _from_folder(root: Path, notes: list[str]) -> list[VideoItem]:
    from lapgen.data.masks import natural_key

    items: list[VideoItem] = []
    children = sorted((p for p in root.iterdir() if not p.name.startswith(".") and not p.name.endswith(".partial")),
                      key=lambda p: natural_key(p.name))
    dirs = {p.name for p in children if p.is_dir()}
    for p in children:
        if p.is_file() and p.suffix.lower() in VIDEO_FILE_SUFFIXES:
            if p.stem.endswith("_side_by_side"):
                notes.append(f"skipped {p.name} (a `lapgen video --side-by-side` preview)")
            elif f"{p.stem}_frames" in dirs:
                notes.append(f"read {p.stem}_frames/ (lossless PNG frames) instead of {p.name}")
            else:
                items.append(_video_item(p, root))
        elif p.is_dir() and p.name != "masks":
            if (p / "frames").is_dir() or (p / "metadata.jsonl").is_file() or natural_files(p):
                items.append(_frame_folder(p, root))
    return items


def open_video_set(path: str | Path, *, what: str = "videos") -> VideoSet:
    """List and validate the videos of a folder (see the module docstring); nothing is decoded yet."""
    from lapgen.cards import read_card

    root = Path(path)
    if not root.exists():
        raise LapgenError(f"{what} folder does not exist", path=root, hint="check the path")
    if not root.is_dir():
        raise LapgenError(f"{what} is not a folder", path=root,
                          hint="pass a folder of videos (MP4 files or frame folders) or a video set")
    notes: list[str] = []
    rows = _set_rows(root)
    if rows is not None:
        kind, items = "video-set", _from_video_set(root, rows)
    elif (root / "metadata.jsonl").is_file() or natural_files(root):
        kind, items = "frames", [_frame_folder(root, root)]
    else:
        items = _from_folder(root, notes)
        kind = "clips" if items and all((root / i.name / "frames").is_dir() for i in items) else "folder"
    if not items:
        raise LapgenError(f"{what} holds no videos", path=root,
                          hint=f"expected MP4 files ({', '.join(VIDEO_FILE_SUFFIXES)}) or folders of frames")
    first = items[0]
    for item in items:
        if item.size != first.size:
            raise LapgenError(f"{what} mixes frame sizes: {item.name} is {item.size[0]}x{item.size[1]}, "
                              f"{first.name} is {first.size[0]}x{first.size[1]}", path=root,
                              hint="resize the videos of a set to one size first")
        if item.masks is not None and len(item.masks) != item.n_frames:
            raise LapgenError(f"{item.name} has {item.n_frames} frames but {len(item.masks)} masks", path=root,
                              hint="give one mask per frame (or remove the masks folder)")
    return VideoSet(root=root, kind=kind, items=items, card=read_card(root, required=False), notes=notes)


def decode(item: VideoItem) -> np.ndarray:
    """All frames of a video, `(T, H, W, 3)` uint8 RGB: the one decode every metric reads."""
    if item.frames is not None:
        from lapgen.metrics.images import load_rgb

        frames = np.stack([load_rgb(f) for f in item.frames])
    else:
        from lapgen.data.video import read_video

        frames = read_video(item.video)
    if len(frames) != item.n_frames:  # a container that miscounts, or a file changed since it was listed
        raise LapgenError(f"decoded {len(frames)} frames, expected {item.n_frames}", path=item.video or item.name,
                          hint="re-encode the video")
    return frames


def read_masks(item: VideoItem) -> np.ndarray | None:
    """The video's per-frame masks `(T, h, w)` bool (at their own resolution), or None when not recorded."""
    if item.masks is not None:
        from lapgen.metrics.spatial import conditioning_mask

        masks = np.stack([conditioning_mask(p) for p in item.masks])
    elif item.mask_source is not None:
        from lapgen.data.masks import read_mask_sequence

        check = item.mask_check or {}
        size = tuple(check["size"]) if check.get("size") else None
        masks = read_mask_sequence(item.mask_source, size=size, frames=check.get("frames")).masks
        digest = hashlib.sha256(np.ascontiguousarray(masks).tobytes()).hexdigest()
        if check.get("sha256") and digest != check["sha256"]:
            raise LapgenError(f"the masks of {item.name} changed since the video was generated (SHA-256 differs "
                              "from its card)", path=item.mask_source, hint="restore them or evaluate without masks")
    else:
        return None
    if len(masks) != item.n_frames:
        raise LapgenError(f"{item.name} has {item.n_frames} frames but {len(masks)} masks",
                          path=item.mask_source or item.name, hint="give one mask per frame")
    return masks


def item_digest(item: VideoItem) -> str:
    """SHA-256 over the video's content (each frame file's or the video file's SHA-256), not its name."""
    from lapgen.outputs import file_sha256

    h = hashlib.sha256()
    for f in item.frames if item.frames is not None else [item.video]:
        h.update(file_sha256(f).encode())
        h.update(b"\n")
    return h.hexdigest()


def masks_digest(item: VideoItem) -> str | None:
    from lapgen.outputs import file_sha256

    if item.masks is not None:
        return hashlib.sha256("".join(file_sha256(p) for p in item.masks).encode()).hexdigest()
    if item.mask_check and item.mask_check.get("sha256"):
        return str(item.mask_check["sha256"])
    return None
