"""The settings of a training run (`TrainConfig`) and the YAML recipes that set them.

Recipes are YAML mappings of `TrainConfig` fields. The paper's recipes ship inside the package
(`lapgen/configs/*.yaml`), so they are named from any folder: `--config paper-stage1-unet` (or
`paper-stage1-unet.yaml`); any other value is a path to a recipe file. `TrainConfig.from_recipe` is the one
route from a recipe to a config for the CLI and library callers alike: unknown keys and values of the wrong
type are one-line errors naming the recipe, before any heavy work. No torch here.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from lapgen.errors import LapgenError

RECIPE_SUFFIX = ".yaml"


@dataclass
class TrainConfig:
    """Settings of one training run (Stage 1, 2 or the motion module). Defaults are the paper's (lr 1e-5
    constant, 128 px); the motion module's recipe (`animatediff-motion`) follows AnimateDiff's."""

    data: str  # frames dataset folder (metadata.jsonl); ControlNet: with conditioning_image_file_name;
    # motion module: a clip dataset (`lapgen prepare --clips`)
    out: str  # run folder to write
    base: str = "sd15"  # registry name, local folder or hf:ORG/NAME of the Stable Diffusion pipeline
    name: str | None = None  # registry name of the result
    split: str = "train"
    resolution: int = 128  # px, divisible by 8
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant"  # any diffusers.optimization scheduler name
    lr_warmup_steps: int = 0
    batch_size: int = 16  # per process
    epochs: int = 100
    max_steps: int | None = None  # optimiser steps; overrides epochs
    gradient_accumulation: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16 (no on CPU)
    train_text_encoder: bool = False  # Stage 1 only: also train the CLIP text encoder
    ema: bool = False
    ema_decay: float = 0.9999
    snr_gamma: float | None = None  # Min-SNR-γ; 5.0 recommended
    gradient_checkpointing: bool = False
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume: str | None = None  # latest | RUN/checkpoint-N
    validation_prompts: list[str] = field(default_factory=list)
    validation_masks: list[str] = field(default_factory=list)  # Stage 2: one mask PNG per prompt
    validation_every: int = 1  # epochs
    validation_inference_steps: int = 50
    validation_guidance: float = 3.0
    seed: int = 0
    cache_latents: bool = False
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    num_workers: int = 0  # DataLoader worker processes
    device: str = "auto"  # auto | cpu | cuda
    overwrite: bool = False
    controlnet_init: str | None = None  # Stage 2: start from this ControlNet instead of the UNet
    adapter_init: str | None = None  # motion: start from this MotionAdapter (None: a new one, output zeroed)
    adapter_max_frames: int = 32  # motion, new adapter: frames its positional embedding covers (AnimateDiff v2)

    def check(self) -> None:
        """Cheap validation of the numbers, before any heavy work."""
        if self.resolution <= 0 or self.resolution % 8:
            raise LapgenError(f"--resolution {self.resolution} must be a positive multiple of 8")
        for flag, value in (("--batch-size", self.batch_size), ("--epochs", self.epochs),
                            ("--gradient-accumulation", self.gradient_accumulation),
                            ("--checkpointing-steps", self.checkpointing_steps),
                            ("--validation-every", self.validation_every)):
            if value < 1:
                raise LapgenError(f"{flag} must be at least 1 (got {value})")
        if self.max_steps is not None and self.max_steps < 1:
            raise LapgenError(f"--max-steps must be at least 1 (got {self.max_steps})")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise LapgenError("--checkpoints-total-limit must be at least 1")
        if self.learning_rate <= 0:
            raise LapgenError("--lr must be positive")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise LapgenError("--snr-gamma must be positive")
        if self.adapter_max_frames < 1:
            raise LapgenError(f"--adapter-max-frames must be at least 1 (got {self.adapter_max_frames})")
        if self.name is not None:  # registered at the very end: a bad name must not cost a whole training run
            from lapgen.registry import check_name

            check_name(self.name)


    @classmethod
    def from_recipe(cls, recipe: str | Path | None = None, *, overrides: dict[str, Any] | None = None,
                    defaults: dict[str, Any] | None = None) -> TrainConfig:
        """A checked config from `defaults` < the recipe's values < `overrides` (each a mapping of fields).

        `recipe`: a shipped recipe name (`lapgen.models.train_config.shipped_recipes()`), a YAML file, or None.
        `data` and `out` must come from somewhere.
        """
        values = _plain(defaults or {}, "defaults")
        if recipe is not None:
            values.update(load_recipe(recipe))
        values.update(_plain(overrides or {}, "overrides"))
        for required in ("data", "out"):
            if not values.get(required):
                raise LapgenError(f"--{required} is required (on the command line or in the recipe)")
        config = cls(**values)
        config.check()
        return config


def _plain(values: dict[str, Any], what: str) -> dict[str, Any]:
    """Field values with paths as strings and tuples as lists (the recipe's plain YAML types)."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise LapgenError(f"unknown TrainConfig fields in {what}: {', '.join(unknown)}")
    plain: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (tuple, list)):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        plain[key] = value
    return plain


def shipped_recipes() -> dict[str, Path]:
    """The recipes shipped inside the package: name (file stem) -> file."""
    folder = resources.files("lapgen") / "configs"
    found = {}
    for entry in folder.iterdir():
        if entry.name.endswith(RECIPE_SUFFIX):
            found[entry.name[: -len(RECIPE_SUFFIX)]] = Path(str(entry))
    return dict(sorted(found.items()))


def resolve_recipe(recipe: str | Path) -> Path:
    """The recipe file of `recipe`: an existing file, else a shipped recipe's name (with or without .yaml)."""
    path = Path(recipe).expanduser()
    if path.is_file():
        return path
    shipped = shipped_recipes()
    name = path.name[: -len(RECIPE_SUFFIX)] if path.name.endswith(RECIPE_SUFFIX) else path.name
    if name in shipped and (str(recipe) in (name, name + RECIPE_SUFFIX)):
        return shipped[name]
    raise LapgenError("recipe file not found and not a shipped recipe", path=recipe,
                      hint="pass a YAML file or one of: " + ", ".join(shipped))


def _fits(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and (not args or all(_fits(x, args[0]) for x in value))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_recipe_value(recipe: str | Path, key: str, value: Any) -> None:
    """A recipe value must have its TrainConfig field's type (YAML `five` where a number belongs is an error
    here, not a TypeError deep in training)."""
    expected = typing.get_type_hints(TrainConfig)[key]
    if not _fits(value, expected):
        name = expected.__name__ if isinstance(expected, type) else str(expected).replace("typing.", "")
        raise LapgenError(f"recipe key {key} must be {name}, got {value!r}", path=recipe)


def load_recipe(recipe: str | Path) -> dict[str, Any]:
    """The checked field values of a recipe (a shipped name or a YAML file)."""
    import yaml

    path = resolve_recipe(recipe)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LapgenError("recipe is not valid YAML", path=path) from exc
    except OSError as exc:
        raise LapgenError(f"cannot read recipe ({exc.strerror})", path=path) from exc
    if not isinstance(loaded, dict):
        raise LapgenError("recipe must be a mapping of TrainConfig fields", path=path)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(loaded) - known)
    if unknown:
        raise LapgenError(f"unknown recipe keys: {', '.join(unknown)}", path=path,
                          hint="valid keys: " + ", ".join(sorted(known)))
    for key, value in loaded.items():
        check_recipe_value(path, key, value)
    return loaded
