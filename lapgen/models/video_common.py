"""What `lapgen video` shares between its methods (ControlVideo, AnimateDiff): the options (`VideoConfig`), the
result, the resumable staging of the latents and the outputs written beside the video.

Outputs (docs/video.md): the H.264 MP4, and on request a GIF, the frames as PNGs (a generated set with the
masks, which `lapgen eval f1` reads) and a side-by-side mask | video MP4. Resume: every `checkpoint_every`
denoising steps the latents are saved in `<out>.partial/state-KEY.pt`, KEY a hash of every option that
shapes them; a re-run with the same options continues from the last saved step.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.outputs import staging_path
from lapgen.progress import notice

METHODS = ("controlvideo", "animatediff")
FREE_NOISE_MODES = ("auto", "on", "off")
FUSIONS = ("prediction", "attention")


@dataclass
class VideoConfig:
    """Options of `lapgen video` (paper defaults: 100 steps, guidance 3, 128 px, 25 fps)."""

    prompt: str
    masks: str | list[str]  # folder of mask images (natural sort) or a mask video; one per ControlNet
    out: str  # .mp4 path
    model: str | None = None  # Stage-1 pipeline (registry name, path, hf:ORG/NAME); None = default
    controlnet: str | list[str] | None = None  # Stage-2 ControlNet(s); None = the default one
    controlnet_scale: float | list[float] = 1.0  # conditioning scale, one for all or one per ControlNet
    frames: int | None = None  # first N masks (default: all)
    fps: float = 25.0
    steps: int = 100
    guidance: float = 3.0
    seed: int = 0
    negative_prompt: str | None = None
    resolution: int = 128  # px, square (the paper's size; masks are resized NEAREST)
    long: str = "auto"  # ControlVideo hierarchical sampling: auto (above max_full_frames) | on | off
    max_full_frames: int = 16
    window: int | None = None  # key-frame window (default int(sqrt(F)))
    clip_kv: str = "original"  # long mode: clip frames attend to k_i and the clip's last frame (the code)
    clips_per_pass: int = 1  # long mode: equal-length clips stacked in one model call (speed vs memory)
    interpolator: str = "auto"  # auto (RIFE if registered, else flow) | rife | rife:PATH | flow | linear
    smoother_steps: str = "19,20"  # steps counted from the end (ControlVideo) | none | start:0.6 | at:80,81
    smoother_reencode: str = "mean"  # mean (posterior mean) | sample (ControlVideo: a seeded sample)
    pool_norm: bool = True
    sequential_cfg: bool = False  # run the two guidance halves one after the other (halves peak memory)
    gif: bool = False
    save_frames: bool = False
    side_by_side: bool = False
    device: str = "auto"
    dtype: str = "fp32"
    checkpoint_every: int = 10
    overwrite: bool = False
    method: str = "controlvideo"  # controlvideo (training-free, the paper) | animatediff (learned motion)
    motion_adapter: str | None = None  # animatediff: registry name, path or hf:ORG/NAME; None = the default
    context: int | None = None  # animatediff: frames the motion module sees at once (default: its clip length)
    context_stride: int = 4  # animatediff, FreeNoise: frames between window starts
    free_noise: str = "auto"  # animatediff: FreeNoise above --context frames (auto) | on | off
    free_noise_fusion: str = "prediction"  # fuse windows on the noise prediction | attention (diffusers)


@dataclass
class VideoResult:
    out: Path
    frames: int
    fps: float
    card: Path
    long_video: bool
    smoothed_steps: list[int]
    extras: dict[str, str] = field(default_factory=dict)
    resumed_from_step: int = 0
    interpolator: dict | None = None  # what the card records: requested, used, weights, reason
    long_video_reason: str = ""
    method: str = "controlvideo"
    free_noise: dict | None = None  # animatediff: used, context, stride, fusion, windows, reason


def as_list(value) -> list:
    """A config field that takes one value or a list, as a list (None -> [])."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def extra_paths(out: Path) -> dict[str, Path]:
    """Where the optional outputs go, beside the video."""
    return {
        "gif": out.with_suffix(".gif"),
        "frames": out.with_name(out.stem + "_frames"),
        "side_by_side": out.with_name(out.stem + "_side_by_side.mp4"),
    }


