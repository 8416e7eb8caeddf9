"""`lapgen video`: prompt + mask sequence -> laparoscopic video (Stage 3 of Iliash et al. 2024).

One library function, `generate_video(config)`: validate everything cheap (output path, masks, prompt,
options, the interpolator) before loading any model, load the Stage-1 pipeline and the Stage-2
ControlNet(s) from the registry, run `ControlVideoPipeline` (the paper's training-free method; or with
`method="animatediff"` a learned motion module, `lapgen.models.animatediff_video`), write an H.264 MP4 (and
on request a GIF, the frames as PNGs and a side-by-side mask | video MP4), then a provenance card
`<out>.lapgen.yaml` beside the video (which interpolator ran, which long-video mode and why, the smoother's
loop indices).

Defaults follow ControlVideo's own code (YBYBZhang/ControlVideo) except where docs/video.md says
otherwise: clip key/value frames `original`, smoother at 19 and 20 steps from the end, RIFE when its
weights are registered (else the weight-free flow interpolator).

Long runs are resumable: every `checkpoint_every` denoising steps the latents are saved in
`<out>.partial/`; a re-run with the same arguments continues from the last saved step.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lapgen.errors import LapgenError
from lapgen.models.video_common import (  # noqa: F401  (re-exported: `lapgen video`'s config and result)
    METHODS,
    VideoConfig,
    VideoResult,
    as_list,
    card_entry,
    extra_paths,
    mask_card,
    open_stage,
    run_key,
    step_saver,
    to_uint8,
    write_outputs,
)
from lapgen.outputs import check_writable_parent, staging_path
from lapgen.progress import notice, warn

LONG_MODES = ("auto", "on", "off")
CLIP_KV = ("original", "keys")
REENCODE = ("mean", "sample")


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


def check_method_options(config: VideoConfig) -> None:
    """The method is known and no option of the other method is set (a one-line error otherwise)."""
    if config.method not in METHODS:
        raise LapgenError(f"unknown --method {config.method!r}", hint=f"use one of {', '.join(METHODS)}")
    if config.method == "animatediff":
        from lapgen.models.animatediff_video import check_options

        check_options(config)
    else:
        _check_controlvideo_only(config)


def _validate(config: VideoConfig, pipe=None):
    from lapgen.data.masks import read_mask_sequence
    from lapgen.data.prompts import unknown_words

    check_method_options(config)
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
    wanted_from_end = parse_smoother_steps(config.smoother_steps).get("smoother_steps") or []  # a bad value: now
    words = unknown_words(config.prompt)
    if words:
        warn(
            f"prompt words outside the CholecT50 vocabulary: {', '.join(words)} (the models were trained on "
            "'<instrument> <verb> <target> in <phase>' captions)"
        )
    seqs, notes = [], []  # notices are said once everything is valid, so an error stays the only line
    for source in masks:
        seq = read_mask_sequence(source, size=(config.resolution, config.resolution), frames=config.frames)
        if seq.thresholded:
            notes.append(f"{seq.thresholded} mask frame(s) of {source} were not binary; thresholded at 127")
        if seq.resized_from:
            notes.append(
                f"masks of {source} resized from {seq.resized_from[0]}x{seq.resized_from[1]} to "
                f"{config.resolution}x{config.resolution} (nearest neighbour)"
            )
        seqs.append(seq)
    interpolator = None
    if config.method == "controlvideo":  # after the masks: this imports torch, and bad masks should fail at once
        from lapgen.models.controlvideo.interpolators import resolve_interpolator

        interpolator = resolve_interpolator(config.interpolator)
    smooth_at = smoother_indices(config)
    late = [s for s in wanted_from_end if s > config.steps] if config.method == "controlvideo" else []
    lengths = [len(seq.masks) for seq in seqs]
    if len(set(lengths)) > 1:
        raise LapgenError(
            f"the mask sequences have different lengths ({', '.join(map(str, lengths))} frames)",
            hint="give sequences of the same length, or cut them with --frames",
        )
    plan = None
    if config.method == "animatediff":  # the adapter and its context, checked against the frame count
        from lapgen.models.animatediff_video import plan_video

        plan = plan_video(config, lengths[0], pipe)
    if late:
        notes.append(
            f"smoother steps {','.join(map(str, late))} count from the end and never fire with --steps "
            f"{config.steps} (as in ControlVideo); smoothing at loop indices {smooth_at or 'none'}"
        )
    for note in notes:
        notice(note)
    return out, seqs, interpolator, plan


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


def _check_controlvideo_only(config: VideoConfig) -> None:
    """AnimateDiff's options are an error with ControlVideo (a silently ignored option hides a mistake)."""
    for flag, value, default in (("--motion-adapter", config.motion_adapter, None),
                                 ("--context", config.context, None), ("--context-stride", config.context_stride, 4),
                                 ("--free-noise", config.free_noise, "auto"),
                                 ("--free-noise-fusion", config.free_noise_fusion, "prediction")):
        if value != default:
            raise LapgenError(f"{flag} applies to --method animatediff only",
                              hint="add --method animatediff, or drop it")


