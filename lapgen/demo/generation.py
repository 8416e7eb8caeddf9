"""The Stage 1-2 steps of `lapgen demo`: the untrained base, `finetune`, `train-controlnet`, the recognizer and
`sample` (`lapgen.demo.video`: Stage 3). Like `lapgen.demo.steps`, each calls the library function behind its
printed command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lapgen.demo.steps import DESCRIPTIONS, NAMES, SETS, Context, cmd

# ---------------------------------------------------------------------------------------- diffusion


def base_cmds(c: Context) -> list[str]:
    return [
        f"(library) lapgen.demo.assets.materialize_demo_base -> {c.p('models', 'demo-base')}",
        cmd("lapgen", "models", "add", NAMES["base"], c.p("models", "demo-base"), "--kind", "pipeline",
            "--description", DESCRIPTIONS["base"]),
    ]


def base_step(c: Context) -> dict:
    from lapgen.demo.assets import materialize_demo_base
    from lapgen.registry import add_entry

    s = c.sizes
    path = materialize_demo_base(
        c.p("models", "demo-base"),
        seed=c.seed,
        unet_channels=s.unet_channels,
        vae_levels=s.vae_levels,
        prediction_type=s.prediction_type,
    )
    add_entry(
        NAMES["base"],
        str(path),
        kind="pipeline",
        description=DESCRIPTIONS["base"],
    )
    return {}


def _train_args(c: Context, steps: int, lr: float, ema: float | None, batch: int) -> list[Any]:
    return [
        "--max-steps",
        steps,
        "--lr",
        lr,
        *(["--ema", "--ema-decay", ema] if ema else []),
        "--batch-size",
        batch,
        "--cache-latents",
        "--checkpointing-steps",
        max(1, steps // 2),
        "--checkpoints-total-limit",
        1,
        "--seed",
        c.seed,
        "--device",
        c.device,
    ]


def _train_config(c: Context, ema: float | None = None, **kw: Any):
    from lapgen.models.training import TrainConfig

    steps = kw.pop("max_steps")
    if ema:
        kw.update(ema=True, ema_decay=ema)
    kw.setdefault("batch_size", c.sizes.batch_size)
    return TrainConfig(
        max_steps=steps,
        cache_latents=True,
        checkpointing_steps=max(1, steps // 2),
        checkpoints_total_limit=1,
        seed=c.seed,
        device=c.device,
        overwrite=True,
        **kw,
    )


# Stage 1 and Stage 2: command -> (data folder, base name key, run folder = name key, sizes prefix)
_TRAINING = {
    "finetune": ("frames", "base", "sd", "sd"),
    "train-controlnet": ("controlnet", "sd", "controlnet", "cn"),
    "train-motion": ("clips", "sd", "motion", "motion"),  # `lapgen demo --motion`
}


def _training(c: Context, command: str) -> dict[str, Any]:
    data, base, run, prefix = _TRAINING[command]
    s = c.sizes
    return {
        "data": c.p("data", data),
        "base": NAMES[base],
        "out": c.p("runs", run),
        "name": NAMES[run],
        "steps": getattr(s, f"{prefix}_steps"),
        "lr": getattr(s, f"{prefix}_lr"),
        "ema": getattr(s, f"{prefix}_ema"),
        "batch": getattr(s, f"{prefix}_batch", s.batch_size),
    }


def training_cmds(c: Context, command: str) -> list[str]:
    t = _training(c, command)
    return [
        cmd(
            "lapgen",
            command,
            "--data",
            t["data"],
            "--base",
            t["base"],
            *_train_args(c, t["steps"], t["lr"], t["ema"], t["batch"]),
            "--out",
            t["out"],
            "--name",
            t["name"],
        )
    ]


def training_run(c: Context, command: str, train) -> dict:
    t = _training(c, command)
    r = train(
        _train_config(
            c,
            data=str(t["data"]),
            out=str(t["out"]),
            base=t["base"],
            name=t["name"],
            max_steps=t["steps"],
            learning_rate=t["lr"],
            ema=t["ema"],
            batch_size=t["batch"],
        )
    )
    return _loss_summary(t["out"], r.final_loss)


def finetune_cmds(c: Context) -> list[str]:
    return training_cmds(c, "finetune")


def finetune_step(c: Context) -> dict:
    from lapgen.models.finetune import finetune

    return {"sd_loss": training_run(c, "finetune", finetune)}


def controlnet_cmds(c: Context) -> list[str]:
    return training_cmds(c, "train-controlnet")


def controlnet_step(c: Context) -> dict:
    from lapgen.models.controlnet import train_controlnet

    return {"controlnet_loss": training_run(c, "train-controlnet", train_controlnet)}


def untrained_cn_cmds(c: Context) -> list[str]:
    folder = c.p("models", "demo-controlnet-untrained")
    return [
        (
            f"(library) lapgen.demo.assets.materialize_untrained_controlnet (ControlNetModel.from_unet of demo-sd, "
            f"where train-controlnet starts) -> {folder}"
        ),
        cmd("lapgen", "models", "add", NAMES["controlnet_untrained"], folder, "--kind", "controlnet",
            "--description", DESCRIPTIONS["controlnet_untrained"]),
    ]


def untrained_cn_step(c: Context) -> dict:
    from lapgen.demo.assets import materialize_untrained_controlnet
    from lapgen.registry import add_entry

    path = materialize_untrained_controlnet(
        c.p("models", "demo-controlnet-untrained"), c.p("runs", "sd"), seed=c.seed
    )
    add_entry(
        NAMES["controlnet_untrained"],
        str(path),
        kind="controlnet",
        description=DESCRIPTIONS["controlnet_untrained"],
    )
    return {}


def _loss_summary(run: Path, final: float | None) -> dict:
    """Mean loss of the first and the last tenth of the steps (from the run's loss log)."""
    from lapgen.models.checkpointing import LOSS_LOG

    losses = []
    path = run / LOSS_LOG
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                losses.append(float(json.loads(line)["loss"]))
            except (ValueError, KeyError, TypeError):
                continue
    if not losses:
        return {"first": None, "last": final}
    k = max(1, len(losses) // 10)
    return {"first": sum(losses[:k]) / k, "last": sum(losses[-k:]) / k, "steps": len(losses)}


def recognizer_cmds(c: Context) -> list[str]:
    s = c.sizes
    return [
        cmd(
            "lapgen",
            "eval",
            "train-recognizer",
            "--data",
            c.p("data", "frames"),
            "--epochs",
            s.rdv_epochs,
            "--batch-size",
            s.rdv_batch,
            "--seed",
            c.seed,
            "--device",
            c.device,
            "--out",
            c.p("runs", "recognizer"),
            "--name",
            NAMES["recognizer"],
        )
    ]


def recognizer_step(c: Context) -> dict:
    from lapgen.models.recognition.train import TrainRecognizerConfig, train_recognizer

    s = c.sizes
    card = train_recognizer(
        TrainRecognizerConfig(
            data=str(c.p("data", "frames")),
            out=str(c.p("runs", "recognizer")),
            name=NAMES["recognizer"],
            epochs=s.rdv_epochs,
            batch_size=s.rdv_batch,
            seed=c.seed,
            device=c.device,
            overwrite=True,
        )
    )
    return {"recognizer_val_map_ivt": card.get("val_map_ivt")}


# ------------------------------------------------------------------------------------------- sample


SAMPLE_BATCH = 16  # images per pipeline call


def sample_cmds(c: Context) -> list[str]:
    s = c.sizes
    lines = []
    for folder, (model, controlnet, _label, _trained) in SETS.items():
        lines.append(
            cmd(
                "lapgen",
                "sample",
                "--model",
                model,
                *(["--controlnet", controlnet] if controlnet else []),
                "--prompts-from",
                c.p("data", "controlnet" if controlnet else "frames"),
                "--split",
                "test",
                "--n",
                s.n_samples,
                "--steps",
                s.sample_steps,
                "--seed",
                c.seed,
                "--batch-size",
                SAMPLE_BATCH,
                "--device",
                c.device,
                "--out",
                c.p("samples", folder),
            )
        )
    return lines


def sample_step(c: Context) -> dict:
    from lapgen.models.sampling import SampleConfig, sample_images

    s = c.sizes
    for folder, (model, controlnet, _label, _trained) in SETS.items():
        sample_images(
            SampleConfig(
                out=str(c.p("samples", folder)),
                model=model,
                controlnet=controlnet,
                prompts_from=str(c.p("data", "controlnet" if controlnet else "frames")),
                split="test",
                n=s.n_samples,
                steps=s.sample_steps,
                seed=c.seed,
                batch_size=SAMPLE_BATCH,
                device=c.device,
                overwrite=True,
            )
        )
    return {}
