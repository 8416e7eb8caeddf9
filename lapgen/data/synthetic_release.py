"""`lapgen synthetic`: synthetic CholecT50, Cholec80, CholecSeg8k and ART-Net releases in their real on-disk
layouts, side by side in one folder, with every size an option (docs/data-formats.md, "Synthetic data").

    OUT/CholecT50/     videos/VIDxx/NNNNNN.png + labels/VIDxx.json + label_mapping.txt
    OUT/cholec80/      videos/videoNN.mp4 + phase_annotations/ + tool_annotations/
    OUT/CholecSeg8k/   videoNN/videoNN_SSSSS/frame_N_endo*.png
    OUT/ART-Net/       Train/ and Test/ positives, tool masks, tip points, negatives
    OUT/lapgen.yaml    the card: the settings below and what was written

The pixels come from `lapgen.data.synthetic` (tissue texture and metallic tools drawn exactly where the labels
say); the same settings give the same bytes. A source whose video list is empty (ART-Net: 0,0 and 0,0) is
skipped. The folders are written inside `OUT.partial` and renamed to `OUT` when all are complete; an
interrupted run resumes with the sources already finished there.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lapgen.data import synthetic
from lapgen.errors import LapgenError

SOURCES = ("CholecT50", "cholec80", "CholecSeg8k", "ART-Net")  # folder names under OUT, as released
MIN_SIDE = 16  # px: smaller frames leave no room for a visible tool


@dataclass
class SyntheticConfig:
    """What `write_synthetic_release` writes. Sizes are (width, height) in pixels; the real frames are 854x480."""

    out: Path
    cholect50_videos: tuple[int, ...] = (1, 103)  # CholecT50 video ids (VIDxx)
    cholect50_frames: int = 12  # frames per video (1 fps)
    cholec80_videos: tuple[int, ...] = (3, 1)  # Cholec80 video ids 1..80 (03 is Cholec80-only, 01 shared)
    cholec80_frames: int = 110  # frames per video (25 fps; tool rows every 25 frames; see cholec80_lengths)
    cholecseg8k_videos: tuple[int, ...] = (1,)
    cholecseg8k_clips: int = 1  # clips per video
    cholecseg8k_frames: int = 80  # frames per clip (the real clips have 80)
    artnet_train: tuple[int, int] = (4, 4)  # (positives, negatives)
    artnet_test: tuple[int, int] = (2, 2)
    size: tuple[int, int] = synthetic.DEFAULT_SIZE
    tool_scale: float = 1.0  # multiplies the drawn tools' thickness
    seed: int = 0
    overwrite: bool = False

    def check(self) -> None:
        """One-line errors for values no writer can use, before anything is written."""
        self.out = Path(self.out)
        width, height = self.size
        if width < MIN_SIDE or height < MIN_SIDE:
            raise LapgenError(f"--size {width}x{height} is too small", hint=f"use at least {MIN_SIDE}x{MIN_SIDE}")
        if self.cholec80_videos and (width % 2 or height % 2):
            raise LapgenError(f"--size {width}x{height}: Cholec80 videos are H.264, whose width and height must "
                              "be even", hint="pass even sides, e.g. 128x72")
        for flag, ids, low, high in (("--cholect50-videos", self.cholect50_videos, 1, 999),
                                     ("--cholec80-videos", self.cholec80_videos, 1, 80),
                                     ("--cholecseg8k-videos", self.cholecseg8k_videos, 1, 80)):
            bad = [v for v in ids if not low <= v <= high]
            if bad:
                raise LapgenError(f"{flag}: video id {bad[0]} is outside {low}..{high}")
            if len(set(ids)) != len(ids):
                raise LapgenError(f"{flag}: a video id is given twice")
        for flag, value in (("--cholect50-frames", self.cholect50_frames),
                            ("--cholec80-frames", self.cholec80_frames),
                            ("--cholecseg8k-clips", self.cholecseg8k_clips),
                            ("--cholecseg8k-frames", self.cholecseg8k_frames)):
            if value < 1:
                raise LapgenError(f"{flag} must be at least 1 (got {value})")
        for flag, pair in (("--artnet-train", self.artnet_train), ("--artnet-test", self.artnet_test)):
            if len(pair) != 2 or min(pair) < 0:
                raise LapgenError(f"{flag} must be two counts POS,NEG of at least 0 (got {pair})")
        if not self.tool_scale > 0:
            raise LapgenError(f"--tool-scale must be positive (got {self.tool_scale})")

    def settings(self) -> dict[str, Any]:
        """The plain settings recorded in the card (and checked when a run resumes)."""
        values = {k: v for k, v in asdict(self).items() if k not in ("out", "overwrite")}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def parse_size(text: str) -> tuple[int, int]:
    """`WxH` (e.g. `128x72`) -> (width, height)."""
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise LapgenError(f"--size {text!r} is not WIDTHxHEIGHT", hint="e.g. --size 128x72 (the real frames: 854x480)")
    return int(parts[0]), int(parts[1])


def parse_ids(text: str, flag: str) -> tuple[int, ...]:
    """`1,2,103` -> (1, 2, 103); an empty string (or `none`) -> () (that source is skipped)."""
    text = str(text).strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise LapgenError(f"{flag} {text!r} is not a comma-separated list of video ids",
                          hint=f"e.g. {flag} 1,2 (or '' to skip the source)") from None


def parse_pair(text: str, flag: str) -> tuple[int, int]:
    """`POS,NEG` (e.g. `4,4`) -> (4, 4)."""
    parts = str(text).replace(" ", "").split(",")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise LapgenError(f"{flag} {text!r} is not POS,NEG", hint=f"e.g. {flag} 4,4")
    return int(parts[0]), int(parts[1])


def _writers(cfg: SyntheticConfig) -> dict[str, Any]:
    """Source folder -> a function writing it under a given root (None: the source is skipped)."""
    common: dict[str, Any] = {"size": tuple(cfg.size), "seed": cfg.seed, "tool_scale": cfg.tool_scale}
    t50, c80, seg = cfg.cholect50_videos, cfg.cholec80_videos, cfg.cholecseg8k_videos
    artnet_empty = sum(cfg.artnet_train) + sum(cfg.artnet_test) == 0
    return {
        "CholecT50": None if not t50 else (lambda root: synthetic.write_cholect50(
            root, videos=t50, num_frames=cfg.cholect50_frames, **common)),
        "cholec80": None if not c80 else (lambda root: [synthetic.write_cholec80(
            root, videos=(v,), num_frames=n, **common) for v, n in cholec80_lengths(cfg).items()]),
        "CholecSeg8k": None if not seg else (lambda root: synthetic.write_cholecseg8k(
            root, videos=seg, clips_per_video=cfg.cholecseg8k_clips, frames_per_clip=cfg.cholecseg8k_frames,
            **common)),
        "ART-Net": None if artnet_empty else (lambda root: synthetic.write_artnet(
            root, train=cfg.artnet_train, test=cfg.artnet_test, **common)),
    }


def cholec80_lengths(cfg: SyntheticConfig) -> dict[int, int]:
    """Frames of each Cholec80 video: `cholec80_frames`, and for a video also in CholecT50 at least the
    25 fps frames of every CholecT50 second (as in the real releases, whose CholecT50 frames come from the
    Cholec80 videos), so `lapgen masks clips` finds the frames of every annotated second."""
    shared = set(cfg.cholect50_videos)
    return {v: max(cfg.cholec80_frames, cfg.cholect50_frames * 25) if v in shared else cfg.cholec80_frames
            for v in cfg.cholec80_videos}


def _counts(cfg: SyntheticConfig) -> dict[str, dict[str, Any]]:
    return {
        "CholecT50": {"videos": list(cfg.cholect50_videos), "frames_per_video": cfg.cholect50_frames,
                      "images": len(cfg.cholect50_videos) * cfg.cholect50_frames},
        "cholec80": {"videos": list(cfg.cholec80_videos), "frames_per_video": cfg.cholec80_frames,
                     "frames": {f"{v:02d}": n for v, n in cholec80_lengths(cfg).items()},
                     "images": sum(cholec80_lengths(cfg).values())},
        "CholecSeg8k": {"videos": list(cfg.cholecseg8k_videos), "clips_per_video": cfg.cholecseg8k_clips,
                        "frames_per_clip": cfg.cholecseg8k_frames,
                        "images": len(cfg.cholecseg8k_videos) * cfg.cholecseg8k_clips * cfg.cholecseg8k_frames},
        "ART-Net": {"train": list(cfg.artnet_train), "test": list(cfg.artnet_test),
                    "images": sum(cfg.artnet_train) + sum(cfg.artnet_test)},
    }


def write_synthetic_release(cfg: SyntheticConfig) -> dict[str, Any]:
    """Write the synthetic releases of `cfg` under `cfg.out`; returns a plain summary
    `{"out", "written": {source: {"path", "videos", "images", ...}}, "skipped": [source, ...], "settings"}`."""
    from lapgen.cards import make_card, write_card
    from lapgen.outputs import claim_stage, finalize_output_dir, prepare_output_dir, release_stage
    from lapgen.progress import notice

    cfg.check()
    out = Path(cfg.out)
    stage = prepare_output_dir(out, overwrite=cfg.overwrite)
    claim_stage(stage, cfg.settings())
    counts = _counts(cfg)
    written: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for name, write in _writers(cfg).items():
        if write is None:
            skipped.append(name)
            continue
        final, partial = stage / name, stage / f"{name}.partial"
        if not final.is_dir():  # a folder finished by an interrupted run is kept
            if partial.exists():
                shutil.rmtree(partial)
            notice(f"writing synthetic {name} ({counts[name]['images']} images)")
            write(partial)
            partial.rename(final)
        written[name] = {"path": str(out / name), **counts[name]}
    summary = {"out": str(out), "written": written, "skipped": skipped, "settings": cfg.settings()}
    write_card(stage, make_card("synthetic-release", **{k: v for k, v in summary.items() if k != "out"},
                                note="synthetic data in the real layouts; not surgical data"))
    release_stage(stage)
    finalize_output_dir(out)
    return summary

