"""Training step cost of lapgen's loop against an ideal loop, and what the latent cache saves.

On an SD-1.5-shaped UNet, VAE and CLIP text encoder (the real SD 1.5 configs, random weights: nothing is
downloaded) at 128 px, batch 2, fp32, in one run:

(a) lapgen's training loop with `--cache-latents` (`lapgen.models.finetune.finetune`, real DataLoader,
    accelerate, posterior sampling, noise, logging) against the ideal loop: the same UNet forward + backward +
    AdamW step on tensors already in memory. Goal: <= 1.05x.
(b) lapgen's loop without the cache against with it, plus the time split of one uncached step (data, VAE,
    text encoder, UNet forward+backward, optimiser) so the gain on a GPU can be estimated on paper.
(m) the motion step: lapgen's `train-motion` loop with `--cache-latents` (`lapgen.models.motion.train_motion`,
    a clip dataset in its on-disk format, batch 1 clip of `--motion-frames` frames at 128 px) against the
    ideal loop: the same motion UNet (the SD-1.5-shaped UNet with AnimateDiff's motion modules, image layers
    frozen) forward + backward + AdamW step over the motion parameters on tensors already in memory.
    Goal: <= 1.05x.

Gradient clipping is off in both loops (the ideal loop has none). Checkpoint and final-model writes are
switched off for the measured runs (they are not part of a step). `--width-scale 0.5` halves the UNet's
channel widths for machines without ~16 GB of free RAM (full SD 1.5 UNet training state: weights, grads
and two AdamW moments of 860 M parameters).

Usage: python benchmarks/train_step.py [--steps 4] [--rounds 2] [--threads 1] [--width-scale 1.0]
[--part all|frames|motion] [--motion-frames 16] [--quick]
(`--quick`: a smoke run at width 0.25, 2 steps, one round, 4-frame clips.)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

# SD 1.5 component configs (runwayml/stable-diffusion-v1-5 unet/vae/text_encoder config.json).
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, norm_num_groups=32)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                 bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, num_train_timesteps=1000)
RES, BATCH = 128, 2


def available_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def build_pipeline(width_scale: float):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lapgen.models.tiny import offline_clip_tokenizer

    torch.manual_seed(0)
    unet_cfg = dict(SD15_UNET, block_out_channels=tuple(int(c * width_scale) // 32 * 32
                                                        for c in SD15_UNET["block_out_channels"]))
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE), text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)),
        tokenizer=offline_clip_tokenizer(), unet=UNet2DConditionModel(**unet_cfg),
        scheduler=DDIMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False)


def write_frames(root: Path, n: int = 8) -> Path:
    from PIL import Image

    from lapgen.data.frames import write_records
    from lapgen.data.synthetic import cholect50_frame

    records = []
    for k in range(n):
        rgb, _ = cholect50_frame(1 + k // 12, k % 12, num_frames=12, size=(RES, RES))
        name = f"images/VID01/{k:06d}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / name)
        records.append({"file_name": name, "text": f"grasper retract gallbladder in phase {k}", "split": "train"})
    write_records(root, records)
    return root


def ideal_steps(pipe, steps: int) -> list[float]:
    """UNet forward + backward + AdamW step on fixed in-memory tensors."""
    import torch

    unet = pipe.unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(BATCH, 4, RES // 8, RES // 8, generator=g)
    target = torch.randn(noisy.shape, generator=g)
    ehs = torch.randn(BATCH, 77, 768, generator=g)
    t = torch.tensor([10, 500])
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.mse_loss(unet(noisy, t, ehs).sample, target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    del opt
    gc.collect()
    return times[1:]  # the first step allocates the AdamW state


def lapgen_steps(pipe, data: Path, out: Path, steps: int, cache: bool) -> list[float]:
    """Step intervals of lapgen's own loop (run_training), measured between optimiser steps."""
    from lapgen.models import finetune as ft
    from lapgen.models import training
    from lapgen.models.training import TrainConfig
    from lapgen.registry import Entry

    ft.check_base_pipeline = lambda source: Entry(name="sd15-shaped", kind="pipeline", source="memory")
    ft.load_base_pipeline = lambda entry: pipe
    ft.FinetuneStage.save_result = lambda self, folder, accelerator: None
    training.save_checkpoint = lambda *a, **k: None
    stamps: list[float] = []
    config = TrainConfig(data=str(data), out=str(out), base="memory", batch_size=BATCH, max_steps=steps + 2,
                         max_grad_norm=0.0, cache_latents=cache, device="cpu", checkpointing_steps=10**9,
                         overwrite=True)
    ft.finetune(config, on_step_end=lambda step, loss: stamps.append(time.perf_counter()))
    gc.collect()
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]  # skip the first step (AdamW state, warm-up)


