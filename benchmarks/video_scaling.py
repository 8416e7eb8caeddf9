"""ControlVideo cost on the SD-1.5-shaped architecture (random weights, CPU, 128 px), measured side by side.

(a) 16-frame ControlVideo (fully cross-frame attention + pooled norms, smoother off) against 16 independent
    frames of diffusers' `StableDiffusionControlNetPipeline` with the same components, masks, prompt and
    steps. Goal: ratio <= 1.3 (the extra cost is the cross-frame attention, mostly at the 16x16 level).
    The smoother's own cost (one VAE decode + encode of all frames per trigger) is printed separately.
(r) RIFE against the flow interpolator: the same 16-frame video (smoother on) with lapgen's RIFE IFNet_HDv3
    (random weights: the published network's shapes, so the published file's cost) and with the weight-free
    Farnebäck flow midpoint. Goal: ratio <= 1.05, as the median of 3 pairs run in alternating order (wall
    time; the ratio of the process's CPU time is printed too). The smoother fires at every step here (2
    triggers in 2 steps), the worst case for this ratio: a 100-step run has the same 2 triggers in 100 steps.
(b) Hierarchical sampling at 32, 64, 128, 250 frames (+16 frames in full mode as the memory reference),
    1 step, smoother off:
    peak resident memory above the loaded models, sampled every 5 ms in a thread, and wall time.
    Goals: peak(250) <= 2 x peak(16); time growth exponent (log-log slope over 32..250) <= 1.1.
(ad) AnimateDiff against ControlVideo on the same 16-frame video: the same UNet, ControlNet, VAE and text
    encoder, plus AnimateDiff motion modules (a new adapter in the SD 1.5 layout, random output weights) for
    `lapgen video --method animatediff`; ControlVideo with the smoother off. Wall time of each in ABBA order
    (best of two); the ratio AnimateDiff / ControlVideo is reported (goal <= 1.5: a sanity bound, the two
    methods do different work).
(fn) FreeNoise memory: AnimateDiff at 16 frames (one pass) and 250 frames (FreeNoise, context 16, stride 4,
    windows fused on the noise prediction: lapgen's default), 1 step, latent output; peak resident memory
    above the loaded models as in (b). Goal: peak(250) <= 2 x peak(16). 250 frames with the windows fused
    inside the motion modules (`--free-noise-fusion attention`, diffusers' FreeNoise) are printed beside it.
FLOPs of one frame's UNet + ControlNet call are counted with `torch.utils.flop_counter` for the GPU
estimate in docs/performance.md.

Also printed: exact FLOPs per guided step counted on the meta device (16 frames coupled vs independent;
250 frames independent / full ControlVideo / hierarchical), the basis of the GPU estimate.
`--width-div 4` runs (b) on the same layout with a quarter of the channel widths (same levels, heads and
token counts) when CPU time is short.

Run: `python benchmarks/video_scaling.py` (about an hour on 2 busy CPU cores; `--quick` for a smoke run:
(a) and (r) with 1 step, (b) at 32 and 64 frames with `--width-div 4`).
`--part rife --only flow|rife` makes one (r) video per process, for timing the two as whole processes.
`--part ad` and `--part fn` run (ad) and (fn) alone (`--width-div` applies to both; `--fn-lengths 16,64`).
"""

from __future__ import annotations

import argparse
import contextlib
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