def run_key(config: VideoConfig, extra: str) -> str:
    """What must match for a staged run to be resumed: everything that shapes the latents."""
    keep = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("out", "gif", "save_frames", "side_by_side", "overwrite", "checkpoint_every", "device")
    }
    if config.method == "controlvideo":  # keys of runs staged before AnimateDiff existed stay valid
        for k in ("method", "motion_adapter", "context", "context_stride", "free_noise", "free_noise_fusion"):
            keep.pop(k)
    return hashlib.sha256((repr(sorted(keep.items())) + extra).encode()).hexdigest()[:16]


def open_stage(out: Path, key: str, steps: int):
    """The staging folder of `out` and a saved state of run `key` to resume: (state file, start step,
    latents or None). A staged run with other settings is removed."""
    import torch

    stage = staging_path(out)
    state_file = stage / f"state-{key}.pt"
    start_step, latents = 0, None
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        start_step, latents = int(state["step"]), state["latents"]
        notice(f"resuming {out.name} from step {start_step}/{steps}")
    elif stage.exists():
        shutil.rmtree(stage)  # a staged run with other settings
    stage.mkdir(parents=True, exist_ok=True)
    return state_file, start_step, latents


def step_saver(config: VideoConfig, state_file: Path, on_step, offset: int = 0):
    """A `callback_on_step_end` saving the latents every `checkpoint_every` steps and reporting progress;
    `offset` is added to the pipeline's step index (a loop that starts counting at the resumed step)."""
    import torch

    def callback(pipe, i, t, kwargs):
        step = i + 1 + offset
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            torch.save({"step": step, "latents": kwargs["latents"].cpu()}, state_file)
        if on_step:
            on_step(step, config.steps)
        return kwargs

    return callback


def card_entry(entry) -> dict:
    return {"name": entry.name, "source": entry.source}


def mask_card(seq, digest: str) -> dict:
    return {
        "source": seq.source,
        "frames": int(seq.masks.shape[0]),
        "sha256": digest,
        "thresholded_frames": seq.thresholded,
        "resized_from": seq.resized_from,
    }


def write_outputs(video: np.ndarray, config: VideoConfig, out: Path, seqs: list) -> dict[str, str]:
    """The optional outputs of `video` (F, H, W, 3) uint8 and then the MP4 itself; returns {kind: path}."""
    from lapgen.data.masks import write_mask_sequence
    from lapgen.data.video import write_gif, write_mp4

    extras: dict[str, str] = {}
    paths = extra_paths(out)
    if config.gif:
        extras["gif"] = str(write_gif(video, paths["gif"], fps=config.fps))
    if config.side_by_side:
        masks_rgb = np.repeat((seqs[0].masks[..., None] * 255).astype(np.uint8), 3, axis=-1)
        extras["side_by_side"] = str(
            write_mp4(np.concatenate([masks_rgb, video], axis=2), paths["side_by_side"], fps=config.fps)
        )
    if config.save_frames:
        from PIL import Image

        from lapgen.outputs import finalize_output_dir, prepare_output_dir

        frames_stage = prepare_output_dir(paths["frames"], overwrite=config.overwrite, resume=False)
        for i, frame in enumerate(video):
            Image.fromarray(frame).save(frames_stage / f"{i:06d}.png")
        for k, seq in enumerate(seqs):
            write_mask_sequence(frames_stage / ("masks" if k == 0 else f"masks_{k + 1}"), seq.masks)
        # the frames folder is a generated set like `lapgen sample`'s: `lapgen eval f1` pairs each frame with
        # the (first) mask it was generated from
        lines = [
            json.dumps({"file_name": f"{i:06d}.png", "text": config.prompt, "frame": i,
                        "conditioning_image_file_name": f"masks/{i:06d}.png"})
            for i in range(len(video))
        ]
        (frames_stage / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        finalize_output_dir(paths["frames"])
        extras["frames"] = str(paths["frames"])
    write_mp4(video, out, fps=config.fps)
    return extras


def to_uint8(frames: Any) -> np.ndarray:
    """Pipeline frames (F, H, W, 3) float in [0, 1] -> uint8."""
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