def generate_video(
    config: VideoConfig, *, pipe=None, on_step: Callable[[int, int], None] | None = None
) -> VideoResult:
    """Generate the video of `config`; `pipe` skips loading (library use: a `ControlVideoPipeline`, or with
    `method="animatediff"` an `AnimateDiffMaskPipeline`), `on_step(i, total)` reports."""
    from lapgen.cards import make_card, write_card

    out, seqs, interpolator, plan = _validate(config, pipe)
    digests = [hashlib.sha256(np.ascontiguousarray(seq.masks).tobytes()).hexdigest() for seq in seqs]
    if config.method == "animatediff":
        from lapgen.models.animatediff_video import run_animatediff

        run = run_animatediff(config, out, seqs, digests, plan, pipe=pipe, on_step=on_step)
    else:
        run = _run_controlvideo(config, out, seqs, digests, interpolator, pipe=pipe, on_step=on_step)
    video = run["video"]
    extras = write_outputs(video, config, out, seqs)
    mask_cards = [mask_card(seq, d) for seq, d in zip(seqs, digests)]
    card = make_card(
        "video",
        config=asdict(config),
        models=run["entries"],
        masks=mask_cards if len(mask_cards) > 1 else mask_cards[0],
        result={"method": config.method, "frames": int(video.shape[0]), "fps": config.fps,
                "size": [int(video.shape[2]), int(video.shape[1])], **run["result"],
                "resumed_from_step": run["start_step"]},
        outputs=extras,
    )
    card_file = write_card(out, card)
    shutil.rmtree(staging_path(out), ignore_errors=True)
    r = run["result"]
    return VideoResult(out, int(video.shape[0]), config.fps, card_file, bool(r.get("long_video")),
                       list(r.get("smoothed_steps", [])), extras, run["start_step"], r.get("interpolator"),
                       r.get("long_video_reason", ""), config.method, r.get("free_noise"))


def _run_controlvideo(config: VideoConfig, out: Path, seqs: list, digests: list[str], interpolator, *,
                      pipe=None, on_step=None) -> dict:
    """Run ControlVideo (resumable): the frames (F, H, W, 3) uint8, the card's models and result."""
    import torch

    several = isinstance(config.controlnet, (list, tuple)) or len(seqs) > 1
    entries: dict = {}
    if pipe is None:
        nets = as_list(config.controlnet) if several else config.controlnet
        pipe, sd_entry, cn_entry = load_controlvideo(config.model, nets, config.device, config.dtype)
        entries = {
            "model": card_entry(sd_entry),
            "controlnet": [card_entry(e) for e in cn_entry] if several else card_entry(cn_entry),
        }
    if not hasattr(pipe, "num_controlnets"):
        raise LapgenError("the pipeline given is not a ControlVideo pipeline", hint="load it with load_controlvideo")
    if pipe.num_controlnets != len(seqs):
        raise LapgenError(
            f"the pipeline has {pipe.num_controlnets} ControlNet(s) but {len(seqs)} mask sequence(s)"
        )
    scales = as_list(config.controlnet_scale)
    scale = scales[0] if len(seqs) == 1 else (scales * len(seqs) if len(scales) == 1 else scales)

    # resumable: latents saved every few steps in <out>.partial/ (the interpolator's weights are part of the
    # key: registering RIFE weights between two runs must not mix interpolators in one video)
    key = run_key(config, "".join(digests) + repr(interpolator.card()))
    state_file, start_step, latents = open_stage(out, key, config.steps)

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
        callback_on_step_end=step_saver(config, state_file, on_step),
        sequential_cfg=config.sequential_cfg,
        clips_per_pass=config.clips_per_pass,
        start_step=start_step,
        **parse_smoother_steps(config.smoother_steps),
    )
    video = to_uint8(output.frames)  # (F, H, W, 3)
    planned = smoother_indices(config) if len(video) >= 3 else []
    smoothed = [i for i in planned if i < start_step] + list(output.smoothed_steps)  # also before a resume
    result = {"long_video": output.long_video, "long_video_reason": output.long_video_reason,
              "smoothed_steps": smoothed, "interpolator": {**interpolator.card(), "ran": bool(smoothed)},
              "clip_kv": config.clip_kv if output.long_video else None}
    return {"video": video, "entries": entries, "result": result, "start_step": start_step}
