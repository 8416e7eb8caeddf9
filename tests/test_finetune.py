"""Stage 1 (`lapgen finetune`): end to end through the CLI, outputs loaded with diffusers' own classes, the
text encoder trained only on request, and one-line errors for bad input. Tiny SD, synthetic frames, CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _max_change(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_finetune_cli_writes_a_loadable_pipeline(frames_dir, tiny_sd_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))  # registering changes defaults: keep it local
    from diffusers import StableDiffusionPipeline

    from lapgen.registry import resolve

    out = tmp_path / "run"
    result = runner.invoke(app, [
        "finetune", "--data", str(frames_dir), "--base", str(tiny_sd_dir), "--out", str(out), "--name", "ft-cli",
        "--max-steps", "3", "--batch-size", "2", "--gradient-accumulation", "2", "--lr", "1e-4",
        "--checkpointing-steps", "1", "--checkpoints-total-limit", "2", "--ema", "--snr-gamma", "5",
        "--gradient-checkpointing", "--mixed-precision", "fp16", "--validation-prompts",
        "grasper retract gallbladder in preparation", "--validation-inference-steps", "2", "--device", "cpu",
        "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["steps"] == 3 and payload["registered"] == "ft-cli"
    assert "training in full precision (no) on CPU" in result.stderr  # fp16 fallback notice
    assert not (tmp_path / "run.partial").exists()
    # checkpoints: every step, limit 2 -> the last two, in diffusers format
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert (out / "checkpoint-3" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # diffusers pipeline layout (what upstream's tests check) and it generates
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "scheduler" / "scheduler_config.json").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    image = pipe("grasper in preparation", num_inference_steps=2, height=128, width=128,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (128, 128, 3) and np.isfinite(image).all()
    # text encoder untouched without --train-text-encoder; UNet changed
    base = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    assert _max_change(_weights(base.text_encoder), _weights(pipe.text_encoder)) == 0.0
    assert _max_change(_weights(base.unet), _weights(pipe.unet)) > 0.0
    # loss log (one line per optimiser step), plot, validation images, model card, provenance card
    rows = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["loss"] == pytest.approx(payload["final_loss"])
    assert Image.open(out / "loss.png").format == "PNG"
    val = sorted(out.glob("validation/epoch-*/00.png"))
    assert val and Image.open(val[-1]).size == (128, 128)
    readme = (out / "README.md").read_text()
    assert readme.startswith("---") and "base_model:" in readme and "lapgen" in readme
    # the usage snippet prompts with a training prompt (same template and phase spelling as the data)
    import re

    trained_on = {json.loads(x)["text"] for x in (frames_dir / "metadata.jsonl").read_text().splitlines()}
    assert re.search(r"pipe\('([^']*)'", readme).group(1) in trained_on
    card = __import__("yaml").safe_load((out / "lapgen.yaml").read_text())
    assert card["kind"] == "pipeline" and card["stage"] == "finetune" and card["training"]["steps"] == 3
    assert card["config"]["mixed_precision"] == "fp16" and card["training"]["mixed_precision"] == "no"
    assert card["inputs"]["records"] == 8
    entry = resolve("ft-cli", "pipeline")
    assert entry.path == out.resolve()


def test_train_text_encoder_changes_it(frames_dir, tiny_sd_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    from lapgen.models.finetune import finetune
    from lapgen.models.training import TrainConfig

    out = tmp_path / "te"
    finetune(TrainConfig(data=str(frames_dir), out=str(out), base=str(tiny_sd_dir), max_steps=2, batch_size=2,
                         learning_rate=1e-3, train_text_encoder=True, gradient_checkpointing=True, device="cpu"))
    base = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    tuned = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert _max_change(_weights(base.text_encoder), _weights(tuned.text_encoder)) > 0.0
    ckpt = out / "checkpoint-2"
    assert (ckpt / "text_encoder" / "config.json").is_file() and (ckpt / "unet" / "config.json").is_file()


def _fixed_loss(unet, vae, text_encoder, tokenizer, scheduler, images, prompts) -> float:
    """Denoising MSE on fixed latents (posterior means), noise and timesteps, computed with diffusers directly."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=g)
        t = torch.tensor([50, 250, 450, 650, 850, 950, 150, 350])[: len(images)]
        ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        pred = unet(scheduler.add_noise(latents, noise, t), t, text_encoder(ids)[0]).sample
    return float(torch.nn.functional.mse_loss(pred, noise))


