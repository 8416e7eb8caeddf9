"""Stage 2 (`lapgen train-controlnet`): a ControlNet over the frozen Stage-1 pipeline, loaded back with
diffusers' own classes; masks resized nearest-neighbour only; one-line errors for bad datasets and bases."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_controlnet_cli(controlnet_frames_dir, tiny_sd_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))  # registering changes defaults: keep it local
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    from lapgen.registry import resolve

    out = tmp_path / "cn"
    result = runner.invoke(app, [
        "train-controlnet", "--data", str(controlnet_frames_dir), "--base", str(tiny_sd_dir), "--out", str(out),
        "--name", "cn-cli", "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--cache-latents",
        "--checkpointing-steps", "1", "--checkpoints-total-limit", "1", "--ema",
        "--validation-prompts", "grasper retract gallbladder in preparation",
        "--validation-inference-steps", "2", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["registered"] == "cn-cli"
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-2"]
    assert (out / "checkpoint-2" / "controlnet" / "config.json").is_file()
    controlnet = ControlNetModel.from_pretrained(out)
    # trained: the zero convolutions of from_unet are no longer all zero
    assert any(p.detach().abs().max().item() > 0 for n, p in controlnet.named_parameters() if "controlnet_down_blocks" in n)
    base = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=controlnet)
    mask = Image.open(controlnet_frames_dir / "masks" / "VID01" / "000000.png").convert("RGB")
    image = pipe("grasper in preparation", mask, num_inference_steps=2, height=128, width=128,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (128, 128, 3) and np.isfinite(image).all()
    # validation image: mask | output side by side; the left half is the (binary) training mask
    val = Image.open(sorted(out.glob("validation/epoch-*/00.png"))[-1])
    assert val.size == (256, 128)
    left = np.asarray(val)[:, :128, 0]
    first = json.loads((controlnet_frames_dir / "metadata.jsonl").read_text().splitlines()[0])
    truth = np.asarray(Image.open(controlnet_frames_dir / first["conditioning_image_file_name"]))
    assert set(np.unique(left)) <= {0, 255} and np.array_equal(left > 127, truth > 127)
    card = __import__("yaml").safe_load((out / "lapgen.yaml").read_text())
    assert card["kind"] == "controlnet" and card["parent"] == str(tiny_sd_dir.resolve())
    assert resolve("cn-cli", "controlnet").path == out.resolve()
    assert "controlnet" in (out / "README.md").read_text()


def test_masks_are_resized_nearest_only(controlnet_frames_dir):
    from lapgen.models.latent_cache import FramesTrainingSet, read_training_records

    records = read_training_records(controlnet_frames_dir, "train", with_masks=True)
    data = FramesTrainingSet(controlnet_frames_dir, records, 40, with_masks=True)
    cond = torch.stack([data[i]["conditioning_pixel_values"] for i in range(len(data))])
    assert cond.shape == (8, 3, 40, 40)
    assert set(torch.unique(cond).tolist()) == {0.0, 1.0}  # categorical: no interpolated values


def _error(args) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lapgen: error: "), result.stderr
    return lines[0]


def test_train_controlnet_bad_inputs(frames_dir, controlnet_frames_dir, tiny_sd_dir, tiny_controlnet_dir, tmp_path):
    common = ["--max-steps", "1", "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / "o")]
    msg = _error(["train-controlnet", "--data", str(frames_dir), "--base", str(tiny_sd_dir), *common])
    assert "not a ControlNet dataset" in msg and "segment annotate" in msg
    msg = _error(["train-controlnet", "--data", str(controlnet_frames_dir), "--base", str(tiny_controlnet_dir),
                  *common])
    assert "not a diffusion pipeline" in msg
    msg = _error(["train-controlnet", "--data", str(controlnet_frames_dir), "--base", str(tiny_sd_dir),
                  "--split", "val", *common])
    assert "no records" in msg
    # a mask of the wrong size
    bad = tmp_path / "bad"
    shutil.copytree(controlnet_frames_dir, bad)
    first = json.loads((bad / "metadata.jsonl").read_text().splitlines()[0])
    Image.new("L", (64, 64)).save(bad / first["conditioning_image_file_name"])
    msg = _error(["train-controlnet", "--data", str(bad), "--base", str(tiny_sd_dir), *common])
    assert "is 64x64 but its image" in msg
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_controlnet_resume_is_exact(controlnet_frames_dir, tiny_sd_dir, tmp_path):
    """The shared core's exact resume holds for Stage 2 too (checkpoints hold `controlnet/`)."""
    from diffusers import ControlNetModel

    from lapgen.models.controlnet import train_controlnet
    from lapgen.models.training import TrainConfig

    def config(out, **kw):
        return TrainConfig(data=str(controlnet_frames_dir), out=str(out), base=str(tiny_sd_dir), max_steps=3,
                           batch_size=2, learning_rate=1e-3, checkpointing_steps=1, device="cpu", **kw)

    train_controlnet(config(tmp_path / "straight"))
    train_controlnet(config(tmp_path / "resumed", resume=str(tmp_path / "straight" / "checkpoint-1")))
    a = ControlNetModel.from_pretrained(tmp_path / "straight").state_dict()
    b = ControlNetModel.from_pretrained(tmp_path / "resumed").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_base_defaults_to_the_last_trained_pipeline(controlnet_frames_dir, tiny_sd_dir, tmp_path, monkeypatch):
    from lapgen.models.controlnet import ControlNetStage
    from lapgen.models.training import TrainConfig
    from lapgen.registry import register_artifact

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    register_artifact("stage1", "pipeline", tiny_sd_dir)
    stage = ControlNetStage(TrainConfig(data=str(controlnet_frames_dir), out=str(tmp_path / "o"), base=None))
    assert stage.entry.name == "stage1" and stage.entry.path == tiny_sd_dir.resolve()