def time_split(pipe, data: Path) -> dict[str, float]:
    """One uncached step, piece by piece (seconds)."""
    import torch

    from lapgen.models.latent_cache import FramesTrainingSet, make_collate, read_training_records

    records = read_training_records(data, "train", with_masks=False)
    dataset = FramesTrainingSet(data, records, RES)
    collate = make_collate(pipe.tokenizer)
    opt = torch.optim.AdamW(pipe.unet.parameters(), lr=1e-5)
    out: dict[str, list[float]] = {k: [] for k in ("data", "vae", "text encoder", "unet fwd+bwd", "optimizer")}
    for rep in range(3):
        t0 = time.perf_counter()
        batch = collate([dataset[i] for i in range(rep * BATCH, rep * BATCH + BATCH)])
        t1 = time.perf_counter()
        with torch.no_grad():
            latents = pipe.vae.encode(batch["pixel_values"]).latent_dist.sample() * 0.18215
        t2 = time.perf_counter()
        with torch.no_grad():
            ehs = pipe.text_encoder(batch["input_ids"])[0]
        t3 = time.perf_counter()
        loss = pipe.unet(latents, torch.tensor([10, 500]), ehs).sample.pow(2).mean()
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if rep:  # the first repetition allocates the AdamW state
            for k, v in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                out[k].append(v)
    del opt
    gc.collect()
    return {k: statistics.median(v) for k, v in out.items()}


def write_clips(root: Path, n: int, frames: int) -> Path:
    """A clip dataset (lapgen.data.clips) of `n` clips of `frames` synthetic Cholec80 frames at RES px."""
    from PIL import Image

    from lapgen.data.clips import write_clips as write_metadata
    from lapgen.data.synthetic import cholec80_frame

    records = []
    for k in range(n):
        folder = f"clips/video03/{k * frames:06d}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        for j in range(frames):
            rgb, _ = cholec80_frame(3, 3 * (k * frames + j), num_frames=3 * n * frames + 1, size=(RES, RES))
            Image.fromarray(rgb).save(root / folder / f"{j:06d}.png")
        records.append({"clip": folder, "num_frames": frames, "text": f"grasper retract gallbladder {k}",
                        "split": "train", "fps": 8.0})
    write_metadata(root, records)
    return root


def motion_model(pipe):
    """The motion UNet of `pipe`'s UNet: a new adapter with small output weights (as after some training)."""
    import torch

    from lapgen.models.motion import motion_unet, new_adapter

    adapter = new_adapter(dict(pipe.unet.config), 32)
    with torch.no_grad():
        for module in adapter.modules():
            if type(module).__name__ == "AnimateDiffTransformer3D":
                module.proj_out.weight.normal_(0, 0.02)
    return motion_unet(pipe.unet, adapter)


def ideal_motion_steps(pipe, steps: int, frames: int) -> list[float]:
    """Motion UNet forward + backward + AdamW over the motion modules on fixed in-memory tensors."""
    import torch

    model = motion_model(pipe).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(1, 4, frames, RES // 8, RES // 8, generator=g)  # (B, C, F, h, w)
    target = torch.randn(noisy.shape, generator=g)
    ehs = torch.randn(1, 77, 768, generator=g).repeat_interleave(frames, dim=0)
    t = torch.tensor([500])
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(noisy, t, ehs).sample, target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    del opt, model
    gc.collect()
    return times[1:]


def lapgen_motion_steps(pipe, data: Path, out: Path, steps: int) -> list[float]:
    """Step intervals of `train_motion` with `--cache-latents` (batch 1 clip)."""
    from lapgen.models import finetune as ft
    from lapgen.models import motion, training
    from lapgen.models.training import TrainConfig
    from lapgen.registry import Entry

    motion.check_base_pipeline = lambda source: Entry(name="sd15-shaped", kind="pipeline", source="memory")
    ft.load_base_pipeline = lambda entry: pipe
    motion.MotionStage.save_result = lambda self, folder, accelerator: None
    training.save_checkpoint = lambda *a, **k: None
    stamps: list[float] = []
    config = TrainConfig(data=str(data), out=str(out), base="memory", batch_size=1, max_steps=steps + 2,
                         max_grad_norm=0.0, cache_latents=True, device="cpu", checkpointing_steps=10**9,
                         overwrite=True, learning_rate=1e-4)
    motion.train_motion(config, on_step_end=lambda step, loss: stamps.append(time.perf_counter()))
    gc.collect()
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]


