"""Checkpoints of lapgen training runs: `RUN/checkpoint-N` folders, pruning, resume, and the state saved beside
accelerate's own.

A checkpoint holds what `Accelerator.save_state` writes (optimizer.bin, scheduler.bin, random_states_R.pkl)
with each trainable model in diffusers/transformers format (`unet/`, `text_encoder/`, `controlnet/`, via
save/load pre-hooks as in diffusers' training scripts, so no second pickle of the weights), plus
`lapgen_state_R.pt` per rank (the noise generator's state; rank 0 also the EMA weights, loaded with
`weights_only=True`) and a copy of the loss log. Naming and pruning follow diffusers: `checkpoint-{step}`,
at most `checkpoints_total_limit` kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lapgen.errors import LapgenError
from lapgen.outputs import staging_path
from lapgen.progress import notice

LOSS_LOG = "loss.jsonl"
LOSS_PLOT = "loss.png"
STATE_FILE = "lapgen_state_{rank}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """`checkpoint-N` folders of a run, sorted by N."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")
             and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def find_resume_checkpoint(resume: str | None, out: Path) -> Path | None:
    """`latest` -> newest checkpoint of an interrupted (or finished) run at `out`, or None; else a path."""
    if resume is None:
        return None
    if resume == "latest":
        for folder in (staging_path(out), out):
            found = list_checkpoints(folder)
            if found:
                return found[-1]
        notice("no checkpoint to resume from; starting a new run")
        return None
    path = Path(resume)
    if not (path.is_dir() and path.name.startswith("checkpoint-") and path.name.split("-", 1)[1].isdigit()):
        raise LapgenError("not a checkpoint folder (checkpoint-N written by lapgen training)", path=path,
                          hint="pass --resume latest or a RUN/checkpoint-N folder")
    return path


def prune_checkpoints(folder: Path, limit: int | None) -> None:
    """Keep at most `limit - 1` checkpoints before a new one is written (diffusers convention)."""
    if limit is None:
        return
    existing = list_checkpoints(folder)
    for old in existing[: max(0, len(existing) - limit + 1)]:
        shutil.rmtree(old)


def plot_losses(log: Path, png: Path) -> None:
    """Loss per optimiser step (and a moving average) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if rows:
        steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
        ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
        k = max(1, len(losses) // 20)
        smooth = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.5, label=f"mean of {k}")
        ax.legend()
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("denoising loss")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def save_extra_state(folder: Path, accelerator, generator: torch.Generator, ema, run_dir: Path) -> None:
    """Beside accelerate's state: this rank's noise generator, the EMA weights and the loss log."""
    state = {"noise_rng": generator.get_state()}
    if ema is not None and accelerator.is_main_process:
        state["ema"] = ema.state_dict()
    torch.save(state, folder / STATE_FILE.format(rank=accelerator.process_index))
    if accelerator.is_main_process and (run_dir / LOSS_LOG).exists():
        shutil.copy2(run_dir / LOSS_LOG, folder / LOSS_LOG)


def load_extra_state(folder: Path, accelerator, generator: torch.Generator, ema, run_dir: Path) -> None:
    path = folder / STATE_FILE.format(rank=accelerator.process_index)
    if not path.exists():
        raise LapgenError(f"checkpoint has no {path.name} for process {accelerator.process_index}", path=folder,
                          hint="resume with the number of processes the checkpoint was written with")
    state = torch.load(path, map_location="cpu", weights_only=True)
    generator.set_state(state["noise_rng"])
    main_state = torch.load(folder / STATE_FILE.format(rank=0), map_location="cpu", weights_only=True)
    if ema is not None:
        if "ema" not in main_state:
            raise LapgenError("checkpoint has no EMA weights", path=folder, hint="resume without --ema")
        ema.load_state_dict(main_state["ema"])
    if accelerator.is_main_process:
        log = folder / LOSS_LOG
        if log.exists():
            shutil.copy2(log, run_dir / LOSS_LOG)
        elif (run_dir / LOSS_LOG).exists():
            (run_dir / LOSS_LOG).unlink()


def register_model_hooks(accelerator, stage) -> None:
    """Checkpoints hold each trainable model in diffusers/transformers format (`unet/`, `controlnet/`,
    `motion_adapter/`, ...), written and read by the stage (`save_trainable`, `load_trainable`)."""

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for model in models:
                stage.save_trainable(accelerator.unwrap_model(model), Path(output_dir))
                weights.pop()

    def load_hook(models, input_dir):
        while models:
            stage.load_trainable(accelerator.unwrap_model(models.pop()), Path(input_dir))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(config, accelerator, run_dir: Path, step: int, generator, ema) -> None:
    """Write `checkpoint-{step}` atomically: into `.checkpoint-{step}.tmp`, renamed once every rank is done,
    so a run killed while saving leaves no torn checkpoint for `--resume latest` to pick."""
    folder = run_dir / f"checkpoint-{step}"
    tmp = run_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process:
        prune_checkpoints(run_dir, config.checkpoints_total_limit)
        for stale in (tmp, folder):  # a save interrupted by a kill; a step saved again after an older resume
            if stale.exists():
                shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every rank (DeepSpeed needs it); accelerate guards the writes
    accelerator.wait_for_everyone()
    save_extra_state(tmp, accelerator, generator, ema, run_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp.rename(folder)
    accelerator.wait_for_everyone()
