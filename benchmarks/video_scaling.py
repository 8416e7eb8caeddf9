"""ControlVideo cost on the SD-1.5-shaped architecture (random weights, CPU, 128 px), measured side by side.

(a) 16-frame ControlVideo (fully cross-frame attention + pooled norms, smoother off) against 16 independent
    frames of diffusers' `StableDiffusionControlNetPipeline` with the same components, masks, prompt and
    steps. Goal: ratio <= 1.3 (the extra cost is the cross-frame attention, mostly at the 16x16 level).
    The smoother's own cost (one VAE decode + encode of all frames per trigger) is printed separately.
(b) Hierarchical sampling at 32, 64, 128, 250 frames (+16 frames in full mode as the memory reference),
    1 step, smoother off:
    peak resident memory above the loaded models, sampled every 5 ms in a thread, and wall time.
    Goals: peak(250) <= 2 x peak(16); time growth exponent (log-log slope over 32..250) <= 1.1.
FLOPs of one frame's UNet + ControlNet call are counted with `torch.utils.flop_counter` for the GPU
estimate in docs/performance.md.

Run: `python benchmarks/video_scaling.py` (about 40 min on 2 busy CPU cores; `--quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time

import numpy as np


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Max resident set size while the block runs, sampled every `interval` seconds."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.start = rss_bytes()
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def build_sd15_shaped(seed: int = 0):
    """SD 1.5's architecture (UNet 860M, ControlNet 361M, VAE, CLIP ViT-L/14 text) with random weights."""
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lapgen.models.controlvideo import ControlVideoPipeline
    from lapgen.models.tiny import TINY_SCHEDULER_CONFIG, offline_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                        sample_size=512).eval()
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77)).eval()
    with torch.no_grad():  # wake the zero convolutions so the masks matter, as after training
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                     controlnet.controlnet_cond_embedding.conv_out]:
            conv.weight.normal_(0, 0.02)
    pipe = ControlVideoPipeline(vae=vae, text_encoder=text, tokenizer=offline_clip_tokenizer(), unet=unet,
                                controlnet=controlnet, scheduler=DDIMScheduler(**TINY_SCHEDULER_CONFIG))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def moving_masks(n: int, size: int = 128):
    from PIL import Image

    out = []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        x = int(8 + (size - 56) * i / max(n - 1, 1))
        m[40:80, x:x + 40] = 255
        out.append(Image.fromarray(m, mode="L"))
    return out


def frame_flops(pipe) -> float:
    """FLOPs of one frame's ControlNet + UNet call at 128 px (batch 1, no CFG)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 4, 16, 16)
    emb = torch.randn(1, 77, 768)
    cond = torch.rand(1, 3, 128, 128)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pipe._model_pass(x, torch.tensor(500), emb, cond, 1.0)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="steps of (a)")
    parser.add_argument("--long-steps", type=int, default=1, help="steps of (b) (time is linear in steps)")
    parser.add_argument("--lengths", default="32,64,128,250")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="lengths 32,64 only (smoke run)")
    args = parser.parse_args()
    import torch
    from diffusers import StableDiffusionControlNetPipeline

    torch.set_num_threads(args.threads)
    lengths = [32, 64] if args.quick else [int(v) for v in args.lengths.split(",")]
    prompt = "grasper retract gallbladder in carlot-triangle-dissection"
    t0 = time.perf_counter()
    pipe = build_sd15_shaped()
    print(f"built SD-1.5-shaped components in {time.perf_counter() - t0:.0f} s", flush=True)
    flops = frame_flops(pipe)
    print(f"FLOPs per frame (ControlNet + UNet, one call, 128 px): {flops / 1e9:.1f} GFLOP", flush=True)

    # (a) 16 frames: ControlVideo vs independent ControlNet frames
    masks = moving_masks(16)
    ref = StableDiffusionControlNetPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                            unet=pipe.unet, controlnet=pipe.controlnet, scheduler=pipe.scheduler,
                                            safety_checker=None, feature_extractor=None,
                                            requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": args.steps, "guidance_scale": 3.0, "output_type": "np"}
    ref([prompt], masks[:1], **kw)  # warm-up (first-call allocations)
    times = {}
    for name in ("independent", "controlvideo"):
        start = time.perf_counter()
        if name == "independent":
            ref([prompt] * 16, masks, generator=torch.Generator().manual_seed(0), **kw)
        else:
            pipe(prompt, masks, generator=torch.Generator().manual_seed(0), smoother_steps=[], long_video="off", **kw)
        times[name] = min(times.get(name, math.inf), time.perf_counter() - start)
    start = time.perf_counter()
    pipe(prompt, masks, generator=torch.Generator().manual_seed(0), smoother_steps=[0], long_video="off", **kw)
    smoother_cost = time.perf_counter() - start - times["controlvideo"]
    ratio_a = times["controlvideo"] / times["independent"]
    print(f"(a) 16 frames, {args.steps} steps: independent {times['independent']:.1f} s, "
          f"ControlVideo {times['controlvideo']:.1f} s, smoother trigger (flow) +{smoother_cost:.1f} s", flush=True)

    # (b) memory and time of hierarchical sampling (smoother off: its VAE work is sliced, 16 frames at a time)
    kw = dict(kw, num_inference_steps=args.long_steps)
    rows = []
    for n in [16] + lengths:
        masks = moving_masks(n)
        with PeakRSS() as mem:
            start = time.perf_counter()
            out = pipe(prompt, masks, generator=torch.Generator().manual_seed(0), smoother_steps=[],
                       long_video="auto", **kw)
            elapsed = time.perf_counter() - start
        rows.append((n, elapsed, mem.peak - mem.start, out.long_video))
        print(f"(b) {n:4d} frames: {elapsed:7.1f} s, peak +{(mem.peak - mem.start) / 2**20:7.0f} MiB, "
              f"long mode {out.long_video}", flush=True)
    peak16 = rows[0][2]
    peak_max = rows[-1][2]
    xs = np.log([r[0] for r in rows[1:]])
    ys = np.log([r[1] for r in rows[1:]])
    slope = float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 else float("nan")
    print(f"RESULT video_scaling_16_frames ratio={ratio_a:.2f} goal<=1.3")
    print(f"RESULT video_scaling_memory_{rows[-1][0]}_vs_16 ratio={peak_max / max(peak16, 1):.2f} goal<=2")
    print(f"RESULT video_scaling_time_exponent ratio={slope:.2f} goal<=1.1")


if __name__ == "__main__":
    main()