def build_sd15_shaped(seed: int = 0, width_div: int = 1):
    """SD 1.5's architecture (UNet 860M, ControlNet 361M, VAE, CLIP ViT-L/14 text) with random weights.

    `width_div` > 1 divides the UNet/ControlNet channel widths (same levels, layers, heads and token counts).
    """
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lapgen.models.controlvideo import ControlVideoPipeline
    from lapgen.models.tiny import TINY_SCHEDULER_CONFIG, offline_clip_tokenizer

    torch.manual_seed(seed)
    widths = tuple(c // width_div for c in (320, 640, 1280, 1280))
    unet = UNet2DConditionModel(
        cross_attention_dim=768,
        attention_head_dim=8,
        sample_size=64,
        block_out_channels=widths,
        norm_num_groups=32 // width_div,
    ).eval()
    controlnet = ControlNetModel.from_unet(unet).eval()
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    ).eval()
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
        )
    ).eval()
    with torch.no_grad():  # wake the zero convolutions so the masks matter, as after training
        for conv in [
            *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
            controlnet.controlnet_cond_embedding.conv_out,
        ]:
            conv.weight.normal_(0, 0.02)
    pipe = ControlVideoPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=offline_clip_tokenizer(),
        unet=unet,
        controlnet=controlnet,
        scheduler=DDIMScheduler(**TINY_SCHEDULER_CONFIG),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def moving_masks(n: int, size: int = 128):
    from PIL import Image

    out = []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        x = int(8 + (size - 56) * i / max(n - 1, 1))
        m[40:80, x : x + 40] = 255
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


