"""Stage 2: train a ControlNet on binary tool masks over the frozen Stage-1 pipeline (`lapgen train-controlnet`).

Only the model wrapping differs from Stage 1 (diffusers' `examples/controlnet/train_controlnet.py`; ControlNet,
Zhang et al. 2023): the ControlNet starts as `ControlNetModel.from_unet(stage1_unet)` (its encoder copies the
UNet's, zero convolutions start at zero) and is the only trainable model; the Stage-1 UNet, VAE and text
encoder stay frozen; the ControlNet's residuals are added to the UNet's skip connections. Masks are read
with nearest-neighbour resizing only (they are categorical). The result is a folder that
`ControlNetModel.from_pretrained(RUN)` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lapgen.errors import LapgenError
from lapgen.models.finetune import (
    _data_inputs, adopt_base_pipeline, autocast_for, check_base_pipeline, freeze, write_readme,
)
from lapgen.models.latent_cache import FramesTrainingSet, read_training_records
from lapgen.models.training import DiffusionStage, TrainConfig, TrainResult, run_training


# ControlNetModel's default conditioning embedder (SD 1.5): three stride-2 convolutions, 8x, the VAE factor.
SD_CONDITIONING_CHANNELS = (16, 32, 96, 256)


def conditioning_channels(vae_factor: int) -> tuple[int, ...]:
    """Conditioning-embedder widths whose downsampling equals `vae_factor` (a power of 2).

    The embedder halves the mask's resolution len(channels) - 1 times, and its output must land on the
    latent grid. For SD 1.5 (factor 8) this is diffusers' default; smaller factors keep its first entries.
    """
    levels = max(vae_factor, 1).bit_length()
    if 2 ** (levels - 1) != vae_factor or levels > len(SD_CONDITIONING_CHANNELS):
        raise LapgenError(f"cannot build a ControlNet conditioning embedder for a VAE factor of {vae_factor}",
                          hint="the VAE must downsample by 1, 2, 4 or 8")
    return SD_CONDITIONING_CHANNELS[:levels]


def controlnet_from_unet(unet, vae) -> Any:
    """`ControlNetModel.from_unet(unet)` with the conditioning embedder matched to `vae`'s downsampling."""
    from diffusers import ControlNetModel

    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=conditioning_channels(vae_factor))


def mask_image(path: str | Path, resolution: int) -> Image.Image:
    """A binary mask PNG as the RGB 0/255 control image the ControlNet pipeline expects (NEAREST resize)."""
    from lapgen.data.frames import load_mask

    mask = load_mask(path, resolution)  # (R, R) bool
    return Image.fromarray(np.repeat(mask[..., None], 3, axis=2).astype(np.uint8) * 255)


