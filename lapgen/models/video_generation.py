"""`lapgen video`: prompt + mask sequence -> laparoscopic video (Stage 3 of Iliash et al. 2024).

One library function, `generate_video(config)`: validate everything cheap (output path, masks, prompt,
options) before loading any model, load the Stage-1 pipeline and Stage-2 ControlNet from the registry,
run `ControlVideoPipeline`, write an H.264 MP4 (and on request a GIF, the frames as PNGs and a side-by-side
mask | video MP4), then a provenance card `<out>.lapgen.yaml` beside the video.

Long runs are resumable: every `checkpoint_every` denoising steps the latents are saved in
`<out>.partial/`; a re-run with the same arguments continues from the last saved step.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lapgen.errors import LapgenError
from lapgen.outputs import check_writable_parent, staging_path
from lapgen.progress import notice, warn

LONG_MODES = ("auto", "on", "off")
CLIP_KV = ("keys", "original")


@dataclass
class VideoConfig:
    """Options of `lapgen video` (paper defaults: 100 steps, guidance 3, 128 px, 25 fps)."""

    prompt: str
    masks: str  # folder of mask images (natural sort) or a mask video
    out: str  # .mp4 path
    model: str | None = None  # Stage-1 pipeline (registry name, path, hf:ORG/NAME); None = default
    controlnet: str | None = None  # Stage-2 ControlNet; None = default
    frames: int | None = None  # first N masks (default: all)
    fps: float = 25.0
    steps: int = 100
    guidance: float = 3.0
    seed: int = 0
    negative_prompt: str | None = None
    resolution: int = 128  # px, square (the paper's size; masks are resized NEAREST)
    long: str = "auto"  # hierarchical sampling: auto (above max_full_frames) | on | off
    max_full_frames: int = 16
    window: int | None = None  # key-frame window (default int(sqrt(F)))
    clip_kv: str = "keys"
    clips_per_pass: int = 1  # long mode: equal-length clips stacked in one model call (speed vs memory)
    interpolator: str = "flow"
    smoother_steps: str = "auto"  # "auto" (start 0.6, 2 steps) | "none" | "60,61"
    pool_norm: bool = True
    sequential_cfg: bool = False  # run the two guidance halves one after the other (halves peak memory)
    gif: bool = False
    save_frames: bool = False
    side_by_side: bool = False
    device: str = "auto"
    dtype: str = "fp32"
    checkpoint_every: int = 10
    overwrite: bool = False


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


def parse_smoother_steps(text: str | None) -> list[int] | None:
    """ "auto"/None -> None (pipeline default), "none"/"" -> [], "60,61" -> [60, 61]."""
    if text is None or text.strip().lower() == "auto":
        return None
    if text.strip().lower() in ("none", "off", ""):
        return []
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise LapgenError(
            f"bad --smoother-steps {text!r}", hint='use "auto", "none" or loop indices like "60,61"'
        ) from None


def extra_paths(out: Path) -> dict[str, Path]:
    """Where the optional outputs go, beside the video."""
    return {
        "gif": out.with_suffix(".gif"),
        "frames": out.with_name(out.stem + "_frames"),
        "side_by_side": out.with_name(out.stem + "_side_by_side.mp4"),
    }


def _validate(config: VideoConfig):
    from lapgen.data.masks import read_mask_sequence
    from lapgen.data.prompts import unknown_words

    out = Path(config.out)
    if out.suffix.lower() != ".mp4":
        raise LapgenError("--out must end in .mp4", path=out, hint="e.g. --out clip.mp4")
    wanted = [out] + [
        p for k, p in extra_paths(out).items() if getattr(config, "save_frames" if k == "frames" else k)
    ]
    for path in wanted:
        if path.exists() and not config.overwrite:
            raise LapgenError(
                "output already exists", path=path, hint="pass --overwrite or choose another --out"
            )
    check_writable_parent(out)
    if not config.prompt.strip():
        raise LapgenError("--prompt is empty", hint='e.g. --prompt "grasper retract liver"')
    for name, value, allowed in (("--long", config.long, LONG_MODES), ("--clip-kv", config.clip_kv, CLIP_KV)):
        if value not in allowed:
            raise LapgenError(f"unknown {name} {value!r}", hint=f"use one of {', '.join(allowed)}")
    if config.steps < 1 or config.fps <= 0 or config.resolution % 8 or config.resolution < 8:
        raise LapgenError("--steps must be >= 1, --fps > 0 and --resolution a positive multiple of 8")
    if config.frames is not None and config.frames < 1:
        raise LapgenError("--frames must be at least 1")
    if config.clips_per_pass < 1:
        raise LapgenError("--clips-per-pass must be at least 1")
    if config.window is not None and config.window < 3:
        raise LapgenError("--window must be at least 3")
    smoother = parse_smoother_steps(config.smoother_steps)
    if smoother and max(smoother) >= config.steps:
        raise LapgenError(f"--smoother-steps {config.smoother_steps} outside 0..{config.steps - 1}")
    from lapgen.models.controlvideo import get_interpolator

    get_interpolator(config.interpolator)  # an unknown name fails before the masks are read (and noticed)
    words = unknown_words(config.prompt)
    if words:
        warn(
            f"prompt words outside the CholecT50 vocabulary: {', '.join(words)} (the models were trained on "
            "'<instrument> <verb> <target> in <phase>' captions)"
        )
    seq = read_mask_sequence(config.masks, size=(config.resolution, config.resolution), frames=config.frames)
    if seq.thresholded:
        notice(f"{seq.thresholded} mask frame(s) were not binary; thresholded at 127")
    if seq.resized_from:
        notice(
            f"masks resized from {seq.resized_from[0]}x{seq.resized_from[1]} to "
            f"{config.resolution}x{config.resolution} (nearest neighbour)"
        )
    return out, seq, smoother


def _run_key(config: VideoConfig, mask_digest: str) -> str:
    """What must match for a staged run to be resumed: everything that shapes the latents."""
    keep = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("out", "gif", "save_frames", "side_by_side", "overwrite", "checkpoint_every", "device")
    }
    return hashlib.sha256((repr(sorted(keep.items())) + mask_digest).encode()).hexdigest()[:16]


def load_controlvideo(model: str | None, controlnet: str | None, device: str = "auto", dtype: str = "fp32"):
    """A `ControlVideoPipeline` from registry entries (DDIM scheduler, progress bar off) and the entries."""
    from diffusers import DDIMScheduler

    from lapgen.models.controlvideo import ControlVideoPipeline
    from lapgen.models.loading import load_controlnet, load_sd_pipeline, resolve_entry

    sd_entry = resolve_entry(model, "pipeline")  # one-line errors before any weight is read
    cn_entry = resolve_entry(controlnet, "controlnet")
    sd = load_sd_pipeline(model, device=device, dtype=dtype, entry=sd_entry)
    cn = load_controlnet(controlnet, device=device, dtype=dtype)
    scheduler = sd.scheduler
    if not isinstance(scheduler, DDIMScheduler):  # e.g. SD 1.5's saved PNDM config
        scheduler = DDIMScheduler.from_config(scheduler.config)
    pipe = ControlVideoPipeline.from_components(sd, cn, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, sd_entry, cn_entry


def generate_video(
    config: VideoConfig, *, pipe=None, on_step: Callable[[int, int], None] | None = None
) -> VideoResult:
    """Generate the video of `config`; `pipe` skips loading (library use), `on_step(i, total)` reports."""
    import torch

    from lapgen.cards import make_card, write_card
    from lapgen.data.masks import write_mask_sequence
    from lapgen.data.video import write_gif, write_mp4

    out, seq, smoother = _validate(config)
    mask_digest = hashlib.sha256(np.ascontiguousarray(seq.masks).tobytes()).hexdigest()
    entries = {}
    if pipe is None:
        pipe, sd_entry, cn_entry = load_controlvideo(
            config.model, config.controlnet, config.device, config.dtype
        )
        entries = {
            "model": {"name": sd_entry.name, "source": sd_entry.source},
            "controlnet": {"name": cn_entry.name, "source": cn_entry.source},
        }

    # resumable: latents saved every few steps in <out>.partial/
    stage = staging_path(out)
    key = _run_key(config, mask_digest)
    state_file = stage / f"state-{key}.pt"
    start_step, latents, smoother_calls = 0, None, 0
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        start_step, latents, smoother_calls = (
            int(state["step"]),
            state["latents"],
            int(state["smoother_calls"]),
        )
        notice(f"resuming {out.name} from step {start_step}/{config.steps}")
    elif stage.exists():
        shutil.rmtree(stage)  # a staged run with other settings
    stage.mkdir(parents=True, exist_ok=True)

    cond = torch.from_numpy(seq.masks.astype(np.float32))[:, None].repeat(
        1, 3, 1, 1
    )  # (F, 3, H, W) in {0, 1}
    device = pipe._execution_device
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    if latents is None:  # the initial noise, drawn on CPU so the seed means the same on every device
        shape = (
            1,
            pipe.unet.config.in_channels,
            config.resolution // pipe.vae_scale_factor,
            config.resolution // pipe.vae_scale_factor,
        )
        latents = torch.randn(shape, generator=generator, dtype=torch.float32)

    def callback(p, i, t, kwargs):
        step = i + 1
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            torch.save(
                {"step": step, "latents": kwargs["latents"].cpu(), "smoother_calls": p._smoother_calls},
                state_file,
            )
        if on_step:
            on_step(step, config.steps)
        return kwargs

    if on_step:
        on_step(start_step, config.steps)
    output = pipe(
        config.prompt,
        cond,
        num_inference_steps=config.steps,
        guidance_scale=config.guidance,
        negative_prompt=config.negative_prompt,
        generator=generator,
        latents=latents.to(device=device, dtype=pipe.unet.dtype),
        output_type="np",
        pool_norm_over_frames=config.pool_norm,
        smoother_steps=smoother,
        interpolator=config.interpolator,
        long_video=config.long,
        max_full_frames=config.max_full_frames,
        window_size=config.window,
        clip_kv=config.clip_kv,
        callback_on_step_end=callback,
        sequential_cfg=config.sequential_cfg,
        clips_per_pass=config.clips_per_pass,
        start_step=start_step,
        smoother_calls=smoother_calls,
    )
    video = (np.clip(output.frames, 0, 1) * 255).round().astype(np.uint8)  # (F, H, W, 3)

    extras: dict[str, str] = {}
    paths = extra_paths(out)
    if config.gif:
        extras["gif"] = str(write_gif(video, paths["gif"], fps=config.fps))
    if config.side_by_side:
        masks_rgb = np.repeat((seq.masks[..., None] * 255).astype(np.uint8), 3, axis=-1)
        extras["side_by_side"] = str(
            write_mp4(np.concatenate([masks_rgb, video], axis=2), paths["side_by_side"], fps=config.fps)
        )
    if config.save_frames:
        from lapgen.outputs import finalize_output_dir, prepare_output_dir

        frames_stage = prepare_output_dir(paths["frames"], overwrite=config.overwrite, resume=False)
        for i, frame in enumerate(video):
            from PIL import Image

            Image.fromarray(frame).save(frames_stage / f"{i:06d}.png")
        write_mask_sequence(frames_stage / "masks", seq.masks)
        finalize_output_dir(paths["frames"])
        extras["frames"] = str(paths["frames"])
    write_mp4(video, out, fps=config.fps)
    card = make_card(
        "video",
        config=asdict(config),
        models=entries,
        masks={
            "source": seq.source,
            "frames": int(seq.masks.shape[0]),
            "sha256": mask_digest,
            "thresholded_frames": seq.thresholded,
            "resized_from": seq.resized_from,
        },
        result={
            "frames": int(video.shape[0]),
            "fps": config.fps,
            "size": [int(video.shape[2]), int(video.shape[1])],
            "long_video": output.long_video,
            "smoothed_steps": output.smoothed_steps,
            "resumed_from_step": start_step,
        },
        outputs=extras,
    )
    card_file = write_card(out, card)
    shutil.rmtree(stage, ignore_errors=True)
    return VideoResult(
        out,
        int(video.shape[0]),
        config.fps,
        card_file,
        output.long_video,
        output.smoothed_steps,
        extras,
        start_step,
    )
