"""The `lapgen masks` commands as library functions: author, extract and preview mask sequences.

- `animate_masks`: tool masks moved along keyframed trajectories (the interactive route of the paper's title).
- `masks_from_video`: a real clip -> union tool masks per frame with a YOLOv8-seg segmenter (paper route;
  a frame without detections reuses the previous mask).
- `extract_clips`: CholecT50 runs of an unchanged prompt -> 25 fps Cholec80 clips with prompt, masks and real
  frames (the paper's `data_processing/extract_clips.ipynb` in buma13/dgm4miccai24_laparoscopicvideos, seeded;
  docs/video.md).
- `preview_masks`: a GIF of a mask folder (side by side with the frames of a clip folder).

Every function writes into a staging folder and renames it into place, with a card `lapgen.yaml`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lapgen.data.mask_clips import SegmentFn, resize_frame, segment_with_reuse
from lapgen.data.mask_motion import animate_mask, parse_points, parse_poses
from lapgen.data.masks import read_mask, read_mask_sequence, write_mask_sequence
from lapgen.errors import LapgenError
from lapgen.outputs import claim_stage, finalize_output_dir, prepare_output_dir, release_stage


def check_frame_size(size: int | None) -> None:
    """`--size` of from-video / clips: a positive number of pixels (None keeps the video's size)."""
    if size is not None and size < 1:
        raise LapgenError(f"--size must be a positive number of pixels, got {size}")


def make_segment_fn(
    segmenter: str | None, *, device: str = "auto", conf: float = 0.25
) -> tuple[SegmentFn, dict]:
    """A batch segment function `(RGB frames) -> [(union mask, instances)]` from a registry segmenter."""
    if not 0.0 <= conf <= 1.0:
        raise LapgenError(f"--conf must be in [0, 1], got {conf:g}")
    from lapgen.models.loading import load_segmenter
    from lapgen.models.segmentation import (
        model_imgsz,
        predict_union_masks,
        resolve_segmenter,
        ultralytics_device,
    )

    _, info = resolve_segmenter(segmenter)
    model = load_segmenter(segmenter, device=device)
    dev = ultralytics_device(device)
    imgsz = model_imgsz(model)

    def segment(frames: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        return predict_union_masks(model, frames, conf=conf, imgsz=imgsz, device=dev)

    return segment, {**info, "conf": conf, "imgsz": imgsz}


@dataclass
class ToolPath:
    mask: str  # the tool's mask image (white tool on black)
    path: str  # "x0,y0;x1,y1;..." pixels
    rotate: str | None = None  # degrees: "a" | "a0:a1" (ramp) | "a0:a1:...:aK" (one per keyframe)
    scale: str | None = None  # "s" | "s0:s1" | "s0:...:sK"


def animate_masks(
    tools: Sequence[ToolPath],
    frames: int,
    out: str | Path,
    *,
    size: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Union of each tool's animated mask per frame -> `out/NNNNNN.png` (+ card). Returns `out`."""
    from lapgen.cards import make_card, write_card

    if not tools:
        raise LapgenError("give at least one --mask with its --path")
    if frames < 1:
        raise LapgenError("--frames must be at least 1")
    if size is not None and min(size) < 1:
        raise LapgenError(
            f"--size {size[0]}x{size[1]} is not a canvas", hint="write WIDTHxHEIGHT in pixels, e.g. 128x128"
        )
    parsed = []
    for tool in tools:  # validate everything before writing
        mask = read_mask(tool.mask)
        if not mask.any():  # say which of the --mask files it is
            raise LapgenError(
                "the tool mask is empty", path=tool.mask, hint="draw the tool in white (255) on black"
            )
        parsed.append(
            (mask, parse_points(tool.path), parse_poses(tool.rotate, 0.0), parse_poses(tool.scale, 1.0))
        )
    canvas = size or (parsed[0][0].shape[1], parsed[0][0].shape[0])
    union = np.zeros((frames, canvas[1], canvas[0]), bool)
    for mask, points, rotate, scale in parsed:
        union |= animate_mask(mask, points, frames, rotate, scale, canvas)
    empty = int((~union.any(axis=(1, 2))).sum())
    if empty:  # allowed (a tool may leave the view), but rarely what a path in the wrong units meant
        from lapgen.progress import warn

        warn(
            f"{empty} of {frames} frames have no tool pixel: the path takes the tools off the "
            f"{canvas[0]}x{canvas[1]} canvas (path points are pixels of that canvas)"
        )
    stage = prepare_output_dir(out, overwrite=overwrite, resume=False)
    write_mask_sequence(stage, union)
    write_card(
        stage,
        make_card(
            "mask-sequence",
            method="animate",
            frames=frames,
            size=list(canvas),
            tools=[asdict(t) for t in tools],
            empty_frames=empty,
        ),
    )
    return finalize_output_dir(out)


def masks_from_video(
    video: str | Path,
    out: str | Path,
    segment: SegmentFn,
    *,
    size: int | None = None,
    batch: int = 16,
    segmenter_info: dict | None = None,
    overwrite: bool = False,
    advance: Callable[[int], None] | None = None,
) -> dict:
    """Segment every frame of `video` -> `out/NNNNNN.png` union masks. Resumes an interrupted run."""
    from lapgen.cards import make_card, write_card
    from lapgen.data.video import iter_frames, probe

    check_frame_size(size)
    info = probe(video)
    stage = prepare_output_dir(out, overwrite=overwrite, resume=True)
    claim_stage(  # a resumed run continues only with the same video, size and segmenter
        stage, {"video": str(Path(video).absolute()), "size": size, "segmenter": segmenter_info}
    )
    done = sorted(stage.glob("[0-9]*.png"))
    previous = read_mask(done[-1]) if done else None
    reused = 0
    buf: list[np.ndarray] = []
    written = len(done)

    def flush():
        nonlocal previous, reused, written, buf
        masks, r = segment_with_reuse(segment, buf, previous)
        write_mask_sequence(stage, masks, start=written)
        previous, reused, written = masks[-1], reused + r, written + len(masks)
        if advance:
            advance(len(masks))
        buf = []

    for idx, rgb in enumerate(iter_frames(video)):
        if idx < len(done):
            continue
        buf.append(resize_frame(rgb, size) if size else rgb)
        if len(buf) == batch:
            flush()
    if buf:
        flush()
    if written == 0:
        raise LapgenError("the video has no frames", path=video)
    result = {"frames": written, "fps": info.fps, "reused_masks": reused, "size": size or list(info.size)}
    write_card(
        stage,
        make_card("mask-sequence", method="from-video", video=str(video), segmenter=segmenter_info, **result),
    )
    release_stage(stage)
    finalize_output_dir(out)
    return result


def extract_clips(
    cholec80: str | Path,
    cholect50: str | Path,
    out: str | Path,
    segment: SegmentFn,
    *,
    seconds: int = 10,
    n: int = 50,
    seed: int = 0,
    size: int = 128,
    prompt_format: str = "paper",
    segmenter_info: dict | None = None,
    overwrite: bool = False,
    on_plan: Callable[[int], None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> dict:
    """Real reference clips: `out/clip_NNN/{prompt.txt, masks/, frames/, clip.json}` + `clips.jsonl`."""
    from lapgen.cards import make_card, write_card
    from lapgen.data.mask_clips import plan_clips, write_clips

    check_frame_size(size)
    clips, found = plan_clips(
        cholect50, cholec80, seconds=seconds, n=n, seed=seed, prompt_format=prompt_format
    )
    if not clips:
        raise LapgenError(
            f"no run of {seconds} s with an unchanged prompt found", path=cholect50, hint="lower --seconds"
        )
    if on_plan:
        on_plan(len(clips))
    stage = prepare_output_dir(out, overwrite=overwrite, resume=True)
    claim_stage(  # finished clips of an interrupted run are kept only if they come from the same plan
        stage,
        {
            "cholec80": str(Path(cholec80).absolute()),
            "cholect50": str(Path(cholect50).absolute()),
            "seconds": seconds,
            "n": n,
            "seed": seed,
            "size": size,
            "prompt_format": prompt_format,
            "segmenter": segmenter_info,
        },
    )
    records = write_clips(clips, cholec80, stage, segment, size=size, advance=advance)
    (stage / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = {
        "clips": len(records),
        "windows_found": found,
        "seconds": seconds,
        "fps": 25,
        "size": size,
        "seed": seed,
    }
    write_card(
        stage,
        make_card(
            "video-clips",
            cholec80=str(cholec80),
            cholect50=str(cholect50),
            segmenter=segmenter_info,
            prompt_format=prompt_format,
            **result,
        ),
    )
    release_stage(stage)
    finalize_output_dir(out)
    return result


def preview_masks(folder: str | Path, out: str | Path, *, fps: float = 8, overwrite: bool = False) -> Path:
    """GIF of a mask folder; for a clip folder (`masks/` + `frames/`) frames | masks side by side."""
    from lapgen.data.video import write_gif

    folder, out = Path(folder), Path(out)
    if out.exists() and not overwrite:
        raise LapgenError("output already exists", path=out, hint="pass --overwrite or choose another --out")
    if out.suffix.lower() != ".gif":
        raise LapgenError("--out must end in .gif", path=out)
    mask_dir = folder / "masks" if (folder / "masks").is_dir() else folder
    seq = read_mask_sequence(mask_dir)
    tiles = np.repeat((seq.masks[..., None] * 255).astype(np.uint8), 3, axis=-1)  # (F, H, W, 3)
    frame_dir = folder / "frames"
    if frame_dir.is_dir():
        from PIL import Image

        names = seq.files
        h, w = tiles.shape[1:3]
        real = np.stack([np.asarray(Image.open(frame_dir / n).convert("RGB").resize((w, h))) for n in names])
        tiles = np.concatenate([real, tiles], axis=2)
    return write_gif(tiles, out, fps=fps)
