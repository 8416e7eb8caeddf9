"""`lapgen video --method animatediff`: the Stage-1 model with an AnimateDiff motion module (`lapgen train-motion`,
or a public adapter) and the Stage-2 tool-mask ControlNet, through `AnimateDiffMaskPipeline`.

The inputs and outputs are ControlVideo's (prompt, one mask per frame; MP4, GIF, frames, side by side, card),
and so is resume (latents saved in `<out>.partial/`). What differs: the frames are coupled by the learned
temporal layers, each frame gets its own initial noise, and videos longer than the motion module's context
are made with FreeNoise (`lapgen.models.animatediff.windows`). The context defaults to the clip length the
adapter was trained on (its card, for lapgen-trained adapters) or AnimateDiff's 16, never beyond the frames its
positional embedding covers (`motion_max_seq_length`). docs/video.md says when to use which method.
"""

from __future__ import annotations

import json
from pathlib import Path

from lapgen.errors import LapgenError
from lapgen.models.video_common import (
    FREE_NOISE_MODES,
    FUSIONS,
    VideoConfig,
    as_list,
    card_entry,
    open_stage,
    run_key,
    step_saver,
    to_uint8,
)
from lapgen.progress import notice

ANIMATEDIFF_CONTEXT = 16  # frames AnimateDiff's motion modules were trained on


def check_options(config: VideoConfig) -> None:
    """ControlVideo's options are an error with AnimateDiff; AnimateDiff's own values are checked."""
    for flag, value, default in (("--long", config.long, "auto"), ("--max-full-frames", config.max_full_frames, 16),
                                 ("--window", config.window, None), ("--clip-kv", config.clip_kv, "original"),
                                 ("--clips-per-pass", config.clips_per_pass, 1),
                                 ("--interpolator", config.interpolator, "auto"),
                                 ("--smoother-steps", config.smoother_steps, "19,20"),
                                 ("--smoother-reencode", config.smoother_reencode, "mean"),
                                 ("--no-pool-norm", not config.pool_norm, False)):
        if value != default:
            raise LapgenError(f"{flag} applies to --method controlvideo only",
                              hint="drop it, or use --method controlvideo")
    if config.free_noise not in FREE_NOISE_MODES:
        raise LapgenError(f"unknown --free-noise {config.free_noise!r}", hint=f"use one of {', '.join(FREE_NOISE_MODES)}")
    if config.free_noise_fusion not in FUSIONS:
        raise LapgenError(f"unknown --free-noise-fusion {config.free_noise_fusion!r}",
                          hint=f"use one of {', '.join(FUSIONS)}")
    if config.context is not None and config.context < 2:
        raise LapgenError(f"--context must be at least 2 frames (got {config.context})")
    if config.context_stride < 1:
        raise LapgenError(f"--context-stride must be at least 1 (got {config.context_stride})")


def adapter_limits(entry, location) -> tuple[int, int | None]:
    """(frames the adapter's positional embedding covers, the clip length it was trained on or None), read
    from its config.json and card without loading weights."""
    if isinstance(location, Path):
        config_file = location / "config.json"
    else:  # a hub id, present in the cache (ensure_local checked)
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(location, "config.json", revision=entry.revision)
        config_file = Path(found) if isinstance(found, str) else None
    try:
        config = json.loads(config_file.read_text()) if config_file else {}
    except (OSError, ValueError) as exc:
        raise LapgenError(f"motion adapter '{entry.name}': config.json is not readable JSON", path=config_file,
                          hint="point at a folder written by `lapgen train-motion` or save_pretrained") from exc
    if config.get("_class_name", "MotionAdapter") != "MotionAdapter":
        raise LapgenError(f"model '{entry.name}' is a {config['_class_name']}, not a MotionAdapter", path=config_file)
    trained = (entry.card or {}).get("clip_frames")
    return int(config.get("motion_max_seq_length", 32)), (int(trained) if isinstance(trained, int) else None)


def plan_free_noise(config: VideoConfig, frames: int, limit: int, trained: int | None, name: str) -> dict:
    """Whether FreeNoise runs, with which context, and why (the card's `free_noise`)."""
    context = config.context or min(trained or ANIMATEDIFF_CONTEXT, limit)
    if context > limit:
        raise LapgenError(f"--context {context} exceeds the {limit} frames motion adapter '{name}' can attend over",
                          hint=f"use --context {limit} or less")
    plan = {"context": context, "stride": config.context_stride, "fusion": config.free_noise_fusion}
    if config.free_noise == "off":
        if frames > limit:
            raise LapgenError(f"{frames} frames exceed the {limit} frames motion adapter '{name}' can attend over "
                              "without FreeNoise", hint="drop --free-noise off (FreeNoise makes longer videos), or "
                              f"use --frames {limit}")
        return {**plan, "used": False, "reason": f"--free-noise off: all {frames} frames at once", "windows": 1}
    if frames <= context:
        why = f"{frames} frames <= context {context}: all frames at once"
        return {**plan, "used": False, "reason": why, "windows": 1}
    from lapgen.models.animatediff.windows import context_windows

    n = len(context_windows(frames, context, config.context_stride))
    why = f"{frames} frames > context {context}" if config.free_noise == "auto" else "--free-noise on"
    return {**plan, "used": True, "reason": f"{why}: {n} windows of {context} frames every {config.context_stride}",
            "windows": n}


