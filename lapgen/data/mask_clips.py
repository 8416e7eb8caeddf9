"""Real clips -> mask sequences, the paper's route for video evaluation (`lapgen masks clips`,
`lapgen masks from-video`): runs of CholecT50 frames with one prompt for a number of seconds, the matching
25 fps Cholec80 frames, and a segmenter's union mask per frame (a frame without detections reuses the
previous mask). After the paper's `data_processing/extract_clips.ipynb` (buma13/dgm4miccai24_laparoscopicvideos),
seeded; docs/video.md describes the clip folders.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lapgen.data.masks import write_mask_sequence
from lapgen.errors import LapgenError
from lapgen.outputs import atomic_file

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
