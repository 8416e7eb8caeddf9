"""`lapgen finetune` (Stage 1) and `lapgen train-controlnet` (Stage 2): options -> TrainConfig -> one call.

Both commands take the same knobs (those of diffusers' `train_text_to_image.py`); a YAML recipe
(`--config configs/finetune-paper.yaml`) may set any TrainConfig field and flags given on the command line
win. Heavy libraries are imported inside the command bodies only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click
import typer

from lapgen.errors import LapgenError

_HELP_FINETUNE = ("Stage 1: fine-tune Stable Diffusion on a frames dataset (paper defaults: constant lr 1e-5, "
                  "no warm-up, 128 px). Works under `accelerate launch` / `torchrun`.")
_HELP_CONTROLNET = ("Stage 2: train a ControlNet on binary tool masks over a frozen Stage-1 pipeline "
                    "(starts from ControlNetModel.from_unet).")

# Option name -> TrainConfig field for the options both commands share.
_FIELDS = {
    "data": "data", "out": "out", "base": "base", "name": "name", "split": "split", "resolution": "resolution",
    "lr": "learning_rate", "lr_scheduler": "lr_scheduler", "lr_warmup_steps": "lr_warmup_steps",
    "batch_size": "batch_size", "epochs": "epochs", "max_steps": "max_steps",
    "gradient_accumulation": "gradient_accumulation", "mixed_precision": "mixed_precision", "ema": "ema",
    "ema_decay": "ema_decay", "snr_gamma": "snr_gamma", "gradient_checkpointing": "gradient_checkpointing",
    "checkpointing_steps": "checkpointing_steps", "checkpoints_total_limit": "checkpoints_total_limit",
    "resume": "resume", "validation_prompts": "validation_prompts", "validation_every": "validation_every",
    "validation_inference_steps": "validation_inference_steps", "validation_guidance": "validation_guidance",
    "seed": "seed", "cache_latents": "cache_latents", "max_grad_norm": "max_grad_norm",
    "adam_weight_decay": "adam_weight_decay", "num_workers": "num_workers", "device": "device",
    "overwrite": "overwrite", "train_text_encoder": "train_text_encoder", "validation_masks": "validation_masks",
    "controlnet_init": "controlnet_init",
}


def check_recipe_value(recipe: Path, key: str, value: Any) -> None:
    """A recipe value must have its TrainConfig field's type (YAML `five` where a number belongs is an error
    here, not a TypeError deep in training)."""
    import types
    import typing

    from lapgen.models.training import TrainConfig

    def fits(v: Any, tp: Any) -> bool:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is typing.Any:
            return True
        if tp is type(None):
            return v is None
        if origin in (typing.Union, types.UnionType):
            return any(fits(v, a) for a in args)
        if origin is list:
            return isinstance(v, list) and all(fits(x, args[0]) for x in v) if args else isinstance(v, list)
        if tp is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if tp is int:
            return isinstance(v, int) and not isinstance(v, bool)
        return isinstance(v, tp)

    expected = typing.get_type_hints(TrainConfig)[key]
    if not fits(value, expected):
        name = expected.__name__ if isinstance(expected, type) else str(expected).replace("typing.", "")
        raise LapgenError(f"recipe key {key} must be {name}, got {value!r}", path=recipe)


def build_config(ctx: click.Context, recipe: Optional[Path], params: dict[str, Any]):
    """TrainConfig from a YAML recipe (optional) overridden by the options given on the command line."""
    from dataclasses import fields

    import yaml

    from lapgen.models.training import TrainConfig

    values: dict[str, Any] = {}
    if recipe is not None:
        if not recipe.is_file():
            raise LapgenError("recipe file not found", path=recipe)
        try:
            loaded = yaml.safe_load(recipe.read_text()) or {}
        except yaml.YAMLError as exc:
            raise LapgenError("recipe is not valid YAML", path=recipe) from exc
        if not isinstance(loaded, dict):
            raise LapgenError("recipe must be a mapping of TrainConfig fields", path=recipe)
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise LapgenError(f"unknown recipe keys: {', '.join(unknown)}", path=recipe,
                              hint="valid keys: " + ", ".join(sorted(known)))
        for key, value in loaded.items():
            check_recipe_value(recipe, key, value)
        values.update(loaded)
    for option, value in params.items():
        source = ctx.get_parameter_source(option)
        explicit = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        if explicit or _FIELDS[option] not in values:
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, tuple):
                value = list(value)
            values[_FIELDS[option]] = value
    for required in ("data", "out"):
        if not values.get(required):
            raise LapgenError(f"--{required} is required (on the command line or in the recipe)")
    return TrainConfig(**values)


def _report(result, as_json: bool) -> None:
    from lapgen.progress import notice

    payload = {"out": str(result.out), "steps": result.steps, "epochs": result.epochs,
               "final_loss": result.final_loss, "registered": result.registered}
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        notice(f"wrote {result.out} ({result.steps} steps, final loss {result.final_loss})"
               + (f"; registered as '{result.registered}'" if result.registered else ""))


def register(app: typer.Typer) -> None:
    @app.command("finetune", help=_HELP_FINETUNE)
    def finetune_cmd(
        ctx: typer.Context,
        data: Optional[Path] = typer.Option(None, "--data", help="Frames dataset folder (lapgen prepare)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (a diffusers pipeline)."),
        base: str = typer.Option("sd15", "--base", help="Base pipeline: registry name, folder or hf:ORG/NAME."),
        name: Optional[str] = typer.Option(None, "--name", help="Register the result under this name."),
        split: str = typer.Option("train", "--split", help="Dataset split to train on."),
        resolution: int = typer.Option(128, "--resolution", help="Training resolution in px (paper: 128)."),
        lr: float = typer.Option(1e-5, "--lr", help="Learning rate (paper: 1e-5)."),
        lr_scheduler: str = typer.Option("constant", "--lr-scheduler", help="diffusers scheduler name."),
        lr_warmup_steps: int = typer.Option(0, "--lr-warmup-steps", help="Warm-up steps (paper: 0)."),
        train_text_encoder: bool = typer.Option(False, "--train-text-encoder",
                                                help="Also train the CLIP text encoder (the paper's best setup)."),
        batch_size: int = typer.Option(16, "--batch-size", help="Batch size per process."),
        epochs: int = typer.Option(100, "--epochs", help="Epochs (ignored with --max-steps)."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimiser steps to train."),
        gradient_accumulation: int = typer.Option(1, "--gradient-accumulation", help="Accumulation steps."),
        mixed_precision: str = typer.Option("no", "--mixed-precision", help="no|fp16|bf16 (no on CPU)."),
        ema: bool = typer.Option(False, "--ema", help="Keep an EMA of the trained weights (saved)."),
        ema_decay: float = typer.Option(0.9999, "--ema-decay", help="EMA decay."),
        snr_gamma: Optional[float] = typer.Option(None, "--snr-gamma", help="Min-SNR weighting γ (5.0)."),
        gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Save memory."),
        checkpointing_steps: int = typer.Option(500, "--checkpointing-steps", help="Checkpoint every N steps."),
        checkpoints_total_limit: Optional[int] = typer.Option(None, "--checkpoints-total-limit",
                                                              help="Keep at most N checkpoints."),
        resume: Optional[str] = typer.Option(None, "--resume", help="latest | RUN/checkpoint-N."),
        validation_prompts: list[str] = typer.Option([], "--validation-prompts",
                                                     help="Prompt for validation images (repeatable)."),
        validation_every: int = typer.Option(1, "--validation-every", help="Validate every N epochs."),
        validation_inference_steps: int = typer.Option(50, "--validation-inference-steps",
                                                       help="Denoising steps of validation images."),
        validation_guidance: float = typer.Option(3.0, "--validation-guidance", help="Validation CFG scale."),
        seed: int = typer.Option(0, "--seed", help="Seed (data order, noise, validation)."),
        cache_latents: bool = typer.Option(False, "--cache-latents",
                                           help="Encode images (and frozen prompts) once; reused across runs."),
        max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="Gradient clipping (0: off)."),
        adam_weight_decay: float = typer.Option(1e-2, "--adam-weight-decay", help="AdamW weight decay."),
        num_workers: int = typer.Option(0, "--num-workers", help="DataLoader worker processes."),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
        recipe: Optional[Path] = typer.Option(None, "--config", help="YAML recipe of TrainConfig fields."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        params = {k: v for k, v in locals().items() if k in _FIELDS}
        config = build_config(ctx, recipe, params)
        from lapgen.models.finetune import finetune

        _report(finetune(config), as_json)

    @app.command("train-controlnet", help=_HELP_CONTROLNET)
    def train_controlnet_cmd(
        ctx: typer.Context,
        data: Optional[Path] = typer.Option(None, "--data", help="Frames dataset with masks (segment annotate)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run folder to write (a ControlNet)."),
        base: Optional[str] = typer.Option(None, "--base", help="Stage-1 pipeline: registry name or folder "
                                           "(default: the last trained pipeline)."),
        name: Optional[str] = typer.Option(None, "--name", help="Register the result under this name."),
        controlnet_init: Optional[str] = typer.Option(None, "--controlnet-init",
                                                      help="Start from this ControlNet instead of the UNet."),
        split: str = typer.Option("train", "--split", help="Dataset split to train on."),
        resolution: int = typer.Option(128, "--resolution", help="Training resolution in px (paper: 128)."),
        lr: float = typer.Option(1e-5, "--lr", help="Learning rate (paper: 1e-5)."),
        lr_scheduler: str = typer.Option("constant", "--lr-scheduler", help="diffusers scheduler name."),
        lr_warmup_steps: int = typer.Option(0, "--lr-warmup-steps", help="Warm-up steps (paper: 0)."),
        batch_size: int = typer.Option(16, "--batch-size", help="Batch size per process."),
        epochs: int = typer.Option(100, "--epochs", help="Epochs (paper: 100; ignored with --max-steps)."),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimiser steps to train."),
        gradient_accumulation: int = typer.Option(1, "--gradient-accumulation", help="Accumulation steps."),
        mixed_precision: str = typer.Option("no", "--mixed-precision", help="no|fp16|bf16 (no on CPU)."),
        ema: bool = typer.Option(False, "--ema", help="Keep an EMA of the ControlNet weights (saved)."),
        ema_decay: float = typer.Option(0.9999, "--ema-decay", help="EMA decay."),
        snr_gamma: Optional[float] = typer.Option(None, "--snr-gamma", help="Min-SNR weighting γ (5.0)."),
        gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="Save memory."),
        checkpointing_steps: int = typer.Option(500, "--checkpointing-steps", help="Checkpoint every N steps."),
        checkpoints_total_limit: Optional[int] = typer.Option(None, "--checkpoints-total-limit",
                                                              help="Keep at most N checkpoints."),
        resume: Optional[str] = typer.Option(None, "--resume", help="latest | RUN/checkpoint-N."),
        validation_prompts: list[str] = typer.Option([], "--validation-prompts",
                                                     help="Prompt for validation images (repeatable)."),
        validation_masks: list[Path] = typer.Option([], "--validation-masks",
                                                    help="Mask PNG per validation prompt (default: the first "
                                                    "training masks)."),
        validation_every: int = typer.Option(1, "--validation-every", help="Validate every N epochs."),
        validation_inference_steps: int = typer.Option(50, "--validation-inference-steps",
                                                       help="Denoising steps of validation images."),
        validation_guidance: float = typer.Option(3.0, "--validation-guidance", help="Validation CFG scale."),
        seed: int = typer.Option(0, "--seed", help="Seed (data order, noise, validation)."),
        cache_latents: bool = typer.Option(False, "--cache-latents",
                                           help="Encode images and prompts once; reused across runs."),
        max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="Gradient clipping (0: off)."),
        adam_weight_decay: float = typer.Option(1e-2, "--adam-weight-decay", help="AdamW weight decay."),
        num_workers: int = typer.Option(0, "--num-workers", help="DataLoader worker processes."),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
        recipe: Optional[Path] = typer.Option(None, "--config", help="YAML recipe of TrainConfig fields."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        params = {k: v for k, v in locals().items() if k in _FIELDS}
        params["validation_masks"] = [str(p) for p in params["validation_masks"]]
        config = build_config(ctx, recipe, params)
        from lapgen.models.controlnet import train_controlnet

        _report(train_controlnet(config), as_json)
