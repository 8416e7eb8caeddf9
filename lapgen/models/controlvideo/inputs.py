"""Input preparation of `ControlVideoPipeline`: prompt, control sequences (one or one per ControlNet),
conditioning scales, initial noise. Kept apart from the denoising loop in `pipeline.py`.

The methods follow diffusers' `StableDiffusionControlNetPipeline` (same prompt encoding, noise drawing
and per-net conditioning rules), with frames where the image pipeline has a batch of images.
"""

from __future__ import annotations

import inspect

import numpy as np
import PIL.Image
import torch
from diffusers import MultiControlNetModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor


class ControlVideoInputs:
    """Mixin of `ControlVideoPipeline` (needs its `controlnet`, `control_image_processor`, `scheduler`,
    `vae_scale_factor` and the components diffusers' prompt encoding reads)."""

    def encode_prompt(
        self,
        prompt,
        device,
        num_images_per_prompt,
        do_classifier_free_guidance,
        negative_prompt=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        lora_scale=None,
        clip_skip=None,
    ):
        """diffusers' Stable Diffusion prompt encoding (same tokenisation, truncation and dtype rules)."""
        return StableDiffusionPipeline.encode_prompt(
            self,
            prompt,
            device,
            num_images_per_prompt,
            do_classifier_free_guidance,
            negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            lora_scale=lora_scale,
            clip_skip=clip_skip,
        )

    def prepare_frames(self, frames, height: int | None, width: int | None, device, dtype) -> torch.Tensor:
        """Conditioning sequence -> `(F, 3, H, W)` float in [0, 1] (NEAREST resize to height x width)."""
        if isinstance(frames, (PIL.Image.Image, np.ndarray)) and not (
            isinstance(frames, np.ndarray) and frames.ndim == 4
        ):
            frames = [frames]
        if isinstance(frames, torch.Tensor):
            if frames.ndim == 3:
                frames = frames[None]
            if frames.ndim != 4 or frames.shape[1] not in (1, 3):
                raise ValueError(f"frames tensor must be (F, 3, H, W) in [0, 1], got {tuple(frames.shape)}")
            if frames.shape[1] == 1:
                frames = frames.repeat(1, 3, 1, 1)
            if frames.numel() and (frames.min() < 0 or frames.max() > 1):
                raise ValueError("frames tensor values must lie in [0, 1]")
            frames = frames.float()
        elif len(frames) == 0:
            raise ValueError("frames is empty: give one control image per frame")
        image = self.control_image_processor.preprocess(frames, height=height, width=width)
        return image.to(device=device, dtype=dtype)

    def prepare_latents(
        self,
        num_frames: int,
        num_channels_latents: int,
        height: int,
        width: int,
        dtype,
        device,
        generator,
        latents: torch.Tensor | None = None,
        same_frame_noise: bool = True,
    ) -> torch.Tensor:
        """Initial noise `(F, C, h, w)`: one draw `(1, C, h, w)` repeated over frames (as diffusers draws
        it, so F=1 matches the image pipeline), or i.i.d. per frame; user latents may be (1|F, C, h, w)."""
        shape = (
            1 if same_frame_noise else num_frames,
            num_channels_latents,
            int(height) // self.vae_scale_factor,
            int(width) // self.vae_scale_factor,
        )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            if latents.ndim != 4 or latents.shape[0] not in (1, num_frames) or latents.shape[1:] != shape[1:]:
                raise ValueError(
                    f"latents must be (1 or {num_frames}, {', '.join(map(str, shape[1:]))}), "
                    f"got {tuple(latents.shape)}"
                )
            latents = latents.to(device=device, dtype=dtype)
        if latents.shape[0] == 1 and num_frames > 1:
            latents = latents.repeat(num_frames, 1, 1, 1)
        return latents * self.scheduler.init_noise_sigma

    @property
    def num_controlnets(self) -> int:
        return len(self.controlnet.nets) if isinstance(self.controlnet, MultiControlNetModel) else 1

    def prepare_control(self, frames, height, width, device, dtype):
        """One conditioning tensor `(F, 3, H, W)`; with a `MultiControlNetModel`, a list of them (one per
        net, equal F and size)."""
        if not isinstance(self.controlnet, MultiControlNetModel):
            return self.prepare_frames(frames, height, width, device, dtype)
        n = self.num_controlnets
        per_net = isinstance(frames, (list, tuple)) and not isinstance(frames[0], PIL.Image.Image)
        if not per_net or len(frames) != n:
            raise ValueError(f"{n} ControlNets need a list of {n} control sequences (one per net)")
        conds = [self.prepare_frames(frames[0], height, width, device, dtype)]
        height, width = conds[0].shape[-2:]
        conds += [self.prepare_frames(f, height, width, device, dtype) for f in frames[1:]]
        lengths = [c.shape[0] for c in conds]
        if len(set(lengths)) > 1:
            raise ValueError(f"the control sequences have different numbers of frames: {lengths}")
        return conds

    def conditioning_scales(self, scale):
        """`controlnet_conditioning_scale` as the ControlNet call takes it (a list per net for several)."""
        if not isinstance(self.controlnet, MultiControlNetModel):
            if isinstance(scale, (list, tuple)):
                if len(scale) != 1:
                    raise ValueError(f"one ControlNet takes one conditioning scale, got {len(scale)}")
                scale = scale[0]
            return float(scale)
        n = self.num_controlnets
        scales = list(scale) if isinstance(scale, (list, tuple)) else [scale] * n
        if len(scales) != n:
            raise ValueError(f"{n} ControlNets need 1 or {n} conditioning scales, got {len(scales)}")
        return [float(v) for v in scales]

    def prepare_extra_step_kwargs(self, generator, eta):
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs
