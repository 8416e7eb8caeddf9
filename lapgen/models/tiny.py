"""Tiny, seeded, SD-1.5-shaped models built from configs, with no download.

The `tiny-sd` registry entry, the tests and the demo use these. They keep the geometry of Stable Diffusion
1.5 (a VAE with downsampling factor 8, so 128 px images give 16x16x4 latents; a CLIP text encoder over the
full 49,408-token vocabulary padded to 77 tokens; a DDIM scheduler with SD's beta schedule) with tiny
channel widths, so CPU tests can run full denoising loops at 128 px.

The CLIP tokenizer is built offline from the BPE merges open_clip ships (`bpe_simple_vocab_16e6.txt.gz`),
in the same order as open_clip's `SimpleTokenizer`, so its ids equal open_clip's up to the first
end-of-text token. The component configs are adapted from diffusers' ControlNet pipeline fast tests
(`huggingface/diffusers, tests/pipelines/controlnet/test_controlnet.py`), with a 4-level VAE.

Heavy libraries (torch, diffusers, transformers, open_clip) are imported inside the functions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lapgen.outputs import lapgen_home

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import ControlNetModel, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTokenizer

TINY_RESOLUTION = 128  # px; latents are TINY_RESOLUTION // 8 = 16
CLIP_VOCAB_SIZE = 49408  # 256 bytes + 256 bytes</w> + 48,894 merges + 2 special tokens
CLIP_BOS_ID, CLIP_EOS_ID = 49406, 49407
CLIP_MAX_LENGTH = 77

# UNet2DConditionModel: 2 levels, 26.7k parameters; sample_size is in latent pixels (16 -> 128 px).
TINY_UNET_CONFIG: dict[str, Any] = {
    "block_out_channels": (4, 8),
    "layers_per_block": 2,
    "sample_size": TINY_RESOLUTION // 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "norm_num_groups": 1,
}

# AutoencoderKL: 4 levels -> factor 2**3 = 8 as in SD 1.5 (128 px -> 16x16 latents).
TINY_VAE_CONFIG: dict[str, Any] = {
    "block_out_channels": (8, 8, 8, 8),
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "norm_num_groups": 2,
    "layers_per_block": 1,
    "sample_size": TINY_RESOLUTION,
}

# CLIPTextModel: hidden 32 over SD's full vocabulary and context length; 1.62M parameters.
TINY_TEXT_CONFIG: dict[str, Any] = {
    "bos_token_id": CLIP_BOS_ID,
    "eos_token_id": CLIP_EOS_ID,
    "pad_token_id": CLIP_EOS_ID,
    "hidden_size": 32,
    "intermediate_size": 37,
    "layer_norm_eps": 1e-5,
    "num_attention_heads": 4,
    "num_hidden_layers": 5,
    "vocab_size": CLIP_VOCAB_SIZE,
    "max_position_embeddings": CLIP_MAX_LENGTH,
}

# DDIMScheduler with SD 1.5's training schedule.
TINY_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

# ControlNetModel.from_unet: the conditioning embedder downsamples by 2**(4-1) = 8 = the VAE factor.
TINY_CONTROLNET_KWARGS: dict[str, Any] = {"conditioning_embedding_out_channels": (8, 8, 16, 16)}


# --------------------------------------------------------------------------------------------------
# Offline CLIP tokenizer


def _bpe_path() -> Path:
    from open_clip.tokenizer import default_bpe

    return Path(default_bpe())


def clip_vocab_and_merges(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[str]]:
    """The CLIP BPE vocabulary (token -> id) and merge list, in open_clip's `SimpleTokenizer` order."""
    from open_clip.tokenizer import bytes_to_unicode

    lines = gzip.open(bpe_path or _bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # line 0 is a header; 48,894 merges
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:  # would mean open_clip changed its bundled file
        raise RuntimeError(f"CLIP BPE vocabulary has {len(vocab)} entries, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def _tokenizer_cache_dir() -> Path:
    bpe = _bpe_path()
    digest = hashlib.sha256(bpe.read_bytes()).hexdigest()[:12]
    return lapgen_home() / "tokenizers" / f"clip-bpe-{digest}"


def offline_clip_tokenizer(cache_dir: str | Path | None = None) -> "CLIPTokenizer":
    """A `CLIPTokenizer` (model_max_length=77) built from open_clip's bundled BPE, without a download.

    The saved tokenizer folder is cached (default `$LAPGEN_HOME/tokenizers/clip-bpe-<hash>/`), so it is
    built once per machine; later calls load it with `from_pretrained`.
    """
    from transformers import CLIPTokenizer

    folder = Path(cache_dir) if cache_dir is not None else _tokenizer_cache_dir()
    if (folder / "tokenizer_config.json").exists():
        try:
            return CLIPTokenizer.from_pretrained(folder, model_max_length=CLIP_MAX_LENGTH)
        except Exception:  # a corrupt cache is rebuilt below
            pass
    vocab, merges = clip_vocab_and_merges()
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    (stage / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (stage / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(
        vocab=str(stage / "vocab.json"), merges=str(stage / "merges.txt"), model_max_length=CLIP_MAX_LENGTH
    )
    tok.save_pretrained(stage)
    # Publish atomically; another process may have won the race, which is fine (same content).
    try:
        if folder.exists():
            shutil.rmtree(folder)
        stage.rename(folder)
    except OSError:
        shutil.rmtree(stage, ignore_errors=True)
    return tok


# --------------------------------------------------------------------------------------------------
# Tiny diffusion components


def build_tiny_unet(seed: int = 0) -> "UNet2DConditionModel":
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**TINY_UNET_CONFIG)


def build_tiny_sd_pipeline(seed: int = 0) -> "StableDiffusionPipeline":
    """A randomly initialised SD-1.5-shaped `StableDiffusionPipeline` (safety checker off), seeded.

    Each component is built after `torch.manual_seed(seed + k)`, so the same seed gives the same weights
    regardless of what ran before.
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = build_tiny_unet(seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG))
    scheduler = DDIMScheduler(**TINY_SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=offline_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_controlnet(unet: "UNet2DConditionModel", seed: int = 0) -> "ControlNetModel":
    """`ControlNetModel.from_unet(unet)` with a conditioning embedder matching the factor-8 VAE, seeded.

    The encoder copies `unet`'s weights (ControlNet, Zhang et al. 2023); the conditioning embedder is
    random (seeded) and the zero convolutions start at zero.
    """
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed + 3)
    return ControlNetModel.from_unet(unet, **TINY_CONTROLNET_KWARGS)


def _save_atomically(path: Path, save) -> Path:
    if path.exists() and any(path.iterdir()):
        from lapgen.errors import LapgenError

        raise LapgenError("folder exists and is not a complete tiny model", path=path,
                          hint="choose an empty or new folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.with_name(f".{path.name}.tmp{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    save(stage)
    try:
        if path.exists() and not any(path.iterdir()):
            path.rmdir()
        stage.rename(path)
    except OSError:  # another process materialised it first
        shutil.rmtree(stage, ignore_errors=True)
    return path


def materialize_tiny_sd(path: str | Path | None = None, seed: int = 0) -> Path:
    """Save the tiny pipeline as a normal diffusers folder (model_index.json + safetensors) and a card.

    Default location `$LAPGEN_HOME/models/tiny-sd-seed<seed>/`. An existing complete folder is reused.
    Returns the folder, which `StableDiffusionPipeline.from_pretrained` loads.
    """
    from lapgen.cards import make_card, write_card

    path = Path(path) if path is not None else lapgen_home() / "models" / f"tiny-sd-seed{seed}"
    if (path / "model_index.json").exists() and (path / "unet").is_dir():
        return path

    def save(stage: Path) -> None:
        pipe = build_tiny_sd_pipeline(seed)
        pipe.save_pretrained(stage, safe_serialization=True)
        write_card(stage, make_card("pipeline", name="tiny-sd", parent=None, seed=seed,
                                    description="tiny randomly initialised SD-1.5-shaped pipeline",
                                    resolution=TINY_RESOLUTION))

    return _save_atomically(path, save)


def materialize_tiny_controlnet(path: str | Path | None = None, seed: int = 0) -> Path:
    """Save a tiny ControlNet (from the tiny pipeline's UNet) as a diffusers folder with a card."""
    from lapgen.cards import make_card, write_card

    path = Path(path) if path is not None else lapgen_home() / "models" / f"tiny-controlnet-seed{seed}"
    if (path / "config.json").exists():
        return path

    def save(stage: Path) -> None:
        controlnet = build_tiny_controlnet(build_tiny_unet(seed), seed)
        controlnet.save_pretrained(stage, safe_serialization=True)
        write_card(stage, make_card("controlnet", name="tiny-controlnet", parent="tiny-sd", seed=seed,
                                    resolution=TINY_RESOLUTION))

    return _save_atomically(path, save)
