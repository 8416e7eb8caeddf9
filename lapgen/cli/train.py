"""`lapgen finetune` (Stage 1), `lapgen train-controlnet` (Stage 2) and `lapgen train-motion` (the AnimateDiff
motion module): options -> TrainConfig -> one call.

The commands take the same knobs (those of diffusers' `train_text_to_image.py`), declared once in
`_shared_options`; each command adds the few of its own. A YAML recipe (`--config paper-stage1-unet`, a
recipe shipped with lapgen, or `--config my-recipe.yaml`) may set any TrainConfig field, and options given
on the command line win: `TrainConfig.from_recipe` (lapgen.models.train_config) loads and checks it, the same
route library callers take. Heavy libraries are imported inside the command bodies only.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

_HELP_FINETUNE = ("Stage 1: fine-tune Stable Diffusion on a frames dataset (paper defaults: constant lr 1e-5, "
                  "no warm-up, 128 px). Works under `accelerate launch` / `torchrun`.")
_HELP_CONTROLNET = ("Stage 2: train a ControlNet on binary tool masks over a frozen Stage-1 pipeline "
                    "(starts from ControlNetModel.from_unet).")
_HELP_MOTION = ("Train an AnimateDiff motion module (MotionAdapter) on clips (lapgen prepare --clips) over a frozen "
                "Stage-1 pipeline, for `lapgen video --method animatediff`. Works under `accelerate launch` / "
                "`torchrun`.")

# Command-line option name -> TrainConfig field, where they differ.
_FIELD_OF = {"lr": "learning_rate"}
_NOT_FIELDS = ("recipe", "as_json")

Spec = tuple[str, Any, Any]  # (parameter name, annotation, typer.Option(...))


def _shared_options(*, trained: str, epochs_help: str) -> list[Spec]:
    """The options both training commands take (fresh OptionInfo objects for each command)."""
    return [
        ("name", Optional[str], typer.Option(None, "--name", help="Register the result under this name.")),
        ("split", str, typer.Option("train", "--split", help="Dataset split to train on.")),
        ("resolution", int, typer.Option(128, "--resolution", help="Training resolution in px (paper: 128).")),
        ("lr", float, typer.Option(1e-5, "--lr", help="Learning rate (paper: 1e-5).")),
        ("lr_scheduler", str, typer.Option("constant", "--lr-scheduler", help="diffusers scheduler name.")),
        ("lr_warmup_steps", int, typer.Option(0, "--lr-warmup-steps", help="Warm-up steps (paper: 0).")),
        ("batch_size", int, typer.Option(16, "--batch-size", help="Batch size per process.")),
        ("epochs", int, typer.Option(100, "--epochs", help=epochs_help)),
        ("max_steps", Optional[int], typer.Option(None, "--max-steps", help="Optimiser steps to train.")),
        ("gradient_accumulation", int, typer.Option(1, "--gradient-accumulation", help="Accumulation steps.")),
        ("mixed_precision", str, typer.Option("no", "--mixed-precision", help="no|fp16|bf16 (no on CPU).")),
        ("ema", bool, typer.Option(False, "--ema", help=f"Keep an EMA of the {trained} weights (saved).")),
        ("ema_decay", float, typer.Option(0.9999, "--ema-decay", help="EMA decay.")),
        ("snr_gamma", Optional[float], typer.Option(None, "--snr-gamma", help="Min-SNR weighting γ (5.0).")),
        ("gradient_checkpointing", bool, typer.Option(False, "--gradient-checkpointing", help="Save memory.")),
        ("checkpointing_steps", int, typer.Option(500, "--checkpointing-steps",
                                                  help="Checkpoint every N steps.")),
        ("checkpoints_total_limit", Optional[int], typer.Option(None, "--checkpoints-total-limit",
                                                                help="Keep at most N checkpoints.")),
        ("resume", Optional[str], typer.Option(None, "--resume", help="latest | RUN/checkpoint-N.")),
        ("validation_prompts", list[str], typer.Option([], "--validation-prompts",
                                                       help="Prompt for validation images (repeatable).")),
        ("validation_every", int, typer.Option(1, "--validation-every", help="Validate every N epochs.")),
        ("validation_inference_steps", int, typer.Option(50, "--validation-inference-steps",
                                                         help="Denoising steps of validation images.")),
        ("validation_guidance", float, typer.Option(3.0, "--validation-guidance", help="Validation CFG scale.")),
        ("seed", int, typer.Option(0, "--seed", help="Seed (data order, noise, validation).")),
        ("max_grad_norm", float, typer.Option(1.0, "--max-grad-norm", help="Gradient clipping (0: off).")),
        ("adam_weight_decay", float, typer.Option(1e-2, "--adam-weight-decay", help="AdamW weight decay.")),
        ("num_workers", int, typer.Option(0, "--num-workers", help="DataLoader worker processes.")),
        ("device", str, typer.Option("auto", "--device", help="auto|cpu|cuda.")),
        ("overwrite", bool, typer.Option(False, "--overwrite", help="Replace an existing --out.")),
        ("recipe", Optional[str], typer.Option(None, "--config", metavar="RECIPE", help="YAML recipe of TrainConfig fields: a "
                                                "file, or a recipe shipped with lapgen (paper-stage1-unet, "
                                                "paper-stage1-unet-clip, paper-controlnet, animatediff-motion).")),
        ("as_json", bool, typer.Option(False, "--json", help="Print the result as JSON on stdout.")),
    ]


def build_config(ctx: typer.Context, params: dict[str, Any]):
    """TrainConfig from `--config` (optional) overridden by the options given on the command line; options
    left at their default fill only the fields the recipe does not set."""
    from lapgen.models.train_config import TrainConfig

    explicit: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for option, value in params.items():
        if option in _NOT_FIELDS:
            continue
        source = ctx.get_parameter_source(option)
        given = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
        (explicit if given else defaults)[_FIELD_OF.get(option, option)] = value
    return TrainConfig.from_recipe(params.get("recipe"), overrides=explicit, defaults=defaults)


def _report(result, as_json: bool) -> None:
    from lapgen.progress import notice

    payload = {"out": str(result.out), "steps": result.steps, "epochs": result.epochs,
               "final_loss": result.final_loss, "registered": result.registered}
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        notice(f"wrote {result.out} ({result.steps} steps, final loss {result.final_loss})"
               + (f"; registered as '{result.registered}'" if result.registered else ""))


def _training_command(own: list[Spec], shared: list[Spec], run: Callable[[Any], Any]) -> Callable[..., None]:
    """A Typer command whose parameters are `own` then `shared`; it builds the TrainConfig and runs `run`."""
    specs = [("ctx", typer.Context, inspect.Parameter.empty), *own, *shared]

    def command(ctx: typer.Context, **params: Any) -> None:
        _report(run(build_config(ctx, params)), params["as_json"])

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
         for name, annotation, default in specs])
    command.__annotations__ = {name: annotation for name, annotation, _ in specs}
    return command


def _finetune(config):
    from lapgen.models.finetune import finetune

    return finetune(config)


def _train_controlnet(config):
    from lapgen.models.controlnet import train_controlnet

    return train_controlnet(config)


def _train_motion(config):
    from lapgen.models.motion import train_motion

    return train_motion(config)


def register(app: typer.Typer) -> None:
    finetune_own: list[Spec] = [
        ("data", Optional[Path], typer.Option(None, "--data", help="Frames dataset folder (lapgen prepare).")),
        ("out", Optional[Path], typer.Option(None, "--out", help="Run folder to write (a diffusers pipeline).")),
        ("base", str, typer.Option("sd15", "--base", help="Base pipeline: registry name, folder or hf:ORG/NAME.")),
        ("train_text_encoder", bool, typer.Option(False, "--train-text-encoder", help="Also train the CLIP text "
                                                  "encoder (the paper's best setup).")),
        ("cache_latents", bool, typer.Option(False, "--cache-latents", help="Encode images (and frozen prompts) "
                                             "once; reused across runs.")),
    ]
    controlnet_own: list[Spec] = [
        ("data", Optional[Path], typer.Option(None, "--data", help="Frames dataset with masks (segment "
                                              "annotate).")),
        ("out", Optional[Path], typer.Option(None, "--out", help="Run folder to write (a ControlNet).")),
        ("base", Optional[str], typer.Option(None, "--base", help="Stage-1 pipeline: registry name or folder "
                                             "(default: the last trained pipeline).")),
        ("controlnet_init", Optional[str], typer.Option(None, "--controlnet-init", help="Start from this "
                                                        "ControlNet instead of the UNet.")),
        ("validation_masks", list[Path], typer.Option([], "--validation-masks", help="Mask PNG per validation "
                                                      "prompt (default: the first training masks).")),
        ("cache_latents", bool, typer.Option(False, "--cache-latents", help="Encode images and prompts once; "
                                             "reused across runs.")),
    ]
    motion_own: list[Spec] = [
        ("data", Optional[Path], typer.Option(None, "--data", help="Clip dataset (lapgen prepare --clips).")),
        ("out", Optional[Path], typer.Option(None, "--out", help="Run folder to write (a MotionAdapter).")),
        ("base", Optional[str], typer.Option(None, "--base", help="Stage-1 pipeline: registry name or folder "
                                             "(default: the last trained pipeline).")),
        ("adapter_init", Optional[str], typer.Option(None, "--adapter-init", help="Start from this motion adapter "
                                                     "(registry name, folder or hf:ORG/NAME, e.g. "
                                                     "animatediff-v1-5-2); default: a new one.")),
        ("adapter_max_frames", int, typer.Option(32, "--adapter-max-frames", help="A new adapter's longest "
                                                 "clip in frames (its positional embedding).")),
        ("cache_latents", bool, typer.Option(False, "--cache-latents", help="Encode every clip frame and prompt "
                                             "once; reused across runs.")),
    ]
    app.command("finetune", help=_HELP_FINETUNE)(_training_command(
        finetune_own, _shared_options(trained="trained", epochs_help="Epochs (ignored with --max-steps)."),
        _finetune))
    app.command("train-controlnet", help=_HELP_CONTROLNET)(_training_command(
        controlnet_own, _shared_options(trained="ControlNet", epochs_help="Epochs (paper: 100; ignored with "
                                        "--max-steps)."), _train_controlnet))
    app.command("train-motion", help=_HELP_MOTION)(_training_command(
        motion_own, _shared_options(trained="motion module", epochs_help="Epochs (ignored with --max-steps)."),
        _train_motion))
