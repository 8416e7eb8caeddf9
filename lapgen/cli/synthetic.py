"""`lapgen synthetic`: synthetic CholecT50 / Cholec80 / CholecSeg8k / ART-Net releases in the real layouts."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def synthetic_command(
    out: Path = typer.Option(..., "--out", help="Output folder: CholecT50/, cholec80/, CholecSeg8k/, ART-Net/ "
                             "and lapgen.yaml."),
    cholect50_videos: str = typer.Option("1,103", "--cholect50-videos", help="CholecT50 video ids, "
                                         "comma-separated ('' skips CholecT50)."),
    cholect50_frames: int = typer.Option(12, "--cholect50-frames", help="Frames per CholecT50 video (1 fps)."),
    cholec80_videos: str = typer.Option("3,1", "--cholec80-videos", help="Cholec80 video ids 1-80 ('' skips "
                                        "Cholec80); 01 is also in CholecT50, 03 is not."),
    cholec80_frames: int = typer.Option(110, "--cholec80-frames", help="Frames per Cholec80 video (25 fps); a "
                                        "video also in CholecT50 spans at least its CholecT50 seconds."),
    cholecseg8k_videos: str = typer.Option("1", "--cholecseg8k-videos", help="CholecSeg8k video ids ('' skips "
                                           "CholecSeg8k)."),
    cholecseg8k_clips: int = typer.Option(1, "--cholecseg8k-clips", help="CholecSeg8k clips per video."),
    cholecseg8k_frames: int = typer.Option(80, "--cholecseg8k-frames", help="Frames per CholecSeg8k clip "
                                           "(the real clips: 80)."),
    artnet_train: str = typer.Option("4,4", "--artnet-train", help="ART-Net train images: POS,NEG "
                                     "(0,0 here and in --artnet-test skips ART-Net)."),
    artnet_test: str = typer.Option("2,2", "--artnet-test", help="ART-Net test images: POS,NEG."),
    size: str = typer.Option("128x72", "--size", help="Frame size WIDTHxHEIGHT (the real frames: 854x480; "
                             "even sides for the Cholec80 videos)."),
    tool_scale: float = typer.Option(1.0, "--tool-scale", help="Thickness factor of the drawn tools."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same options give the same bytes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Write synthetic Cholec datasets in their real on-disk layouts (tissue and drawn tools; not surgery)."""
    from lapgen.data.synthetic_release import (
        SyntheticConfig,
        parse_ids,
        parse_pair,
        parse_size,
        write_synthetic_release,
    )
    from lapgen.progress import notice

    cfg = SyntheticConfig(
        out=out, cholect50_videos=parse_ids(cholect50_videos, "--cholect50-videos"),
        cholect50_frames=cholect50_frames, cholec80_videos=parse_ids(cholec80_videos, "--cholec80-videos"),
        cholec80_frames=cholec80_frames, cholecseg8k_videos=parse_ids(cholecseg8k_videos, "--cholecseg8k-videos"),
        cholecseg8k_clips=cholecseg8k_clips, cholecseg8k_frames=cholecseg8k_frames,
        artnet_train=parse_pair(artnet_train, "--artnet-train"), artnet_test=parse_pair(artnet_test, "--artnet-test"),
        size=parse_size(size), tool_scale=tool_scale, seed=seed, overwrite=overwrite)
    summary = write_synthetic_release(cfg)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    parts = [f"{name} ({info['images']} images)" for name, info in summary["written"].items()]
    skipped = f"; skipped {', '.join(summary['skipped'])}" if summary["skipped"] else ""
    notice(f"wrote synthetic {', '.join(parts) or 'nothing'} to {summary['out']}{skipped}")


def register(app: typer.Typer) -> None:
    app.command("synthetic")(synthetic_command)
