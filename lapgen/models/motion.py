"""The motion module: an AnimateDiff `MotionAdapter` trained on surgical clips over the frozen Stage-1 UNet
(`lapgen train-motion`).

AnimateDiff (Guo et al. 2024, guoyww/AnimateDiff `train.py`) inserts temporal transformer blocks after the
image model's layers and trains only them on video clips with the image model's own noise-prediction loss;
the image layers stay frozen, so the motion prior sits on top of whatever the Stage-1 model draws. diffusers
holds the parts: `MotionAdapter` (the temporal blocks) and `UNetMotionModel.from_unet2d(unet, adapter)` (the
image UNet with them inserted). What differs from Stages 1 and 2 is only this wrapping and the clip batches
(latents (B, C, F, h, w), one prompt per clip); the loop, checkpoints, exact resume, latent cache, EMA,
multi-GPU, cards and registry are the shared core (`lapgen.models.training`).

A new adapter takes its layout from the base UNet (widths, layers per block, GroupNorm groups) and starts
with every temporal block's output projection at zero, as AnimateDiff's `zero_initialize`: the motion UNet
then begins as exactly the image model applied frame by frame. Or training starts from a pretrained adapter
(`adapter_init`: a registry name such as `animatediff-v1-5-2`, a folder or `hf:ORG/NAME`), whose layout must
match the base UNet. Checkpoints and the result hold only the motion modules, as a folder that
`MotionAdapter.from_pretrained(RUN)` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lapgen.errors import LapgenError
from lapgen.models.finetune import (
    _data_inputs, adopt_base_pipeline, autocast_for, check_base_pipeline, freeze, write_readme,
)
from lapgen.models.latent_cache import ClipsTrainingSet, read_clip_records
from lapgen.models.training import DiffusionStage, TrainConfig, TrainResult, run_training

SUBFOLDER = "motion_adapter"


def _per_block(value: Any, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def motion_heads(channels: list[int], wanted: int = 8) -> int:
    """The most attention heads up to `wanted` (AnimateDiff: 8) that divide every block width."""
    return max(h for h in range(1, wanted + 1) if all(c % h == 0 for c in channels))


def new_adapter_config(unet_config: dict, max_frames: int) -> dict[str, Any]:
    """The MotionAdapter config made for a UNet: its block widths, layers per block and GroupNorm groups."""
    channels = list(unet_config["block_out_channels"])
    return {"block_out_channels": channels,
            "motion_layers_per_block": unet_config["layers_per_block"],
            "motion_transformer_layers_per_block": 1, "motion_mid_block_layers_per_block": 1,
            "motion_transformer_layers_per_mid_block": 1,
            "motion_num_attention_heads": motion_heads(channels),
            "motion_norm_num_groups": unet_config["norm_num_groups"], "motion_max_seq_length": max_frames,
            "use_motion_mid_block": True, "conv_in_channels": None}


def new_adapter(unet_config: dict, max_frames: int):
    """A new MotionAdapter for `unet_config` whose temporal blocks start as the identity (output at zero)."""
    from diffusers import MotionAdapter

    adapter = MotionAdapter(**new_adapter_config(unet_config, max_frames))
    for module in adapter.modules():
        if type(module).__name__ == "AnimateDiffTransformer3D":
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)
    return adapter


def layout_mismatch(adapter_config: dict, unet_config: dict) -> str | None:
    """Why a MotionAdapter cannot sit on a UNet (None when it can). diffusers itself checks only the block
    count and layers per block; a width mismatch would fail deep in `load_state_dict`, and other GroupNorm
    groups would load silently but compute something else."""
    channels, unet_channels = list(adapter_config["block_out_channels"]), list(unet_config["block_out_channels"])
    if len(channels) != len(unet_channels):
        return f"the adapter has {len(channels)} blocks, the base UNet {len(unet_channels)}"
    if channels != unet_channels:
        return f"the adapter's block widths {channels} differ from the base UNet's {unet_channels}"
    n = len(channels)
    layers = _per_block(adapter_config["motion_layers_per_block"], n)
    if layers != _per_block(unet_config["layers_per_block"], n):
        return (f"the adapter has {layers} motion layers per block, the base UNet "
                f"{_per_block(unet_config['layers_per_block'], n)} layers per block")
    if adapter_config.get("motion_norm_num_groups", 32) != unet_config.get("norm_num_groups", 32):
        return (f"the adapter's GroupNorm groups ({adapter_config.get('motion_norm_num_groups', 32)}) differ from "
                f"the base UNet's ({unet_config.get('norm_num_groups', 32)})")
    if adapter_config.get("conv_in_channels"):
        return "the adapter replaces the UNet's input convolution (a PIA adapter), which lapgen does not train"
    return None


def check_layout(adapter_config: dict, unet_config: dict, adapter: str, base: str) -> None:
    why = layout_mismatch(adapter_config, unet_config)
    if why:
        raise LapgenError(f"motion adapter '{adapter}' does not fit the base pipeline '{base}': {why}",
                          hint="use an adapter trained for this base (or none: train-motion makes a new one)")


def motion_unet(unet, adapter, dtype: torch.dtype = torch.float32):
    """`UNetMotionModel.from_unet2d(unet, adapter)` in `dtype` with the image layers frozen."""
    from diffusers import UNetMotionModel
    from diffusers.utils import logging as diffusers_logging

    before = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # from_unet2d's cast warns about an empty list of fp32 modules
    try:
        model = UNetMotionModel.from_unet2d(unet, adapter).to(dtype)
    finally:
        diffusers_logging.set_verbosity(before)
    model.freeze_unet2d_params()
    return model


def adapter_of(model, config: dict):
    """A MotionAdapter (`config`) holding the motion modules of a motion UNet, in float32 on the CPU."""
    from diffusers import MotionAdapter

    adapter = MotionAdapter.from_config(config)
    for mine, theirs in zip(adapter.down_blocks, model.down_blocks):
        mine.motion_modules.load_state_dict(theirs.motion_modules.state_dict())
    for mine, theirs in zip(adapter.up_blocks, model.up_blocks):
        mine.motion_modules.load_state_dict(theirs.motion_modules.state_dict())
    if adapter.mid_block is not None:
        adapter.mid_block.motion_modules.load_state_dict(model.mid_block.motion_modules.state_dict())
    return adapter.float().cpu()


class MotionStage(DiffusionStage):
    """Motion-module training on clips over a frozen Stage-1 pipeline."""

    kind = "motion-adapter"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        config.check()
        for flag, value in (("--train-text-encoder", config.train_text_encoder),
                            ("--controlnet-init", config.controlnet_init),
                            ("--validation-masks", config.validation_masks)):
            if value:
                raise LapgenError(f"{flag} does not apply to train-motion (the Stage-1 model stays frozen)")
        self.records = read_clip_records(config.data, config.split)
        self.num_frames = self.records[0]["num_frames"]
        self.entry = check_base_pipeline(config.base)
        self.init_entry = None
        if config.adapter_init:
            from lapgen.models.loading import motion_adapter_location

            self.init_entry = motion_adapter_location(config.adapter_init)[0]  # offline: fails here, at once
        elif self.num_frames > config.adapter_max_frames:
            raise LapgenError(f"clips of {self.num_frames} frames exceed --adapter-max-frames "
                              f"{config.adapter_max_frames}", hint="raise --adapter-max-frames or cut shorter clips")
        self.text_encoder_trained = False

    def load(self, device: torch.device, weight_dtype: torch.dtype) -> None:
        adopt_base_pipeline(self)
        unet_config = dict(self.unet.config)
        if self.init_entry is not None:
            from lapgen.models.loading import load_motion_adapter

            adapter = load_motion_adapter(self.init_entry, device="cpu", dtype="fp32")
            check_layout(dict(adapter.config), unet_config, self.init_entry.name, self.entry.name)
            limit = adapter.config["motion_max_seq_length"]
            if self.num_frames > limit:
                raise LapgenError(f"clips of {self.num_frames} frames exceed the {limit} frames motion adapter "
                                  f"'{self.init_entry.name}' can attend over", hint="cut shorter clips")
        else:
            adapter = new_adapter(unet_config, self.config.adapter_max_frames)
        self.adapter_config = {k: v for k, v in dict(adapter.config).items() if not k.startswith("_")}
        model = motion_unet(self.unet, adapter)
        del adapter
        model.to(device)
        if weight_dtype != torch.float32:  # the frozen image layers in the run's precision, the motion ones fp32
            for p in model.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(weight_dtype)
        model.train()
        if self.config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        self.unet = model
        for module in (self.vae, self.text_encoder):
            freeze(module, device, weight_dtype)
        self.dataset = ClipsTrainingSet(self.config.data, self.records, self.config.resolution)
        self.trainable = [self.unet]

    def on_prepared(self, models: list[torch.nn.Module]) -> None:
        self.unet = models[0]

    def latents(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Clip latents (B, C, F, h, w) drawn from the VAE posterior of every frame (cached or encoded)."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if "moments" in batch:  # (B, F, 2C, h, w)
            moments = batch["moments"].to(self.weight_dtype)
            b, f = moments.shape[:2]
            moments = moments.flatten(0, 1)
        else:  # (B, F, 3, R, R)
            pixels = batch["pixel_values"].to(self.weight_dtype)
            b, f = pixels.shape[:2]
            with torch.no_grad():
                moments = self.vae.encode(pixels.flatten(0, 1)).latent_dist.parameters
        latents = DiagonalGaussianDistribution(moments).sample(generator=generator) * self.vae.config.scaling_factor
        return latents.unflatten(0, (b, f)).permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)

    def predict(self, noisy_latents, timesteps, encoder_hidden_states, batch):
        frames = noisy_latents.shape[2]
        ehs = encoder_hidden_states.repeat_interleave(frames, dim=0)  # one prompt per clip -> per frame
        return self.unet(noisy_latents, timesteps, ehs, return_dict=False)[0]

    def subfolder(self, model: torch.nn.Module) -> str:
        return SUBFOLDER

    def save_trainable(self, model: torch.nn.Module, folder: Path) -> None:
        adapter_of(model, self.adapter_config).save_pretrained(folder / SUBFOLDER, safe_serialization=True)

    def load_trainable(self, model: torch.nn.Module, folder: Path) -> None:
        from diffusers import MotionAdapter

        adapter = MotionAdapter.from_pretrained(folder / SUBFOLDER)
        model.load_motion_modules(adapter)
        del adapter

    def pipeline(self, accelerator):
        """An AnimateDiffPipeline over the current motion UNet (DDIM, as `lapgen video --method animatediff`)."""
        from diffusers import AnimateDiffPipeline, DDIMScheduler

        pipe = AnimateDiffPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                   unet=accelerator.unwrap_model(self.unet), motion_adapter=None,
                                   scheduler=DDIMScheduler.from_config(self.base_scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def validate(self, folder: Path, accelerator) -> list[Path]:
        """One clip-length GIF per validation prompt (text only: the motion prior without masks)."""
        from lapgen.data.video import write_gif

        pipe = self.pipeline(accelerator)
        fps = float(self.records[0].get("fps", 8.0))
        written = []
        for i, prompt in enumerate(self.config.validation_prompts):
            generator = torch.Generator(accelerator.device).manual_seed(self.config.seed + i)
            with torch.no_grad(), autocast_for(accelerator.device, self.weight_dtype):
                frames = pipe(prompt, num_frames=self.num_frames, height=self.config.resolution,
                              width=self.config.resolution, num_inference_steps=self.config.validation_inference_steps,
                              guidance_scale=self.config.validation_guidance, generator=generator,
                              output_type="np").frames[0]
            written.append(write_gif((frames.clip(0, 1) * 255).round().astype("uint8"), folder / f"{i:02d}.gif",
                                     fps=fps))
        (folder / "prompts.txt").write_text("\n".join(self.config.validation_prompts) + "\n")
        self.unet.train()
        return written

    def save_result(self, folder: Path, accelerator) -> None:
        adapter_of(accelerator.unwrap_model(self.unet), self.adapter_config).save_pretrained(
            folder, safe_serialization=True)

    def describe(self) -> dict[str, Any]:
        return {"stage": "train-motion", "parent": self.entry.name, "base": self.entry.weights_location(),
                "resolution": self.config.resolution, "trained": ["motion_modules"],
                "adapter_init": self.init_entry.name if self.init_entry else "new (output projections at zero)",
                "clip_frames": self.num_frames, "clip_fps": self.records[0].get("fps"),
                "motion_max_seq_length": self.adapter_config["motion_max_seq_length"],
                "inputs": _data_inputs(self.config.data, self.config.split, len(self.records))}

    def write_model_card(self, folder: Path, result: dict[str, Any]) -> None:
        res, n = self.config.resolution, self.num_frames
        write_readme(folder, base=self.entry.name, tags=["animatediff", "motion-adapter", "laparoscopy"],
                     description=f"An AnimateDiff motion module trained by lapgen on the clips of "
                     f"`{self.config.data}` (split `{self.config.split}`, {len(self.records)} clips of {n} "
                     f"frames, {res} px) over the frozen Stage-1 pipeline `{self.entry.name}` "
                     "(Guo et al. 2024, AnimateDiff; lapgen's motion prior beyond Iliash et al. 2024).",
                     usage=("from diffusers import AnimateDiffPipeline, MotionAdapter\n"
                            f"adapter = MotionAdapter.from_pretrained(\"{folder.name.removesuffix('.partial')}\")\n"
                            "pipe = AnimateDiffPipeline.from_pretrained(STAGE1, motion_adapter=adapter)\n"
                            f"frames = pipe(prompt, num_frames={n}, height={res}, width={res}).frames[0]"),
                     config=self.config, result=result)


def train_motion(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """The motion module (library entry point of `lapgen train-motion`): validate, train, write RUN (a
    MotionAdapter folder), register `config.name` as a `motion-adapter`."""
    return run_training(config, MotionStage(config), **kwargs)

