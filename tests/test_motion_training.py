"""`lapgen train-motion`: an AnimateDiff motion module trained on synthetic clips of a moving tool over the
frozen tiny Stage-1 UNet, through the shared core (exact resume, also after kill -9; the latent cache), its
result read by diffusers' own AnimateDiff pipelines, and one-line errors for bad input. Tiny models, CPU."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.errors import LapgenError
from lapgen.models.training import TrainConfig, list_checkpoints

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Interrupt(KeyboardInterrupt):
    pass


def _config(clip_dir, tiny_sd_dir, out, **kw) -> TrainConfig:
    base = dict(data=str(clip_dir), out=str(out), base=str(tiny_sd_dir), resolution=64, batch_size=4,
                learning_rate=1e-3, max_steps=4, checkpointing_steps=2, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _adapter_state(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def _fixed_loss(stage) -> float:
    """The denoising loss of every clip under six fixed (noise, timestep) draws: comparable across weights."""
    from lapgen.models.latent_cache import make_collate

    batch = make_collate(stage.tokenizer)([stage.dataset[i] for i in range(len(stage.dataset))])
    with torch.no_grad():
        return float(np.mean([stage.loss(batch, torch.Generator().manual_seed(100 + s)).item() for s in range(6)]))


def _stage(clip_dir, tiny_sd_dir, tmp_path, **kw):
    from lapgen.models.motion import MotionStage

    stage = MotionStage(_config(clip_dir, tiny_sd_dir, tmp_path / "unused", **kw))
    stage.load(torch.device("cpu"), torch.float32)
    return stage


def test_a_new_adapter_starts_as_the_image_model(tiny_sd_pipeline):
    """Zeroed output projections (AnimateDiff's zero_initialize): the motion UNet is the image UNet per frame."""
    from lapgen.models.motion import motion_unet, new_adapter

    unet = tiny_sd_pipeline.unet
    model = motion_unet(unet, new_adapter(dict(unet.config), 32))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 16, 16, generator=g)  # (B, C, F, h, w)
    ehs = torch.randn(2, 77, 32, generator=g)
    t = torch.tensor([10, 700])
    with torch.no_grad():
        video = model(x, t, ehs.repeat_interleave(5, dim=0)).sample
        frames = unet(x.permute(0, 2, 1, 3, 4).flatten(0, 1), t.repeat_interleave(5),
                      ehs.repeat_interleave(5, dim=0)).sample
    torch.testing.assert_close(video, frames.unflatten(0, (2, 5)).permute(0, 2, 1, 3, 4), rtol=1e-5, atol=1e-5)
    assert sum(p.requires_grad for p in model.parameters()) and all(
        ("motion_modules" in n) == p.requires_grad for n, p in model.named_parameters())


def test_loss_falls_on_clips_of_a_moving_tool(clip_dir, tiny_sd_dir, tmp_path, monkeypatch):
    """40 steps on 8 clips: the loss on fixed noise draws falls; the run is a registered MotionAdapter folder."""
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    from diffusers import MotionAdapter

    from lapgen.models.motion import train_motion
    from lapgen.registry import default_for, resolve

    before = _fixed_loss(_stage(clip_dir, tiny_sd_dir, tmp_path))
    run = tmp_path / "run"
    result = train_motion(_config(clip_dir, tiny_sd_dir, run, max_steps=40, checkpointing_steps=100,
                                  name="motion-test"))
    after = _fixed_loss(_stage(clip_dir, tiny_sd_dir, tmp_path, adapter_init=str(run)))
    assert after < before - 0.02, (before, after)
    assert result.steps == 40 and result.registered == "motion-test"
    assert resolve("motion-test").kind == "motion-adapter" and default_for("motion-adapter") == "motion-test"
    adapter = MotionAdapter.from_pretrained(run)
    assert adapter.config.block_out_channels == [4, 8] and adapter.config.motion_max_seq_length == 32
    card = __import__("yaml").safe_load((run / "lapgen.yaml").read_text())
    assert card["kind"] == "motion-adapter" and card["clip_frames"] == 8 and card["trained"] == ["motion_modules"]
    assert (run / "README.md").is_file() and (run / "loss.png").is_file()


