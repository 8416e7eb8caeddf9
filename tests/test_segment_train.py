"""`lapgen segment train`: ultralytics training offline (no network attempt), card, registry, loading."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.errors import LapgenError
from tests.fixtures.segmentation import record_network

runner = CliRunner()


def test_training_makes_no_network_attempt(tiny_segmenter_run):
    assert tiny_segmenter_run.network_attempts == []
    assert (tiny_segmenter_run.path / "weights" / "best.pt").is_file()
    assert not Path(str(tiny_segmenter_run.path) + ".partial").exists()


def test_fonts_are_local():
    from lapgen.models.segmentation import configure_ultralytics

    configure_ultralytics()
    from ultralytics.utils import USER_CONFIG_DIR
    from ultralytics.utils.checks import check_font

    assert Path(os.environ["YOLO_CONFIG_DIR"]) in Path(USER_CONFIG_DIR).parents
    with record_network() as attempts:
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            assert Path(check_font(name)) == Path(USER_CONFIG_DIR) / name
    assert attempts == []


def test_run_card(tiny_segmenter_run):
    card = yaml.safe_load((tiny_segmenter_run.path / "lapgen.yaml").read_text())
    assert card["kind"] == "segmenter" and card["weights"] == "weights/best.pt"
    assert card["names"] == ["tool"] and card["imgsz"] == 64 and card["base"]["random_init"] is True
    assert "metrics/mAP50(M)" in card["metrics"] and "metrics/mAP50-95(B)" in card["metrics"]
    assert card["data"]["summary"]["cholecseg8k"]["val_videos"]
    from lapgen.outputs import file_sha256

    assert card["weights_sha256"] == file_sha256(tiny_segmenter_run.path / "weights" / "best.pt")


def test_load_yolo_sources(tiny_segmenter_run, tmp_path):
    from lapgen.models.segmentation import load_yolo, model_imgsz

    from_dir = load_yolo(tiny_segmenter_run.path)
    assert from_dir.task == "segment" and from_dir.names == {0: "tool"} and model_imgsz(from_dir) == 64
    built = load_yolo("yolov8n-seg.yaml")
    assert built.task == "segment" and sum(p.numel() for p in built.model.parameters()) > 3_000_000
    with record_network() as attempts:
        with pytest.raises(LapgenError, match="lapgen never downloads"):
            load_yolo("yolov8n-seg.pt")  # ultralytics would download this name
        with pytest.raises(LapgenError, match="no YOLO weights"):
            load_yolo(tmp_path)
    assert attempts == []
    with pytest.raises(LapgenError, match="not a 'segment' model"):
        load_yolo("yolov8n.yaml")


def test_resolve_segmenter_names(tiny_segmenter_run):
    from lapgen.models.segmentation import resolve_segmenter

    target, info = resolve_segmenter(str(tiny_segmenter_run.path))
    assert Path(target) == tiny_segmenter_run.path.resolve() and not info["random_init"]
    target, info = resolve_segmenter("yolov8n-seg")  # built-in without a weights file: its yaml
    assert target == "yolov8n-seg.yaml" and info["random_init"]
    with pytest.raises(LapgenError, match="not a tool segmenter"):
        resolve_segmenter("tiny-sd")
    with pytest.raises(LapgenError, match="unknown tool segmenter model"):
        resolve_segmenter("no-such-segmenter")


def test_cli_train_registers_offline(tmp_path, monkeypatch, copy_yolo_dataset):
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))  # keep the session's default segmenter
    out = tmp_path / "run"
    args = [
        "segment",
        "train",
        "--data",
        str(copy_yolo_dataset),
        "--base",
        "yolov8n-seg",
        "--epochs",
        "2",
        "--imgsz",
        "64",
        "--batch",
        "8",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--name",
        "my-seg",
        "--no-plots",
        "--mosaic",
        "0",
        "--warmup-epochs",
        "0.5",
        "--json",
    ]
    with record_network() as attempts:
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert attempts == []
    summary = json.loads(result.stdout)
    assert summary["registered"] == "my-seg" and summary["epochs"] == 2
    counts = re.findall(r"training\b.*?(\d+)/(\d+)", result.stderr)  # the epoch bar's final state
    assert counts and counts[-1] == ("2", "2"), result.stderr
    from lapgen import registry

    entry = registry.resolve("my-seg", kind="segmenter")
    assert entry.path == out.resolve() and registry.default_for("segmenter") == "my-seg"
    assert entry.card["metrics"] == pytest.approx(summary["metrics"])
    results = (out / "results.csv").read_text().splitlines()
    assert len(results) == 1 + 2  # header + one row per epoch
    import yaml

    used = yaml.safe_load((out / "args.yaml").read_text())  # the arguments ultralytics trained with
    assert used["mosaic"] == 0 and used["warmup_epochs"] == 0.5


def test_cli_train_bad_input(tmp_path, copy_yolo_dataset):
    base = [
        "segment",
        "train",
        "--epochs",
        "1",
        "--imgsz",
        "64",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "r"),
    ]
    missing = runner.invoke(app, base + ["--data", str(tmp_path)])
    assert missing.exit_code == 2 and "no data.yaml found" in missing.stderr
    not_seg = runner.invoke(app, base + ["--data", str(copy_yolo_dataset), "--base", "tiny-sd"])
    assert not_seg.exit_code == 2 and "not a tool segmenter" in not_seg.stderr
    (copy_yolo_dataset / "images" / "val").rename(copy_yolo_dataset / "images" / "gone")
    broken = runner.invoke(app, base + ["--data", str(copy_yolo_dataset)])
    assert broken.exit_code == 2 and "ultralytics rejects the dataset" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() and not (tmp_path / "r.partial").exists()


@pytest.mark.slow
def test_interrupted_training_resumes(tmp_path, copy_yolo_dataset):
    from lapgen.models.segmentation import TrainConfig, train

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    config = TrainConfig(
        data=copy_yolo_dataset,
        out=out,
        base="yolov8n-seg.yaml",
        epochs=2,
        imgsz=64,
        batch=8,
        device="cpu",
        workers=0,
        plots=False,
        callbacks={"on_fit_epoch_end": stop_after_first_epoch},
    )
    with pytest.raises(KeyboardInterrupt):
        train(config)
    assert not out.exists() and (tmp_path / "run.partial" / "weights" / "last.pt").is_file()
    config.callbacks = {}
    summary = train(config)
    card = yaml.safe_load((out / "lapgen.yaml").read_text())
    assert card["resumed"] is True and summary["epochs"] == 2
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 2


def test_ultralytics_leaves_torch_threads_alone(tmp_path, copy_yolo_dataset, tiny_segmenter_run):
    """ultralytics sets torch's CPU threads to cpu_count - 1 for the whole process; lapgen restores them after
    every train and predict, and trains without loader workers on every thread."""
    import numpy as np
    import torch

    from lapgen.models.segmentation import TrainConfig, load_yolo, predict_union_masks, train

    before = torch.get_num_threads()
    torch.set_num_threads(3)  # any count ultralytics would not choose on its own (it picks cpu_count - 1)
    seen = []
    try:
        train(TrainConfig(data=copy_yolo_dataset, out=tmp_path / "run", base="yolov8n-seg.yaml", epochs=1,
                          imgsz=64, batch=8, device="cpu", workers=0, plots=False,
                          callbacks={"on_train_epoch_start": lambda t: seen.append(torch.get_num_threads())}))
        assert seen == [3] and torch.get_num_threads() == 3
        predict_union_masks(load_yolo(tiny_segmenter_run.path), [np.zeros((64, 64, 3), np.uint8)], imgsz=64)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
