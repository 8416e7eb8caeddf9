"""Stage 1: fine-tune Stable Diffusion on a frames dataset (`lapgen finetune`).

What differs from Stage 2 is only the model wrapping: the UNet (and, with `train_text_encoder`, the CLIP text
encoder, as in the paper's best setup and diffusers' `train_dreambooth.py`) trains; the VAE stays frozen.
The loop, checkpoints, EMA, logging and outputs are the shared core (`lapgen.models.training`). The result is
a diffusers pipeline folder that `StableDiffusionPipeline.from_pretrained(RUN)` loads.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from lapgen.errors import LapgenError
from lapgen.models.latent_cache import FramesTrainingSet, read_training_records
from lapgen.models.training import LOSS_PLOT, DiffusionStage, TrainConfig, TrainResult, run_training


def check_base_pipeline(source: str):
    """The registry entry of a Stable Diffusion pipeline source, checked without loading weights."""
    from lapgen.registry import detect_kind, resolve

    entry = resolve(source, "pipeline")
    if entry.hub_id and entry.path is None:  # offline and not cached: fail now, not after the setup
        from lapgen.models.loading import ensure_local

        ensure_local(entry, "pipeline")
    if entry.path is not None:
        detected = detect_kind(entry.path) if entry.path.exists() else None
        if detected not in (None, "pipeline") or not (entry.path / "model_index.json").is_file():
            raise LapgenError(f"base {source!r} is not a Stable Diffusion pipeline folder (no model_index.json"
                              + (f"; it looks like a {detected})" if detected not in (None, "pipeline") else ")"),
                              path=entry.path, hint="give a pipeline: sd15, a `lapgen finetune` run or a "
                              "diffusers save_pretrained folder")
    return entry


def load_base_pipeline(entry):
    """The base pipeline on CPU in fp32 (the core moves each module to its device and dtype)."""
    from lapgen.models.loading import load_sd_pipeline

    pipe = load_sd_pipeline(entry=entry, device="cpu", dtype="fp32")
    missing = [k for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if getattr(pipe, k, None) is None]
    if missing:
        raise LapgenError(f"base pipeline {entry.name!r} lacks {', '.join(missing)}",
                          hint="give a complete Stable Diffusion 1.x pipeline")
    return pipe


def adopt_base_pipeline(stage: DiffusionStage) -> None:
    """Load the stage's base pipeline (`stage.entry`) and hand it its parts: `vae`, `text_encoder`,
    `tokenizer`, `unet`, `base_scheduler` (for validation and the saved result) and a DDPM `noise_scheduler`
    for training made from the same scheduler config."""
    from diffusers import DDPMScheduler

    pipe = load_base_pipeline(stage.entry)
    stage.vae, stage.text_encoder, stage.tokenizer = pipe.vae, pipe.text_encoder, pipe.tokenizer
    stage.unet = pipe.unet
    stage.base_scheduler = pipe.scheduler
    stage.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)


def freeze(module: torch.nn.Module, device: torch.device, weight_dtype: torch.dtype) -> torch.nn.Module:
    """A frozen module on `device`, cast to the mixed-precision dtype only when there is one."""
    module.requires_grad_(False).eval()
    return module.to(device) if weight_dtype == torch.float32 else module.to(device, weight_dtype)


def autocast_for(device: torch.device, weight_dtype: torch.dtype):
    """Autocast in the run's mixed precision (validation with fp16/bf16 frozen modules), else nothing."""
    if weight_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=weight_dtype)


