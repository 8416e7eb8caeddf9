"""The studio's server-side state and its Generate action, over lapgen's library functions.

`Studio` holds what one `lapgen studio` server owns: the folder its generations go to, the loaded models
(one pipeline at a time: ControlVideo, or AnimateDiff with a motion adapter) and a lock so only one
generation runs at once (the page's queue
serialises requests too). `Studio.generate` writes the authored mask sequence with the same functions
as `lapgen masks animate`, calls `lapgen.models.video_generation.generate_video` (the function behind
`lapgen video`) and returns the files, the provenance card and the equivalent CLI commands.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import shlex
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.studio.authoring import ToolTrack, animate_tracks, masks_animate_command

MASK_SOURCES = ("authored", "video", "clip")
LONG_MODES = ("auto", "on", "off")
METHODS = ("controlvideo", "animatediff")  # lapgen video --method


@dataclass
class StudioConfig:
    runs: Path  # generations are written to runs/run-<time>-<n>/
    model: str | None = None  # Stage-1 pipeline preselected on the page (None: the registry default)
    controlnet: str | None = None  # Stage-2 ControlNet preselected (None: the registry default)
    motion_adapter: str | None = None  # motion adapter preselected for AnimateDiff (None: the registry default)
    clips: Path | None = None  # a folder written by `lapgen masks clips` (real clips to pick from)
    device: str = "auto"
    dtype: str = "fp32"
    resolution: int = 128  # px, square: the paper's size
    max_frames: int = 250  # the paper's 10 s at 25 fps
    max_steps: int = 200


@dataclass
class GenerationRequest:
    prompt: str
    model: str
    controlnet: str
    source: str = "authored"  # authored | video | clip
    frames: int = 16
    fps: float = 8.0
    steps: int = 20
    guidance: float = 3.0
    seed: int = 0
    long: str = "auto"  # ControlVideo's hierarchical mode
    method: str = "controlvideo"  # controlvideo | animatediff
    motion_adapter: str | None = None  # animatediff: a registered motion adapter


@dataclass
class GenerationResult:
    run_dir: Path
    prompt: str
    video: Path
    gif: Path
    side_by_side: Path
    frames_zip: Path
    card: Path
    commands: list[str] = field(default_factory=list)
    thumbnail: Path | None = None  # PNG: the middle frame's mask beside it, for the page's gallery

    def card_text(self) -> str:
        return self.card.read_text()

    def downloads(self) -> list[Path]:
        return [self.video, self.gif, self.frames_zip, self.side_by_side, self.card]


def model_choices(kind: str) -> tuple[list[str], str | None]:
    """Registry names of `kind` (pipeline, controlnet, motion-adapter, ...) and the default to preselect."""
    from lapgen.registry import default_for, list_entries

    names = [e.name for e in list_entries(kind)]
    default = default_for(kind)
    return names, default if default in names else None


def clip_choices(clips: Path | None) -> list[str]:
    """Clip folders (`clip_NNN`) with a finished `clip.json` in a `lapgen masks clips` output."""
    if clips is None or not Path(clips).is_dir():
        return []
    return sorted(
        p.name for p in Path(clips).iterdir() if (p / "clip.json").is_file() and (p / "masks").is_dir()
    )


class Studio:
    """One server's generation state. Thread-safe: `generate` runs one request at a time."""

    def __init__(self, config: StudioConfig) -> None:
        self.config = config
        self.config.runs = Path(config.runs)
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._pipe_key: tuple | None = None
        self._pipe: Any = None

    # ---------------------------------------------------------------- models
    def pipeline(self, model: str, controlnet: str, method: str = "controlvideo",
                 motion_adapter: str | None = None) -> Any:
        """The pipeline of (model, controlnet) for `method` (AnimateDiff: with `motion_adapter`), loaded once
        and kept until another is asked."""
        key = (model, controlnet, method, motion_adapter, self.config.device, self.config.dtype)
        if key != self._pipe_key:
            self._pipe, self._pipe_key = None, None  # free the previous models first
            if method == "animatediff":
                from lapgen.models.animatediff_video import load_animatediff

                self._pipe = load_animatediff(model, controlnet, motion_adapter, self.config.device,
                                              self.config.dtype)[0]
            else:
                from lapgen.models.video_generation import load_controlvideo

                self._pipe = load_controlvideo(model, controlnet, self.config.device, self.config.dtype)[0]
            self._pipe_key = key
        return self._pipe

    def mask_from_frame(self, rgb: np.ndarray, segmenter: str) -> np.ndarray:
        """The union tool mask a registry segmenter finds in a real frame `(H, W, 3)` uint8."""
        from lapgen.models.loading import load_segmenter
        from lapgen.models.segmentation import model_imgsz, predict_union_masks, ultralytics_device

        self._check_name(segmenter, "segmenter")
        with self._lock:
            model = load_segmenter(segmenter, device="cpu")
            device = ultralytics_device(self.config.device)
            ((mask, count),) = predict_union_masks(model, [rgb], imgsz=model_imgsz(model), device=device)
        if count == 0 or not mask.any():
            raise LapgenError(
                f"segmenter '{segmenter}' found no tool in this frame",
                hint="try another frame or segmenter, or upload a mask",
            )
        return mask

    # ---------------------------------------------------------------- validation
    @staticmethod
    def _check_name(name: str | None, kind: str) -> str:
        """Only registry names reach the loaders from the page (never paths typed into it)."""
        from lapgen.registry import list_entries

        names = [e.name for e in list_entries(kind)]
        if not name:
            raise LapgenError(f"choose a {kind} first")
        if name not in names:
            raise LapgenError(f"unknown {kind} '{name}'", hint="valid: " + ", ".join(names))
        return name

    def _check(self, req: GenerationRequest) -> None:
        cfg = self.config
        if not req.prompt or not req.prompt.strip():
            raise LapgenError("the prompt is empty", hint="compose an action or type a prompt")
        if req.source not in MASK_SOURCES:
            raise LapgenError(f"unknown mask source {req.source!r}", hint="valid: " + ", ".join(MASK_SOURCES))
        if req.long not in LONG_MODES:
            raise LapgenError(f"unknown long-video mode {req.long!r}", hint="valid: " + ", ".join(LONG_MODES))
        if req.method not in METHODS:
            raise LapgenError(f"unknown method {req.method!r}", hint="valid: " + ", ".join(METHODS))
        if not 1 <= int(req.frames) <= cfg.max_frames:
            raise LapgenError(f"frames must be in 1..{cfg.max_frames} (got {req.frames})")
        if not 1 <= int(req.steps) <= cfg.max_steps:
            raise LapgenError(f"steps must be in 1..{cfg.max_steps} (got {req.steps})")
        if not 0 < float(req.fps) <= 60:
            raise LapgenError(f"fps must be in (0, 60] (got {req.fps})")
        self._check_name(req.model, "pipeline")
        self._check_name(req.controlnet, "controlnet")
        if req.method == "animatediff":
            self._check_name(req.motion_adapter, "motion-adapter")

    def _new_run_dir(self) -> Path:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run = self.config.runs / f"run-{stamp}-{next(self._counter):03d}"
        run.mkdir(parents=True, exist_ok=False)
        return run

    # ---------------------------------------------------------------- masks
    def write_authored_masks(self, tracks: list[ToolTrack], frames: int, run: Path) -> tuple[Path, list[str]]:
        """Tool masks as files + the animated sequence in `run/masks`; returns it and the CLI command(s).

        This is `lapgen.models.mask_sequences.animate_masks`, the function behind `lapgen masks animate`,
        with each tool's path and its per-keyframe rotation and scale (`"r0:rK"` when they form one ramp).
        """
        from lapgen.data.masks import write_mask
        from lapgen.models.mask_sequences import ToolPath, animate_masks
        from lapgen.studio.authoring import path_text, pose_range

        size = self.config.resolution
        for t in tracks:
            if not t.keyframes:
                raise LapgenError(f"tool '{t.label}' has no keyframe", hint="click on the canvas to place it")
        tool_files = [write_mask(run / "tools" / f"tool_{i + 1}.png", t.mask) for i, t in enumerate(tracks)]
        command = masks_animate_command(tracks, tool_files, frames, run / "masks")
        tools = [
            ToolPath(
                str(f),
                path_text(t.keyframes),
                pose_range([k.rotation for k in t.keyframes]),
                pose_range([k.scale for k in t.keyframes]),
            )
            for t, f in zip(tracks, tool_files)
        ]
        animate_masks(tools, frames, run / "masks", size=(size, size))
        return run / "masks", [command]

    def clip_masks(self, clip: str | None) -> Path:
        """The mask folder of a clip chosen by name from the server's `--clips` folder."""
        choices = clip_choices(self.config.clips)
        if not choices:
            raise LapgenError(
                "this server has no real clips",
                hint="start it with `lapgen studio --clips DIR` "
                "where DIR was written by `lapgen masks clips`",
            )
        if clip not in choices:
            raise LapgenError(f"unknown clip {clip!r}", hint="pick one from the list")
        return Path(self.config.clips) / clip / "masks"

    def preview(
        self,
        source: str,
        tracks: list[ToolTrack] | None,
        mask_video: object | None,
        clip: str | None,
        frames: int,
        fps: float,
    ) -> Path:
        """A GIF of the mask sequence a generation would use (before any model runs)."""
        from lapgen.data.masks import read_mask_sequence
        from lapgen.studio.authoring import preview_gif
        from lapgen.studio.uploads import store_upload_video

        if not 1 <= frames <= self.config.max_frames:
            raise LapgenError(f"frames must be in 1..{self.config.max_frames} (got {frames})")
        folder = self.config.runs / "previews" / f"preview-{next(self._counter):03d}"
        folder.mkdir(parents=True, exist_ok=True)
        size = self.config.resolution
        if source == "authored":
            masks = animate_tracks(tracks or [], frames, size)
        elif source == "video":
            stored = store_upload_video(mask_video, folder)
            masks = read_mask_sequence(stored, size=(size, size)).masks[:frames]
        elif source == "clip":
            masks = read_mask_sequence(self.clip_masks(clip), size=(size, size)).masks[:frames]
        else:
            raise LapgenError(f"unknown mask source {source!r}", hint="valid: " + ", ".join(MASK_SOURCES))
        return preview_gif(masks, folder / "masks.gif", fps)

    # ---------------------------------------------------------------- generate
    def generate(
        self,
        req: GenerationRequest,
        *,
        tracks: list[ToolTrack] | None = None,
        mask_video: object | None = None,
        clip: str | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> GenerationResult:
        """Make one video: masks from the authored tools, an uploaded mask video or a real clip.

        Everything cheap is checked before models load; a failure removes the run folder and raises a
        LapgenError (or the library's exception) for the page to show; the server stays usable.
        """
        from lapgen.cards import update_card
        from lapgen.models.video_generation import VideoConfig, generate_video
        from lapgen.studio.uploads import store_upload_video

        self._check(req)
        if req.source == "authored" and not tracks:
            raise LapgenError("no tool yet", hint="add a tool and click on the canvas to place keyframes")
        with self._lock:
            run = self._new_run_dir()
            try:
                commands = []
                frames: int | None = int(req.frames)
                if req.source == "authored":
                    masks, shown = self.write_authored_masks(tracks or [], int(req.frames), run)
                    commands += shown
                elif req.source == "video":
                    masks = store_upload_video(mask_video, run)
                else:
                    masks = self.clip_masks(clip)
                config = VideoConfig(
                    prompt=req.prompt.strip(),
                    masks=str(masks),
                    out=str(run / "video.mp4"),
                    model=req.model,
                    controlnet=req.controlnet,
                    frames=frames,
                    fps=float(req.fps),
                    steps=int(req.steps),
                    guidance=float(req.guidance),
                    seed=int(req.seed),
                    resolution=self.config.resolution,
                    long=req.long if req.method == "controlvideo" else "auto",
                    method=req.method,
                    motion_adapter=req.motion_adapter if req.method == "animatediff" else None,
                    gif=True,
                    save_frames=True,
                    side_by_side=True,
                    device=self.config.device,
                    dtype=self.config.dtype,
                )
                commands.append(video_command(config))
                pipe = self.pipeline(req.model, req.controlnet, req.method, config.motion_adapter)
                result = generate_video(config, pipe=pipe, on_step=on_step)
                extras = result.extras
                frames_zip = Path(shutil.make_archive(str(run / "video_frames"), "zip", extras["frames"]))
                models = {"model": req.model, "controlnet": req.controlnet}
                if req.method == "animatediff":
                    models["motion_adapter"] = req.motion_adapter
                update_card(
                    result.out,
                    models=models,
                    studio={"mask_source": req.source, "commands": commands},
                )
            except BaseException:
                shutil.rmtree(run, ignore_errors=True)
                raise
        return GenerationResult(
            run,
            config.prompt,
            result.out,
            Path(extras["gif"]),
            Path(extras["side_by_side"]),
            frames_zip,
            result.card,
            commands,
            write_thumbnail(Path(extras["frames"]), run / "thumbnail.png"),
        )


def video_command(config: Any) -> str:
    """The `lapgen video` command equivalent to a `VideoConfig` the studio runs."""
    parts = [
        "lapgen",
        "video",
        "--prompt",
        config.prompt,
        "--masks",
        str(config.masks),
        "--model",
        str(config.model),
        "--controlnet",
        str(config.controlnet),
    ]
    if config.method != "controlvideo":
        parts += ["--method", config.method]
    if config.motion_adapter is not None:
        parts += ["--motion-adapter", str(config.motion_adapter)]
    if config.frames is not None:
        parts += ["--frames", str(config.frames)]
    parts += [
        "--fps",
        f"{config.fps:g}",
        "--steps",
        str(config.steps),
        "--guidance",
        f"{config.guidance:g}",
        "--seed",
        str(config.seed),
    ]
    if config.method == "controlvideo":
        parts += ["--long", config.long]
    if config.resolution != 128:
        parts += ["--resolution", str(config.resolution)]
    if config.device != "auto":
        parts += ["--device", config.device]
    if config.dtype != "fp32":
        parts += ["--dtype", config.dtype]
    parts += ["--gif", "--save-frames", "--side-by-side", "--out", str(config.out)]
    return shlex.join(parts)


def write_thumbnail(frames: Path, out: Path) -> Path:
    """A still PNG for the session gallery: the middle generated frame with its mask beside it (a plain
    image, so every browser shows it; the animated GIF is among the downloads)."""
    from PIL import Image

    names = sorted(p.name for p in frames.glob("*.png"))
    if not names:
        raise LapgenError("the generation wrote no frames", path=frames)
    middle = names[len(names) // 2]
    with Image.open(frames / middle) as img:
        frame = np.asarray(img.convert("RGB"))
    mask_file = frames / "masks" / middle
    mask = np.zeros(frame.shape[:2], np.uint8)
    if mask_file.is_file():
        with Image.open(mask_file) as img:
            mask = np.asarray(img.convert("L").resize(frame.shape[1::-1], Image.NEAREST))
    Image.fromarray(np.concatenate([np.repeat(mask[..., None], 3, axis=2), frame], axis=1)).save(out)
    return out
