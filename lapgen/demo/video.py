"""The Stage-3 steps of `lapgen demo`: author a moving grasper mask (`lapgen masks silhouette`, `lapgen masks
animate`) and generate its video (`lapgen video`), plus the strip picture of the video's frames. Like
`lapgen.demo.steps`, each calls the library function behind its printed command."""

from __future__ import annotations

from pathlib import Path

from lapgen.demo.steps import NAMES, PROMPT, Context, cmd

_TOOL_PATH = "40,92;60,72;80,58"  # centroid keyframes (px at 128x128): the grasper moves up-left to centre


def masks_cmds(c: Context) -> list[str]:
    return [
        cmd("lapgen", "masks", "silhouette", "grasper", "--size", 128, "--out", c.p("video", "grasper.png")),
        cmd(
            "lapgen",
            "masks",
            "animate",
            "--mask",
            c.p("video", "grasper.png"),
            "--path",
            _TOOL_PATH,
            "--rotate",
            "0:-20",
            "--frames",
            c.sizes.video_frames,
            "--out",
            c.p("video", "masks"),
        ),
    ]


def masks_step(c: Context) -> dict:
    from lapgen.models.mask_sequences import ToolPath, animate_masks
    from lapgen.studio.silhouettes import save_silhouette

    c.p("video").mkdir(parents=True, exist_ok=True)
    save_silhouette("grasper", c.p("video", "grasper.png"), size=128, overwrite=True)
    animate_masks(
        [ToolPath(str(c.p("video", "grasper.png")), _TOOL_PATH, "0:-20")],
        c.sizes.video_frames,
        c.p("video", "masks"),
        overwrite=True,
    )
    return {}


def video_cmds(c: Context) -> list[str]:
    s = c.sizes
    return [
        cmd(
            "lapgen",
            "video",
            "--prompt",
            PROMPT,
            "--masks",
            c.p("video", "masks"),
            "--model",
            NAMES["sd"],
            "--controlnet",
            NAMES["controlnet"],
            "--steps",
            s.video_steps,
            "--fps",
            s.video_fps,
            "--seed",
            c.seed,
            "--side-by-side",
            "--gif",
            "--save-frames",
            "--device",
            c.device,
            "--out",
            c.p("video", "clip.mp4"),
        ),
        f"(library) lapgen.demo.video.write_strip -> {c.p('video', 'strip.png')}",
    ]


def write_strip(frames_dir: Path, out: Path, *, columns: int = 4, every: int = 2) -> Path:
    """A picture of a `lapgen video --save-frames` folder: mask | frame pairs of every `every`-th frame."""
    import numpy as np
    from PIL import Image

    from lapgen.outputs import atomic_file

    frames = sorted(frames_dir.glob("*.png"))[::every]
    if not frames:
        raise FileNotFoundError(frames_dir)
    tiles = []
    for f in frames:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        mask = np.asarray(Image.open(frames_dir / "masks" / f.name).convert("RGB"))
        gap = np.full((rgb.shape[0], 2, 3), 255, np.uint8)
        tiles.append(np.concatenate([mask, gap, rgb, np.full((rgb.shape[0], 6, 3), 255, np.uint8)], axis=1))
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    sep = np.full((6, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for r in rows for x in (r, sep)][:-1], axis=0)
    with atomic_file(out) as fh:
        Image.fromarray(grid).save(fh, format="PNG", optimize=True)
    return out


def make_video(c: Context, name: str, strip: str, **method: str) -> None:
    """The demo's prompt and authored masks -> `video/NAME.mp4` (with its GIF, frames and mask | video), as
    `lapgen video` does, and the strip picture `video/STRIP`; `method` adds `lapgen video`'s method options."""
    from lapgen.models.video_generation import VideoConfig, generate_video
    from lapgen.progress import make_progress

    s = c.sizes
    config = VideoConfig(prompt=PROMPT, masks=str(c.p("video", "masks")), out=str(c.p("video", f"{name}.mp4")),
                         model=NAMES["sd"], controlnet=NAMES["controlnet"], steps=s.video_steps, fps=s.video_fps,
                         seed=c.seed, side_by_side=True, save_frames=True, gif=True, device=c.device,
                         overwrite=True, **method)
    with make_progress() as progress:
        task = progress.add_task(f"denoising ({config.method})", total=s.video_steps)
        generate_video(config, on_step=lambda i, total: progress.update(task, completed=i, total=total))
    write_strip(c.p("video", f"{name}_frames"), c.p("video", strip))


def video_step(c: Context) -> dict:
    make_video(c, "clip", "strip.png")
    return {}


def video_outputs(c: Context) -> list[Path]:
    return [c.p("video", n) for n in ("clip.mp4", "clip_side_by_side.mp4", "clip.gif", "strip.png")]
