"""`lapgen video`: prompt + mask sequence -> laparoscopic video (Stage 3 of Iliash et al. 2024).

One library function, `generate_video(config)`: validate everything cheap (output path, masks, prompt,
options, the interpolator) before loading any model, load the Stage-1 pipeline and the Stage-2
ControlNet(s) from the registry, run `ControlVideoPipeline`, write an H.264 MP4 (and on request a GIF, the
frames as PNGs and a side-by-side mask | video MP4), then a provenance card `<out>.lapgen.yaml` beside the
video (which interpolator ran, which long-video mode and why, the smoother's loop indices).

Defaults follow ControlVideo's own code (YBYBZhang/ControlVideo) except where docs/video.md says
otherwise: clip key/value frames `original`, smoother at 19 and 20 steps from the end, RIFE when its
weights are registered (else the weight-free flow interpolator).

Long runs are resumable: every `checkpoint_every` denoising steps the latents are saved in
`<out>.partial/`; a re-run with the same arguments continues from the last saved step.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lapgen.errors import LapgenError
from lapgen.outputs import check_writable_parent, staging_path
from lapgen.progress import notice, warn

LONG_MODES = ("auto", "on", "off")
CLIP_KV = ("original", "keys")
REENCODE = ("mean", "sample")


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
    long: str = "auto"  # hierarchical sampling: auto (above max_full_frames) | on | off
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


_SMOOTHER_FORMS = '"19,20" (steps counted from the end, as ControlVideo), "none", "start:0.6" or "at:80,81"'


def parse_smoother_steps(text: str | None) -> dict:
    """`--smoother-steps` -> the pipeline's smoother arguments.

    "19,20" (default): steps counted from the end, as ControlVideo's `--smoother_steps 19 20` (loop indices
    80, 81 of 100 steps); "none": off; "start:0.6" (or "start:0.6:2"): 2 steps from 60 % of the way;
    "at:80,81": loop indices.
    """
    raw = "19,20" if text is None else text.strip().lower().replace(" ", "")
    try:
        if raw in ("none", "off", ""):
            return {"smoother_steps": []}
        if raw.startswith("start:"):
            parts = raw[len("start:") :].split(":")
            if len(parts) > 2:
                raise ValueError
            return {
                "smoother_start": float(parts[0]),
                "smoother_num_steps": int(parts[1]) if len(parts) == 2 else 2,
            }
        if raw.startswith("at:"):
            return {"smoother_at": [int(t) for t in raw[len("at:") :].split(",") if t]}
        return {"smoother_steps": [int(t) for t in raw.split(",") if t]}
    except ValueError:
        raise LapgenError(f"bad --smoother-steps {text!r}", hint=f"use {_SMOOTHER_FORMS}") from None


def smoother_indices(config: VideoConfig) -> list[int]:
    """The loop indices at which the smoother fires for `config` (a one-line error for bad values)."""
    from lapgen.models.controlvideo.smoother import smoother_step_indices

    args = parse_smoother_steps(config.smoother_steps)
    return smoother_step_indices(
        config.steps,
        args.get("smoother_steps"),
        start=args.get("smoother_start"),
        count=args.get("smoother_num_steps", 2),
        at=args.get("smoother_at"),
    )


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
    for name, value, allowed in (
        ("--long", config.long, LONG_MODES),
        ("--clip-kv", config.clip_kv, CLIP_KV),
        ("--smoother-reencode", config.smoother_reencode, REENCODE),
    ):
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
    masks, nets, scales = as_list(config.masks), as_list(config.controlnet), as_list(config.controlnet_scale)
    if not masks:
        raise LapgenError("no --masks given", hint="pass a folder of mask PNGs or a mask video")
    if len(masks) != max(len(nets), 1):
        raise LapgenError(
            f"give one --masks per --controlnet (got {len(masks)} --masks and {len(nets)} --controlnet)",
            hint="repeat them in pairs: --controlnet A --masks A/ --controlnet B --masks B/",
        )
    if len(scales) not in (1, len(masks)):
        raise LapgenError(
            f"give one --controlnet-scale, or one per ControlNet ({len(masks)}), not {len(scales)}"
        )
    smooth_at = smoother_indices(config)
    wanted_from_end = parse_smoother_steps(config.smoother_steps).get("smoother_steps") or []
    late = [s for s in wanted_from_end if s > config.steps]
    from lapgen.models.controlvideo.interpolators import resolve_interpolator

    # an unknown name or a bad weights file fails before the masks are read (and noticed)
    interpolator = resolve_interpolator(config.interpolator)
    words = unknown_words(config.prompt)
    if words:
        warn(
            f"prompt words outside the CholecT50 vocabulary: {', '.join(words)} (the models were trained on "
            "'<instrument> <verb> <target> in <phase>' captions)"
        )
    seqs = []
    for source in masks:
        seq = read_mask_sequence(source, size=(config.resolution, config.resolution), frames=config.frames)
        if seq.thresholded:
            notice(f"{seq.thresholded} mask frame(s) of {source} were not binary; thresholded at 127")
        if seq.resized_from:
            notice(
                f"masks of {source} resized from {seq.resized_from[0]}x{seq.resized_from[1]} to "
                f"{config.resolution}x{config.resolution} (nearest neighbour)"
            )
        seqs.append(seq)
    lengths = [len(seq.masks) for seq in seqs]
    if len(set(lengths)) > 1:
        raise LapgenError(
            f"the mask sequences have different lengths ({', '.join(map(str, lengths))} frames)",
            hint="give sequences of the same length, or cut them with --frames",
        )
    if late:  # said once everything is valid, so an error stays the only line
        notice(
            f"smoother steps {','.join(map(str, late))} count from the end and never fire with --steps "
            f"{config.steps} (as in ControlVideo); smoothing at loop indices {smooth_at or 'none'}"
        )
    return out, seqs, interpolator


def _run_key(config: VideoConfig, mask_digest: str) -> str:
    """What must match for a staged run to be resumed: everything that shapes the latents."""
    keep = {
        k: v
        for k, v in asdict(config).items()
        if k not in ("out", "gif", "save_frames", "side_by_side", "overwrite", "checkpoint_every", "device")
    }
    return hashlib.sha256((repr(sorted(keep.items())) + mask_digest).encode()).hexdigest()[:16]


def load_controlvideo(
    model: str | None, controlnet: str | list[str] | None, device: str = "auto", dtype: str = "fp32"
):
    """A `ControlVideoPipeline` from registry entries (DDIM scheduler, progress bar off) and the entries.

    `controlnet`: one source (None = the default ControlNet) or a list (several ControlNets, in order);
    the third value returned is then a list of entries.
    """
    from diffusers import DDIMScheduler

    from lapgen.models.controlvideo import ControlVideoPipeline
    from lapgen.models.loading import load_controlnet, load_sd_pipeline, resolve_entry

    several = isinstance(controlnet, (list, tuple))
    sources = list(controlnet) if several else [controlnet]
    sd_entry = resolve_entry(model, "pipeline")  # one-line errors before any weight is read
    cn_entries = [resolve_entry(source, "controlnet") for source in sources]
    sd = load_sd_pipeline(model, device=device, dtype=dtype, entry=sd_entry)
    nets = [load_controlnet(entry, device=device, dtype=dtype) for entry in cn_entries]
    scheduler = sd.scheduler
    if not isinstance(scheduler, DDIMScheduler):  # e.g. SD 1.5's saved PNDM config
        scheduler = DDIMScheduler.from_config(scheduler.config)
    pipe = ControlVideoPipeline.from_components(sd, nets if several else nets[0], scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, sd_entry, (cn_entries if several else cn_entries[0])


def _card_entry(entry) -> dict:
    return {"name": entry.name, "source": entry.source}


def _mask_card(seq, digest: str) -> dict:
    return {
        "source": seq.source,
        "frames": int(seq.masks.shape[0]),
        "sha256": digest,
        "thresholded_frames": seq.thresholded,
        "resized_from": seq.resized_from,
    }


def generate_video(
    config: VideoConfig, *, pipe=None, on_step: Callable[[int, int], None] | None = None
) -> VideoResult:
    """Generate the video of `config`; `pipe` skips loading (library use), `on_step(i, total)` reports."""
    import torch

    from lapgen.cards import make_card, write_card
    from lapgen.data.masks import write_mask_sequence
    from lapgen.data.video import write_gif, write_mp4

    out, seqs, interpolator = _validate(config)
    several = isinstance(config.controlnet, (list, tuple)) or len(seqs) > 1
    digests = [hashlib.sha256(np.ascontiguousarray(seq.masks).tobytes()).hexdigest() for seq in seqs]
    entries: dict = {}
    if pipe is None:
        nets = as_list(config.controlnet) if several else config.controlnet
        pipe, sd_entry, cn_entry = load_controlvideo(config.model, nets, config.device, config.dtype)
        entries = {
            "model": _card_entry(sd_entry),
            "controlnet": [_card_entry(e) for e in cn_entry] if several else _card_entry(cn_entry),
        }
    if pipe.num_controlnets != len(seqs):
        raise LapgenError(
            f"the pipeline has {pipe.num_controlnets} ControlNet(s) but {len(seqs)} mask sequence(s)"
        )
    scales = as_list(config.controlnet_scale)
    scale = scales[0] if len(seqs) == 1 else (scales * len(seqs) if len(scales) == 1 else scales)

    # resumable: latents saved every few steps in <out>.partial/ (the interpolator's weights are part of the
    # key: registering RIFE weights between two runs must not mix interpolators in one video)
    stage = staging_path(out)
    key = _run_key(config, "".join(digests) + repr(interpolator.card()))
    state_file = stage / f"state-{key}.pt"
    start_step, latents = 0, None
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        start_step, latents = int(state["step"]), state["latents"]
        notice(f"resuming {out.name} from step {start_step}/{config.steps}")
    elif stage.exists():
        shutil.rmtree(stage)  # a staged run with other settings
    stage.mkdir(parents=True, exist_ok=True)

    conds = [torch.from_numpy(seq.masks.astype(np.float32))[:, None].repeat(1, 3, 1, 1) for seq in seqs]
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
            torch.save({"step": step, "latents": kwargs["latents"].cpu()}, state_file)
        if on_step:
            on_step(step, config.steps)
        return kwargs

    if on_step:
        on_step(start_step, config.steps)
    output = pipe(
        config.prompt,
        conds if len(conds) > 1 else conds[0],
        num_inference_steps=config.steps,
        guidance_scale=config.guidance,
        negative_prompt=config.negative_prompt,
        generator=generator,
        latents=latents.to(device=device, dtype=pipe.unet.dtype),
        output_type="np",
        controlnet_conditioning_scale=scale,
        pool_norm_over_frames=config.pool_norm,
        interpolator=interpolator.fn,
        smoother_sample_posterior=config.smoother_reencode == "sample",
        long_video=config.long,
        max_full_frames=config.max_full_frames,
        window_size=config.window,
        clip_kv=config.clip_kv,
        callback_on_step_end=callback,
        sequential_cfg=config.sequential_cfg,
        clips_per_pass=config.clips_per_pass,
        start_step=start_step,
        **parse_smoother_steps(config.smoother_steps),
    )
    video = (np.clip(output.frames, 0, 1) * 255).round().astype(np.uint8)  # (F, H, W, 3)
    planned = smoother_indices(config) if len(video) >= 3 else []
    smoothed = [i for i in planned if i < start_step] + list(output.smoothed_steps)  # also before a resume

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
    interp_card = {**interpolator.card(), "ran": bool(smoothed)}
    mask_cards = [_mask_card(seq, d) for seq, d in zip(seqs, digests)]
    card = make_card(
        "video",
        config=asdict(config),
        models=entries,
        masks=mask_cards if len(mask_cards) > 1 else mask_cards[0],
        result={
            "frames": int(video.shape[0]),
            "fps": config.fps,
            "size": [int(video.shape[2]), int(video.shape[1])],
            "long_video": output.long_video,
            "long_video_reason": output.long_video_reason,
            "smoothed_steps": smoothed,
            "interpolator": interp_card,
            "clip_kv": config.clip_kv if output.long_video else None,
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
        smoothed,
        extras,
        start_step,
        interp_card,
        output.long_video_reason,
    )
