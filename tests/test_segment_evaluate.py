"""`lapgen segment evaluate`: a segmenter's pixel F1 against a converted dataset's ground truth."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.errors import LapgenError
from lapgen.models.segmenter_eval import SegmenterEvalConfig, evaluate_segmenter, label_mask, source_of

runner = CliRunner()


def _ultralytics_truth(label, width: int, height: int) -> np.ndarray:
    """Ground truth rasterised by ultralytics' own polygon filler (an independent path to `label_mask`)."""
    from ultralytics.data.utils import polygon2mask

    truth = np.zeros((height, width), bool)
    if label.is_file():
        for line in label.read_text().splitlines():
            xy = np.rint(np.asarray(line.split()[1:], np.float64).reshape(-1, 2) * (width, height))
            truth |= polygon2mask((height, width), [xy.reshape(-1)], color=1, downsample_ratio=1) > 0
    return truth


def test_f1_equals_ultralytics_predictions_against_its_own_rasterised_labels(
    confident_segmenter, yolo_dataset_dir
):
    """Every pixel count comes from ultralytics' own predict and polygon filler, pooled by hand."""
    from lapgen.models.segmentation import load_yolo

    r = evaluate_segmenter(SegmenterEvalConfig(data=yolo_dataset_dir, segmenter=str(confident_segmenter),
                                               imgsz=64, device="cpu"))
    model = load_yolo(confident_segmenter)
    images = sorted((yolo_dataset_dir / "images" / "val").glob("*.png"))
    tp = fp = fn = 0
    per_source: dict[str, list[int]] = {}
    for path in images:
        res = model.predict(str(path), conf=0.25, imgsz=64, retina_masks=True, verbose=False, device="cpu")[0]
        h, w = res.orig_shape
        pred = np.zeros((h, w), bool) if res.masks is None else (res.masks.data > 0.5).any(0).numpy()
        truth = _ultralytics_truth(yolo_dataset_dir / "labels" / "val" / f"{path.stem}.txt", w, h)
        counts = [int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())]
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
        src = "artnet" if path.stem.startswith("artnet_") else "cholecseg8k"
        acc = per_source.setdefault(src, [0, 0, 0, 0])
        acc[:3] = [a + c for a, c in zip(acc[:3], counts)]
        acc[3] += 1
    assert tp + fp > 0 and tp + fn > 0, "the fixture segmenter must predict something for this to mean anything"
    assert r["overall"]["n_images"] == len(images)
    assert r["overall"]["micro"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert set(r["by_source"]) == set(per_source)
    for src, (stp, sfp, sfn, n) in per_source.items():
        assert r["by_source"][src]["n_images"] == n
        assert r["by_source"][src]["micro"] == pytest.approx(2 * stp / (2 * stp + sfp + sfn), abs=1e-12)


def test_a_segmenter_that_draws_the_truth_scores_one_and_one_that_finds_nothing_zero(
    monkeypatch, confident_segmenter, yolo_dataset_dir
):
    """Known answers: predictions equal to ultralytics' rasterised labels give F1 ~1, empty ones give 0."""
    import lapgen.models.segmentation as seg

    truths = {}
    for path in sorted((yolo_dataset_dir / "images" / "val").glob("*.png")):
        w, h = Image.open(path).size
        truths[(h, w, int(np.asarray(Image.open(path)).sum()))] = _ultralytics_truth(
            yolo_dataset_dir / "labels" / "val" / f"{path.stem}.txt", w, h)

    def oracle(model, images, **kw):
        return [(truths[(a.shape[0], a.shape[1], int(a.sum()))], 1) for a in images]

    monkeypatch.setattr(seg, "predict_union_masks", oracle)
    r = evaluate_segmenter(SegmenterEvalConfig(data=yolo_dataset_dir, segmenter=str(confident_segmenter)))
    assert r["overall"]["micro"] == 1.0 and r["overall"]["fn"] == r["overall"]["fp"] == 0
    monkeypatch.setattr(seg, "predict_union_masks", lambda model, images, **kw: [
        (np.zeros(a.shape[:2], bool), 0) for a in images])
    r = evaluate_segmenter(SegmenterEvalConfig(data=yolo_dataset_dir, segmenter=str(confident_segmenter)))
    assert r["overall"]["micro"] == 0 and r["overall"]["tp"] == 0 and r["overall"]["fn"] > 0


def test_label_mask_recovers_the_source_masks(yolo_dataset_dir, cholecseg8k_dir):
    """The rasterised polygons are the CholecSeg8k tool pixels (codes 31, 32) up to outline rounding."""
    from lapgen.data import cholecseg8k

    frames = {f.key: f for f in cholecseg8k.find_frames(cholecseg8k_dir)}
    checked = 0
    for label in sorted((yolo_dataset_dir / "labels").glob("*/*.txt")):
        if label.stem not in frames:
            continue
        _size, tools = cholecseg8k.read_frame_masks(frames[label.stem])
        truth = tools["grasper"] | tools["hook"]
        got = label_mask(label, truth.shape[1], truth.shape[0])
        union = (got | truth).sum()
        assert union == 0 or (got & truth).sum() / union > 0.9, label
        checked += 1
    assert checked > 0
    assert not label_mask(yolo_dataset_dir / "labels" / "val" / "missing.txt", 8, 4).any()


def test_sources_by_key():
    assert source_of("artnet_test_pos_Test_Pos_001", {"video12"}) == "artnet"
    assert source_of("video12_000080", {"video12"}) == "cholecseg8k"
    assert source_of("frame_7", {"video12"}) == "other"


def test_cli_prints_the_score_and_json(confident_segmenter, yolo_dataset_dir):
    res = runner.invoke(app, ["segment", "evaluate", "--data", str(yolo_dataset_dir), "--segmenter",
                              str(confident_segmenter), "--imgsz", "64", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "pixel F1" in res.output and "cholecseg8k" in res.output
    res = runner.invoke(app, ["--quiet", "segment", "evaluate", "--data", str(yolo_dataset_dir), "--segmenter",
                              str(confident_segmenter), "--imgsz", "64", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["split"] == "val" and 0 <= r["overall"]["micro"] <= 1


def test_bad_input(tmp_path, confident_segmenter, yolo_dataset_dir):
    with pytest.raises(LapgenError, match="no 'test' split"):
        evaluate_segmenter(SegmenterEvalConfig(data=yolo_dataset_dir, segmenter=str(confident_segmenter),
                                               split="test"))
    with pytest.raises(LapgenError, match="--conf"):
        evaluate_segmenter(SegmenterEvalConfig(data=yolo_dataset_dir, segmenter=str(confident_segmenter), conf=2))
    data = tmp_path / "yolo"
    shutil.copytree(yolo_dataset_dir, data)
    label = next((data / "labels" / "val").glob("*.txt"))
    label.write_text("0 0.1 0.2 0.3 0.4 0.5 oops\n")
    res = runner.invoke(app, ["segment", "evaluate", "--data", str(data), "--segmenter", str(confident_segmenter),
                              "--imgsz", "64", "--device", "cpu"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert label.name in res.output
    res = runner.invoke(app, ["segment", "evaluate", "--data", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "data.yaml" in res.output, res.output
