"""`lapgen video`: a prompt and a mask sequence -> a laparoscopic video (ControlVideo, Stage 3; or AnimateDiff with
a motion module trained by `lapgen train-motion`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_HELP = (
    "Generate a video from a text prompt and one tool mask per frame (ControlVideo with the Stage-1 model "
    "and Stage-2 ControlNet; --method animatediff adds a learned motion module). Masks: a folder of PNGs "
    "(natural sort) or a video. Several ControlNets: repeat --controlnet and --masks in pairs. Defaults follow "
    "ControlVideo's code (docs/video.md). Writes an H.264 MP4 and a card beside it."
)


def _list_interpolators(value: bool) -> None:
    if value:
        from lapgen.models.controlvideo.interpolators import list_interpolators
        from lapgen.registry import default_for, list_entries

        for name, description in list_interpolators().items():
            typer.echo(f"{name}\t{description}")
        default = default_for("interpolator")
        for entry in list_entries("interpolator"):  # weights for rife / auto, from the model registry
            where = str(entry.path) if entry.present() else "no weights on this machine"
            mark = " (default)" if entry.name == default else ""
            typer.echo(f"{entry.name}\tregistered RIFE weights{mark}: {where}")
        raise typer.Exit()


def register(app: typer.Typer) -> None:
    @app.command("video", help=_HELP)
    def video_cmd(
        prompt: str = typer.Option(..., "--prompt", help='Action text, e.g. "grasper retract liver".'),
        masks: list[Path] = typer.Option(
            ..., "--masks", help="Folder of mask images or a mask video; repeat: one per --controlnet."
        ),
        out: Path = typer.Option(Path("clip.mp4"), "--out", help="Output .mp4 file."),
        model: str | None = typer.Option(
            None, "--model", help="Stage-1 pipeline (default: registry default)."
        ),
        controlnet: list[str] | None = typer.Option(
            None, "--controlnet", help="Stage-2 ControlNet (default: registry default); repeat for several."
        ),
        controlnet_scale: list[float] | None = typer.Option(
            None, "--controlnet-scale", help="Conditioning scale: one for all, or one per --controlnet (1.0)."
        ),
        method: str = typer.Option(
            "controlvideo", "--method", help="controlvideo (training-free, the paper) | animatediff (the "
            "motion module of `lapgen train-motion`; see docs/video.md)."
        ),
        motion_adapter: str | None = typer.Option(
            None, "--motion-adapter", help="animatediff: motion adapter (registry name, folder or hf:ORG/NAME; "
            "default: registry default)."
        ),
        context: int | None = typer.Option(
            None, "--context", help="animatediff: frames the motion module sees at once (default: its training "
            "clip length, else 16)."
        ),
        context_stride: int = typer.Option(4, "--context-stride", help="animatediff, FreeNoise: window step."),
        free_noise: str = typer.Option(
            "auto", "--free-noise", help="animatediff: FreeNoise windows for videos longer than --context: "
            "auto|on|off."
        ),
        free_noise_fusion: str = typer.Option(
            "prediction", "--free-noise-fusion", help="animatediff: fuse windows on the noise prediction (memory "
            "of one window) | attention (inside the motion modules, as the FreeNoise paper; memory grows)."
        ),
        frames: int | None = typer.Option(None, "--frames", help="Use the first N masks (default: all)."),
        fps: float = typer.Option(25.0, "--fps", help="Frames per second of the output (paper: 25)."),
        steps: int = typer.Option(100, "--steps", help="DDIM steps (paper: 100)."),
        guidance: float = typer.Option(3.0, "--guidance", help="Classifier-free guidance scale (paper: 3)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the shared initial noise."),
        negative_prompt: str | None = typer.Option(
            None, "--negative-prompt", help="Optional negative prompt."
        ),
        resolution: int = typer.Option(128, "--resolution", help="Square size in px (paper: 128)."),
        long: str = typer.Option(
            "auto", "--long", help="Hierarchical key-frame sampling: auto (above --max-full-frames)|on|off."
        ),
        max_full_frames: int = typer.Option(16, "--max-full-frames", help="auto: full attention up to this."),
        window: int | None = typer.Option(None, "--window", help="Key-frame window (default sqrt(frames))."),
        clip_kv: str = typer.Option(
            "original",
            "--clip-kv",
            help="Long mode, clip frames attend to: original (first key + clip's last frame, as "
            "ControlVideo's code) | keys (both key frames, as its paper).",
        ),
        clips_per_pass: int = typer.Option(
            1, "--clips-per-pass", help="Long mode: stack equal-length clips per call (faster, more memory)."
        ),
        interpolator: str = typer.Option(
            "auto",
            "--interpolator",
            help="Smoother interpolator: auto (RIFE if its weights are registered, else flow) | rife | "
            "rife:PATH (a flownet.pkl) | flow | linear | a registered interpolator name.",
        ),
        smoother_steps: str = typer.Option(
            "19,20",
            "--smoother-steps",
            help='When to smooth: "19,20" = steps counted from the end, as ControlVideo (loop indices 80, 81 '
            'of 100), "none", "start:0.6" (2 steps from 60% of the way) or "at:80,81" (loop indices).',
        ),
        smoother_reencode: str = typer.Option(
            "mean",
            "--smoother-reencode",
            help="Re-encode smoothed frames with the VAE posterior mean, or a seeded sample (ControlVideo).",
        ),
        no_pool_norm: bool = typer.Option(False, "--no-pool-norm", help="Per-frame GroupNorm statistics."),
        sequential_cfg: bool = typer.Option(
            False, "--sequential-cfg", help="Run the two guidance halves one after the other (less memory)."
        ),
        gif: bool = typer.Option(False, "--gif", help="Also write <out>.gif."),
        save_frames: bool = typer.Option(False, "--save-frames", help="Also write <out>_frames/ PNGs."),
        side_by_side: bool = typer.Option(False, "--side-by-side", help="Also write <out>_side_by_side.mp4."),
        device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
        dtype: str = typer.Option("fp32", "--dtype", help="fp32|fp16|bf16 (fp16 falls back to fp32 on CPU)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
        list_interpolators: bool = typer.Option(
            False,
            "--list-interpolators",
            is_eager=True,
            callback=_list_interpolators,
            help="List interpolators and exit.",
        ),
    ) -> None:
        from lapgen.models.video_generation import VideoConfig, generate_video
        from lapgen.progress import make_progress, notice

        config = VideoConfig(
            prompt=prompt,
            masks=str(masks[0]) if len(masks) == 1 else [str(m) for m in masks],
            out=str(out),
            model=model,
            controlnet=(controlnet[0] if len(controlnet) == 1 else list(controlnet)) if controlnet else None,
            controlnet_scale=(
                (controlnet_scale[0] if len(controlnet_scale) == 1 else list(controlnet_scale))
                if controlnet_scale
                else 1.0
            ),
            frames=frames,
            fps=fps,
            steps=steps,
            guidance=guidance,
            seed=seed,
            negative_prompt=negative_prompt,
            resolution=resolution,
            long=long,
            max_full_frames=max_full_frames,
            window=window,
            clip_kv=clip_kv,
            clips_per_pass=clips_per_pass,
            interpolator=interpolator,
            smoother_steps=smoother_steps,
            smoother_reencode=smoother_reencode,
            pool_norm=not no_pool_norm,
            sequential_cfg=sequential_cfg,
            gif=gif,
            save_frames=save_frames,
            side_by_side=side_by_side,
            device=device,
            dtype=dtype,
            overwrite=overwrite,
            method=method,
            motion_adapter=motion_adapter,
            context=context,
            context_stride=context_stride,
            free_noise=free_noise,
            free_noise_fusion=free_noise_fusion,
        )
        progress = make_progress()
        state: dict = {}

        def on_step(i: int, total: int) -> None:  # the bar starts once inputs are valid and models loaded
            if "task" not in state:
                progress.start()
                state["task"] = progress.add_task("denoising", total=total)
            progress.update(state["task"], completed=i)

        try:
            result = generate_video(config, on_step=on_step)
        except BaseException:
            if "task" in state:
                progress.abort()  # an error leaves no half-drawn bar, only its one line
            raise
        if "task" in state:
            progress.stop()
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "out": str(result.out),
                        "frames": result.frames,
                        "fps": result.fps,
                        "card": str(result.card),
                        "long_video": result.long_video,
                        "long_video_reason": result.long_video_reason,
                        "smoothed_steps": result.smoothed_steps,
                        "interpolator": result.interpolator,
                        "extras": result.extras,
                        "method": result.method,
                        "free_noise": result.free_noise,
                    }
                )
            )
        elif result.method == "animatediff":
            fn = result.free_noise or {}
            how = f"FreeNoise, {fn.get('windows')} windows" if fn.get("used") else "all frames at once"
            notice(f"wrote {result.frames} frames at {result.fps:g} fps to {result.out} (AnimateDiff; {how})")
        else:
            used = (result.interpolator or {}).get("used", "-")
            smoothing = (
                f"smoothed at {result.smoothed_steps} with {used}"
                if result.smoothed_steps
                else "no smoothing"
            )
            notice(
                f"wrote {result.frames} frames at {result.fps:g} fps to {result.out} "
                f"({'hierarchical' if result.long_video else 'full attention'}; {smoothing})"
            )