def test_conditioning_embedder_matches_the_vae_factor():
    from lapgen.errors import LapgenError
    from lapgen.models.controlnet import conditioning_channels

    assert conditioning_channels(8) == (16, 32, 96, 256)  # diffusers' default: SD 1.5
    assert conditioning_channels(4) == (16, 32, 96)
    assert conditioning_channels(2) == (16, 32)
    assert conditioning_channels(1) == (16,)
    for bad in (3, 16, 0):
        with pytest.raises(LapgenError, match="VAE factor"):
            conditioning_channels(bad)


def test_train_controlnet_over_a_factor_4_pipeline(controlnet_frames_dir, tmp_path):
    """A pipeline whose VAE downsamples by 4 (the demo's) gets a ControlNet whose mask embedder lands on its
    32x32 latent grid; the trained net drives diffusers' own ControlNet pipeline at 128 px."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    from lapgen.demo.assets import materialize_demo_base
    from lapgen.models.controlnet import train_controlnet
    from lapgen.models.training import TrainConfig

    base = materialize_demo_base(tmp_path / "base", seed=0, unet_channels=(8, 16, 16), vae_levels=3)
    train_controlnet(TrainConfig(data=str(controlnet_frames_dir), out=str(tmp_path / "cn"), base=str(base),
                                 max_steps=1, batch_size=2, learning_rate=1e-3, device="cpu"))
    controlnet = ControlNetModel.from_pretrained(tmp_path / "cn")
    assert tuple(controlnet.config.conditioning_embedding_out_channels) == (16, 32, 96)
    pipe = StableDiffusionControlNetPipeline(**StableDiffusionPipeline.from_pretrained(base).components,
                                             controlnet=controlnet)
    mask = Image.open(controlnet_frames_dir / "masks" / "VID01" / "000000.png").convert("RGB")
    image = pipe("grasper in preparation", mask, num_inference_steps=2, height=128, width=128,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (128, 128, 3) and np.isfinite(image).all()
