"""`lapgen eval map` and `lapgen eval train-recognizer`: action-triplet mAP with Rendezvous.

`register(eval_app)` adds both commands to the `eval` group (called by `lapgen/cli/eval.py`); results go out through `lapgen/cli/eval_results.py`. torch is
imported only inside the command bodies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lapgen.cli.eval_results import check_out, publish


def map_command(
    images: Path = typer.Argument(..., help="Generated set (metadata.jsonl with `triplets`) or a prepared "
                                  "CholecT50 frames dataset."),
    recognizer: Optional[str] = typer.Option(None, "--recognizer", help="Recognizer: registry name, folder of "
                                             "`eval train-recognizer`, or an official rendezvous_*.pth "
                                             "(default: the default recognizer)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of a frames dataset (default: test; "
                                        "generated sets: all images)."),
    mode: str = typer.Option("auto", "--mode", help="video (AP per video, averaged; CholecT50 benchmark), "
                             "global (all images pooled; the paper's protocol), auto (video for frames "
                             "datasets, global for generated sets)."),
    ignore_null: bool = typer.Option(False, "--ignore-null", help="Drop triplets 94-99 from ivt (challenge)."),
    absent_classes: str = typer.Option("ignore", "--absent-classes", help="Classes without a positive (in a "
                                       "video, or in the pool): ignore (left out; ivtmetrics on GitHub) or zero "
                                       "(AP 0; ivtmetrics 0.1.5 from PyPI with current scikit-learn)."),
    components_from: str = typer.Option("heads", "--components-from", help="i/v/t scores from the tool/verb/"
                                        "target heads (heads, RDV paper) or from the triplet logits (triplet)."),
    boot: int = typer.Option(1000, "--boot", help="Bootstrap replicates for the confidence interval (0 = none)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(0, "--workers", help="Image-loading worker processes."),
    model: Optional[str] = typer.Option(None, "--model", help="Report label: model name (default: from the "
                                        "set's card; frames datasets: the folder name)."),
    setup: Optional[str] = typer.Option(None, "--setup", help="Report label: Table-1 setup (frames datasets: "
                                        "real)."),
    epoch: Optional[int] = typer.Option(None, "--epoch", help="Report label: training epoch of the model."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
) -> None:
    """Action-triplet mAP (ivtmetrics semantics) of a generated set or a real split, scored by Rendezvous."""
    from lapgen.models.recognition.evaluate import MapEvalConfig, evaluate_map, summary_rows

    check_out(out, overwrite)
    cfg = MapEvalConfig(images=str(images), recognizer=recognizer, split=split, mode=mode, ignore_null=ignore_null,
                        absent_classes=absent_classes, components_from=components_from, n_boot=boot, seed=seed,
                        batch_size=batch_size, device=device, workers=workers,
                        labels={"model": model, "setup": setup, "epoch": epoch})
    result = evaluate_map(cfg)
    if publish(result, [result], out, as_json, metric="map", key=result["key"], value=result["value"],
               recognizer=result["recognizer"]["name"]):
        return
    from rich.table import Table

    from lapgen.progress import stdout

    table = Table(title=f"action mAP ({result['mode']}, absent classes: {result['absent_classes']}) of "
                  f"{result['n_gen']} images, recognizer {result['recognizer']['name']}")
    for col in ("component", "mAP", "95% CI" if cfg.confidence == 0.95 else "CI", "classes scored"):
        table.add_column(col)
    for row in summary_rows(result):
        table.add_row(*row)
    stdout.print(table)


def train_recognizer_command(
    data: Path = typer.Option(..., "--data", help="Prepared CholecT50 frames dataset (lapgen prepare)."),
    out: Path = typer.Option(..., "--out", help="Output folder (model.safetensors, config.json, lapgen.yaml)."),
    name: str = typer.Option(..., "--name", help="Registry name; the recognizer becomes the default."),
    size: str = typer.Option("128", "--size", help="Input size: N (square) or HxW, e.g. 256x448 (the released "
                             "weights). The paper retrained at 128 to score 128 px images."),
    epochs: int = typer.Option(100, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per step."),
    lr: float = typer.Option(0.01, "--lr", help="Initial learning rate of the three groups (peak = lr / 0.1)."),
    layernorm: bool = typer.Option(False, "--layernorm", help="LayerNorm AddNorm (as the released cross-val "
                                   "weights; fixes the input size) instead of BatchNorm."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="The reference's flips, autocontrast "
                                 "and rotation."),
    backbone: str = typer.Option("none", "--backbone", help="ResNet-18 initialisation: none (random), imagenet "
                                 "(torchvision download) or a local resnet18 state_dict file."),
    val_split: str = typer.Option("val", "--val-split", help="Validation split for model selection ('' = none)."),
    seed: int = typer.Option(0, "--seed", help="Seed (initialisation, shuffling, augmentations)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or fp16 / bf16 autocast on CUDA."),
    workers: int = typer.Option(0, "--workers", help="Image-loading worker processes."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON on stdout."),
) -> None:
    """Train Rendezvous on a CholecT50 frames dataset (train split, model selection on val); resumable."""
    from lapgen.models.recognition.data import parse_size
    from lapgen.models.recognition.train import TrainRecognizerConfig, train_recognizer
    from lapgen.progress import notice

    cfg = TrainRecognizerConfig(data=str(data), out=str(out), name=name, image_size=parse_size(size),
                                epochs=epochs, batch_size=batch_size, lr=(lr, lr, lr), use_ln=layernorm,
                                augment=augment, backbone=backbone, val_split=val_split or None, seed=seed,
                                device=device, precision=precision, workers=workers, overwrite=overwrite)
    card = train_recognizer(cfg)
    if as_json:
        typer.echo(json.dumps(card, indent=1, default=str))
        return
    best = card.get("val_map_ivt")
    notice(f"recognizer '{name}' -> {out} (best epoch {card.get('best_epoch')}, val mAP ivt "
           f"{'n/a' if best is None else f'{best:.4f}'}); now the default recognizer")


def register(eval_app: typer.Typer) -> None:
    eval_app.command("map")(map_command)
    eval_app.command("train-recognizer")(train_recognizer_command)
