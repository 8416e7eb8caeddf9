"""`lapgen eval video GEN REAL`: mask adherence, temporal consistency and FVD of generated videos.

Parses options, builds a `VideoEvalConfig` and calls `lapgen.models.video_eval.evaluate_videos`; the result is
published like every eval result (`lapgen/cli/eval_results.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lapgen.cli.eval_results import check_out, publish

_HELP = ("Video metrics of GEN against REAL: mask_f1 / mask_iou (segmenter vs the conditioning masks), "
         "warp_error (optical-flow warping, OpenCV), frame_consistency (CLIP, VBench's formula), fvd (I3D) and "
         "cd_fvd (VideoMAE-v2). A set is a folder of MP4s or frame folders, a `lapgen sample-video` set, "
         "`lapgen video --save-frames` frames or a `lapgen masks clips` output. Every video is decoded once; "
         "metrics without weights are skipped with a note (docs/metrics-video.md).")


def _metrics(text: str | None) -> tuple[str, ...] | None:
    if text is None or text.strip().lower() in ("", "auto"):
        return None
    return tuple(m.strip().replace("-", "_") for m in text.split(",") if m.strip())


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _print(result: dict[str, Any]) -> None:
    from rich.table import Table

    from lapgen.progress import stdout

    table = Table(title=f"lapgen eval video: {Path(result['gen']).name} vs {Path(result['real']).name}")
    for col in ("metric", "GEN", "REAL", "95% CI (GEN, videos)", "N gen/real", "network"):
        table.add_column(col)
    for metric, value in result["metrics"].items():
        d = result["details"][metric]
        ci = d.get("ci")
        band = f"[{ci['low']:.4g}, {ci['high']:.4g}]" if ci else "-"
        network = d.get("extractor") or (d.get("segmenter") or {}).get("name") or d.get("protocol", "-")
        table.add_row(metric, _fmt(value), _fmt(d.get("real")), band,
                      f"{_fmt(d.get('n_gen', d.get('n_scored')))}/{_fmt(d.get('n_real'))}", str(network)[:40])
    stdout.print(table)
    for metric, why in result["skipped"].items():
        stdout.print(f"{metric}: skipped ({why})", highlight=False)


def video_command(
    gen: Path = typer.Argument(..., help="Generated videos."),
    real: Path = typer.Argument(..., help="Real videos (e.g. a `lapgen masks clips` output)."),
    metrics: str | None = typer.Option(None, "--metrics", help="Comma-separated subset of mask_f1, mask_iou, "
                                          "warp_error, frame_consistency, fvd, cd_fvd (default: every metric "
                                          "whose inputs and weights are here; named ones must be computable)."),
    segmenter: str | None = typer.Option(None, "--segmenter", help="YOLOv8-seg for mask adherence: registry "
                                            "name, run folder or .pt (default: the default segmenter)."),
    conf: float = typer.Option(0.25, "--conf", help="Segmenter confidence threshold (recorded)."),
    imgsz: int | None = typer.Option(None, "--imgsz", help="Segmenter inference size (default: its training "
                                        "size)."),
    clip: str = typer.Option("clip-vit-b-32", "--clip", help="CLIP extractor of frame_consistency."),
    clip_weights: str | None = typer.Option(None, "--clip-weights", help="Its weights (file or registry name)."),
    i3d_weights: str | None = typer.Option(None, "--i3d-weights", help="I3D TorchScript file or registry name "
                                              "for FVD (default: the i3d-kinetics400 entry)."),
    videomae_weights: str | None = typer.Option(None, "--videomae-weights", help="VideoMAE-v2 weights or "
                                                   "registry name for CD-FVD (default: videomae-v2-g)."),
    fvd_frames: int = typer.Option(16, "--fvd-frames", help="Frames per FVD clip (I3D)."),
    fvd_stride: int = typer.Option(1, "--fvd-stride", help="Take every k-th frame inside a clip."),
    fvd_clips: str = typer.Option("all", "--fvd-clips", help="all: consecutive non-overlapping clips of every "
                                  "video; first: the first clip of each video."),
    fid_method: str = typer.Option("auto", "--fid-method", help="Fréchet route: auto, eig, sqrtm, gram."),
    boot: int = typer.Option(1000, "--boot", help="Video-level bootstrap replicates (0 = none)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    model: str | None = typer.Option(None, "--model", help="Label: model (default: GEN's card)."),
    setup: str | None = typer.Option(None, "--setup", help="Label: setup (default: GEN's card)."),
    epoch: int | None = typer.Option(None, "--epoch", help="Label: epoch (default: GEN's card)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(16, "--batch-size", help="Frames per CLIP call, clips per I3D/VideoMAE call."),
    workers: int = typer.Option(2, "--workers", help="Frame preprocessing threads."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Use the per-video cache (resumes runs)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout (progress on stderr)."),
) -> None:
    """Video metrics of GEN against REAL (see `lapgen eval video --help`)."""
    from lapgen.models.video_eval import VideoEvalConfig, evaluate_videos

    check_out(out, overwrite)
    cfg = VideoEvalConfig(gen=gen, real=real, metrics=_metrics(metrics), segmenter=segmenter, conf=conf,
                          imgsz=imgsz, clip=clip, clip_weights=clip_weights, i3d_weights=i3d_weights,
                          videomae_weights=videomae_weights, fvd_frames=fvd_frames, fvd_stride=fvd_stride,
                          fvd_clips=fvd_clips, fid_method=fid_method, n_boot=boot, seed=seed, device=device,
                          batch_size=batch_size, workers=workers, use_cache=cache,
                          labels={"model": model, "setup": setup, "epoch": epoch})
    result = evaluate_videos(cfg)
    if not publish(result, [], out, as_json, metric="video", metrics=result["metrics"]):
        _print(result)


def register(eval_app: typer.Typer) -> None:
    eval_app.command("video", help=_HELP)(video_command)
