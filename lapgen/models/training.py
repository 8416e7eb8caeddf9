"""The one accelerate training core shared by Stage 1 (`lapgen finetune`), Stage 2 (`lapgen train-controlnet`)
and the motion module (`lapgen train-motion`).

Follows the loop of diffusers' `examples/text_to_image/train_text_to_image.py` and
`examples/controlnet/train_controlnet.py` (accumulation, clipping, EMA, Min-SNR weighting, checkpoints with a
total limit, resume) and litgpt's `fit` (one loop, stages plug in). A stage (`DiffusionStage` subclass)
supplies only what differs: which models train, how a noisy latent is predicted, validation and the saved
result. The core owns accelerate, data order, noise, optimiser, checkpoints, logging and outputs.

Exact resume: data order is a permutation seeded by (seed, epoch); diffusion noise, timesteps and latent
samples come from a dedicated generator (seed + rank) whose state is checkpointed beside accelerate's own
state, together with the EMA weights and the loss log. So N steps straight equal k steps + resume + N-k.
"""

from __future__ import annotations

import abc
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lapgen.cards import make_card, write_card
from lapgen.errors import LapgenError
from lapgen.models.checkpointing import (  # noqa: F401  (re-exported: the core's public names)
    LOSS_LOG,
    LOSS_PLOT,
    STATE_FILE,
    find_resume_checkpoint,
    list_checkpoints,
    load_extra_state,
    plot_losses,
    register_model_hooks,
    save_checkpoint,
)
from lapgen.models.latent_cache import EpochSampler, attach_training_cache, make_collate
from lapgen.models.train_config import TrainConfig  # noqa: F401  (re-exported: the core's config)
from lapgen.outputs import check_writable_parent, finalize_output_dir, prepare_output_dir, staging_path
from lapgen.progress import make_progress, notice


