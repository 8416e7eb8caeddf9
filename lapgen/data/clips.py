"""The clip dataset: short fixed-length clips of Cholec80 / CholecT50 video with one prompt each, written by
`lapgen prepare --clips` and read by `lapgen train-motion` (docs/data-formats.md, "Clip dataset").

Layout:

    DIR/metadata.jsonl                      one JSON object per clip (keys below)
    DIR/clips/video03/000075/000000.png     the clip's frames in order, 000000.png ... (size x size RGB)
    DIR/lapgen.yaml                         provenance card, kind `clip-dataset`

Keys: `clip` (the clip's folder, relative to DIR), `num_frames`, `text` (the prompt of the annotated second
the clip's middle frame falls in, same templates as the frames dataset), `source` (where the pixels come
from: `cholec80` = the 25 fps MP4, `cholect50` = the 1 fps PNGs), `labels_from` (whose annotations:
`cholec80` tool/phase files or `cholect50` triplets), `video`, `split`, `fps` (the clip's frame rate),
`source_fps`, `source_frames` (each frame's index in its source: C-index or T-index), the middle frame's
`phase`, `tools` (and, from CholecT50, `triplets`, `instruments`, `verbs`, `targets`), and `labels`: one
object per frame with the same label keys, from the annotated second the frame falls in (Cholec80 tools and
CholecT50 triplets are annotated once per second: T-index k covers C-indices 25k ... 25k + 24).

Clip timing: frame k of a clip starting at source frame s is source frame s + round(k * source_fps / fps)
(nearest frame, halves up), so an 8 fps clip of a 25 fps video takes frames 0, 3, 6, 9, 13, ...; clips start
every `every` seconds (default: back to back). This module plans the clips (`plan_clips`) and reads and
writes the metadata; `lapgen.data.prepare` decodes and writes the frames with the frames dataset's own path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

from lapgen.data import prompts, vocab
from lapgen.data.frames import METADATA, SPLITS, metadata_lines
from lapgen.errors import LapgenError

CARD_KIND = "clip-dataset"
LABEL_KEYS = ("phase", "tools", "triplets", "instruments", "verbs", "targets")


@dataclass(frozen=True)
class ClipTiming:
    """How clips are cut: `frames` per clip at `fps`, a clip starting every `every` seconds (None: back to back)."""

    frames: int = 16
    fps: float = 8.0
    every: float | None = None

    def check(self) -> None:
        if self.frames < 1:
            raise LapgenError(f"--clip-frames must be at least 1 (got {self.frames})")
        if not self.fps > 0:
            raise LapgenError(f"--clip-fps must be positive (got {self.fps})")
        if self.every is not None and not self.every > 0:
            raise LapgenError(f"--clip-every must be positive seconds (got {self.every})")

    def offsets(self, source_fps: float) -> list[int] | None:
        """Source-frame offsets of a clip's frames from its first, or None when the source is too sparse
        (two clip frames would be the same source frame)."""
        ratio = Fraction(source_fps) / Fraction(self.fps)
        offsets = [math.floor(k * ratio + Fraction(1, 2)) for k in range(self.frames)]
        if any(b <= a for a, b in zip(offsets, offsets[1:])):
            return None
        return offsets

    def starts(self, source_fps: float, last: int, span: int) -> list[int]:
        """First source frames of the clips that fit in frames 0..`last` (a clip covers `span` + 1 frames)."""
        every = Fraction(self.every) if self.every is not None else Fraction(self.frames) / Fraction(self.fps)
        out, j = [], 0
        while True:
            start = math.floor(j * every * Fraction(source_fps) + Fraction(1, 2))
            if start + span > last:
                return out
            if not out or start > out[-1]:
                out.append(start)
            j += 1


@dataclass
class ClipPlan:
    """What `plan_clips` found: metadata records (without files yet), per-video decode jobs, notes."""

    records: list[dict] = field(default_factory=list)
    # (source, video, src, [(source index, destination), ...], decode step): one per video
    jobs: list[tuple[str, str, str, list[tuple[int, str]], int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    skipped_videos: list[str] = field(default_factory=list)


def t50_prompt(frame, fmt: str) -> tuple[str, bool]:
    """The frames dataset's prompt of a CholecT50 frame (triplets; instruments without a triplet, as the
    paper's prepare_cholect50.py; else the phase) and whether it fell back to instruments."""
    if frame.triplets:
        return prompts.triplet_prompt(frame.triplets, frame.phase, fmt), False
    if frame.instruments:
        return prompts.instrument_prompt(frame.instruments, frame.phase, fmt), True
    return prompts.phase_text(frame.phase, fmt), False


