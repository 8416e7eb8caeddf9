"""`lapgen sample-video`: one generated video per real clip (a video evaluation set for `lapgen eval video`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_HELP = ("Generate a video evaluation set: one video per clip of a `lapgen masks clips` output, with the clip's "
         "prompt, masks, length and fps, seed + clip index (Stage 3, as `lapgen video`). Re-runs skip finished "
         "clips; works under `accelerate launch` / torchrun. Writes videos/, metadata.jsonl and a card.")


def register(app: typer.Typer) -> None:
    @app.command("sample-video", help=_HELP)
    def sample_video_cmd(
        clips: Path = typer.Option(..., "--clips", help="A `lapgen masks clips` output (clip_NNN/ folders)."),
        out: Path = typer.Option(..., "--out", help="Folder of the video set."),
        model: str | None = typer.Option(None, "--model", help="Stage-1 pipeline (default: registry default)."),
        controlnet: str | None = typer.Option(None, "--controlnet", help="Stage-2 ControlNet (default: registry "
                                                 "default)."),
        seed: int = typer.Option(0, "--seed", help="Clip k uses seed + k."),
        limit: int | None = typer.Option(None, "--limit", help="Only the first N clips."),
        frames: int | None = typer.Option(None, "--frames", help="Only the first N frames of every clip "
                                             "(default: all, the clip's length)."),
        fps: float | None = typer.Option(None, "--fps", help="Output fps (default: each clip's own, else 25)."),
        steps: int = typer.Option(100, "--steps", help="DDIM steps (paper: 100)."),
        guidance: float = typer.Option(3.0, "--guidance", help="Classifier-free guidance scale (paper: 3)."),
        resolution: int = typer.Option(128, "--resolution", help="Square size in px (paper: 128)."),
        controlnet_scale: float = typer.Option(1.0, "--controlnet-scale", help="ControlNet conditioning scale."),
        negative_prompt: str | None = typer.Option(None, "--negative-prompt", help="Optional negative prompt."),
        long: str = typer.Option("auto", "--long", help="Hierarchical sampling: auto|on|off (as `lapgen video`)."),
        interpolator: str = typer.Option("auto", "--interpolator", help="Smoother interpolator (as `lapgen "
                                         "video`)."),
        smoother_steps: str = typer.Option("19,20", "--smoother-steps", help="When to smooth (as `lapgen video`)."),
        sequential_cfg: bool = typer.Option(False, "--sequential-cfg", help="Run the two guidance halves one "
                                            "after the other (less memory)."),
        method: str = typer.Option("controlvideo", "--method", help="controlvideo | animatediff (as `lapgen "
                                   "video`)."),
        motion_adapter: str | None = typer.Option(None, "--motion-adapter", help="animatediff: motion adapter "
                                                  "(default: registry default)."),
        context: int | None = typer.Option(None, "--context", help="animatediff: frames the motion module sees "
                                           "at once (as `lapgen video`)."),
        context_stride: int = typer.Option(4, "--context-stride", help="animatediff, FreeNoise: window step."),
        free_noise: str = typer.Option("auto", "--free-noise", help="animatediff: auto|on|off (as `lapgen "
                                       "video`)."),
        free_noise_fusion: str = typer.Option("prediction", "--free-noise-fusion", help="animatediff: "
                                              "prediction|attention (as `lapgen video`)."),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
        dtype: str = typer.Option("fp32", "--dtype", help="fp32|fp16|bf16 (fp16 falls back to fp32 on CPU)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    ) -> None:
        from lapgen.models.sample_video import VideoSetConfig, only_changed, sample_videos
        from lapgen.progress import make_progress, notice

        cfg = VideoSetConfig(
            clips=str(clips), out=str(out), model=model, controlnet=controlnet, seed=seed, limit=limit,
            frames=frames, fps=fps, steps=steps, guidance=guidance, resolution=resolution, device=device,
            dtype=dtype, overwrite=overwrite,
            video=only_changed({"controlnet_scale": controlnet_scale, "negative_prompt": negative_prompt, "long": long,
                   "interpolator": interpolator, "smoother_steps": smoother_steps, "sequential_cfg": sequential_cfg,
                   "method": method, "motion_adapter": motion_adapter, "context": context,
                   "context_stride": context_stride, "free_noise": free_noise,
                   "free_noise_fusion": free_noise_fusion}))
        with make_progress() as progress:
            task = progress.add_task("videos", total=None)
            result = sample_videos(cfg, on_clip=lambda done, total: progress.update(task, completed=done,
                                                                                    total=total))
        if as_json:
            typer.echo(json.dumps({"out": str(result.out), "videos": result.videos, "generated": result.generated}))
        else:
            notice(f"wrote {result.videos} videos to {result.out} ({result.generated} generated now)")