class ControlNetStage(DiffusionStage):
    """ControlNet training over a frozen Stage-1 pipeline."""

    kind = "controlnet"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        config.check()
        if config.train_text_encoder:
            raise LapgenError("--train-text-encoder applies to finetune only; Stage 2 keeps the Stage-1 "
                              "pipeline frozen")
        if config.adapter_init:
            raise LapgenError("--adapter-init applies to train-motion only")
        self.records = read_training_records(config.data, config.split, with_masks=True)
        self.entry = check_base_pipeline(config.base)
        self.init_entry = None
        if config.controlnet_init:
            from lapgen.registry import resolve

            self.init_entry = resolve(config.controlnet_init, "controlnet")
            if self.init_entry.hub_id and self.init_entry.path is None:  # offline and not cached: fail now
                from lapgen.models.loading import ensure_local

                ensure_local(self.init_entry, "controlnet")
        if config.validation_masks and len(config.validation_masks) != len(config.validation_prompts):
            raise LapgenError(f"{len(config.validation_masks)} validation masks for "
                              f"{len(config.validation_prompts)} validation prompts",
                              hint="give one --validation-masks per --validation-prompts, or none")
        for m in config.validation_masks:
            if not Path(m).is_file():
                raise LapgenError("validation mask not found", path=m)
        self.text_encoder_trained = False

    def load(self, device: torch.device, weight_dtype: torch.dtype) -> None:
        adopt_base_pipeline(self)
        if self.init_entry is not None:
            from lapgen.models.loading import load_controlnet

            controlnet = load_controlnet(self.init_entry, device="cpu", dtype="fp32")
        else:
            controlnet = controlnet_from_unet(self.unet, self.vae)
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        cond_factor = 2 ** (len(controlnet.config.conditioning_embedding_out_channels) - 1)
        if vae_factor != cond_factor:
            raise LapgenError(f"the ControlNet's conditioning embedder downsamples by {cond_factor} but the VAE by "
                              f"{vae_factor}", hint="use a ControlNet made for this pipeline's geometry")
        for module in (self.vae, self.text_encoder, self.unet):
            freeze(module, device, weight_dtype)
        self.controlnet = controlnet.to(device)
        self.controlnet.requires_grad_(True).train()
        if self.config.gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
        self.dataset = FramesTrainingSet(self.config.data, self.records, self.config.resolution, with_masks=True)
        self.trainable = [self.controlnet]

    def on_prepared(self, models: list[torch.nn.Module]) -> None:
        self.controlnet = models[0]

    def predict(self, noisy_latents, timesteps, encoder_hidden_states, batch):
        cond = batch["conditioning_pixel_values"].to(self.weight_dtype)  # (B, 3, R, R) in {0, 1}
        down, mid = self.controlnet(noisy_latents, timesteps, encoder_hidden_states=encoder_hidden_states,
                                    controlnet_cond=cond, return_dict=False)
        return self.unet(noisy_latents, timesteps, encoder_hidden_states,
                         down_block_additional_residuals=[r.to(self.weight_dtype) for r in down],
                         mid_block_additional_residual=mid.to(self.weight_dtype), return_dict=False)[0]

    def subfolder(self, model: torch.nn.Module) -> str:
        return "controlnet"

    def validation_pairs(self) -> list[tuple[str, Path]]:
        """(prompt, mask path): the given masks, else the masks of the first training records."""
        prompts = self.config.validation_prompts
        if self.config.validation_masks:
            return list(zip(prompts, map(Path, self.config.validation_masks)))
        root = Path(self.config.data)
        return [(p, root / self.records[i % len(self.records)]["conditioning_image_file_name"])
                for i, p in enumerate(prompts)]

    def validate(self, folder: Path, accelerator) -> list[Path]:
        from diffusers import StableDiffusionControlNetPipeline

        pipe = StableDiffusionControlNetPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            controlnet=accelerator.unwrap_model(self.controlnet), scheduler=self.base_scheduler,
            safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        written = []
        res = self.config.resolution
        for i, (prompt, mask_path) in enumerate(self.validation_pairs()):
            control = mask_image(mask_path, res)
            generator = torch.Generator(accelerator.device).manual_seed(self.config.seed + i)
            with torch.no_grad(), autocast_for(accelerator.device, self.weight_dtype):
                image = pipe(prompt, control, height=res, width=res,
                             num_inference_steps=self.config.validation_inference_steps,
                             guidance_scale=self.config.validation_guidance, generator=generator).images[0]
            pair = Image.new("RGB", (2 * res, res))  # mask | output, side by side
            pair.paste(control, (0, 0))
            pair.paste(image, (res, 0))
            path = folder / f"{i:02d}.png"
            pair.save(path)
            written.append(path)
        (folder / "prompts.txt").write_text("\n".join(p for p, _ in self.validation_pairs()) + "\n")
        return written

    def save_result(self, folder: Path, accelerator) -> None:
        accelerator.unwrap_model(self.controlnet).save_pretrained(folder, safe_serialization=True)

    def describe(self) -> dict[str, Any]:
        return {"stage": "train-controlnet", "parent": self.entry.name, "base": self.entry.weights_location(),
                "resolution": self.config.resolution, "trained": ["controlnet"],
                "controlnet_init": self.init_entry.name if self.init_entry else "from_unet",
                "inputs": _data_inputs(self.config.data, self.config.split, len(self.records))}

    def write_model_card(self, folder: Path, result: dict[str, Any]) -> None:
        res = self.config.resolution
        write_readme(folder, base=self.entry.name, tags=["stable-diffusion", "controlnet", "laparoscopy"],
                     description=f"A ControlNet trained by lapgen on binary tool masks of `{self.config.data}` "
                     f"(split `{self.config.split}`, {len(self.records)} frames, {res} px) over the frozen "
                     f"Stage-1 pipeline `{self.entry.name}`, following Iliash et al. 2024 (Stage 2).",
                     usage=("from diffusers import ControlNetModel, StableDiffusionControlNetPipeline\n"
                            f"controlnet = ControlNetModel.from_pretrained(\"{folder.name.removesuffix('.partial')}\")\n"
                            "pipe = StableDiffusionControlNetPipeline.from_pretrained(STAGE1, controlnet=controlnet)\n"
                            f"image = pipe(prompt, mask_rgb, height={res}, width={res}, num_inference_steps=100, "
                            "guidance_scale=3).images[0]"),
                     config=self.config, result=result)


def train_controlnet(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Stage 2 (library entry point of `lapgen train-controlnet`): validate, train, write RUN, register."""
    return run_training(config, ControlNetStage(config), **kwargs)
