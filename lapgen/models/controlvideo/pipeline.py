"""ControlVideo on current diffusers: text + one control image per frame -> a coherent video.

Re-implements ControlVideo (Zhang et al. 2023, arXiv 2305.13077; official code YBYBZhang/ControlVideo on
diffusers 0.14) as one `DiffusionPipeline` over the stock 2D `UNet2DConditionModel` and `ControlNetModel`,
following diffusers' `StableDiffusionControlNetPipeline` (same components, argument names, prompt encoding,
noise drawing, scheduler use and output post-processing). Frames are folded into the batch axis; the
training-free temporal coupling comes from:
- fully cross-frame self-attention and pooled GroupNorm statistics (`attention.py`),
- one initial noise shared by all frames (motion comes from the control sequence),
- the interleaved-frame smoother (`smoother.py`) with a pluggable interpolator (`interpolators.py`),
- the hierarchical key-frame sampler for long videos (`hierarchical.py`).

Stage 3 of Iliash et al. 2024 runs it with the laparoscopic SD 1.5 fine-tune and its binary tool-mask
ControlNet: 128x128, 100 DDIM steps, guidance 3, 250 frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DiffusionPipeline,
    MultiControlNetModel,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from transformers import CLIPTextModel, CLIPTokenizer

from lapgen.errors import LapgenError
from lapgen.models.controlvideo.attention import DEFAULT_ATTENTION_MEMORY, FrameContext, frame_coupling
from lapgen.models.controlvideo.hierarchical import (
    CLIP_KV_MODES,
    default_window,
    hierarchical_noise_prediction,
    long_mode_decision,
    split_key_frames,
)
from lapgen.models.controlvideo.inputs import ControlVideoInputs
from lapgen.models.controlvideo.interpolators import resolve_interpolator
from lapgen.models.controlvideo.smoother import (
    InterleavedSmoother,
    ddim_alpha_prev,
    ddim_epsilon,
    ddim_recompute,
    require_ddim,
    smoother_step_indices,
)


@dataclass
class ControlVideoPipelineOutput(BaseOutput):
    """frames: list of F PIL images ("pil"), an array (F, H, W, 3) in [0, 1] ("np"), a tensor (F, 3, H, W)
    in [0, 1] ("pt") or the final latents (F, 4, H/8, W/8) ("latent").
    smoothed_steps: loop indices at which the smoother ran. long_video: whether keys/clips were used, and
    long_video_reason why. interpolator: the smoother's interpolator (None when no step smooths).
    """

    frames: Any
    smoothed_steps: list[int] = field(default_factory=list)
    long_video: bool = False
    long_video_reason: str = ""
    interpolator: dict | None = None


class ControlVideoPipeline(ControlVideoInputs, DiffusionPipeline):
    """Training-free controllable video generation (ControlVideo) with a Stable Diffusion + ControlNet pair.

    Components are those of `StableDiffusionControlNetPipeline` without the safety checker:
    `vae, text_encoder, tokenizer, unet, controlnet, scheduler`. As there, `controlnet` may be a list of
    ControlNets (wrapped in diffusers' `MultiControlNetModel`): then `frames` holds one control sequence per
    net and `controlnet_conditioning_scale` one scale per net (or one for all); the nets' residuals are
    summed. The interpolator of the smoother is a call argument (never a component), so
    `save_pretrained` / `from_pretrained` stay plain diffusers.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: ClassVar[list[str]] = []
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        controlnet: ControlNetModel
        | list[ControlNetModel]
        | tuple[ControlNetModel, ...]
        | MultiControlNetModel,
        scheduler,
    ):
        super().__init__()
        if isinstance(controlnet, (list, tuple)):
            controlnet = MultiControlNetModel(controlnet)
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            controlnet=controlnet,
            scheduler=scheduler,
        )
        self.vae_scale_factor = (
            2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
        )
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_convert_rgb=True)
        # masks: nearest-neighbour resize (never blur a binary mask), values in [0, 1], not normalised
        self.control_image_processor = VaeImageProcessor(
            vae_scale_factor=self.vae_scale_factor,
            do_convert_rgb=True,
            do_normalize=False,
            resample="nearest",
        )

    @classmethod
    def from_components(
        cls, sd_pipeline: DiffusionPipeline, controlnet, scheduler=None
    ) -> ControlVideoPipeline:
        """Build from a loaded Stable Diffusion pipeline (Stage 1) and a ControlNet (Stage 2) or a list."""
        return cls(
            vae=sd_pipeline.vae,
            text_encoder=sd_pipeline.text_encoder,
            tokenizer=sd_pipeline.tokenizer,
            unet=sd_pipeline.unet,
            controlnet=controlnet,
            scheduler=scheduler or sd_pipeline.scheduler,
        )

    # -- model calls ----------------------------------------------------------------------------------

    def _model_pass(self, latents, t, embeds, cond, scale):
        """ControlNet + UNet on one batch `(B·F, C, h, w)` (frames contiguous per video)."""
        model_input = self.scheduler.scale_model_input(latents, t)
        down, mid = self.controlnet(
            model_input,
            t,
            encoder_hidden_states=embeds,
            controlnet_cond=cond,
            conditioning_scale=scale,
            guess_mode=False,
            return_dict=False,
        )
        return self.unet(
            model_input,
            t,
            encoder_hidden_states=embeds,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]

    def _guided_noise(
        self, ctx: FrameContext, latents, t, idx, kv, cond, pos, neg, guidance, scale, sequential_cfg: bool
    ) -> torch.Tensor:
        """Guided noise for the frames `idx` of one video (or a list of equal-length index lists: several
        videos in one call), attending to positions `kv` of each video's pass. Rows are video-major.
        `cond` is one conditioning tensor or a list (one per ControlNet)."""
        frames = latents.shape[0]
        if idx is not None:
            videos = idx if idx and isinstance(idx[0], (list, tuple)) else [idx]  # equal-length videos
            frames = len(videos[0])
            sel = torch.as_tensor([i for v in videos for i in v], device=latents.device)
            latents, pos = latents[sel], pos[sel]
            cond = [c[sel] for c in cond] if isinstance(cond, list) else cond[sel]
            neg = neg[sel] if neg is not None else None
        ctx.num_frames = frames
        ctx.kv_frames = kv
        if neg is None:
            return self._model_pass(latents, t, pos, cond, scale)
        if sequential_cfg:  # the CFG halves are independent videos: two calls halve peak memory
            uncond = self._model_pass(latents, t, neg, cond, scale)
            text = self._model_pass(latents, t, pos, cond, scale)
        else:
            both = [torch.cat([c] * 2) for c in cond] if isinstance(cond, list) else torch.cat([cond] * 2)
            noise = self._model_pass(torch.cat([latents] * 2), t, torch.cat([neg, pos]), both, scale)
            uncond, text = noise.chunk(2)
        return uncond + guidance * (text - uncond)

    # -- call -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        frames: Sequence[PIL.Image.Image] | torch.Tensor | list | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 100,
        guidance_scale: float = 3.0,
        negative_prompt: str | list[str] | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        controlnet_conditioning_scale: float | list[float] = 1.0,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        same_frame_noise: bool = True,
        pool_norm_over_frames: bool = True,
        couple_controlnet: bool = False,
        smoother_steps: Sequence[int] | None = None,
        smoother_start: float | None = None,
        smoother_num_steps: int = 2,
        smoother_at: Sequence[int] | None = None,
        interpolator: str | Callable = "auto",
        smoother_endpoints: str = "original",
        smoother_sample_posterior: bool = False,
        long_video: str = "auto",
        max_full_frames: int = 16,
        window_size: int | None = None,
        clip_kv: str = "original",
        clips_per_pass: int = 1,
        sequential_cfg: bool = False,
        attention_memory_bytes: int = DEFAULT_ATTENTION_MEMORY,
        decode_chunk_size: int = 16,
        start_step: int = 0,
    ):
        """Generate one video: `prompt` (str, or one per frame) and one control image per frame.

        Args (beyond diffusers' ControlNet pipeline):
            frames: the control sequence, a list of PIL images or a float tensor (F, 3, H, W) in [0, 1];
                with several ControlNets, a list of such sequences (one per net, same F).
            controlnet_conditioning_scale: one scale, or one per ControlNet.
            same_frame_noise: one initial noise for all frames (ControlVideo); False draws i.i.d. noise.
            pool_norm_over_frames: pool ResNet GroupNorm statistics over frames (the original's coupling).
            couple_controlnet: also make the ControlNet's self-attention cross-frame (off, as the original).
            smoother_steps: when the smoother fires, as in ControlVideo: steps counted from the end (fires at
                loop index i when `num_inference_steps - i` is in the list); default (19, 20), i.e. i = 80, 81
                of 100 steps; [] disables. Alternatives (give one): smoother_start (a fraction of the steps,
                smoother_num_steps consecutive steps from there) or smoother_at (loop indices).
                Off automatically for F < 3.
            interpolator: "auto" (RIFE when the registry has its weights, else flow), "rife", "rife:PATH",
                "flow", "linear", a registry name of kind interpolator, or a callable (a, b) -> midpoint.
            smoother_endpoints: "original" or "keep" (see `smoother.interleave_frames`).
            smoother_sample_posterior: re-encode by sampling the VAE posterior with `generator` (as the
                original) instead of its mean (default; deterministic, identical frames stay identical).
            long_video: "auto" (hierarchical above max_full_frames), "on" or "off".
            window_size: key-frame spacing + 1 for long mode (default int(sqrt(F))).
            clip_kv: "original" (clip frames attend to the first key frame and the clip's last frame, as
                ControlVideo's code does) or "keys" (both key frames, as the ControlVideo paper describes).
            clips_per_pass: long mode: stack up to this many equal-length clips in one model call.
            sequential_cfg: run the two guidance halves as separate calls (halves peak memory).
            attention_memory_bytes: budget for materialised attention scores (exact query chunking).
            start_step: resume a run: `latents` (F rows) are the latents after loop index start_step - 1.
        """
        if frames is None:
            raise ValueError("frames (the control sequence) is required")
        if clip_kv not in CLIP_KV_MODES:
            raise LapgenError(f"unknown clip_kv mode {clip_kv!r}", hint=f"use one of {CLIP_KV_MODES}")
        device = self._execution_device
        do_cfg = guidance_scale > 1.0

        # 1. control frames (F, 3, H, W) in [0, 1] (a list of them with several ControlNets)
        cond = self.prepare_control(frames, height, width, device, self.controlnet.dtype)
        scale = self.conditioning_scales(controlnet_conditioning_scale)
        first = cond[0] if isinstance(cond, list) else cond
        num_frames = first.shape[0]
        height, width = first.shape[-2:]

        # 2. prompt: one video, the text repeated per frame (per-frame prompts when a list of F is given)
        if isinstance(prompt, list) and len(prompt) not in (1, num_frames):
            raise ValueError(f"give one prompt or one per frame ({num_frames}), got {len(prompt)}")
        if isinstance(negative_prompt, str) and isinstance(prompt, list):
            negative_prompt = [negative_prompt] * len(prompt)
        pos, neg = self.encode_prompt(
            prompt,
            device,
            1,
            do_cfg,
            negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
        )
        if pos.shape[0] not in (1, num_frames):
            raise ValueError(f"prompt embeddings must have 1 or {num_frames} rows, got {pos.shape[0]}")
        pos = pos.expand(num_frames, -1, -1) if pos.shape[0] == 1 else pos
        if do_cfg:
            neg = neg.expand(num_frames, -1, -1) if neg.shape[0] == 1 else neg
        else:
            neg = None

        # 3. timesteps and noise
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if not 0 <= start_step < len(timesteps):
            raise ValueError(f"start_step must be in 0..{len(timesteps) - 1}")
        if start_step:
            if latents is None or latents.shape[0] != num_frames:
                raise ValueError("resuming (start_step > 0) needs the latents of all frames")
            latents = latents.to(device=device, dtype=pos.dtype)
        else:
            latents = self.prepare_latents(
                num_frames,
                self.unet.config.in_channels,
                height,
                width,
                pos.dtype,
                device,
                generator,
                latents,
                same_frame_noise,
            )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 4. smoother and long-video plan
        smooth_at = smoother_step_indices(
            len(timesteps), smoother_steps, start=smoother_start, count=smoother_num_steps, at=smoother_at
        )
        if num_frames < 3:
            smooth_at = []
        smoother = None
        chosen = None
        if smooth_at:
            require_ddim(self.scheduler)
            if eta != 0:
                raise LapgenError("the smoother recomputes a deterministic DDIM step; use eta=0")
            chosen = resolve_interpolator(interpolator)
            smoother = InterleavedSmoother(
                self.vae,
                chosen.fn,
                smoother_endpoints,
                chunk_size=decode_chunk_size,
                sample_posterior=smoother_sample_posterior,
                generator=generator,
            )
        window = window_size or default_window(num_frames)
        long_mode, long_reason = long_mode_decision(long_video, num_frames, window, max_full_frames)
        plan = split_key_frames(num_frames, window) if long_mode else None

        ctx = FrameContext(
            num_frames=num_frames, pool_norm=pool_norm_over_frames, memory_bytes=attention_memory_bytes
        )
        smoothed = []

        # 5. denoising loop
        with (
            frame_coupling(self.unet, self.controlnet, ctx, couple_controlnet=couple_controlnet),
            self.progress_bar(total=len(timesteps)) as progress_bar,
        ):
            for i, t in enumerate(timesteps):
                if i < start_step:
                    progress_bar.update()
                    continue

                def predict(idx, kv, _t=t, _lat=latents):
                    return self._guided_noise(
                        ctx,
                        _lat,
                        _t,
                        idx,
                        kv,
                        cond,
                        pos,
                        neg,
                        guidance_scale,
                        scale,
                        sequential_cfg,
                    )

                if long_mode:
                    noise_pred = hierarchical_noise_prediction(
                        predict, plan, clip_kv, clips_per_pass=clips_per_pass
                    )
                else:
                    noise_pred = predict(None, None)
                step = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=True)
                if smoother is not None and i in smooth_at:
                    x0 = smoother.smooth_x0(step.pred_original_sample, i)
                    eps = ddim_epsilon(self.scheduler, noise_pred, latents, t)
                    latents = ddim_recompute(x0, eps, ddim_alpha_prev(self.scheduler, t)).to(latents.dtype)
                    smoothed.append(i)
                else:
                    latents = step.prev_sample

                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": pos, "negative_prompt_embeds": neg}
                    outputs = callback_on_step_end(
                        self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs}
                    )
                    latents = outputs.pop("latents", latents)
                progress_bar.update()

        # 6. decode in slices
        if output_type == "latent":
            video = latents
        else:
            sf = self.vae.config.scaling_factor
            parts = [
                self.vae.decode(
                    latents[s : s + decode_chunk_size] / sf, return_dict=False, generator=generator
                )[0]
                for s in range(0, num_frames, max(1, decode_chunk_size))
            ]
            video = self.image_processor.postprocess(
                torch.cat(parts), output_type=output_type, do_denormalize=[True] * num_frames
            )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return ControlVideoPipelineOutput(
            frames=video,
            smoothed_steps=smoothed,
            long_video=long_mode,
            long_video_reason=long_reason,
            interpolator=chosen.card() if chosen is not None else None,
        )
