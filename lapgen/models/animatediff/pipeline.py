"""`AnimateDiffMaskPipeline`: diffusers' `AnimateDiffControlNetPipeline` (AnimateDiff, Guo et al. 2024, with
ControlNet, Zhang et al. 2023) driven by lapgen's tool-mask sequences, with a denoising loop that can resume at
any step and fuse FreeNoise windows for videos longer than the motion module's context.

Same components and argument names as diffusers' pipeline (`prompt`, `conditioning_frames`,
`num_inference_steps`, `guidance_scale`, `controlnet_conditioning_scale`, `callback_on_step_end` (given the
`latents`), ...); with
no windows and `start_step=0` it computes what `AnimateDiffControlNetPipeline.__call__` computes (the tests
compare the two). What lapgen adds:

- `start_step`: continue from latents saved after that many steps (DDIM's update depends on the step only).
- `context_frames`/`context_stride`/`fusion`: FreeNoise (`lapgen.models.animatediff.windows`) with windows
  fused on the noise prediction (`"prediction"`: one window of the UNet and ControlNet in memory at a time)
  or inside the motion modules (`"attention"`: diffusers' `enable_free_noise`, for the duration of the call).
- `sequential_cfg`: the unconditional and the text-conditioned halves one after the other (half the memory).
- masks as tensors: `conditioning_frames` (F, 3, H, W) or (F, 1, H, W) in [0, 1], any dtype (a bool mask is
  fine), per ControlNet: the ControlNet pipeline's control images (never normalised), moved to the device and
  expanded to 3 channels one window at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import AnimateDiffControlNetPipeline, MultiControlNetModel
from diffusers.utils import BaseOutput

from lapgen.models.animatediff.windows import context_windows, pyramid_weights

FUSIONS = ("prediction", "attention")


@dataclass
class AnimateDiffMaskOutput(BaseOutput):
    frames: object  # np.ndarray (F, H, W, 3) in [0, 1] (output_type "np") or latents (1, C, F, h, w)
    windows: list[tuple[int, int]]  # the FreeNoise windows, [(0, F)] without


class AnimateDiffMaskPipeline(AnimateDiffControlNetPipeline):
    """AnimateDiff + ControlNet over mask sequences (see the module docstring)."""

    def _noise_prediction(self, latents: torch.Tensor, t: torch.Tensor, embeds: list[torch.Tensor],
                          controls: list[torch.Tensor], scale, guidance_scale: float,
                          sequential_cfg: bool) -> torch.Tensor:
        """Guided noise prediction (1, C, f, h, w) for `latents` (1, C, f, h, w) and their masks.

        `embeds`: [negative, positive] prompt embeddings (1, 77, D) with guidance, else [positive].
        `controls`: per ControlNet (f, 1 or 3, H, W) on any device. Batch layout as diffusers: (halves x frames).
        """
        frames = latents.shape[2]
        device, dtype = latents.device, self.controlnet.dtype
        controls = [c.to(device=device, dtype=dtype).expand(-1, 3, -1, -1) for c in controls]
        groups = [[0, 1]] if len(embeds) == 2 and not sequential_cfg else [[k] for k in range(len(embeds))]
        preds = []
        for group in groups:
            x = torch.cat([latents] * len(group))  # (g, C, f, h, w)
            x = self.scheduler.scale_model_input(x, t)
            ehs = torch.cat([embeds[k] for k in group]).repeat_interleave(frames, dim=0)  # (g*f, 77, D)
            flat = x.transpose(1, 2).flatten(0, 1)  # (g*f, C, h, w): the ControlNet sees frames as images
            conds = [torch.cat([c] * len(group)) for c in controls]  # (g*f, 3, H, W)
            down, mid = self.controlnet(flat, t, encoder_hidden_states=ehs,
                                        controlnet_cond=conds if isinstance(self.controlnet, MultiControlNetModel)
                                        else conds[0], conditioning_scale=scale, guess_mode=False,
                                        return_dict=False)
            preds.append(self.unet(x, t, encoder_hidden_states=ehs, down_block_additional_residuals=down,
                                   mid_block_additional_residual=mid).sample)
        pred = torch.cat(preds)  # (halves, C, f, h, w)
        if len(embeds) == 2:
            uncond, text = pred.chunk(2)
            return uncond + guidance_scale * (text - uncond)
        return pred

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        conditioning_frames: torch.Tensor | list[torch.Tensor],
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        controlnet_conditioning_scale: float | list[float] = 1.0,
        callback_on_step_end: Callable | None = None,
        decode_chunk_size: int = 16,
        start_step: int = 0,
        context_frames: int | None = None,
        context_stride: int = 4,
        fusion: str = "prediction",
        sequential_cfg: bool = False,
        return_dict: bool = True,
    ):
        """Denoise a video whose frame count is the masks' (`conditioning_frames`, (F, 3, H, W) in [0, 1], a
        list with several ControlNets). `latents` (1, C, F, h, w): the initial noise, or with `start_step` the
        latents after that many steps. `context_frames`: window length when the video is longer (FreeNoise)."""
        controls = conditioning_frames if isinstance(conditioning_frames, list) else [conditioning_frames]
        num_frames, _, height, width = controls[0].shape
        device = self._execution_device
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        do_cfg = guidance_scale > 1
        positive, negative = self.encode_prompt(prompt, device, 1, do_cfg, negative_prompt)
        embeds = [negative, positive] if do_cfg else [positive]
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = (1, self.unet.config.in_channels, num_frames, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        latents = latents.to(device=device, dtype=positive.dtype)
        if start_step == 0:
            latents = latents * self.scheduler.init_noise_sigma
        extra = self.prepare_extra_step_kwargs(generator, 0.0)

        long = context_frames is not None and num_frames > context_frames
        windows = context_windows(num_frames, context_frames, context_stride) if long else [(0, num_frames)]
        by_window = long and fusion == "prediction"
        if long and fusion == "attention":
            self.enable_free_noise(context_length=context_frames, context_stride=context_stride,
                                   weighting_scheme="pyramid", noise_type="shuffle_context")
        try:
            self._num_timesteps = len(timesteps)
            for i in range(start_step, len(timesteps)):
                t = timesteps[i]
                if not by_window:
                    noise = self._noise_prediction(latents, t, embeds, controls, controlnet_conditioning_scale,
                                                   guidance_scale, sequential_cfg)
                else:  # FreeNoise windows fused on the prediction: one window of activations at a time
                    noise = torch.zeros_like(latents, dtype=torch.float32)
                    weight = torch.zeros((1, 1, num_frames, 1, 1), device=device)
                    ramp = pyramid_weights(context_frames).to(device).view(1, 1, -1, 1, 1)
                    for start, end in windows:
                        part = self._noise_prediction(latents[:, :, start:end], t, embeds,
                                                      [c[start:end] for c in controls],
                                                      controlnet_conditioning_scale, guidance_scale,
                                                      sequential_cfg)
                        noise[:, :, start:end] += part.float() * ramp
                        weight[:, :, start:end] += ramp
                    noise = (noise / weight).to(latents.dtype)
                latents = self.scheduler.step(noise, t, latents, **extra).prev_sample
                if callback_on_step_end is not None:
                    latents = callback_on_step_end(self, i, t, {"latents": latents}).pop("latents", latents)
        finally:
            if long and fusion == "attention":
                self.disable_free_noise()
        if output_type == "latent":
            video = latents
        else:
            video = self.video_processor.postprocess_video(self.decode_latents(latents, decode_chunk_size),
                                                           output_type=output_type)[0]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video, windows)
        return AnimateDiffMaskOutput(frames=video, windows=windows)
