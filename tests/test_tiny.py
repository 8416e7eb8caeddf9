"""Tiny offline models: tokenizer = open_clip's, seeded weights, SD geometry, save/load round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lapgen.data import vocab
from lapgen.data.prompts import cholec80_prompt, triplet_prompt
from lapgen.models import tiny


def _surgical_prompts() -> list[str]:
    prompts = [triplet_prompt([t], phase) for t, phase in zip(range(0, 100, 3), [i % 7 for i in range(100)])]
    prompts.append(triplet_prompt([82, 19, 60], 5))
    prompts += [cholec80_prompt(flags, phase) for flags, phase in
                zip(([1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 1, 1], [0] * 7), vocab.CHOLEC80_PHASES)]
    prompts += ["", "Grasper, Hook & Clipper!", "bipolar\tcoagulate  cystic_plate 12 mm", "café résumé",
                "grasper retract gallbladder " * 20]  # the last one is longer than 77 tokens
    return prompts


def test_tokenizer_ids_equal_open_clip_up_to_first_eot(clip_tokenizer):
    import open_clip

    reference = open_clip.get_tokenizer("ViT-L-14")
    prompts = _surgical_prompts()
    ours = clip_tokenizer(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = reference(prompts).tolist()
    for text, a, b in zip(prompts, ours, theirs):
        assert len(a) == len(b) == 77
        end = b.index(tiny.CLIP_EOS_ID)
        assert a[: end + 1] == b[: end + 1], text
        assert set(a[end + 1:]) <= {tiny.CLIP_EOS_ID}  # HF pads with <|endoftext|> (as SD 1.5 does)


def test_tokenizer_properties_and_cache(clip_tokenizer):
    assert clip_tokenizer.model_max_length == 77
    assert len(clip_tokenizer) == tiny.CLIP_VOCAB_SIZE
    assert clip_tokenizer.bos_token_id == tiny.CLIP_BOS_ID and clip_tokenizer.eos_token_id == tiny.CLIP_EOS_ID
    folder = tiny._tokenizer_cache_dir()
    assert (folder / "tokenizer_config.json").exists()  # built once, cached under $LAPGEN_HOME
    again = tiny.offline_clip_tokenizer()
    assert again("hook dissect gallbladder").input_ids == clip_tokenizer("hook dissect gallbladder").input_ids


def test_tokenizer_explicit_cache_dir(tmp_path, clip_tokenizer):
    tok = tiny.offline_clip_tokenizer(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer_config.json").exists()
    text = "clipper clip cystic_artery"
    assert tok(text).input_ids == clip_tokenizer(text).input_ids


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_same_seed_same_weights_other_seed_differs(tiny_sd_pipeline):
    torch.manual_seed(1234)  # global RNG state must not matter
    again = tiny.build_tiny_sd_pipeline(seed=0)
    for name in ("unet", "vae", "text_encoder"):
        a, b = _state(getattr(tiny_sd_pipeline, name)), _state(getattr(again, name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    other = tiny.build_tiny_sd_pipeline(seed=1)
    a, b = _state(tiny_sd_pipeline.unet), _state(other.unet)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_sd_geometry(tiny_sd_pipeline):
    pipe = tiny_sd_pipeline
    assert pipe.vae_scale_factor == 8
    assert pipe.safety_checker is None
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    with torch.no_grad():
        latents = pipe.vae.encode(torch.zeros(1, 3, 128, 128)).latent_dist.mean
        ids = pipe.tokenizer(["grasper"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        hidden = pipe.text_encoder(ids)[0]
    assert latents.shape == (1, 4, 16, 16)
    assert hidden.shape == (1, 77, pipe.unet.config.cross_attention_dim)
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    assert n_unet < 100_000  # tiny: one step at 128 px costs milliseconds on CPU


def _generate(pipe, **kwargs) -> np.ndarray:
    return pipe("grasper retract gallbladder in preparation", num_inference_steps=2, guidance_scale=7.5,
                generator=torch.Generator("cpu").manual_seed(0), output_type="np", **kwargs).images


def test_save_load_round_trip_generates_128px(tiny_sd_dir, tiny_sd_pipeline):
    from diffusers import StableDiffusionPipeline

    assert (tiny_sd_dir / "model_index.json").exists()
    assert (tiny_sd_dir / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert (tiny_sd_dir / "vae" / "diffusion_pytorch_model.safetensors").exists()
    assert (tiny_sd_dir / "scheduler" / "scheduler_config.json").exists()
    assert (tiny_sd_dir / "lapgen.yaml").exists()
    assert not list(tiny_sd_dir.rglob("*.bin"))  # safetensors only
    index = json.loads((tiny_sd_dir / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None]

    loaded = StableDiffusionPipeline.from_pretrained(tiny_sd_dir)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.tokenizer.model_max_length == 77
    image = _generate(loaded)
    assert image.shape == (1, 128, 128, 3)
    np.testing.assert_allclose(image, _generate(tiny_sd_pipeline), atol=1e-6)


def test_materialize_reuses_complete_folder(tiny_sd_dir):
    before = (tiny_sd_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert tiny.materialize_tiny_sd(tiny_sd_dir) == tiny_sd_dir
    assert (tiny_sd_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    assert not list(tiny_sd_dir.parent.glob(".tiny-sd.tmp*"))


def test_controlnet_round_trip_and_zero_init(tiny_controlnet_dir, tiny_sd_pipeline):
    """A fresh ControlNet's zero convolutions add nothing (Zhang et al. 2023): same image as plain SD."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    controlnet = ControlNetModel.from_pretrained(tiny_controlnet_dir)
    assert tuple(controlnet.config.conditioning_embedding_out_channels) == (8, 8, 16, 16)
    again = tiny.build_tiny_controlnet(tiny.build_tiny_unet(0), seed=0)
    a, b = _state(controlnet), _state(again)
    assert all(torch.equal(a[k], b[k]) for k in a)

    pipe = StableDiffusionControlNetPipeline(**tiny_sd_pipeline.components, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    mask = np.zeros((128, 128, 3), np.uint8)
    mask[32:96, 40:100] = 255
    from PIL import Image

    image = _generate(pipe, image=Image.fromarray(mask))
    assert image.shape == (1, 128, 128, 3)
    np.testing.assert_allclose(image, _generate(tiny_sd_pipeline), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 7])
def test_controlnet_seed_changes_only_conditioning_embedder(seed):
    unet = tiny.build_tiny_unet(0)
    a = _state(tiny.build_tiny_controlnet(unet, seed=seed))
    b = _state(tiny.build_tiny_controlnet(unet, seed=seed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["conv_in.weight"], unet.conv_in.weight)  # encoder copied from the UNet


def test_materialize_refuses_a_foreign_folder(tmp_path):
    from lapgen.errors import LapgenError

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(LapgenError, match="not a complete tiny model"):
        tiny.materialize_tiny_sd(tmp_path / "x")