class FinetuneStage(DiffusionStage):
    """UNet (+ optional text encoder) fine-tuning on prompts and frames."""

    kind = "pipeline"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        config.check()
        if config.controlnet_init:
            raise LapgenError("--controlnet-init applies to train-controlnet only")
        if config.adapter_init:
            raise LapgenError("--adapter-init applies to train-motion only")
        self.records = read_training_records(config.data, config.split, with_masks=False)
        self.entry = check_base_pipeline(config.base)
        self.text_encoder_trained = config.train_text_encoder

    def load(self, device: torch.device, weight_dtype: torch.dtype) -> None:
        adopt_base_pipeline(self)
        self.device = device
        freeze(self.vae, device, weight_dtype)
        self.unet.requires_grad_(True).to(device)
        if self.text_encoder_trained:
            self.text_encoder.requires_grad_(True).to(device)
        else:
            freeze(self.text_encoder, device, weight_dtype)
        if self.config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if self.text_encoder_trained:
                enable = getattr(self.text_encoder, "activation_checkpointing_enable", None)  # transformers >= 5
                (enable or self.text_encoder.gradient_checkpointing_enable)()
        self.dataset = FramesTrainingSet(self.config.data, self.records, self.config.resolution)
        self.trainable = [self.unet] + ([self.text_encoder] if self.text_encoder_trained else [])

    def on_prepared(self, models: list[torch.nn.Module]) -> None:
        self.unet = models[0]
        if self.text_encoder_trained:
            self.text_encoder = models[1]

    def predict(self, noisy_latents, timesteps, encoder_hidden_states, batch):
        return self.unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]

    def subfolder(self, model: torch.nn.Module) -> str:
        from diffusers import UNet2DConditionModel

        return "unet" if isinstance(model, UNet2DConditionModel) else "text_encoder"

    def pipeline(self, accelerator, *, full_precision: bool = False):
        """A StableDiffusionPipeline over the current weights (unwrapped; frozen parts reloaded in fp32)."""
        from diffusers import StableDiffusionPipeline

        vae, text_encoder = self.vae, accelerator.unwrap_model(self.text_encoder)
        if full_precision and self.weight_dtype != torch.float32:
            base = load_base_pipeline(self.entry)
            vae = base.vae
            if not self.text_encoder_trained:
                text_encoder = base.text_encoder
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=self.tokenizer,
                                       unet=accelerator.unwrap_model(self.unet), scheduler=self.base_scheduler,
                                       safety_checker=None, feature_extractor=None, image_encoder=None,
                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def validate(self, folder: Path, accelerator) -> list[Path]:
        pipe = self.pipeline(accelerator)
        written = []
        for i, prompt in enumerate(self.config.validation_prompts):
            generator = torch.Generator(accelerator.device).manual_seed(self.config.seed + i)
            with torch.no_grad(), autocast_for(accelerator.device, self.weight_dtype):
                image = pipe(prompt, height=self.config.resolution, width=self.config.resolution,
                             num_inference_steps=self.config.validation_inference_steps,
                             guidance_scale=self.config.validation_guidance, generator=generator).images[0]
            path = folder / f"{i:02d}.png"
            image.save(path)
            written.append(path)
        (folder / "prompts.txt").write_text("\n".join(self.config.validation_prompts) + "\n")
        return written

    def save_result(self, folder: Path, accelerator) -> None:
        pipe = self.pipeline(accelerator, full_precision=True)
        pipe.save_pretrained(folder, safe_serialization=True)

    def describe(self) -> dict[str, Any]:
        return {"stage": "finetune", "parent": self.entry.name, "base": self.entry.weights_location(),
                "resolution": self.config.resolution, "trained": ["unet"] + (
                    ["text_encoder"] if self.text_encoder_trained else []),
                "inputs": _data_inputs(self.config.data, self.config.split, len(self.records))}

    def write_model_card(self, folder: Path, result: dict[str, Any]) -> None:
        trained = "UNet and CLIP text encoder" if self.text_encoder_trained else "UNet"
        write_readme(folder, base=self.entry.name, tags=["stable-diffusion", "text-to-image", "laparoscopy"],
                     description=f"Stable Diffusion fine-tuned ({trained}) by lapgen on the laparoscopic frames "
                     f"dataset `{self.config.data}` (split `{self.config.split}`, {len(self.records)} images, "
                     f"{self.config.resolution} px), following Iliash et al. 2024 (Stage 1).",
                     usage=("from diffusers import StableDiffusionPipeline\n"
                            f"pipe = StableDiffusionPipeline.from_pretrained(\"{folder.name.removesuffix('.partial')}\")\n"
                            f"image = pipe({example_prompt(self.records)!r}, "
                            f"height={self.config.resolution}, width={self.config.resolution}, "
                            "num_inference_steps=100, guidance_scale=3).images[0]"),
                     config=self.config, result=result)


def example_prompt(records: list[dict[str, Any]]) -> str:
    """A prompt of the training data for the model card's usage snippet (same template and phase spelling as
    training, e.g. the dataset's `carlot-triangle-dissection` unless it was prepared with `paper-calot`)."""
    with_action = [r["text"] for r in records if " in " in r["text"]]
    return (with_action or [r["text"] for r in records])[0]


def _data_inputs(data: str, split: str, n: int) -> dict[str, Any]:
    from lapgen.data.frames import METADATA
    from lapgen.outputs import file_sha256

    meta = Path(data) / METADATA
    return {"data": str(Path(data).resolve()), "split": split, "records": n,
            "metadata_sha256": file_sha256(meta)}


def write_readme(folder: Path, *, base: str, tags: list[str], description: str, usage: str,
                 config: TrainConfig, result: dict[str, Any]) -> Path:
    """A Hugging Face model card README.md (YAML card data + prose) for the run (huggingface_hub's
    `ModelCard` / `ModelCardData`, the Hub's model card format)."""
    from diffusers.utils.hub_utils import populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    knobs = {k: getattr(config, k) for k in (
        "resolution", "learning_rate", "lr_scheduler", "lr_warmup_steps", "batch_size", "gradient_accumulation",
        "mixed_precision", "train_text_encoder", "ema", "snr_gamma", "gradient_checkpointing", "seed",
        "cache_latents")}
    rows = "\n".join(f"| {k} | {v} |" for k, v in {**knobs, "optimiser steps": result.get("steps"),
                                                     "processes": result.get("processes"),
                                                     "final loss": result.get("final_loss")}.items())
    plot = f"\n![training loss]({LOSS_PLOT})\n" if (folder / LOSS_PLOT).exists() else ""
    template = (
        "---\n{{ card_data }}\n---\n\n# {{ title }}\n\n{{ model_description }}\n\n## How to use\n\n"
        "```python\n{{ usage }}\n```\n\n## Training\n\n| setting | value |\n|---|---|\n{{ rows }}\n{{ plot }}\n"
        "Provenance (command, inputs with hashes, library versions): `lapgen.yaml` in this folder.\n")
    card = ModelCard.from_template(ModelCardData(license="creativeml-openrail-m", base_model=base,
                                                 library_name="diffusers"),
                                   template_str=template, title=folder.name.removesuffix(".partial"),
                                   model_description=description, usage=usage, rows=rows, plot=plot)
    card = populate_model_card(card, tags=tags + ["lapgen"])
    card.save(folder / "README.md")
    return folder / "README.md"


def finetune(config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Stage 1 (library entry point of `lapgen finetune`): validate, train, write RUN, register `config.name`."""
    stage = FinetuneStage(config)
    return run_training(config, stage, **kwargs)
