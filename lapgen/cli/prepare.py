"""`lapgen prepare`: Cholec80 / CholecT50 -> the frames dataset Stage 1 trains on, or with `--clips` the clip
dataset `lapgen train-motion` trains on (docs/prepare.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def prepare_command(
    out: Path | None = typer.Option(None, "--out", help="Output folder (metadata.jsonl + images/ or clips/ + "
                                    "lapgen.yaml); default: frames/ (clips/ with --clips) in the current folder."),
    cholect50: Path | None = typer.Option(None, "--cholect50", help="CholecT50 release root (videos/, labels/)."),
    cholec80: Path | None = typer.Option(
        None, "--cholec80", help="Cholec80 release root (videos/, phase_annotations/, tool_annotations/); "
        "only the 35 videos that are not in CholecT50 are used."),
    size: int = typer.Option(128, "--size", help="Output images are SIZE x SIZE pixels (antialiased resize)."),
    split: str = typer.Option(
        "rdv", "--split", help="CholecT50 split: rdv, challenge, fold1..fold5 (video-disjoint), all (everything "
        "train), or paper (10,000 random test frames, seed 42; leaks videos across splits)."),
    normalize_phase_names: bool = typer.Option(
        False, "--normalize-phase-names", help="Write 'calot-triangle-dissection' instead of the dataset's "
        "'carlot-triangle-dissection' (prompt format paper-calot; use the same at training and sampling)."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0 = all cores); each decodes whole videos."),
    seed: int = typer.Option(42, "--seed", help="Seed of the --split paper test-frame draw."),
    clips: bool = typer.Option(False, "--clips", help="Write short fixed-length clips (a folder of frames per "
                               "clip, one prompt each) for `lapgen train-motion` instead of single frames."),
    clip_frames: int = typer.Option(16, "--clip-frames", help="Clip mode: frames per clip."),
    clip_fps: float = typer.Option(8.0, "--clip-fps", help="Clip mode: frames per second of a clip (Cholec80 "
                                   "videos are 25 fps, CholecT50's PNGs 1 fps)."),
    clip_every: float | None = typer.Option(None, "--clip-every", help="Clip mode: seconds from one clip's "
                                            "start to the next (default: back to back)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Turn Cholec80 and/or CholecT50 into a 128x128 text-image dataset (one prompt per frame), or with --clips
    into short clips with one prompt each."""
    import json

    from lapgen.data.prepare import PrepareConfig, prepare
    from lapgen.progress import is_quiet, notice, stdout, warn

    cfg = PrepareConfig(out=out or Path("clips" if clips else "frames"), cholect50=cholect50, cholec80=cholec80,
                        size=size, split=split, prompt_format="paper-calot" if normalize_phase_names else "paper",
                        seed=seed, workers=workers, overwrite=overwrite, clips=clips, clip_frames=clip_frames,
                        clip_fps=clip_fps, clip_every=clip_every)
    result = prepare(cfg)
    unit = "clips" if clips else "frames"
    notice(f"{'clip' if clips else 'frames'} dataset: {result.records} {unit} -> {Path(result.out).resolve()}")
    if result.warnings:
        warn(f"{len(result.warnings)} warning(s), e.g. {result.warnings[0]} (all listed in {cfg.out}/lapgen.yaml)")
    if as_json:
        typer.echo(json.dumps({"out": str(result.out), "records": result.records, "counts": result.counts,
                               "warnings": len(result.warnings), "skipped_videos": result.skipped_videos}))
        return
    if is_quiet():
        return
    from rich.table import Table

    table = Table(title=f"{result.records} {unit} -> {result.out}")
    for col in ("source", "split", "phase", unit):
        table.add_column(col, justify="right" if col == unit else "left")
    for row in result.counts:
        table.add_row(row["source"], row["split"], row["phase"], str(row[unit]))
    stdout.print(table)
    if result.skipped_videos:
        what = "videos without clips" if clips else "Cholec80 videos also in CholecT50"
        stdout.print(f"skipped {what}: {', '.join(result.skipped_videos)}")


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare_command)
