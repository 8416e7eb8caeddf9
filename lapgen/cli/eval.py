"""`lapgen eval`: FID, KID, CLIP-FID, CMMD, fidelity (all four), tool-mask F1 and the Table-1 report.

Each command parses options, builds a config and calls one library function in `lapgen.metrics`; torch,
open_clip and ultralytics are imported only inside command bodies. `eval map` and `eval train-recognizer`
come from `lapgen/cli/eval_map.py` and `eval video` from `lapgen/cli/eval_video.py`; they publish results
through `lapgen/cli/eval_results.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from lapgen.cli import eval_map, eval_video
from lapgen.cli.eval_results import check_out, publish

eval_app = typer.Typer(help="Measure generated images and videos: FID, KID, CLIP-FID, CMMD, tool-mask F1, mAP, "
                            "video metrics (FVD, warp error, mask adherence); Table-1 style reports.",
                       no_args_is_help=True)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _print_results(results: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from lapgen.progress import stdout

    table = Table(title="lapgen eval")
    for col in ("metric", "value", "spread", "N gen/real", "protocol", "extractor", "weights", "GEN"):
        table.add_column(col)
    for r in results:
        spread = r.get("spread")
        band = "-"
        if spread:
            band = f"± {spread['sd']:.3g} sd ({spread['method']}, n={spread['n']})"
        elif r.get("std") is not None:
            band = f"± {r['std']:.3g} (subset std)"
        table.add_row(r["metric"], _fmt(r["value"]), band, f"{_fmt(r['n_gen'])}/{r['n_real']}", r["protocol"],
                      r["extractor"], r["weights_sha256"][:12], Path(r["gen"]).name)
    stdout.print(table)


def _emit(results: list[dict[str, Any]], as_json: bool, out: Path | None) -> None:
    from lapgen.metrics.evaluate import SCHEMA

    payload: Any = results[0] if len(results) == 1 else {"schema": SCHEMA, "results": results}
    if not publish(payload, results, out, as_json):
        _print_results(results)


def _fidelity(metrics: tuple[str, ...], help_text: str, single_weights: str):
    def command(
        sets: list[Path] = typer.Argument(..., metavar="GEN... REAL", help="Generated set(s), then the real "
                                          "set: image folders or lapgen datasets (metadata.jsonl)."),
        protocol: str = typer.Option("clean", "--protocol", help="Inception resize: clean (clean-fid, the "
                                     "paper's numbers) or torch-fidelity (TF1 bilinear)."),
        weights: str | None = typer.Option(None, "--weights", help=f"Weights of the {single_weights} "
                                              "(file or registry name; default: the registry)."),
        inception: str = typer.Option("inception-v3", "--inception", help="FID/KID extractor: inception-v3 "
                                      "(torch-fidelity's port) or inception-v3-clean (NVIDIA's TorchScript file "
                                      "clean-fid runs; local file only). See `lapgen eval extractors`."),
        clip_fid_model: str = typer.Option("clip-vit-b-32", "--clip-fid-model", help="CLIP-FID extractor "
                                           "(the paper: clip-vit-b-32)."),
        clip: str = typer.Option("clip-vit-b-32", "--clip", help="CMMD backbone: clip-vit-b-32 (lapgen's "
                                 "default) or clip-vit-l-14-336 (the CMMD reference, the paper's code)."),
        clip_fid_weights: str | None = typer.Option(None, "--clip-fid-weights", help="ViT-B/32 weights "
                                                       "for CLIP-FID in `eval fidelity`."),
        cmmd_weights: str | None = typer.Option(None, "--cmmd-weights", help="Weights of the --clip model "
                                                   "for CMMD in `eval fidelity`."),
        kid_subsets: int = typer.Option(100, "--kid-subsets", help="KID subsets."),
        kid_subset_size: int | None = typer.Option(None, "--kid-subset-size", help="KID subset size "
                                                      "(default min(N_gen, N_real, 1000), recorded)."),
        kid_seed: int = typer.Option(2020, "--kid-seed", help="KID subset seed (torch-fidelity's default)."),
        kid_estimator: str = typer.Option("auto", "--kid-estimator", help="KID arithmetic: torch-fidelity "
                                          "(float64), clean-fid (its kernel_distance, float32), or auto "
                                          "(clean-fid with --inception inception-v3-clean --protocol clean)."),
        seeds: int | None = typer.Option(None, "--seeds", help="The GEN sets are K seed replicates of one "
                                            "model (K folders, or one folder of K sub-folders): mean ± sd."),
        splits: int | None = typer.Option(None, "--splits", help="Also report the spread over K disjoint "
                                             "splits (values at size N/K)."),
        split_seed: int = typer.Option(0, "--split-seed", help="Seed of the disjoint splits."),
        gen_split: str | None = typer.Option(None, "--gen-split", help="Split of a GEN dataset."),
        real_split: str | None = typer.Option(None, "--real-split", help="Split of a REAL dataset."),
        real_limit: int | None = typer.Option(None, "--real-limit", help="Sample this many REAL images "
                                                 "(the paper: 10000)."),
        real_seed: int = typer.Option(42, "--real-seed", help="Seed of the REAL sample (the paper: 42)."),
        fid_method: str = typer.Option("auto", "--fid-method", help="FID route: eig (torch-fidelity), sqrtm, "
                                       "gram, clean-fid (clean-fid's arithmetic exactly), or auto (clean-fid "
                                       "with inception-v3-clean and --protocol clean, else gram/eig)."),
        model: str | None = typer.Option(None, "--model", help="Label: model (default: GEN's card)."),
        setup: str | None = typer.Option(None, "--setup", help="Label: setup (default: GEN's card)."),
        epoch: int | None = typer.Option(None, "--epoch", help="Label: epoch (default: GEN's card)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        batch_size: int = typer.Option(50, "--batch-size", help="Images per forward pass (recorded)."),
        workers: int = typer.Option(2, "--workers", help="Image decoding/resizing threads."),
        cache: bool = typer.Option(True, "--cache/--no-cache", help="Use the feature cache."),
        out: Path | None = typer.Option(None, "--out", help="Also write the JSON result to this file."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout (progress on stderr)."),
    ) -> None:
        from lapgen.errors import LapgenError
        from lapgen.metrics.evaluate import FidelityConfig, evaluate_fidelity

        if len(sets) < 2:
            raise LapgenError("give at least one GEN set and the REAL set", hint="lapgen eval fid GEN REAL")
        check_out(out, overwrite)
        only = metrics[0] if len(metrics) == 1 else None
        cfg = FidelityConfig(
            gen=list(sets[:-1]), real=sets[-1], metrics=metrics, protocol=protocol, inception=inception,
            clip_fid_model=clip_fid_model, inception_weights=weights if only in (None, "fid", "kid") else None,
            clip_fid_weights=(weights or clip_fid_weights) if only == "clip_fid" else clip_fid_weights,
            cmmd_clip=clip, cmmd_weights=(weights or cmmd_weights) if only == "cmmd" else cmmd_weights,
            kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, kid_seed=kid_seed,
            kid_estimator=kid_estimator, seeds=seeds,
            splits=splits, split_seed=split_seed, gen_split=gen_split, real_split=real_split,
            real_limit=real_limit, real_seed=real_seed, fid_method=fid_method, device=device,
            batch_size=batch_size, workers=workers, use_cache=cache,
            labels={"model": model, "setup": setup, "epoch": epoch})
        _emit(evaluate_fidelity(cfg), as_json, out)

    command.__doc__ = help_text
    return command


def f1_command(
    gen: Path = typer.Argument(..., help="Generated set with metadata.jsonl naming each image's "
                               "conditioning_image_file_name (a ControlNet `lapgen sample` output)."),
    segmenter: str | None = typer.Option(None, "--segmenter", help="YOLOv8-seg: registry name, run folder "
                                            "or .pt file (default: the default segmenter)."),
    conf: float = typer.Option(0.25, "--conf", help="Detection confidence threshold (recorded)."),
    imgsz: int | None = typer.Option(None, "--imgsz", help="Inference size (default: the segmenter's "
                                        "training size)."),
    empty_as_one: bool = typer.Option(False, "--empty-as-one", help="Macro F1: score images where both "
                                      "masks are empty as 1.0 instead of excluding them."),
    boot: int = typer.Option(1000, "--boot", help="Image-level bootstrap replicates (0 = none)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    instance: bool = typer.Option(False, "--instance", help="Also the paper code's instance-level F1 "
                                  "(ultralytics val, single class, mask IoU 0.5)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per prediction batch."),
    model: str | None = typer.Option(None, "--model", help="Label: model (default: GEN's card)."),
    setup: str | None = typer.Option(None, "--setup", help="Label: setup."),
    epoch: int | None = typer.Option(None, "--epoch", help="Label: epoch."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout (progress on stderr)."),
) -> None:
    """Tool-mask F1: masks predicted on generated images vs their conditioning masks (pixel micro/macro)."""
    from lapgen.models.mask_f1 import F1Config, evaluate_mask_f1

    check_out(out, overwrite)
    cfg = F1Config(gen=gen, segmenter=segmenter, conf=conf, imgsz=imgsz, empty_as_one=empty_as_one,
                   n_boot=boot, seed=seed, instance=instance, batch_size=batch_size, device=device,
                   labels={"model": model, "setup": setup, "epoch": epoch})
    result = evaluate_mask_f1(cfg)
    if publish(result, [result], out, as_json):
        return
    from lapgen.progress import stdout

    ci = result.get("ci") or {}
    band = f" 95% CI [{ci['micro_ci'][0]:.4f}, {ci['micro_ci'][1]:.4f}] (image bootstrap, B={ci['n_boot']})" \
        if ci else ""
    stdout.print(f"f1_pixel_micro {result['value']:.4f}{band}", highlight=False)
    stdout.print(f"f1_pixel_macro {result['macro']:.4f} over {result['n_scored']} images "
                 f"({result['n_both_empty']} both-empty excluded)" if not empty_as_one else
                 f"f1_pixel_macro {result['macro']:.4f} (both-empty images scored 1)", highlight=False)
    if result.get("instance"):
        stdout.print(f"f1_instance_yolo_val {result['instance']['value']:.4f} (ultralytics val, single class, "
                     "mask IoU 0.5; the paper code's number)", highlight=False)


def report_command(
    inputs: list[Path] = typer.Argument(..., metavar="RUN_OR_JSON...", help="Eval JSON files (lapgen eval "
                                        "... --out) or folders holding them."),
    out: Path = typer.Option(..., "--out", help="Report file (.md); the JSON and the plot go beside it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing report files."),
    as_json: bool = typer.Option(False, "--json", help="Print the report JSON on stdout."),
) -> None:
    """A Table-1 style report (CMMD, CLIP-FID, FID, KID, mAP per model/setup/epoch) beside the paper."""
    from lapgen.metrics.report import build_report, write_report

    report = build_report(inputs)
    paths = write_report(report, out, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        from lapgen.progress import notice

        notice(f"report -> {', '.join(str(p) for p in paths)}")


def extractors_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """List the feature extractors (names for --clip and the registry)."""
    from lapgen.metrics.features import list_extractors

    rows = list_extractors()
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        typer.echo(f"{r['name']:<20} d={r['dim']:<5} input={r['input_size']:<4} {r['description']}")


def register(app: typer.Typer) -> None:
    eval_app.command("fid")(_fidelity(("fid",), "FID (Inception pool3; clean-fid resize by default) of "
                                      "GEN vs REAL.", "Inception"))
    eval_app.command("kid")(_fidelity(("kid",), "KID (torch-fidelity's unbiased polynomial MMD) of GEN vs "
                                      "REAL.", "Inception"))
    eval_app.command("clip-fid")(_fidelity(("clip_fid",), "CLIP-FID (clean-fid's clip_vit_b_32) of GEN vs "
                                           "REAL.", "CLIP ViT-B/32"))
    eval_app.command("cmmd")(_fidelity(("cmmd",), "CMMD (RBF MMD on CLIP embeddings x1000) of GEN vs REAL.",
                                       "--clip model"))
    eval_app.command("fidelity")(_fidelity(("fid", "kid", "clip_fid", "cmmd"), "FID, KID, CLIP-FID and "
                                           "CMMD with one pass per extractor.", "Inception"))
    eval_app.command("f1")(f1_command)
    eval_video.register(eval_app)
    eval_app.command("report")(report_command)
    eval_app.command("extractors")(extractors_command)
    eval_map.register(eval_app)
    app.add_typer(eval_app, name="eval")
