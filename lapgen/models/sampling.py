"""`lapgen sample`: draw evaluation sets (the paper's 10,000 images) from a Stage-1 pipeline, optionally with a
Stage-2 ControlNet, restart-safe and distributed.

- Prompts (and, with a ControlNet, masks) come from a frames dataset split (`prompts_from`) or one prompt.
  The plan (which record image i uses) depends only on the seed, so it is the same on every rank.
- Image i uses its own generator seeded with `seed + i` (CPU generator, so the same on any device) and is
  written as `images/{i:05d}.png`; finished images are skipped on re-runs, so output does not depend on
  the number of processes (accelerate `PartialState.split_between_processes`, as in accelerate's
  `examples/inference/distributed/distributed_image_generation.py`).
- `metadata.jsonl` uses the frames dataset layout (file_name, text, the source frame's labels and, with a
  ControlNet, `conditioning_image_file_name`), so `lapgen eval` pairs images with labels and masks.
Defaults: 100 denoising steps, guidance 3 (the paper's sampling settings).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError

LABEL_KEYS = ("source", "video", "frame", "split", "phase", "tools", "triplets", "instruments", "verbs", "targets")


@dataclass
class SampleConfig:
    """Settings of one sampling run."""

    out: str  # generated set folder
    model: str | None = None  # pipeline: registry name, folder, hf:ORG/NAME (None: the default pipeline)
    controlnet: str | None = None  # ControlNet source (masks then come with the prompts)
    prompts_from: str | None = None  # frames dataset folder to draw prompts (and masks) from
    split: str | None = "test"
    prompt: str | None = None  # or one prompt for all images
    mask: str | None = None  # with `prompt` and a ControlNet: the mask PNG for all images
    n: int = 10_000
    steps: int = 100
    guidance: float = 3.0
    seed: int = 0
    batch_size: int = 8  # images per pipeline call, per process
    resolution: int | None = None  # px; default: the model's training resolution (card), else its native one
    device: str = "auto"
    dtype: str = "fp32"
    overwrite: bool = False


@dataclass
class SampleResult:
    out: Path
    images: int
    generated: int  # by this process in this run (the rest were already there or another rank's)


def plan_items(config: SampleConfig) -> list[dict[str, Any]]:
    """One record per image index: `text`, labels, and `mask` (source path) when a ControlNet is used."""
    if (config.prompts_from is None) == (config.prompt is None):
        raise LapgenError("give exactly one of --prompts-from DIR or --prompt TEXT")
    if config.n < 1:
        raise LapgenError(f"--n must be at least 1 (got {config.n})")
    if config.prompt is not None:
        if config.controlnet and not config.mask:
            raise LapgenError("--prompt with a ControlNet needs --mask PATH", hint="or use --prompts-from DIR")
        if config.mask and not Path(config.mask).is_file():
            raise LapgenError("mask not found", path=config.mask)
        if config.mask and config.controlnet:
            from lapgen.data.masks import read_mask

            read_mask(config.mask)  # a corrupt mask fails here, before models load and GEN.partial exists
        item: dict[str, Any] = {"text": config.prompt}
        if config.controlnet:
            item["mask"] = str(Path(config.mask).resolve())
        return [dict(item) for _ in range(config.n)]
    from lapgen.data.frames import read_records

    root = Path(config.prompts_from)
    records = read_records(root, config.split)
    if config.controlnet and not all("conditioning_image_file_name" in r for r in records):
        raise LapgenError("--controlnet needs masks, but the dataset's records have no "
                          "`conditioning_image_file_name`", path=root,
                          hint="run `lapgen segment annotate` on it, or sample without --controlnet")
    order = np.random.default_rng(config.seed).permutation(len(records))  # the same on every rank
    items = []
    for i in range(config.n):
        rec = records[int(order[i % len(records)])]
        item = {"text": rec["text"], "source_file_name": rec["file_name"],
                **{k: rec[k] for k in LABEL_KEYS if k in rec}}
        if config.controlnet:
            item["mask"] = str(root / rec["conditioning_image_file_name"])
        items.append(item)
    return items


def _default_resolution(entry, pipe) -> int:
    card = entry.card or {}
    res = card.get("resolution") or (card.get("config") or {}).get("resolution")
    if isinstance(res, int) and res > 0:
        return res
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def _save_png(image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    image.save(tmp, format="PNG")
    tmp.replace(path)


STATE_FILE = ".sample-config.json"  # in GEN.partial: the settings a resumed run must match


def _fingerprint(config: SampleConfig, entry, cn_entry, resolution: int) -> dict[str, Any]:
    """What decides the pixels and the plan of a set (not the batch size, device or number of processes)."""
    def local(path: str | None) -> str | None:
        return None if path is None else str(Path(path).resolve())

    return {"model": entry.weights_location(),
            "controlnet": cn_entry.weights_location() if cn_entry else None,
            "prompts_from": local(config.prompts_from),
            "split": config.split if config.prompts_from else None,
            "prompt": config.prompt, "mask": local(config.mask), "n": config.n, "steps": config.steps,
            "guidance": config.guidance, "seed": config.seed, "resolution": resolution, "dtype": config.dtype}


def sample_images(config: SampleConfig) -> SampleResult:
    """Generate `config.n` images into `config.out` (atomic; resumable; each process its share)."""
    import torch
    from accelerate import PartialState

    from lapgen.cards import make_card, write_card
    from lapgen.data.frames import write_records
    from lapgen.models.controlnet import mask_image
    from lapgen.device import resolve_device
    from lapgen.models.loading import ensure_local, load_controlnet, load_sd_pipeline, resolve_entry
    from lapgen.outputs import check_writable_parent, finalize_output_dir, open_resumable_stage
    from lapgen.progress import make_progress

    if config.steps < 1 or config.batch_size < 1:
        raise LapgenError("--steps and --batch-size must be at least 1")
    items = plan_items(config)
    entry = resolve_entry(config.model, "pipeline")
    cn_entry = resolve_entry(config.controlnet, "controlnet") if config.controlnet else None
    out = Path(config.out)
    if out.exists() and not config.overwrite:
        raise LapgenError("output already exists", path=out, hint="pass --overwrite or choose another --out")
    check_writable_parent(out)
    for e in (entry, cn_entry):
        if e is not None and e.hub_id and e.path is None:  # offline and not cached: fail before any work
            ensure_local(e, e.kind)
    use_cuda = resolve_device(config.device).type == "cuda"
    state = PartialState(cpu=not use_cuda)
    device = "cpu" if state.device.type == "cpu" else str(state.device)  # MULTI_CPU reports cpu:RANK
    pipe = load_sd_pipeline(entry=entry, device=device, dtype=config.dtype)
    if cn_entry is not None:
        from diffusers import StableDiffusionControlNetPipeline

        controlnet = load_controlnet(cn_entry, device=device, dtype=config.dtype)
        pipe = StableDiffusionControlNetPipeline(**{k: v for k, v in pipe.components.items()},
                                                 controlnet=controlnet, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
    res = config.resolution or _default_resolution(entry, pipe)
    if res % 8:
        raise LapgenError(f"--resolution {res} must be a multiple of 8")
    stage = open_resumable_stage(out, _fingerprint(config, entry, cn_entry, res), state, overwrite=config.overwrite,
                                 state_file=STATE_FILE, folders=("images", "masks") if config.controlnet else ("images",))

    generated = 0
    with state.split_between_processes(list(range(len(items)))) as mine:
        todo = [i for i in mine if not (stage / "images" / f"{i:05d}.png").exists()]
        with make_progress() as progress:
            task = progress.add_task("sampling", total=len(mine), completed=len(mine) - len(todo),
                                     visible=state.is_main_process)
            for start in range(0, len(todo), config.batch_size):
                batch = todo[start:start + config.batch_size]
                kwargs: dict[str, Any] = {}
                if cn_entry is not None:
                    controls = [mask_image(items[i]["mask"], res) for i in batch]
                    for i, control in zip(batch, controls):
                        _save_png(control.convert("L"), stage / "masks" / f"{i:05d}.png")
                    kwargs["image"] = controls
                generators = [torch.Generator("cpu").manual_seed(config.seed + i) for i in batch]
                with torch.no_grad():
                    images = pipe([items[i]["text"] for i in batch], height=res, width=res,
                                  num_inference_steps=config.steps, guidance_scale=config.guidance,
                                  generator=generators, **kwargs).images
                for i, image in zip(batch, images):
                    _save_png(image, stage / "images" / f"{i:05d}.png")
                generated += len(batch)
                progress.advance(task, len(batch))
    state.wait_for_everyone()
    if state.is_main_process:
        missing = [i for i in range(len(items)) if not (stage / "images" / f"{i:05d}.png").exists()]
        if missing:
            raise LapgenError(f"{len(missing)} images are missing after sampling", path=stage,
                              hint="re-run the same command to finish them")
        records = []
        for i, item in enumerate(items):
            rec = {"file_name": f"images/{i:05d}.png", "text": item["text"], "index": i, "seed": config.seed + i,
                   **{k: v for k, v in item.items() if k not in ("text", "mask")}}
            if cn_entry is not None:
                rec["conditioning_image_file_name"] = f"masks/{i:05d}.png"
            records.append(rec)
        write_records(stage, records)
        write_card(stage, make_card("generated-set", config=asdict(config), model=entry.name,
                                    controlnet=cn_entry.name if cn_entry else None, parent=entry.name,
                                    resolution=res, images=len(items), processes=state.num_processes))
        finalize_output_dir(out)
        (out / STATE_FILE).unlink(missing_ok=True)
    state.wait_for_everyone()
    return SampleResult(out=out, images=len(items), generated=generated)
