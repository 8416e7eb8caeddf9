"""The metadata contract between `lapgen sample` and the evaluation commands: a ControlNet set written by
`lapgen sample` is the GEN of `lapgen eval f1` (images paired with their conditioning masks) and of
`lapgen eval map` (images scored against the triplets of the prompt each was generated from).

Independent side: labels and masks come from the *source* frames dataset (via `source_file_name`), the
pixel F1 from scikit-learn, the mAP from `triplet_map` on scores recomputed with a plain forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from lapgen.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def sampled(controlnet_frames_dir, tiny_sd_dir, tiny_controlnet_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chain") / "gen"
    result = runner.invoke(app, ["sample", "--model", str(tiny_sd_dir), "--controlnet", str(tiny_controlnet_dir),
                                 "--prompts-from", str(controlnet_frames_dir), "--split", "test", "--n", "4",
                                 "--steps", "2", "--batch-size", "4", "--seed", "0", "--device", "cpu",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _bright(img: np.ndarray) -> np.ndarray:
    """The stub segmenter's 'tool': pixels brighter than the image's median grey (content dependent)."""
    grey = img.astype(np.float64).mean(axis=2)
    return grey > np.median(grey)


def test_sample_output_is_the_gen_of_eval_f1(sampled, controlnet_frames_dir, monkeypatch):
    from lapgen.models import segmentation as seg

    monkeypatch.setattr(seg, "load_yolo", lambda target: "stub-model")
    monkeypatch.setattr(seg, "model_imgsz", lambda model: 128)
    monkeypatch.setattr(seg, "predict_union_masks",
                        lambda model, images, **kw: [(_bright(img), 1) for img in images])
    result = runner.invoke(app, ["eval", "f1", str(sampled), "--segmenter", "yolov8n-seg", "--device", "cpu",
                                 "--boot", "0", "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    source = {r["file_name"]: r for r in _rows(controlnet_frames_dir)}
    preds, targets = [], []
    for row in _rows(sampled):
        preds.append(_bright(np.asarray(Image.open(sampled / row["file_name"]).convert("RGB"))))
        mask_file = controlnet_frames_dir / source[row["source_file_name"]]["conditioning_image_file_name"]
        targets.append(np.asarray(Image.open(mask_file).convert("L")) > 127)
    assert res["n_gen"] == 4 and sum(t.any() for t in targets) > 0
    expected = f1_score(np.concatenate([t.ravel() for t in targets]), np.concatenate([p.ravel() for p in preds]))
    assert 0 < expected < 1 and res["value"] == pytest.approx(expected, rel=1e-12)


def test_sample_output_is_the_gen_of_eval_map(sampled, controlnet_frames_dir, tiny_recognizer_dir):
    import torch

    from lapgen.metrics import triplet_map
    from lapgen.models.recognition import eval_transform, load_rendezvous

    result = runner.invoke(app, ["eval", "map", str(sampled), "--recognizer", str(tiny_recognizer_dir),
                                 "--boot", "0", "--json"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    assert res["key"] == "map[global,ivt]" and res["n_gen"] == 4
    source = {r["file_name"]: r for r in _rows(controlnet_frames_dir)}
    rows = _rows(sampled)
    labels = np.zeros((len(rows), 100), np.int64)
    for i, row in enumerate(rows):
        labels[i, source[row["source_file_name"]]["triplets"]] = 1
    model = load_rendezvous(tiny_recognizer_dir)
    tf = eval_transform(model.config.image_size)
    x = torch.stack([tf(Image.open(sampled / r["file_name"]).convert("RGB")) for r in rows])
    with torch.no_grad():
        scores = torch.sigmoid(model(x)[3]).double().numpy()
    ref = triplet_map(labels, scores)
    assert ref["n_classes_scored"] > 0
    assert res["value"] == pytest.approx(ref["mAP"], abs=1e-6)