def meta_flops(frames: int, coupled: bool, kv: list[int] | None = None, unet=None, controlnet=None) -> float:
    """FLOPs of one guided (2 x frames rows) ControlNet + UNet call of SD 1.5 at 128 px, counted on the meta
    device (shapes only: exact, load-independent, instant)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lapgen.models.controlvideo import FrameContext, frame_coupling

    x = torch.empty(2 * frames, 4, 16, 16, device="meta")
    emb = torch.empty(2 * frames, 77, 768, device="meta")
    cond = torch.empty(2 * frames, 3, 128, 128, device="meta")
    t = torch.tensor(500, device="meta")
    with FlopCounterMode(display=False) as counter:
        ctx = (
            frame_coupling(unet, controlnet, FrameContext(num_frames=frames, kv_frames=kv))
            if coupled
            else contextlib.nullcontext()
        )
        with ctx:
            down, mid = controlnet(x, t, encoder_hidden_states=emb, controlnet_cond=cond, return_dict=False)
            unet(
                x,
                t,
                encoder_hidden_states=emb,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            )
    return float(counter.get_total_flops())


def flop_report() -> list[str]:
    """Per-step FLOPs: 16 coupled vs independent frames; 250 frames full vs hierarchical (w=15)."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel, UNet2DConditionModel

    from lapgen.models.controlvideo import split_key_frames

    with init_empty_weights():
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
        controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    m = {"unet": unet, "controlnet": controlnet}
    ratio16 = meta_flops(16, True, **m) / meta_flops(16, False, **m)
    plan = split_key_frames(250, 15)
    hier = meta_flops(len(plan.keys), True, **m) + sum(
        meta_flops(len(c) + 2, True, [0, 1], **m) for c in plan.clips
    )
    full = meta_flops(250, True, **m)
    indep = meta_flops(250, False, **m)
    print(
        f"FLOPs per guided step (SD 1.5, 128 px): 16 frames coupled/independent = {ratio16:.3f}; 250 frames: "
        f"independent {indep / 1e12:.1f} TFLOP, full ControlVideo {full / 1e12:.1f}, hierarchical "
        f"{hier / 1e12:.1f}",
        flush=True,
    )
    return [f"RESULT video_scaling_16_frames_flops ratio={ratio16:.3f} goal<=1.3"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="steps of (a)")
    parser.add_argument("--long-steps", type=int, default=1, help="steps of (b) (time is linear in steps)")
    parser.add_argument("--lengths", default="32,64,128,250")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: (a) and (r) 1 step; (b) lengths 32,64 at --width-div 4",
    )
    parser.add_argument("--part", choices=("a", "b", "rife", "smoother", "ad", "fn", "all"), default="all")
    parser.add_argument("--fn-lengths", default="16,250", help="(fn): the reference length, then the long one")
    parser.add_argument(
        "--only", choices=("flow", "rife"), help="(r): one video with this interpolator, no ratio"
    )
    parser.add_argument(
        "--width-div",
        type=int,
        default=1,
        help="(b), and (r) with --part rife: divide UNet/ControlNet widths (same layout, heads and tokens)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    lengths = [32, 64] if args.quick else [int(v) for v in args.lengths.split(",")]
    if args.quick:
        args.steps, args.width_div = 1, max(args.width_div, 4)
    if args.only:
        run_rife_video(build(args.width_div), args.steps, args.only)
        return
    results = flop_report()
    full = build(1) if args.part in ("a", "smoother", "all") else None
    if args.part in ("a", "all"):
        results.append(part_a(full, args.steps))
    if args.part in ("rife", "all"):  # full widths (those of (a)) unless --part rife --width-div N
        results += part_rife(full or build(args.width_div), args.steps, 1 if args.quick else 3)
    if args.part == "smoother":
        smoother_cost(full)
    if args.part in ("b", "all"):
        results += part_b(build(args.width_div), args.long_steps, lengths)
    if args.part in ("ad", "all"):
        results.append(part_ad(full if full is not None and args.width_div == 1 else build(args.width_div),
                               args.steps))
    if args.part in ("fn", "all"):
        fn_lengths = [16, 64] if args.quick else [int(v) for v in args.fn_lengths.split(",")]
        results.append(part_fn(build(args.width_div), args.long_steps, fn_lengths))
    for line in results:
        print(line)


PROMPT = "grasper retract gallbladder in carlot-triangle-dissection"


def build(width_div: int):
    t0 = time.perf_counter()
    pipe = build_sd15_shaped(width_div=width_div)
    print(
        f"built SD-1.5-shaped components (widths / {width_div}) in {time.perf_counter() - t0:.0f} s; "
        f"FLOPs per frame (ControlNet + UNet, one call, 128 px): {frame_flops(pipe) / 1e9:.1f} GFLOP",
        flush=True,
    )
    return pipe


def part_a(pipe, steps: int) -> str:
    """16 frames: ControlVideo (smoother off) vs 16 independent ControlNet frames, same model and steps."""
    import torch
    from diffusers import StableDiffusionControlNetPipeline

    masks = moving_masks(16)
    ref = StableDiffusionControlNetPipeline(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        controlnet=pipe.controlnet,
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    kw = {"num_inference_steps": steps, "guidance_scale": 3.0, "output_type": "np"}
    ref([PROMPT], masks[:1], **kw)  # warm-up (first-call allocations)
    times: dict[str, float] = {}
    for name in ("independent", "controlvideo", "controlvideo", "independent"):  # ABBA order, best of two
        start = time.perf_counter()
        if name == "independent":
            ref([PROMPT] * 16, masks, generator=torch.Generator().manual_seed(0), **kw)
        else:
            pipe(
                PROMPT,
                masks,
                generator=torch.Generator().manual_seed(0),
                smoother_steps=[],
                long_video="off",
                **kw,
            )
        times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
    print(
        f"(a) 16 frames, {steps} steps: independent {times['independent']:.1f} s, "
        f"ControlVideo {times['controlvideo']:.1f} s",
        flush=True,
    )
    smoother_cost(pipe)
    return (
        f"RESULT video_scaling_16_frames ratio={times['controlvideo'] / times['independent']:.2f} goal<=1.3"
    )


def smoother_cost(pipe, frames: int = 16) -> None:
    """Time one smoother trigger directly (VAE decode + interpolation + encode of all frames)."""
    import torch

    from lapgen.models.controlvideo import get_interpolator
    from lapgen.models.controlvideo.smoother import InterleavedSmoother

    x0 = torch.randn(frames, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    for name in ("flow", "linear", "rife"):
        smoother = InterleavedSmoother(
            pipe.vae, rife_interpolator() if name == "rife" else get_interpolator(name)
        )
        with torch.no_grad():
            start = time.perf_counter()
            smoother.smooth_x0(x0, 0)
        print(
            f"one smoother trigger, {frames} frames, {name}: {time.perf_counter() - start:.1f} s", flush=True
        )


def rife_interpolator():
    """lapgen's RIFE with random weights in the published layout (same shapes, so the same cost)."""
    import torch

    from lapgen.models.controlvideo.rife import IFNetHDv3, RifeMidpoint

    torch.manual_seed(0)
    return RifeMidpoint(IFNetHDv3())


def run_rife_video(pipe, steps: int, name: str) -> tuple[float, float]:
    """One 16-frame video, smoother at every step, with the flow or the RIFE interpolator.

    Returns (wall seconds, CPU seconds of this process)."""
    import torch

    from lapgen.models.controlvideo.interpolators import FlowMidpoint

    interp = rife_interpolator() if name == "rife" else FlowMidpoint()
    start, cpu = time.perf_counter(), time.process_time()
    out = pipe(
        PROMPT,
        moving_masks(16),
        num_inference_steps=steps,
        guidance_scale=3.0,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        smoother_at=list(range(steps)),
        interpolator=interp,
        long_video="off",
    )
    assert out.smoothed_steps == list(range(steps))
    return time.perf_counter() - start, time.process_time() - cpu


def part_rife(pipe, steps: int, pairs: int = 3) -> list[str]:
    """(r) 16 frames with the RIFE smoother against the same video with the flow smoother.

    `pairs` pairs in alternating order (flow rife, rife flow, ...); the ratio of each pair, then the
    median, so a change of machine load between pairs does not enter the ratio.
    """
    run_rife_video(pipe, 1, "rife")  # warm-up (first-call allocations, RIFE's kernels)
    wall, cpu = [], []
    for k in range(pairs):
        order = ("flow", "rife") if k % 2 == 0 else ("rife", "flow")
        got = {name: run_rife_video(pipe, steps, name) for name in order}
        wall.append(got["rife"][0] / got["flow"][0])
        cpu.append(got["rife"][1] / got["flow"][1])
        print(
            f"(r) pair {k + 1}: 16 frames, {steps} steps, smoother at every step: "
            f"flow {got['flow'][0]:.1f} s (CPU {got['flow'][1]:.0f} s), "
            f"RIFE {got['rife'][0]:.1f} s (CPU {got['rife'][1]:.0f} s)",
            flush=True,
        )
    print(f"(r) RIFE/flow per pair, wall: {[round(r, 3) for r in wall]}, CPU: {[round(r, 3) for r in cpu]}")
    return [
        f"RESULT video_scaling_rife_vs_flow ratio={float(np.median(wall)):.3f} goal<=1.05",
        f"RESULT video_scaling_rife_vs_flow_cpu ratio={float(np.median(cpu)):.3f} goal<=1.05",
    ]


def part_b(pipe, steps: int, lengths: list[int]) -> list[str]:
    """Peak memory and time of hierarchical sampling; 16 frames in full mode as the memory reference.

    Latent output (the final VAE decode is per 16-frame slice and linear in length) and smoother off.
    """
    import torch

    kw = {"num_inference_steps": steps, "guidance_scale": 3.0, "output_type": "latent", "smoother_steps": []}
    pipe(PROMPT, moving_masks(2), **kw)  # warm-up
    rows = []
    for n in [16, *lengths]:
        masks = moving_masks(n)
        with PeakRSS() as mem:
            start = time.perf_counter()
            out = pipe(PROMPT, masks, generator=torch.Generator().manual_seed(0), long_video="auto", **kw)
            elapsed = time.perf_counter() - start
        rows.append((n, elapsed, mem.peak - mem.start))
        print(
            f"(b) {n:4d} frames, {steps} step(s): {elapsed:7.1f} s, peak +{(mem.peak - mem.start) / 2**20:6.0f} MiB, "
            f"long mode {out.long_video}",
            flush=True,
        )
    slope = float(np.polyfit(np.log([r[0] for r in rows[1:]]), np.log([r[1] for r in rows[1:]]), 1)[0])
    return [
        f"RESULT video_scaling_memory_{rows[-1][0]}_vs_16 ratio={rows[-1][2] / max(rows[0][2], 1):.2f} goal<=2",
        f"RESULT video_scaling_time_exponent ratio={slope:.2f} goal<=1.1",
    ]



def animatediff_from(pipe):
    """`AnimateDiffMaskPipeline` over a ControlVideo pipeline's components plus motion modules in the SD 1.5
    layout (`lapgen.models.motion.new_adapter`; random output weights, so the temporal layers do work)."""
    import torch
    from diffusers import DDIMScheduler

    from lapgen.models.animatediff import AnimateDiffMaskPipeline
    from lapgen.models.motion import motion_unet, new_adapter

    adapter = new_adapter(dict(pipe.unet.config), 32)
    with torch.no_grad():
        for module in adapter.modules():
            if type(module).__name__ == "AnimateDiffTransformer3D":
                module.proj_out.weight.normal_(0, 0.02)
    ad = AnimateDiffMaskPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                 unet=motion_unet(pipe.unet, adapter).eval(), motion_adapter=adapter,
                                 controlnet=pipe.controlnet, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
    ad.set_progress_bar_config(disable=True)
    return ad


def mask_tensor(n: int):
    """The moving masks as the AnimateDiff pipeline takes them: (n, 1, 128, 128) bool."""
    import torch

    return torch.from_numpy(np.stack([np.asarray(m) > 127 for m in moving_masks(n)]))[:, None]


def part_ad(pipe, steps: int) -> str:
    """(ad) 16 frames: AnimateDiff (motion modules, one pass) vs ControlVideo (smoother off), same components."""
    import torch

    ad = animatediff_from(pipe)
    kw = {"num_inference_steps": steps, "guidance_scale": 3.0, "output_type": "np"}
    ad(PROMPT, mask_tensor(2), **kw)  # warm-up
    pipe(PROMPT, moving_masks(2), smoother_steps=[], long_video="off", **kw)
    times: dict[str, float] = {}
    for name in ("controlvideo", "animatediff", "animatediff", "controlvideo"):  # ABBA order, best of two
        start = time.perf_counter()
        if name == "animatediff":
            ad(PROMPT, mask_tensor(16), generator=torch.Generator().manual_seed(0), **kw)
        else:
            pipe(PROMPT, moving_masks(16), generator=torch.Generator().manual_seed(0), smoother_steps=[],
                 long_video="off", **kw)
        times[name] = min(times.get(name, float("inf")), time.perf_counter() - start)
    print(f"(ad) 16 frames, {steps} steps: ControlVideo {times['controlvideo']:.1f} s, AnimateDiff "
          f"{times['animatediff']:.1f} s", flush=True)
    return (f"RESULT video_scaling_animatediff_vs_controlvideo ratio="
            f"{times['animatediff'] / times['controlvideo']:.2f} goal<=1.5")


def part_fn(pipe, steps: int, lengths: list[int]) -> str:
    """(fn) AnimateDiff peak memory above the loaded models: `lengths[0]` frames in one pass, `lengths[1]`
    with FreeNoise (prediction fusion; attention fusion printed for comparison)."""
    import torch

    ad = animatediff_from(pipe)
    kw = {"num_inference_steps": steps, "guidance_scale": 3.0, "output_type": "latent", "context_frames": 16,
          "context_stride": 4}
    ad(PROMPT, mask_tensor(2), **kw)  # warm-up
    peaks = {}
    for n, fusion in ((lengths[0], "prediction"), (lengths[1], "prediction"), (lengths[1], "attention")):
        masks = mask_tensor(n)
        with PeakRSS() as mem:
            start = time.perf_counter()
            out = ad(PROMPT, masks, generator=torch.Generator().manual_seed(0), fusion=fusion, **kw)
            elapsed = time.perf_counter() - start
        peaks[(n, fusion)] = mem.peak - mem.start
        print(f"(fn) {n:4d} frames, {steps} step(s), {len(out.windows)} window(s), {fusion} fusion: {elapsed:7.1f} s, "
              f"peak +{peaks[(n, fusion)] / 2**20:6.0f} MiB", flush=True)
    ref = max(peaks[(lengths[0], "prediction")], 1)
    print(f"(fn) peak({lengths[1]}, attention fusion) / peak({lengths[0]}) = "
          f"{peaks[(lengths[1], 'attention')] / ref:.2f} (memory grows with the frames)", flush=True)
    return (f"RESULT video_scaling_freenoise_memory_{lengths[1]}_vs_{lengths[0]} "
            f"ratio={peaks[(lengths[1], 'prediction')] / ref:.2f} goal<=2")


if __name__ == "__main__":
    main()
