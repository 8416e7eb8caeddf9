"""`lapgen masks`: author, extract and preview the mask sequences that drive `lapgen video`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

masks_app = typer.Typer(
    help="Author, extract and preview tool-mask sequences (the input of `lapgen video`).",
    no_args_is_help=True,
)


def _size(text: str | None) -> tuple[int, int] | None:
    from lapgen.errors import LapgenError

    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LapgenError(f"bad --size {text!r}", hint="write WIDTHxHEIGHT, e.g. 128x128") from None
    return w, h


@masks_app.command(
    "animate",
    help="Move tool masks along smooth keyframed trajectories. One --path (and "
    "optionally --rotate/--scale) per --mask, in order.",
)
def animate_cmd(
    mask: list[Path] = typer.Option(..., "--mask", help="Tool mask image (white tool on black); repeatable."),
    path: list[str] = typer.Option(
        ..., "--path", help='Centroid keyframes "x0,y0;x1,y1;..." in px; one per mask.'
    ),
    rotate: list[str] = typer.Option(
        [], "--rotate", help='Degrees (counter-clockwise): "a", "a0:a1" (a ramp over the clip) or one value per '
        'keyframe "a0:a1:...:aK"; one per mask.'
    ),
    scale: list[str] = typer.Option(
        [], "--scale", help='Scale: "s", "s0:s1" or one value per keyframe "s0:...:sK"; one per mask.'
    ),
    frames: int = typer.Option(..., "--frames", help="Number of frames."),
    size: str | None = typer.Option(None, "--size", help="Canvas WIDTHxHEIGHT (default: the first mask's)."),
    out: Path = typer.Option(..., "--out", help="Output folder of NNNNNN.png masks."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    from lapgen.errors import LapgenError
    from lapgen.models.mask_sequences import ToolPath, animate_masks
    from lapgen.progress import notice

    if len(path) != len(mask):
        raise LapgenError(f"{len(mask)} --mask but {len(path)} --path", hint="give one --path per --mask")
    for name, values in (("--rotate", rotate), ("--scale", scale)):
        if values and len(values) != len(mask):
            raise LapgenError(
                f"{len(values)} {name} for {len(mask)} --mask", hint=f"give one {name} per --mask"
            )
    tools = [
        ToolPath(str(m), p, rotate[i] if rotate else None, scale[i] if scale else None)
        for i, (m, p) in enumerate(zip(mask, path))
    ]
    result = animate_masks(tools, frames, out, size=_size(size), overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps({"out": str(result), "frames": frames}))
    else:
        notice(f"wrote {frames} masks to {result}")


@masks_app.command(
    "from-video",
    help="Segment a real clip into a mask sequence (union of the segmenter's "
    "instances; a frame without detections reuses the previous mask).",
)
def from_video_cmd(
    video: Path = typer.Argument(..., help="Input video (e.g. a Cholec80 clip)."),
    out: Path = typer.Option(..., "--out", help="Output folder of NNNNNN.png masks."),
    segmenter: str | None = typer.Option(None, "--segmenter", help="Segmenter (default: registry default)."),
    size: int | None = typer.Option(128, "--size", help="Resize frames to SIZE x SIZE first (0 = keep)."),
    conf: float = typer.Option(0.25, "--conf", help="Detection confidence threshold."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    from lapgen.data.video import probe
    from lapgen.models.mask_sequences import check_frame_size, make_segment_fn, masks_from_video
    from lapgen.outputs import prepare_output_dir
    from lapgen.progress import make_progress, notice

    check_frame_size(size or None)
    info = probe(video)  # one-line error for a missing/corrupt video before loading the segmenter
    if out.exists() and not overwrite:
        prepare_output_dir(out, overwrite=False)  # raises the standard one-line error
    segment, seg_info = make_segment_fn(segmenter, device=device, conf=conf)
    with make_progress() as progress:
        task = progress.add_task("segmenting", total=info.frames or None)
        result = masks_from_video(
            video,
            out,
            segment,
            size=size or None,
            segmenter_info=seg_info,
            overwrite=overwrite,
            advance=lambda k: progress.advance(task, k),
        )
    if as_json:
        typer.echo(json.dumps({"out": str(out), **result}))
    else:
        notice(f"wrote {result['frames']} masks to {out} ({result['reused_masks']} reused the previous mask)")


@masks_app.command(
    "clips",
    help="Find CholecT50 runs where the prompt stays the same for --seconds, and write "
    "each as 25 fps Cholec80 frames + mask sequence + prompt (a real reference set).",
)
def clips_cmd(
    cholec80: Path = typer.Option(..., "--cholec80", help="Cholec80 release root."),
    cholect50: Path = typer.Option(..., "--cholect50", help="CholecT50 release root."),
    out: Path = typer.Option(..., "--out", help="Output folder (clip_NNN/ per clip)."),
    segmenter: str | None = typer.Option(None, "--segmenter", help="Segmenter (default: registry default)."),
    seconds: int = typer.Option(10, "--seconds", help="Clip length in seconds (paper: 10 = 250 frames)."),
    n: int = typer.Option(50, "--n", help="Number of clips drawn (paper: 50)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the clip draw."),
    size: int = typer.Option(128, "--size", help="Frame size in px (paper: 128)."),
    prompt_format: str = typer.Option("paper", "--prompt-format", help="Prompt format (paper|paper-calot)."),
    conf: float = typer.Option(0.25, "--conf", help="Detection confidence threshold."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    from lapgen.data.mask_clips import plan_clips
    from lapgen.data.prompts import check_format
    from lapgen.models.mask_sequences import check_frame_size, extract_clips, make_segment_fn
    from lapgen.outputs import prepare_output_dir
    from lapgen.progress import make_progress, notice

    check_format(prompt_format)
    check_frame_size(size)
    plan_clips(cholect50, cholec80, seconds=seconds, n=n, seed=seed, prompt_format=prompt_format)  # validate
    if out.exists() and not overwrite:
        prepare_output_dir(out, overwrite=False)
    segment, seg_info = make_segment_fn(segmenter, device=device, conf=conf)
    with make_progress() as progress:
        task = progress.add_task("clips", total=None)
        result = extract_clips(
            cholec80,
            cholect50,
            out,
            segment,
            seconds=seconds,
            n=n,
            seed=seed,
            size=size,
            prompt_format=prompt_format,
            segmenter_info=seg_info,
            overwrite=overwrite,
            on_plan=lambda k: progress.update(task, total=k),
            advance=lambda k: progress.advance(task, k),
        )
    if as_json:
        typer.echo(json.dumps({"out": str(out), **result}))
    else:
        notice(
            f"wrote {result['clips']} clips of {seconds} s to {out} ({result['windows_found']} windows found)"
        )


@masks_app.command(
    "silhouette",
    help="Write a built-in tool silhouette (the studio's) as a mask PNG: a start for `lapgen masks animate`.",
)
def silhouette_cmd(
    tool: str = typer.Argument(..., help="grasper, bipolar, hook, scissors, clipper or irrigator."),
    out: Path | None = typer.Option(None, "--out", help="Output PNG (default: TOOL.png in the current folder)."),
    size: int = typer.Option(128, "--size", help="The mask is SIZE x SIZE pixels (at least 16)."),
    angle: float = typer.Option(35.0, "--angle", help="Direction from the tip to the border, degrees clockwise "
                                "from +x (35: the shaft comes from the lower-right corner)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    from lapgen.progress import notice
    from lapgen.studio.silhouettes import save_silhouette, tip_position

    written = save_silhouette(tool, out or Path(f"{tool}.png"), size=size, angle=angle, overwrite=overwrite)
    tip = tip_position(tool, size, angle=angle)
    if as_json:
        typer.echo(json.dumps({"out": str(written), "tool": tool, "size": size, "tip": list(tip)}))
    else:
        notice(f"wrote the {tool} silhouette ({size}x{size}, tip at x={tip[0]:g}, y={tip[1]:g}) to {written}")


@masks_app.command("preview", help="A GIF of a mask folder (frames | masks for a clip folder).")
def preview_cmd(
    folder: Path = typer.Argument(..., help="Mask folder, or a clip folder with masks/ and frames/."),
    out: Path = typer.Option(..., "--out", help="Output .gif."),
    fps: float = typer.Option(8.0, "--fps", help="GIF frame rate."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
) -> None:
    from lapgen.models.mask_sequences import preview_masks
    from lapgen.progress import notice

    notice(f"wrote {preview_masks(folder, out, fps=fps, overwrite=overwrite)}")


def register(app: typer.Typer) -> None:
    app.add_typer(masks_app, name="masks")
