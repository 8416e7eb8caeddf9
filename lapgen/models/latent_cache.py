"""Training data for Stages 1 and 2 and the motion module: image/mask transforms, the torch Datasets (frames,
clips), and the latent cache.

Images and masks come from the frames dataset reader (`lapgen.data.frames`): images resized to the training
resolution and normalised to [-1, 1] as in diffusers' `train_text_to_image.py`; masks are categorical, so
they are resized with nearest neighbour only and fed as 3-channel {0, 1} images like the ControlNet
pipeline's control-image processor (diffusers' `train_controlnet.py`).

The latent cache (`--cache-latents`) stores, for every record, the VAE posterior's moments (mean and
log-variance, shape (2*C, h, w)), not a sample: training still draws a fresh latent from the posterior
each step with the run's own generator, so training from the cache is the same computation as encoding on
the fly. When the text encoder is frozen the prompt embeddings are cached too (one per distinct prompt).
Cache files live under `$LAPGEN_HOME/cache/` keyed by the dataset's content (every image's bytes and
prompt), the resolution and the exact encoder weights, so they are reused across runs and never stale.
A clip dataset caches the moments of every frame of every clip (`cache_files`), and a clip item gathers its
frames' moments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lapgen.data import clips, frames
from lapgen.errors import LapgenError
from lapgen.outputs import file_sha256, lapgen_home
from lapgen.progress import track

TRANSFORM_VERSION = 1  # bump when the frames dataset's image transform changes: invalidates cached latents


def read_training_records(data: str | Path, split: str | None, *, with_masks: bool) -> list[dict]:
    """Validated records of one split; with `with_masks`, every record's mask exists and matches its image."""
    from PIL import Image

    root = Path(data)
    records = frames.read_records(root, split)
    if not with_masks:
        return records
    missing = [r["file_name"] for r in records if "conditioning_image_file_name" not in r]
    if missing:
        raise LapgenError(f"{len(missing)} of {len(records)} records have no `conditioning_image_file_name` "
                          f"(e.g. {missing[0]}): not a ControlNet dataset", path=root / frames.METADATA,
                          hint="run `lapgen segment annotate` on the frames dataset first")
    for rec in records:  # PNG headers only: cheap
        with Image.open(root / rec["file_name"]) as im, Image.open(root / rec["conditioning_image_file_name"]) as mk:
            if im.size != mk.size:
                raise LapgenError(f"mask {rec['conditioning_image_file_name']} is {mk.size[0]}x{mk.size[1]} "
                                  f"but its image {rec['file_name']} is {im.size[0]}x{im.size[1]}",
                                  path=root / frames.METADATA,
                                  hint="masks must have the size of their image; re-run `lapgen segment annotate`")
    return records


