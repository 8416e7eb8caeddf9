"""`lapgen video`: a prompt and a mask sequence -> a laparoscopic video (ControlVideo, Stage 3)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

_HELP = (
    "Generate a video from a text prompt and one tool mask per frame (ControlVideo with the Stage-1 model "
    "and Stage-2 ControlNet). Masks: a folder of PNGs (natural sort) or a video. Writes an H.264 MP4 "
    "and a card beside it."
)


def _list_interpolators(value: bool) -> None:
    if value:
        from lapgen.models.controlvideo.interpolators import list_interpolators

        for name, description in list_interpolators().items():
            typer.echo(f"{name}\t{description}")
        raise typer.Exit()


def register(app: typer.Typer) -> None:
    @app.command("video", help=_HELP)
    def video_cmd(
        prompt: str = typer.Option(..., "--prompt", help='Action text, e.g. "grasper retract liver".'),
        masks: Path = typer.Option(..., "--masks", help="Folder of mask images or a mask video."),
        out: Path = typer.Option(Path("clip.mp4"), "--out", help="Output .mp4 file."),
        model: str | None = typer.Option(
            None, "--model", help="Stage-1 pipeline (default: registry default)."
        ),
        controlnet: str | None = typer.Option(
            None, "--controlnet", help="Stage-2 ControlNet (default: registry default)."
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
        long: str = typer.Option("auto", "--long", help="Hierarchical key-frame sampling: auto|on|off."),
        max_full_frames: int = typer.Option(16, "--max-full-frames", help="auto: full attention up to this."),
        window: int | None = typer.Option(None, "--window", help="Key-frame window (default sqrt(frames))."),
        clip_kv: str = typer.Option(
            "keys", "--clip-kv", help="Clips attend to: keys (paper) | original (code)."
        ),
        clips_per_pass: int = typer.Option(
            1, "--clips-per-pass", help="Long mode: stack equal-length clips per call (faster, more memory)."
        ),
        interpolator: str = typer.Option(
            "flow",
            "--interpolator",
            help="Smoother interpolator: flow|linear|rife:PATH (your RIFE-style model file).",
        ),
        smoother_steps: str = typer.Option(
            "auto", "--smoother-steps", help='"auto" (60%% of the steps, 2 steps), "none", or "60,61".'
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
            masks=str(masks),
            out=str(out),
            model=model,
            controlnet=controlnet,
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
            pool_norm=not no_pool_norm,
            sequential_cfg=sequential_cfg,
            gif=gif,
            save_frames=save_frames,
            side_by_side=side_by_side,
            device=device,
            dtype=dtype,
            overwrite=overwrite,
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
                        "smoothed_steps": result.smoothed_steps,
                        "extras": result.extras,
                    }
                )
            )
        else:
            notice(f"wrote {result.frames} frames at {result.fps:g} fps to {result.out}")