def test_resume_is_exact(clip_dir, tiny_sd_dir, tmp_path):
    """4 steps straight == 2 steps, interruption, resume, 2 more (EMA, Min-SNR, latent cache, mid-epoch)."""
    from lapgen.models.motion import train_motion

    kw = dict(ema=True, ema_decay=0.9, snr_gamma=5.0, cache_latents=True, batch_size=2)
    train_motion(_config(clip_dir, tiny_sd_dir, tmp_path / "straight", **kw))

    def stop_after_two(step, loss):
        if step == 2:
            raise Interrupt()

    with pytest.raises(Interrupt):
        train_motion(_config(clip_dir, tiny_sd_dir, tmp_path / "resumed", **kw), on_step_end=stop_after_two)
    checkpoint = tmp_path / "resumed.partial" / "checkpoint-2"
    assert [p.name for p in list_checkpoints(tmp_path / "resumed.partial")] == ["checkpoint-2"]
    assert (checkpoint / "motion_adapter" / "config.json").is_file()  # only the motion modules are saved
    assert not (checkpoint / "unet").exists()
    train_motion(_config(clip_dir, tiny_sd_dir, tmp_path / "resumed", resume="latest", **kw))
    a, b = _adapter_state(tmp_path / "straight"), _adapter_state(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    logs = [[json.loads(x)["loss"] for x in (tmp_path / r / "loss.jsonl").read_text().splitlines()]
            for r in ("straight", "resumed")]
    assert len(logs[1]) == 4 and logs[0] == pytest.approx(logs[1], abs=1e-6)
    proj = [k for k in a if k.endswith("proj_out.weight")]
    assert proj and max(float(a[k].abs().max()) for k in proj) > 0  # trained away from the zero start


def test_cached_latents_give_the_same_loss(clip_dir, tiny_sd_dir, tmp_path):
    from lapgen.models.latent_cache import build_latent_cache, build_prompt_cache, make_collate

    stage = _stage(clip_dir, tiny_sd_dir, tmp_path)
    collate = make_collate(stage.tokenizer)
    plain = collate([stage.dataset[i] for i in (3, 0)])
    assert plain["pixel_values"].shape == (2, 8, 3, 64, 64)
    loss_plain = stage.loss(plain, torch.Generator().manual_seed(7))
    moments, _, _ = build_latent_cache(stage.dataset, stage.vae)
    prompts, _, _ = build_prompt_cache([r["text"] for r in stage.records], stage.tokenizer, stage.text_encoder)
    assert moments.shape == (8 * 8, 8, 8, 8)  # every frame of every clip: (N*F, 2C, h, w)
    stage.dataset.attach_cache(moments, prompts)
    cached = collate([stage.dataset[i] for i in (3, 0)])
    assert cached["moments"].shape == (2, 8, 8, 8, 8) and "pixel_values" not in cached
    torch.testing.assert_close(stage.loss(cached, torch.Generator().manual_seed(7)), loss_plain, rtol=1e-5,
                               atol=1e-6)


def test_the_written_adapter_runs_in_diffusers_pipelines(clip_dir, tiny_sd_dir, tiny_controlnet_dir, tmp_path):
    """The result folder is a MotionAdapter for diffusers' own AnimateDiffPipeline and
    AnimateDiffControlNetPipeline, and its trained temporal layers change what they generate."""
    from diffusers import (AnimateDiffControlNetPipeline, AnimateDiffPipeline, ControlNetModel, DDIMScheduler,
                           MotionAdapter, StableDiffusionPipeline)

    from lapgen.models.motion import new_adapter, train_motion
    from tests.fixtures.video import wake_zero_convs

    train_motion(_config(clip_dir, tiny_sd_dir, tmp_path / "run", max_steps=3, learning_rate=3e-2))
    adapter = MotionAdapter.from_pretrained(tmp_path / "run")
    sd = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None, requires_safety_checker=False)
    parts = dict(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer,
                 scheduler=DDIMScheduler.from_config(sd.scheduler.config))

    def frames(adapter_) -> np.ndarray:
        pipe = AnimateDiffPipeline(unet=sd.unet, motion_adapter=adapter_, **parts)
        pipe.set_progress_bar_config(disable=True)
        return pipe("grasper retract gallbladder", num_frames=6, height=64, width=64, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(0), output_type="np").frames[0]

    video = frames(adapter)
    assert video.shape == (6, 64, 64, 3) and np.isfinite(video).all()
    identity = frames(new_adapter(dict(sd.unet.config), 32))  # the untrained start: the image model per frame
    assert np.abs(video - identity).max() > 1e-4

    controlnet = ControlNetModel.from_pretrained(tiny_controlnet_dir)
    wake_zero_convs(controlnet)
    pipe = AnimateDiffControlNetPipeline(unet=sd.unet, motion_adapter=adapter, controlnet=controlnet, **parts)
    pipe.set_progress_bar_config(disable=True)
    masks = [torch.zeros(3, 64, 64) for _ in range(5)]
    for i, m in enumerate(masks):
        m[:, 10:30, 5 + 6 * i:25 + 6 * i] = 1
    out = pipe("grasper retract gallbladder", num_frames=5, height=64, width=64, conditioning_frames=masks,
               num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    assert out.shape == (5, 64, 64, 3) and np.isfinite(out).all()


def _error(args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lapgen: error: "), result.stderr
    return lines[0]


def test_bad_input_is_one_line(clip_dir, frames_dir, tiny_sd_dir, tmp_path):
    from lapgen.models.motion import new_adapter

    out = tmp_path / "o"
    common = ["--base", tiny_sd_dir, "--max-steps", 1, "--batch-size", 2, "--resolution", 64, "--device", "cpu",
              "--out", out]
    # clips of mixed lengths: one clip claims 4 of its 8 frames
    mixed = tmp_path / "mixed"
    shutil.copytree(clip_dir, mixed)
    lines = (mixed / "metadata.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec.update(num_frames=4, source_frames=rec["source_frames"][:4], labels=rec["labels"][:4])
    (mixed / "metadata.jsonl").write_text("\n".join([lines[0], json.dumps(rec), *lines[2:]]) + "\n")
    msg = _error(["train-motion", "--data", mixed, *common])
    assert "clips of mixed lengths (4, 8 frames" in msg and str(mixed / "metadata.jsonl") in msg
    # an adapter whose block layout does not match the base UNet (widths 8, 16 instead of 4, 8)
    wide = tmp_path / "wide-adapter"
    new_adapter({"block_out_channels": (8, 16), "layers_per_block": 2, "norm_num_groups": 1}, 32).save_pretrained(wide)
    msg = _error(["train-motion", "--data", clip_dir, "--adapter-init", wide, *common])
    assert "does not fit the base pipeline" in msg and "block widths [8, 16] differ" in msg
    # a frames dataset is not a clip dataset
    msg = _error(["train-motion", "--data", frames_dir, *common])
    assert "missing key `clip`" in msg and "frames dataset" in msg
    # the public adapter is a hub download: offline, one line naming it (never a silent download)
    msg = _error(["train-motion", "--data", clip_dir, "--adapter-init", "animatediff-v1-5-2", *common])
    assert "animatediff-v1-5-2" in msg and "HF_HUB_OFFLINE" in msg
    msg = _error(["train-motion", "--data", clip_dir, "--adapter-max-frames", 4, *common])
    assert "clips of 8 frames exceed --adapter-max-frames 4" in msg
    recipe = tmp_path / "stage1-knobs.yaml"
    recipe.write_text("train_text_encoder: true\n")
    msg = _error(["train-motion", "--data", clip_dir, "--config", recipe, *common])
    assert "--train-text-encoder does not apply to train-motion" in msg
    assert not out.exists() and not (tmp_path / "o.partial").exists()


def test_cli_with_the_recipe_and_json(clip_dir, tiny_sd_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, ["train-motion", "--config", "animatediff-motion", "--data", str(clip_dir),
                                 "--base", str(tiny_sd_dir), "--out", str(tmp_path / "run"), "--max-steps", "1",
                                 "--batch-size", "2", "--resolution", "64", "--device", "cpu", "--name", "m1",
                                 "--validation-prompts", "grasper retract gallbladder",
                                 "--validation-inference-steps", "1", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["steps"] == 1 and payload["registered"] == "m1"
    card = __import__("yaml").safe_load((tmp_path / "run" / "lapgen.yaml").read_text())
    assert card["config"]["learning_rate"] == 1e-4 and card["config"]["cache_latents"] is True  # the recipe's
    assert card["config"]["batch_size"] == 2  # the command line wins
    assert (tmp_path / "run" / "validation" / "epoch-0000" / "00.gif").is_file()


def test_killed_then_resumed_gives_the_same_weights(clip_dir, tiny_sd_dir, tmp_path, monkeypatch):
    """SIGKILL of a `python -m lapgen train-motion` process after its first checkpoint; the same command run
    again resumes and ends with bitwise the same adapter and losses as an uninterrupted run (one thread)."""
    from tests.reliability.harness import assert_ok, in_process_one_thread, kill_when

    def args(out):
        return ["train-motion", "--data", clip_dir, "--base", tiny_sd_dir, "--out", out, "--resolution", 64,
                "--batch-size", 2, "--max-steps", 6, "--checkpointing-steps", 2, "--lr", "1e-3", "--seed", 3,
                "--resume", "latest", "--device", "cpu"]

    reference = tmp_path / "reference"
    assert_ok(in_process_one_thread(args(reference)))
    out, stage = tmp_path / "run", tmp_path / "run.partial"
    kill_when(args(out), cwd=tmp_path, ready=lambda: (stage / "checkpoint-2" / "lapgen_state_0.pt").exists())
    assert not out.exists() and len((stage / "loss.jsonl").read_text().splitlines()) < 6
    again = in_process_one_thread(args(out))
    assert_ok(again)
    resumed = re.search(r"resuming from \S*checkpoint-(\d+)", again.stderr)
    assert resumed and int(resumed.group(1)) >= 2, again.stderr
    logs = [[json.loads(x)["loss"] for x in (r / "loss.jsonl").read_text().splitlines()] for r in (out, reference)]
    assert logs[0] == logs[1] and len(logs[0]) == 6  # bitwise: same ops, same order, one thread
    a, b = _adapter_state(out), _adapter_state(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_follows_only_the_trainable_parameters(tiny_sd_pipeline):
    from lapgen.models.motion import motion_unet, new_adapter
    from lapgen.models.training import ema_parameters

    model = motion_unet(tiny_sd_pipeline.unet, new_adapter(dict(tiny_sd_pipeline.unet.config), 32))
    followed = {id(p) for p in ema_parameters(model)}
    motion = {id(p) for n, p in model.named_parameters() if "motion_modules" in n}
    assert followed == motion
    assert {id(p) for p in ema_parameters(tiny_sd_pipeline.unet)} == {id(p) for p in tiny_sd_pipeline.unet.parameters()}


def test_layout_checks():
    from lapgen.models.motion import layout_mismatch, motion_heads, new_adapter_config

    unet = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "norm_num_groups": 32}
    config = new_adapter_config(unet, 32)
    assert config["motion_num_attention_heads"] == 8 and layout_mismatch(config, unet) is None  # AnimateDiff's
    assert motion_heads([4, 8]) == 4 and motion_heads([32, 64, 64]) == 8
    assert "[3, 3, 3, 3] motion layers per block, the base UNet [2, 2, 2, 2]" in layout_mismatch({**config, "motion_layers_per_block": 3}, unet)
    assert "GroupNorm groups (16)" in layout_mismatch({**config, "motion_norm_num_groups": 16}, unet)
    assert "has 3 blocks" in layout_mismatch({**config, "block_out_channels": [320, 640, 1280]}, unet)
    with pytest.raises(LapgenError, match="does not fit the base pipeline 'sd15'"):
        from lapgen.models.motion import check_layout

        check_layout({**config, "motion_layers_per_block": 3}, unet, "x", "sd15")


@pytest.mark.slow
def test_two_processes_train_the_motion_module(clip_dir, tiny_sd_dir, tmp_path):
    """torchrun, 2 CPU processes (gloo): DDP over the motion UNet (frozen image layers, trained motion
    modules); each rank checkpoints its own noise state; the result is a MotionAdapter folder."""
    import os
    import subprocess
    import sys

    from diffusers import MotionAdapter

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAPGEN_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "lapgen", "--quiet", "train-motion", "--data", str(clip_dir), "--base",
                           str(tiny_sd_dir), "--out", str(run), "--resolution", "64", "--max-steps", "2",
                           "--batch-size", "2", "--checkpointing-steps", "1", "--lr", "1e-2", "--device", "cpu"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    card = __import__("yaml").safe_load((run / "lapgen.yaml").read_text())
    assert card["training"]["processes"] == 2 and card["training"]["steps"] == 2
    assert {p.name for p in (run / "checkpoint-2").glob("lapgen_state_*.pt")} == {"lapgen_state_0.pt",
                                                                                  "lapgen_state_1.pt"}
    state = _adapter_state(run)
    assert any(float(v.abs().max()) > 0 for k, v in state.items() if k.endswith("proj_out.weight"))  # trained
    assert MotionAdapter.from_pretrained(run).config.block_out_channels == [4, 8]