class DiffusionStage(abc.ABC):
    """What a training stage supplies. Subclasses set the models and implement `predict`.

    Attributes set by subclasses in `load`: `vae`, `text_encoder`, `tokenizer`, `unet`, `noise_scheduler`,
    `dataset` (a `FramesTrainingSet`), `trainable` (modules to optimise; the first one gets the EMA).
    """

    kind = "pipeline"  # registry kind of the result

    def __init__(self, config: TrainConfig):
        self.config = config
        self.weight_dtype = torch.float32
        self.trainable: list[torch.nn.Module] = []

    # -- supplied by the stage -------------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, device: torch.device, weight_dtype: torch.dtype) -> None:
        """Load the models and the dataset onto `device` (frozen parts in `weight_dtype`)."""

    @abc.abstractmethod
    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor,
                encoder_hidden_states: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The model's noise (or v) prediction for a batch."""

    @abc.abstractmethod
    def subfolder(self, model: torch.nn.Module) -> str:
        """Diffusers subfolder of a trainable model inside a checkpoint (`unet`, `text_encoder`, ...)."""

    def save_trainable(self, model: torch.nn.Module, folder: Path) -> None:
        """Write a trainable model into checkpoint `folder` (diffusers/transformers format, in its subfolder)."""
        model.save_pretrained(folder / self.subfolder(model))

    def load_trainable(self, model: torch.nn.Module, folder: Path) -> None:
        """Load a trainable model's weights back from checkpoint `folder` (what `save_trainable` wrote)."""
        loaded = type(model).from_pretrained(folder / self.subfolder(model))
        model.load_state_dict(loaded.state_dict())
        del loaded

    def on_prepared(self, models: list[torch.nn.Module]) -> None:
        """Receive the accelerate-wrapped trainable models (same order as `trainable`)."""

    def validate(self, folder: Path, accelerator) -> list[Path]:
        return []

    @abc.abstractmethod
    def save_result(self, folder: Path, accelerator) -> None:
        """Write the finished model (a diffusers folder) into `folder`."""

    def describe(self) -> dict[str, Any]:
        """Plain-data fields for the provenance card (inputs, parent)."""
        return {}

    def write_model_card(self, folder: Path, result: dict[str, Any]) -> None:
        pass

    # -- shared diffusion objective --------------------------------------------------------------------
    def encode_prompts(self, batch: dict[str, Any]) -> torch.Tensor:
        if "encoder_hidden_states" in batch:  # cached, (B, 77, D)
            return batch["encoder_hidden_states"].to(self.weight_dtype)
        return self.text_encoder(batch["input_ids"], return_dict=False)[0]

    def latents(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Latents (B, C, h, w) drawn from the VAE posterior (cached moments or encoded pixels); a stage with
        other shapes (clips: (B, C, F, h, w)) overrides this."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if "moments" in batch:
            moments = batch["moments"].to(self.weight_dtype)
        else:
            with torch.no_grad():
                moments = self.vae.encode(batch["pixel_values"].to(self.weight_dtype)).latent_dist.parameters
        return DiagonalGaussianDistribution(moments).sample(generator=generator) * self.vae.config.scaling_factor

    def loss(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        """Denoising loss of one batch; Min-SNR-γ weighted (arXiv 2303.09556) when `snr_gamma` is set."""
        from diffusers.training_utils import compute_snr

        latents = self.latents(batch, generator)
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        bsz = latents.shape[0]
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,),
                                  generator=generator, device=latents.device).long()
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        pred_type = self.noise_scheduler.config.prediction_type
        if pred_type == "epsilon":
            target = noise
        elif pred_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise LapgenError(f"unsupported prediction type {pred_type!r} in the base scheduler",
                              hint="use an epsilon or v-prediction Stable Diffusion base")
        pred = self.predict(noisy, timesteps, self.encode_prompts(batch), batch)
        if self.config.snr_gamma is None:
            return F.mse_loss(pred.float(), target.float(), reduction="mean")
        snr = compute_snr(self.noise_scheduler, timesteps)
        weights = torch.stack([snr, self.config.snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
        weights = weights / (snr + 1 if pred_type == "v_prediction" else snr)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
        return (per_sample * weights).mean()


@dataclass
class TrainResult:
    """What a finished run produced."""

    out: Path
    steps: int
    epochs: int
    final_loss: float | None
    registered: str | None


def resolve_mixed_precision(requested: str, use_cuda: bool) -> str:
    if requested not in ("no", "fp16", "bf16"):
        raise LapgenError(f"unknown --mixed-precision {requested!r}", hint="valid: no, fp16, bf16")
    if requested != "no" and not use_cuda:
        notice(f"mixed precision {requested} needs a CUDA device; training in full precision (no) on CPU")
        return "no"
    return requested


def run_training(config: TrainConfig, stage: DiffusionStage, *,
                 on_step_end: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train `stage` per `config`; writes RUN (`config.out`) atomically and registers it.

    `on_step_end(step, loss)` is called on every rank after each optimiser step (and checkpoint).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    from lapgen.device import resolve_device
    from lapgen.progress import is_quiet

    if is_quiet():  # --quiet also silences the save/load bars of diffusers, transformers and the hub
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
    out = Path(config.out)
    use_cuda = resolve_device(config.device).type == "cuda"
    mixed = resolve_mixed_precision(config.mixed_precision, use_cuda)
    resume_from = find_resume_checkpoint(config.resume, out)
    stale = list_checkpoints(staging_path(out))
    if resume_from is None and stale and not config.overwrite:
        raise LapgenError(f"an interrupted run with {len(stale)} checkpoint(s) is in {staging_path(out)}",
                          hint="pass --resume latest to continue it, or --overwrite to start over")
    if out.exists() and not config.overwrite:  # checked on every rank before any process group exists
        raise LapgenError("output already exists", path=out, hint="pass --overwrite or choose another --out")
    check_writable_parent(out)
    run_dir = staging_path(out)
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation, mixed_precision=mixed,
                              cpu=not use_cuda, project_config=ProjectConfiguration(project_dir=str(run_dir)))
    if accelerator.is_main_process:  # one process creates (or clears) the staging folder
        prepare_output_dir(out, overwrite=config.overwrite, resume=resume_from is not None)
    accelerator.wait_for_everyone()
    set_seed(config.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision,
                                                                      torch.float32)
    stage.weight_dtype = weight_dtype
    try:
        stage.load(accelerator.device, weight_dtype)
        cache_info: dict[str, Any] = {}
        if config.cache_latents:
            cache_info = attach_training_cache(stage, accelerator)
        loader = torch.utils.data.DataLoader(stage.dataset, batch_size=config.batch_size,
                                             sampler=EpochSampler(len(stage.dataset), config.seed),
                                             collate_fn=make_collate(stage.tokenizer),
                                             num_workers=config.num_workers, drop_last=False)
        result = train_loop(config, stage, accelerator, loader, run_dir, resume_from, on_step_end)
    except LapgenError:
        # A user error before the first checkpoint (weights that cannot be loaded, a bad image): nothing to
        # resume from, so leave no staging folder behind. With a checkpoint, `--resume latest` continues.
        if accelerator.is_main_process and not list_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise

    accelerator.wait_for_everyone()
    registered = None
    if accelerator.is_main_process:
        stage.save_result(run_dir, accelerator)
        if (run_dir / LOSS_LOG).exists():
            plot_losses(run_dir / LOSS_LOG, run_dir / LOSS_PLOT)
        summary = {"steps": result["steps"], "epochs": result["epochs"], "final_loss": result["final_loss"],
                   "processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
                   "resumed_from": str(resume_from) if resume_from else None, "latent_cache": cache_info}
        stage.write_model_card(run_dir, summary)
        card = make_card(stage.kind, name=config.name, config=asdict(config), training=summary,
                         **stage.describe())
        write_card(run_dir, card)
        finalize_output_dir(out)
        registered = _register(config.name, stage.kind, out, card)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(out=out, steps=result["steps"], epochs=result["epochs"],
                       final_loss=result["final_loss"], registered=registered)


def _register(name: str | None, kind: str, path: Path, card: dict) -> str | None:
    """Register the finished run under the user's `--name` (it becomes the default of its kind)."""
    if not name:
        return None
    from lapgen.registry import register_artifact

    register_artifact(name, kind, path, card)
    return name


def ema_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an EMA follows: the trainable ones (all of a fine-tuned UNet or a ControlNet; only the
    motion modules of a motion UNet whose image layers are frozen)."""
    return [p for p in model.parameters() if p.requires_grad]


def train_loop(config: TrainConfig, stage: DiffusionStage, accelerator, loader, run_dir: Path,
               resume_from: Path | None, on_step_end) -> dict[str, Any]:
    """The shared loop: accumulate, clip, step, EMA, log, checkpoint, validate. Returns a summary."""
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    sampler: EpochSampler = loader.sampler  # the object accelerate's wrappers keep using
    params = [p for m in stage.trainable for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    per_epoch_batches = math.ceil(len(loader.dataset) / (config.batch_size * accelerator.num_processes))
    steps_per_epoch = math.ceil(per_epoch_batches / config.gradient_accumulation)
    max_steps = config.max_steps or config.epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=max_steps * accelerator.num_processes)
    prepared = accelerator.prepare(*stage.trainable, optimizer, loader, lr_scheduler)
    n = len(stage.trainable)
    stage.trainable = list(prepared[:n])
    stage.on_prepared(stage.trainable)
    optimizer, loader, lr_scheduler = prepared[n:]

    ema = None
    if config.ema:
        main = accelerator.unwrap_model(stage.trainable[0])
        ema = EMAModel(ema_parameters(main), decay=config.ema_decay, model_cls=type(main), model_config=main.config)
        ema.to(accelerator.device)
    register_model_hooks(accelerator, stage)
    generator = torch.Generator(device=accelerator.device).manual_seed(config.seed + accelerator.process_index)

    global_step, first_epoch, skip_batches = 0, 0, 0
    if resume_from is not None:
        notice(f"resuming from {resume_from}")
        accelerator.load_state(str(resume_from))
        load_extra_state(resume_from, accelerator, generator, ema, run_dir)
        global_step = int(resume_from.name.split("-", 1)[1])
        first_epoch = global_step // steps_per_epoch
        skip_batches = (global_step % steps_per_epoch) * config.gradient_accumulation
    elif accelerator.is_main_process and (run_dir / LOSS_LOG).exists():
        (run_dir / LOSS_LOG).unlink()  # a stale log from an interrupted run that left no checkpoint

    last_loss = None
    with make_progress() as progress:
        task = progress.add_task("training", total=max_steps, completed=global_step,
                                 visible=accelerator.is_main_process)
        for epoch in range(first_epoch, num_epochs):
            if global_step >= max_steps:
                break
            for model in stage.trainable:
                model.train()
            sampler.use_epoch(epoch)
            epoch_loader = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
            skip_batches = 0
            step_loss = 0.0
            for batch in epoch_loader:
                with accelerator.accumulate(*stage.trainable):
                    loss = stage.loss(batch, generator)
                    gathered = accelerator.gather(loss.detach().repeat(len(batch["text"])))
                    step_loss += gathered.mean().item() / config.gradient_accumulation
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(params, config.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                if not accelerator.sync_gradients:
                    continue
                if ema is not None:
                    ema.step(ema_parameters(accelerator.unwrap_model(stage.trainable[0])))
                global_step += 1
                last_loss = step_loss
                if accelerator.is_main_process:
                    with open(run_dir / LOSS_LOG, "a") as fh:
                        fh.write(json.dumps({"step": global_step, "epoch": epoch, "loss": step_loss,
                                             "lr": lr_scheduler.get_last_lr()[0]}) + "\n")
                progress.update(task, completed=global_step, description=f"training loss {step_loss:.4f}")
                step_loss = 0.0
                if global_step % config.checkpointing_steps == 0 or global_step == max_steps:
                    save_checkpoint(config, accelerator, run_dir, global_step, generator, ema)
                if on_step_end is not None:
                    on_step_end(global_step, last_loss)
                if global_step >= max_steps:
                    break
            if (config.validation_prompts and ((epoch + 1) % config.validation_every == 0
                                               or global_step >= max_steps)):
                _validate(stage, accelerator, ema, run_dir / "validation" / f"epoch-{epoch:04d}")

    if ema is not None:
        ema.copy_to(ema_parameters(accelerator.unwrap_model(stage.trainable[0])))
    return {"steps": global_step, "epochs": num_epochs, "final_loss": last_loss, "max_steps": max_steps}


def _validate(stage: DiffusionStage, accelerator, ema, folder: Path) -> None:
    """Validation images from the current (EMA) weights, on the main process only."""
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(stage.trainable[0])
        main_params = lambda: ema_parameters(model)  # noqa: E731
        if ema is not None:
            ema.store(main_params())
            ema.copy_to(main_params())
        folder.mkdir(parents=True, exist_ok=True)
        stage.validate(folder, accelerator)
        if ema is not None:
            ema.restore(main_params())
    accelerator.wait_for_everyone()