def test_training_really_learns(frames_dir, tiny_sd_dir, tmp_path):
    """Overfit a small fixed set: the loss on fixed noise/timesteps drops clearly below its start."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from lapgen.data.frames import FramesDataset
    from lapgen.models.finetune import finetune
    from lapgen.models.training import TrainConfig

    out = tmp_path / "overfit"
    finetune(TrainConfig(data=str(frames_dir), out=str(out), base=str(tiny_sd_dir), max_steps=40, batch_size=4,
                         learning_rate=3e-3, checkpointing_steps=1000, device="cpu"))
    data = FramesDataset(frames_dir, "train", size=128)
    images = torch.stack([data[i]["pixel_values"] for i in range(len(data))])
    prompts = [data[i]["text"] for i in range(len(data))]
    base = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    tuned = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    sched = DDPMScheduler.from_config(base.scheduler.config)
    before = _fixed_loss(base.unet, base.vae, base.text_encoder, base.tokenizer, sched, images, prompts)
    after = _fixed_loss(tuned.unet, base.vae, base.text_encoder, base.tokenizer, sched, images, prompts)
    assert after < 0.7 * before, (before, after)
    losses = [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert np.mean(losses[-10:]) < np.mean(losses[:5])


def _cli_error(args) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lapgen: error: "), result.stderr
    return lines[0]


def test_finetune_bad_inputs_are_one_line_errors(frames_dir, tiny_sd_dir, tiny_controlnet_dir, tmp_path):
    common = ["--max-steps", "1", "--batch-size", "2", "--device", "cpu"]
    out = str(tmp_path / "x")
    msg = _cli_error(["finetune", "--data", str(frames_dir), "--base", str(tiny_sd_dir), "--out", out,
                      "--split", "val", *common])
    assert "no records" in msg
    msg = _cli_error(["finetune", "--data", str(frames_dir), "--base", str(tiny_controlnet_dir), "--out", out,
                      *common])
    assert "ControlNet, not a diffusion pipeline" in msg
    msg = _cli_error(["finetune", "--data", str(frames_dir), "--base", str(frames_dir), "--out", out, *common])
    assert "not a model" in msg
    (tmp_path / "empty").mkdir()
    msg = _cli_error(["finetune", "--data", str(frames_dir), "--base", str(tmp_path / "empty"), "--out", out,
                      *common])
    assert "not a Stable Diffusion pipeline folder (no model_index.json)" in msg
    msg = _cli_error(["finetune", "--data", str(tmp_path / "nowhere"), "--base", str(tiny_sd_dir), "--out", out,
                      *common])
    assert "not found" in msg
    msg = _cli_error(["finetune", "--data", str(frames_dir), "--base", str(tiny_sd_dir), "--out", out,
                      "--resolution", "100", *common])
    assert "multiple of 8" in msg
    msg = _cli_error(["finetune", "--data", str(frames_dir), "--base", str(tiny_sd_dir), "--out", out,
                      "--resume", str(tmp_path), *common])
    assert "checkpoint" in msg
    (tmp_path / "exists").mkdir()
    msg = _cli_error(["finetune", "--data", str(frames_dir), "--base", str(tiny_sd_dir), "--out",
                      str(tmp_path / "exists"), *common])
    assert "already exists" in msg
    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rat: 1.0\n")
    msg = _cli_error(["finetune", "--config", str(recipe), "--data", str(frames_dir), "--out", out])
    assert "unknown recipe keys: learning_rat" in msg
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_errors_known_before_training_cost_no_training_and_leave_no_output(frames_dir, tiny_sd_dir, tmp_path):
    """A bad --name, an uncached hub base (offline) and a base whose weights cannot be loaded stop the command
    with one line before any optimiser step, and leave neither RUN nor RUN.partial."""
    import shutil

    common = ["--data", str(frames_dir), "--max-steps", "1", "--batch-size", "2", "--device", "cpu"]
    out = tmp_path / "x"
    for name, why in (("sd15", "is a built-in model name"), ("a/b", "invalid model name")):
        msg = _cli_error(["finetune", *common, "--base", str(tiny_sd_dir), "--out", str(out), "--name", name])
        assert why in msg
        assert not out.exists() and not (tmp_path / "x.partial").exists()
    msg = _cli_error(["finetune", *common, "--base", "hf:nobody-lapgen/not-cached", "--out", str(out)])
    assert "not on this machine and HF_HUB_OFFLINE is set" in msg and "lapgen models add" in msg
    assert not out.exists() and not (tmp_path / "x.partial").exists()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_dir, broken)
    shutil.rmtree(broken / "unet")
    msg = _cli_error(["finetune", *common, "--base", str(broken), "--out", str(out)])
    assert "broken" in msg and "unet" in msg  # found while loading, after the staging folder was made
    assert not out.exists() and not (tmp_path / "x.partial").exists()