def _t50_labels(frame) -> dict[str, Any]:
    return {"phase": frame.phase, "tools": [vocab.INSTRUMENTS[i] for i in frame.instruments],
            "triplets": frame.triplets, "instruments": frame.instruments, "verbs": frame.verbs,
            "targets": frame.targets}


def _c80_labels(sample) -> dict[str, Any]:
    return {"phase": sample.phase, "tools": sample.tools}


def _split_of(video: int, table: dict[str, tuple[int, ...]] | None, split: str) -> str:
    if table is None:  # --split all
        return "train"
    for name, ids in table.items():
        if video in ids:
            return name
    raise LapgenError(f"video {video} is not in the official CholecT50 split {split!r}",
                      hint="use --split all for non-official videos")


def _cut(plan: ClipPlan, *, source: str, labels_from: str, video_name: str, src: str, source_fps: float,
         per_second: int, num_frames: int, seconds: dict[int, tuple[str, dict]], timing: ClipTiming,
         split: str) -> int:
    """Cut one video into clips; `seconds` maps a T-index (second) to (prompt, labels) and source frame i
    falls in second i // `per_second`. Returns the number of clips kept."""
    offsets = timing.offsets(source_fps)
    if offsets is None:
        plan.warnings.append(f"{video_name}: {source_fps:g} fps is too sparse for {timing.fps:g} fps clips "
                             "(skipped)")
        plan.skipped_videos.append(video_name)
        return 0
    last = min(num_frames - 1, (max(seconds) + 1) * per_second - 1) if seconds else -1
    frames: list[tuple[int, str]] = []
    dropped = 0
    for start in timing.starts(source_fps, last, offsets[-1]):
        indices = [start + o for o in offsets]
        labelled = [seconds.get(i // per_second) for i in indices]
        if any(x is None for x in labelled):
            dropped += 1
            continue
        folder = f"clips/{video_name}/{start:06d}"
        text, middle = labelled[len(indices) // 2]
        rec = {"clip": folder, "num_frames": len(indices), "text": text, "source": source,
               "labels_from": labels_from, "video": video_name, "split": split, "fps": float(timing.fps),
               "source_fps": float(source_fps), "source_frames": indices}
        rec.update(middle)
        rec["labels"] = [lab for _t, lab in labelled]
        plan.records.append(rec)
        frames += [(i, f"{folder}/{k:06d}.png") for k, i in enumerate(indices)]
    if dropped:
        plan.warnings.append(f"{video_name}: {dropped} clip(s) reach seconds without annotations (skipped)")
    if frames:
        step = math.gcd(*{i for i, _ in frames}) or 1
        plan.jobs.append((source, video_name, src, frames, step))
    elif not dropped:
        plan.warnings.append(f"{video_name}: shorter than one clip (skipped)")
        plan.skipped_videos.append(video_name)
    return len(frames) // timing.frames


def plan_clips(*, cholect50: Path | None, cholec80: Path | None, timing: ClipTiming, fmt: str,
               split: str) -> ClipPlan:
    """Plan the clips of every given video (validating the releases first; nothing is decoded here).

    Cholec80 MP4s (25 fps) give the pixels of every video they hold, Cholec80-only and shared alike; a
    shared video takes its labels from CholecT50 when it is given (triplet prompts), else from Cholec80's
    tool and phase files. CholecT50 videos without an MP4 give clips from their 1 fps PNGs when `timing.fps`
    allows it. Splits are video-disjoint: the official CholecT50 split for CholecT50 videos, `train` for the
    Cholec80-only ones.
    """
    from lapgen.data.cholec80 import read_video_annotations, video_files
    from lapgen.data.cholect50 import read_cholect50

    if cholect50 is None and cholec80 is None:
        raise LapgenError("nothing to prepare", hint="pass --cholect50 PATH and/or --cholec80 PATH")
    if split == "paper":
        raise LapgenError("--split paper draws test frames at random and leaks videos across splits; clips "
                          "need a video-disjoint split", hint="use rdv, challenge, fold1..fold5 or all")
    table = vocab.video_split(split)
    plan = ClipPlan()
    t50 = {}
    if cholect50 is not None:
        for vid in read_cholect50(Path(cholect50)):
            plan.warnings.extend(vid.warnings)
            t50[vid.video] = vid
        plan.inputs["cholect50"] = {"path": str(Path(cholect50).resolve()),
                                    "videos": [vocab.t50_video_name(v) for v in sorted(t50)]}
    covered: set[int] = set()
    if cholec80 is not None:
        files = video_files(Path(cholec80))
        for v in sorted(files):
            vid = read_video_annotations(Path(cholec80), v, files[v])
            plan.warnings.extend(vid.warnings)
            if v in t50:
                seconds = {}
                for f in t50[v].frames:
                    seconds[f.frame] = (t50_prompt(f, fmt)[0], _t50_labels(f))
                labels_from = "cholect50"
            else:
                seconds = {s.frame // vocab.CHOLEC80_FPS: (prompts.tools_prompt(s.tools, s.phase, fmt),
                                                           _c80_labels(s)) for s in vid.samples}
                labels_from = "cholec80"
            video_split = "train" if v in vocab.CHOLEC80_ONLY_VIDEOS else _split_of(v, table, split)
            _cut(plan, source="cholec80", labels_from=labels_from, video_name=vid.name, src=str(vid.mp4),
                 source_fps=vid.fps if vid.fps > 0 else vocab.CHOLEC80_FPS, per_second=vocab.CHOLEC80_FPS,
                 num_frames=vid.num_frames,
                 seconds=seconds, timing=timing, split=video_split)
            covered.add(v)
        plan.inputs["cholec80"] = {"path": str(Path(cholec80).resolve()),
                                   "videos": [vocab.c80_video_name(v) for v in sorted(files)]}
    for v, vid in sorted(t50.items()):
        if v in covered:
            continue
        seconds = {f.frame: (t50_prompt(f, fmt)[0], _t50_labels(f)) for f in vid.frames}
        _cut(plan, source="cholect50", labels_from="cholect50", video_name=vid.name,
             src=str(vid.frames[0].path.parent), source_fps=vocab.CHOLECT50_FPS, per_second=1,
             num_frames=max(f.frame for f in vid.frames) + 1, seconds=seconds, timing=timing,
             split=_split_of(v, table, split))
    if not plan.records:
        hint = ("CholecT50's frames are 1 fps: pass the videos' Cholec80 MP4s with --cholec80, or --clip-fps 1"
                if cholec80 is None else "use fewer --clip-frames or a lower --clip-fps")
        raise LapgenError(f"no video is long enough for one {timing.frames}-frame clip at {timing.fps:g} fps",
                          hint=hint)
    return plan


# ---------------------------------------------------------------------------------------------- read/write

def clip_files(rec: dict) -> list[str]:
    """The clip's frame files, relative to the dataset folder, in order."""
    return [f"{rec['clip']}/{k:06d}.png" for k in range(rec["num_frames"])]


def validate_clip(rec: Any, where: str, root: Path, *, check_files: bool = True) -> dict:
    """Check one metadata line of a clip dataset (types and the clip's frame files); returns it."""
    bad = lambda msg: LapgenError(f"{where}: {msg}", path=root / METADATA,  # noqa: E731
                                  hint="fix the line or re-run `lapgen prepare --clips`")
    if not isinstance(rec, dict):
        raise bad("line is not a JSON object")
    for key in ("clip", "num_frames", "text"):
        if key not in rec:
            raise bad(f"missing key `{key}`" + (" (a frames dataset, not a clip dataset?)"
                                                 if key == "clip" and "file_name" in rec else ""))
    folder = rec["clip"]
    if not isinstance(folder, str) or not folder or PurePosixPath(folder).is_absolute() \
            or ".." in PurePosixPath(folder).parts:
        raise bad(f"`clip` must be a folder relative to the dataset, got {folder!r}")
    n = rec["num_frames"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise bad(f"`num_frames` must be a positive integer, got {n!r}")
    if not isinstance(rec["text"], str):
        raise bad("`text` must be a string")
    if "split" in rec and rec["split"] not in SPLITS:
        raise bad(f"`split` must be one of {', '.join(SPLITS)}, got {rec['split']!r}")
    if "fps" in rec and not (isinstance(rec["fps"], (int, float)) and rec["fps"] > 0):
        raise bad(f"`fps` must be a positive number, got {rec['fps']!r}")
    for key in ("source_frames", "labels"):
        if key in rec and (not isinstance(rec[key], list) or len(rec[key]) != n):
            raise bad(f"`{key}` must be a list of {n} entries (one per frame)")
    if check_files:
        missing = [f for f in clip_files(rec) if not (root / f).is_file()]
        if missing:
            raise bad(f"clip {folder} lacks {len(missing)} of its {n} frames (first: {missing[0]})")
    return rec


def read_clips(folder: str | Path, split: str | None = None, *, check_files: bool = True) -> list[dict]:
    """All clip records of a clip dataset (validated), optionally of one split."""
    root = Path(folder)
    meta = root / METADATA
    if not root.is_dir():
        raise LapgenError("clip dataset folder not found", path=root,
                          hint="run `lapgen prepare --clips` first or check the path")
    if not meta.is_file():
        raise LapgenError(f"no {METADATA} in the clip dataset folder", path=root,
                          hint="point at a folder written by `lapgen prepare --clips`")
    if split is not None and split not in SPLITS:
        raise LapgenError(f"unknown split {split!r}", hint="valid: " + ", ".join(SPLITS))
    records = []
    for n, rec in metadata_lines(meta):
        validate_clip(rec, f"line {n}", root, check_files=check_files)
        if split is not None and rec.get("split") != split:
            continue
        records.append(rec)
    if not records:
        what = f"split {split!r}" if split else "the dataset"
        raise LapgenError(f"{what} holds no clips", path=meta, hint="check the split or the dataset")
    return records


KEY_ORDER = ("clip", "num_frames", "text", "source", "labels_from", "video", "split", "fps", "source_fps",
             "source_frames", *LABEL_KEYS, "labels")


def write_clips(folder: str | Path, records: list[dict], *, check_files: bool = True) -> Path:
    """Validate `records` and write `folder/metadata.jsonl` atomically (keys in a stable order)."""
    from lapgen.outputs import atomic_file

    root = Path(folder)
    lines = []
    for n, rec in enumerate(records, start=1):
        validate_clip(rec, f"record {n}", root, check_files=check_files)
        out = {k: rec[k] for k in KEY_ORDER if k in rec}
        out.update({k: v for k, v in rec.items() if k not in out})
        lines.append(json.dumps(out, ensure_ascii=False, separators=(", ", ": ")) + "\n")
    with atomic_file(root / METADATA, "w") as fh:
        fh.writelines(lines)
    return root / METADATA