class FramesTrainingSet(torch.utils.data.Dataset):
    """A frames dataset (`lapgen.data.frames.FramesDataset`, images resized to `resolution`, [-1, 1]) as
    training items.

    Each item: `index` (int), `text` (str), then either `pixel_values` (3, R, R) or, with a latent cache,
    `moments` (2C, h, w); `encoder_hidden_states` (77, D) when prompts are cached; `conditioning_pixel_values`
    (3, R, R) in {0, 1} (NEAREST-resized binary mask) when `with_masks`.
    """

    def __init__(self, root: str | Path, records: list[dict], resolution: int, *, with_masks: bool = False):
        self.root = Path(root)
        self.records = records
        self.resolution = resolution
        self.with_masks = with_masks
        self.frames = frames.FramesDataset(self.root, records=records, size=resolution, conditioning=with_masks)
        self.moments: torch.Tensor | None = None  # (N, 2C, h, w), set by attach_cache
        self.prompt_embeddings: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def image(self, index: int) -> torch.Tensor:
        """(3, R, R) in [-1, 1]."""
        return self.frames[index]["pixel_values"]

    def cache_files(self) -> list[str]:
        """The images the latent cache encodes, in order (relative to `root`)."""
        return [r["file_name"] for r in self.records]

    def cache_image(self, index: int) -> torch.Tensor:
        return self.image(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        if self.moments is None:
            item = self.frames[index]
        else:
            item = {"index": index, "text": rec["text"], "moments": self.moments[index]}
            if self.with_masks:
                mask = frames.load_mask(self.root / rec["conditioning_image_file_name"], self.resolution)
                item["conditioning_pixel_values"] = torch.from_numpy(mask.astype(np.float32))[None].repeat(3, 1, 1)
        if self.prompt_embeddings is not None:
            item["encoder_hidden_states"] = self.prompt_embeddings[rec["text"]]
        return item

    def attach_cache(self, moments: torch.Tensor | None, prompts: dict[str, torch.Tensor] | None) -> None:
        self.moments = moments
        self.prompt_embeddings = prompts


def read_clip_records(data: str | Path, split: str | None) -> list[dict]:
    """Validated clip records of one split, all of the same length (a batch stacks them)."""
    records = clips.read_clips(data, split)
    lengths = sorted({r["num_frames"] for r in records})
    if len(lengths) > 1:
        odd = next(r for r in records if r["num_frames"] != records[0]["num_frames"])
        raise LapgenError(f"clips of mixed lengths ({', '.join(map(str, lengths))} frames; e.g. {odd['clip']} has "
                          f"{odd['num_frames']}, {records[0]['clip']} {records[0]['num_frames']})",
                          path=Path(data) / frames.METADATA,
                          hint="a clip batch needs one length: re-run `lapgen prepare --clips` with one --clip-frames")
    return records


class ClipsTrainingSet(torch.utils.data.Dataset):
    """A clip dataset (`lapgen.data.clips`) as training items for the motion module.

    Each item: `index`, `text`, then `pixel_values` (F, 3, R, R) in [-1, 1] or, with a latent cache,
    `moments` (F, 2C, h, w); `encoder_hidden_states` (77, D) when prompts are cached.
    """

    def __init__(self, root: str | Path, records: list[dict], resolution: int):
        self.root = Path(root)
        self.records = records
        self.resolution = resolution
        self.num_frames = records[0]["num_frames"]
        self.files = [f for rec in records for f in clips.clip_files(rec)]  # clip-major
        self.moments: torch.Tensor | None = None  # (N_clips * F, 2C, h, w)
        self.prompt_embeddings: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def cache_files(self) -> list[str]:
        return self.files

    def cache_image(self, index: int) -> torch.Tensor:
        """Frame `index` of `cache_files`: (3, R, R) in [-1, 1], as the frames dataset's transform."""
        img = np.asarray(frames.load_image(self.root / self.files[index], self.resolution), dtype=np.float32)
        return torch.from_numpy(img / 127.5 - 1.0).permute(2, 0, 1).contiguous()

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        item: dict[str, Any] = {"index": index, "text": rec["text"]}
        first = index * self.num_frames
        if self.moments is None:
            item["pixel_values"] = torch.stack([self.cache_image(first + k) for k in range(self.num_frames)])
        else:
            item["moments"] = self.moments[first:first + self.num_frames]
        if self.prompt_embeddings is not None:
            item["encoder_hidden_states"] = self.prompt_embeddings[rec["text"]]
        return item

    def attach_cache(self, moments: torch.Tensor | None, prompts: dict[str, torch.Tensor] | None) -> None:
        self.moments = moments
        self.prompt_embeddings = prompts


class EpochSampler(torch.utils.data.Sampler):
    """A permutation of the dataset seeded by (seed, epoch): the order a resumed run replays.

    The method is deliberately not called `set_epoch` so accelerate's loader wrappers leave it alone.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_collate(tokenizer):
    """Batch items; prompts without cached embeddings are tokenised here (padded to 77 tokens)."""

    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"index": torch.tensor([it["index"] for it in items]),
                                 "text": [it["text"] for it in items]}
        for key in ("pixel_values", "moments", "encoder_hidden_states", "conditioning_pixel_values"):
            if key in items[0]:
                batch[key] = torch.stack([it[key] for it in items])
        if "encoder_hidden_states" not in batch:
            batch["input_ids"] = tokenizer(batch["text"], padding="max_length", truncation=True,
                                           max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        return batch

    return collate


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over a module's config and exact weights (names, dtypes, bytes)."""
    h = hashlib.sha256()
    config = getattr(module, "config", None)
    h.update(json.dumps(dict(config) if config is not None and hasattr(config, "keys") else str(config),
                        sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dataset_fingerprint(root: Path, files: list[str], resolution: int) -> str:
    """SHA-256 over every image's name and bytes, the resolution and the transform version."""
    h = hashlib.sha256(f"v{TRANSFORM_VERSION}:{resolution}".encode())
    for name in files:
        h.update(name.encode())
        h.update(file_sha256(root / name).encode())
    return h.hexdigest()


def cache_dir() -> Path:
    return lapgen_home() / "cache" / "training"


@torch.no_grad()
def build_latent_cache(dataset: FramesTrainingSet | ClipsTrainingSet, vae, *, batch_size: int = 16,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, Path, bool]:
    """Moments (N, 2C, h, w) of every image of `dataset.cache_files()` under `vae`, loaded from or written to
    the cache.

    Returns (moments on CPU, cache file, whether it was reused).
    """
    files = dataset.cache_files()
    key = hashlib.sha256((dataset_fingerprint(dataset.root, files, dataset.resolution)
                          + module_fingerprint(vae)).encode()).hexdigest()[:32]
    path = cache_dir() / f"latents-{key}.safetensors"
    if path.exists():
        return load_file(path)["moments"], path, True
    chunks = []
    order = range(0, len(files), batch_size)
    for start in track(order, "encoding latents", total=len(order)):
        pixels = torch.stack([dataset.cache_image(i) for i in range(start, min(start + batch_size, len(files)))])
        dist = vae.encode(pixels.to(device, vae.dtype)).latent_dist
        chunks.append(dist.parameters.cpu())  # (b, 2C, h, w): mean and log-variance
    moments = torch.cat(chunks).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"moments": moments}, str(tmp), metadata={"images": str(len(files))})
    tmp.replace(path)
    return moments, path, False


@torch.no_grad()
def build_prompt_cache(prompts: list[str], tokenizer, text_encoder, *, batch_size: int = 64,
                       device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], Path, bool]:
    """Embeddings (77, D) of each distinct prompt under the frozen text encoder, cached on disk."""
    unique = sorted(set(prompts))
    h = hashlib.sha256(json.dumps(unique).encode())
    h.update(module_fingerprint(text_encoder).encode())
    h.update(json.dumps([tokenizer.model_max_length, len(tokenizer)]).encode())
    path = cache_dir() / f"prompts-{h.hexdigest()[:32]}.safetensors"
    if path.exists():
        table = load_file(path)["embeddings"]
        return dict(zip(unique, table)), path, True
    chunks = []
    for start in range(0, len(unique), batch_size):
        ids = tokenizer(unique[start:start + batch_size], padding="max_length", truncation=True,
                        max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        chunks.append(text_encoder(ids.to(device), return_dict=False)[0].cpu())
    table = torch.cat(chunks).contiguous()  # (P, 77, D)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"embeddings": table}, str(tmp))
    tmp.replace(path)
    return dict(zip(unique, table)), path, False


def attach_training_cache(stage, accelerator) -> dict[str, Any]:
    """Encode images (and, with a frozen text encoder, prompts) once; the main process writes the cache."""
    info: dict[str, Any] = {}
    cache_prompts = not getattr(stage, "text_encoder_trained", False)
    for turn in ("main", "others"):
        if accelerator.is_main_process == (turn == "main"):
            moments, path, reused = build_latent_cache(stage.dataset, stage.vae, device=accelerator.device)
            info["latents"] = {"file": str(path), "reused": reused}
            prompts = None
            if cache_prompts:
                prompts, ppath, preused = build_prompt_cache([r["text"] for r in stage.dataset.records],
                                                             stage.tokenizer, stage.text_encoder,
                                                             device=accelerator.device)
                info["prompts"] = {"file": str(ppath), "reused": preused}
            stage.dataset.attach_cache(moments, prompts)
        accelerator.wait_for_everyone()
    return info