def motion_part(pipe, tmp: Path, steps: int, rounds: int, frames: int) -> list[str]:
    data = write_clips(tmp / "clips", n=steps + 3, frames=frames)
    times: dict[str, list[float]] = {"ideal": [], "cached": []}
    for _ in range(rounds):  # interleaved rounds, as above
        times["ideal"] += ideal_motion_steps(pipe, steps, frames)
        times["cached"] += lapgen_motion_steps(pipe, data, tmp / "motion", steps)
    ideal, cached = (statistics.median(times[k]) for k in ("ideal", "cached"))
    print(f"motion step, 1 clip of {frames} frames: ideal loop (motion UNet fwd+bwd+AdamW on in-memory tensors) "
          f"{ideal:.3f} s/step, lapgen train-motion --cache-latents {cached:.3f} s/step")
    return [f"RESULT train_step_motion_cached_vs_ideal ratio={cached / ideal:.3f} goal<=1.05"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="measured steps per loop")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three loops")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared CPU)")
    parser.add_argument("--width-scale", type=float, default=1.0, help="UNet channel width factor (1 = SD 1.5)")
    parser.add_argument("--part", choices=("all", "frames", "motion"), default="all",
                        help="frames: (a) and (b); motion: (m)")
    parser.add_argument("--motion-frames", type=int, default=16, help="frames per clip of (m) (AnimateDiff: 16)")
    parser.add_argument("--quick", action="store_true", help="smoke run: width 0.25, 2 steps, one round")
    args = parser.parse_args(argv)
    if args.quick:
        args.width_scale, args.steps, args.rounds, args.motion_frames = 0.25, 2, 1, 4
    import torch

    from lapgen import progress

    progress.set_quiet(True)
    torch.set_num_threads(args.threads)
    pipe = build_pipeline(args.width_scale)
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    need = n_unet * 4 * 4 / 2**30 + 3
    if available_gb() < need:
        print(f"SKIP train_step needs about {need:.0f} GB of free RAM for a {n_unet / 1e6:.0f} M-parameter "
              f"UNet ({available_gb():.0f} GB free); try --width-scale 0.5")
        return
    print(f"UNet {n_unet / 1e6:.0f} M parameters (width scale {args.width_scale}), VAE "
          f"{sum(p.numel() for p in pipe.vae.parameters()) / 1e6:.0f} M, text encoder "
          f"{sum(p.numel() for p in pipe.text_encoder.parameters()) / 1e6:.0f} M; {RES} px, batch {BATCH}, "
          f"{torch.get_num_threads()} threads")
    results: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import os

        os.environ["LAPGEN_HOME"] = str(tmp / "home")  # a fresh latent cache
        if args.part in ("all", "motion"):
            results += motion_part(pipe, tmp, args.steps, args.rounds, args.motion_frames)
        if args.part == "motion":
            for line in results:
                print(line)
            return
        data = write_frames(tmp / "frames", n=2 * BATCH * (args.steps + 3))
        times: dict[str, list[float]] = {"ideal": [], "cached": [], "uncached": []}
        for _ in range(args.rounds):  # interleaved rounds: load drift on a shared machine hits all three alike
            times["ideal"] += ideal_steps(pipe, args.steps)
            times["cached"] += lapgen_steps(pipe, data, tmp / "cached", args.steps, cache=True)
            times["uncached"] += lapgen_steps(pipe, data, tmp / "uncached", args.steps, cache=False)
        ideal, cached, uncached = (statistics.median(times[k]) for k in ("ideal", "cached", "uncached"))
        split = time_split(pipe, data)
    print(f"ideal loop (UNet fwd+bwd+AdamW on in-memory tensors): {ideal:.3f} s/step")
    print(f"lapgen loop, --cache-latents:                        {cached:.3f} s/step")
    print(f"lapgen loop, no cache:                               {uncached:.3f} s/step")
    print("time split of one uncached step: " + ", ".join(f"{k} {v:.3f} s" for k, v in split.items()))
    print(f"RESULT train_step_cached_vs_ideal ratio={cached / ideal:.3f} goal<=1.05")
    print(f"RESULT train_step_cache_speedup ratio={uncached / cached:.3f} goal>1.0")
    for line in results:
        print(line)


if __name__ == "__main__":
    main()