def plan_video(config: VideoConfig, frames: int, pipe=None) -> dict:
    """What a video of `frames` frames will run with, checked before any weight loads and without output:
    the motion adapter's entry (None with a given `pipe`), whether it is the registry default, and the
    FreeNoise plan (one-line errors for a context beyond the adapter's reach)."""
    if pipe is not None:
        from lapgen.models.animatediff import AnimateDiffMaskPipeline

        if not isinstance(pipe, AnimateDiffMaskPipeline):
            raise LapgenError("the pipeline given is not an AnimateDiff pipeline", hint="load it with load_animatediff")
        config_of = pipe.motion_adapter.config if pipe.motion_adapter is not None else pipe.unet.config
        limit = int(config_of["motion_max_seq_length"])
        return {"entry": None, "default": False, "free_noise": plan_free_noise(config, frames, limit, None, "given")}
    from lapgen.models.loading import motion_adapter_location

    entry, location = motion_adapter_location(config.motion_adapter, announce=False)  # offline: one line here
    limit, trained = adapter_limits(entry, location)
    return {"entry": entry, "default": config.motion_adapter is None,
            "free_noise": plan_free_noise(config, frames, limit, trained, entry.name)}


def load_animatediff(model: str | None, controlnet, motion_adapter: str | None, device: str = "auto",
                     dtype: str = "fp32"):
    """An `AnimateDiffMaskPipeline` from registry entries (DDIM, progress bar off) and the entries used:
    (pipe, pipeline entry, ControlNet entry or entries, motion adapter entry)."""
    from diffusers import DDIMScheduler

    from lapgen.models.animatediff import AnimateDiffMaskPipeline
    from lapgen.models.loading import (
        load_controlnet, load_motion_adapter, load_sd_pipeline, motion_adapter_location, resolve_device,
        resolve_dtype, resolve_entry,
    )
    from lapgen.models.motion import check_layout, motion_unet

    several = isinstance(controlnet, (list, tuple))
    sd_entry = resolve_entry(model, "pipeline")  # one-line errors before any weight is read
    cn_entries = [resolve_entry(source, "controlnet") for source in (controlnet if several else [controlnet])]
    ad_entry = motion_adapter_location(motion_adapter)[0]
    sd = load_sd_pipeline(model, device=device, dtype=dtype, entry=sd_entry)
    adapter = load_motion_adapter(ad_entry, device=device, dtype=dtype)
    check_layout(dict(adapter.config), dict(sd.unet.config), ad_entry.name, sd_entry.name)
    nets = [load_controlnet(entry, device=device, dtype=dtype) for entry in cn_entries]
    dev = resolve_device(device)
    unet = motion_unet(sd.unet, adapter, resolve_dtype(dtype, dev)).to(dev).eval()
    scheduler = DDIMScheduler.from_config(sd.scheduler.config)
    pipe = AnimateDiffMaskPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet,
                                   motion_adapter=adapter, controlnet=nets if several else nets[0],
                                   scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, sd_entry, (cn_entries if several else cn_entries[0]), ad_entry


def run_animatediff(config: VideoConfig, out: Path, seqs: list, digests: list[str], planned: dict, *,
                    pipe=None, on_step=None) -> dict:
    """Run AnimateDiff + ControlNet (resumable) as `planned` (`plan_video`): the frames (F, H, W, 3) uint8,
    the card's models and result."""
    import torch

    from lapgen.models.animatediff import reschedule_noise

    frames = len(seqs[0].masks)
    several = isinstance(config.controlnet, (list, tuple)) or len(seqs) > 1
    plan = planned["free_noise"]
    entries: dict = {}
    if pipe is None:
        if planned["default"]:
            from lapgen.registry import announce_default

            announce_default("motion-adapter")
        nets = as_list(config.controlnet) if several else config.controlnet
        pipe, sd_entry, cn_entry, ad_entry = load_animatediff(config.model, nets, planned["entry"], config.device,
                                                              config.dtype)
        entries = {"model": card_entry(sd_entry),
                   "controlnet": [card_entry(e) for e in cn_entry] if several else card_entry(cn_entry),
                   "motion_adapter": card_entry(ad_entry)}
    count = len(pipe.controlnet.nets) if hasattr(pipe.controlnet, "nets") else 1
    if count != len(seqs):
        raise LapgenError(f"the pipeline has {count} ControlNet(s) but {len(seqs)} mask sequence(s)")
    scales = as_list(config.controlnet_scale)
    scale = scales[0] if len(seqs) == 1 else (scales * len(seqs) if len(scales) == 1 else scales)
    key = run_key(config, "".join(digests))
    state_file, start_step, latents = open_stage(out, key, config.steps)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    if latents is None:  # per-frame noise drawn on CPU (the seed means the same on every device)
        h = config.resolution // pipe.vae_scale_factor
        latents = torch.randn((1, pipe.unet.config.in_channels, frames, h, h), generator=generator)
        if plan["used"]:
            latents = reschedule_noise(latents, plan["context"], plan["stride"], generator)
    if plan["used"]:
        notice(f"FreeNoise: {plan['reason']} ({plan['fusion']} fusion)")
    conds = [torch.from_numpy(seq.masks)[:, None] for seq in seqs]  # (F, 1, H, W) bool: expanded per window
    if on_step:
        on_step(start_step, config.steps)
    output = pipe(config.prompt, conds if len(conds) > 1 else conds[0], num_inference_steps=config.steps,
                  guidance_scale=config.guidance, negative_prompt=config.negative_prompt, generator=generator,
                  latents=latents, output_type="np", controlnet_conditioning_scale=scale,
                  callback_on_step_end=step_saver(config, state_file, on_step), start_step=start_step,
                  context_frames=plan["context"] if plan["used"] else None, context_stride=plan["stride"],
                  fusion=plan["fusion"], sequential_cfg=config.sequential_cfg)
    return {"video": to_uint8(output.frames), "entries": entries, "result": {"free_noise": plan},
            "start_step": start_step}
