"""`lapgen eval f1`: tool-mask F1 of generated images against their conditioning masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.metrics.spatial import conditioning_mask, mask2yolo_polygon
from tests.fixtures.metrics import make_image_set

runner = CliRunner()


def _rect_mask(h, w, box):
    m = np.zeros((h, w), bool)
    if box:
        y0, x0, y1, x1 = box
        m[y0:y1, x0:x1] = True
    return m


BOXES = [(5, 5, 30, 40), (10, 20, 50, 60), None, (0, 0, 64, 20), (30, 30, 40, 45), None]


@pytest.fixture(scope="module")
def controlnet_gen(tmp_path_factory) -> Path:
    """A ControlNet-style generated set: images/NNNN.png, masks/NNNN.png (0/255 L), metadata.jsonl, card."""
    root = make_image_set(tmp_path_factory.mktemp("cn") / "gen", len(BOXES), seed=7, metadata=True)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    (root / "masks").mkdir()
    for row, box in zip(rows, BOXES):
        name = Path(row["file_name"]).name
        Image.fromarray(np.where(_rect_mask(64, 64, box), 255, 0).astype(np.uint8), mode="L").save(root / "masks" / name)
        row["conditioning_image_file_name"] = f"masks/{name}"
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "lapgen.yaml").write_text("kind: generated-set\nmodel: cn-run\nsetup: controlnet\nepoch: 100\n")
    return root


def _predicted(i: int) -> np.ndarray:
    """The stub segmenter's prediction for image i at 2x resolution: the box shifted by 4 px, or noise."""
    box = BOXES[i]
    if box is None:
        return _rect_mask(128, 128, (0, 0, 8, 8) if i == 2 else None)
    y0, x0, y1, x1 = (2 * v + 8 for v in box)
    return _rect_mask(128, 128, (y0, x0, y1, x1))


def test_f1_pairs_masks_and_matches_sklearn(controlnet_gen, monkeypatch):
    from lapgen.models import segmentation as seg

    seen = []
    monkeypatch.setattr(seg, "load_yolo", lambda target: "stub-model")
    monkeypatch.setattr(seg, "model_imgsz", lambda model: 64)

    def predict(model, images, *, conf, imgsz, device):
        out = []
        for img in images:
            i = len(seen)
            seen.append(img.shape)
            out.append((_predicted(i), 1))
        return out

    monkeypatch.setattr(seg, "predict_union_masks", predict)
    result = runner.invoke(app, ["eval", "f1", str(controlnet_gen), "--segmenter", "yolov8n-seg", "--json",
                                 "--batch-size", "4", "--boot", "300"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    # independent: nearest-downsample the 2x predictions and let scikit-learn score the pixels
    preds = [_predicted(i)[::2, ::2] for i in range(len(BOXES))]
    targets = [_rect_mask(64, 64, b) for b in BOXES]
    micro = f1_score(np.concatenate([t.ravel() for t in targets]), np.concatenate([p.ravel() for p in preds]))
    per = [f1_score(t.ravel(), p.ravel(), zero_division=np.nan) for p, t in zip(preds, targets)]
    assert res["value"] == pytest.approx(micro, rel=1e-12)
    assert res["macro"] == pytest.approx(np.nanmean(per), rel=1e-12)
    assert res["n_both_empty"] == 1 and res["n_scored"] == 5 and res["n_gen"] == 6
    assert res["ci"]["n_boot"] == 300 and res["ci"]["micro_ci"][0] <= res["value"] <= res["ci"]["micro_ci"][1]
    assert (res["model"], res["setup"], res["epoch"]) == ("cn-run", "controlnet", 100)  # from GEN's card
    assert res["metric"] == "f1" and res["key"].startswith("f1_pixel_micro")
    assert seen == [(64, 64, 3)] * 6


def test_f1_with_a_real_segmenter_and_instance_f1(controlnet_gen, confident_segmenter):
    from lapgen.metrics import mask_f1
    from lapgen.metrics.images import load_rgb
    from lapgen.models.segmentation import load_yolo, predict_union_masks

    result = runner.invoke(app, ["eval", "f1", str(controlnet_gen), "--segmenter", str(confident_segmenter),
                                 "--device", "cpu", "--imgsz", "64", "--instance", "--json", "--boot", "50"])
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    model = load_yolo(confident_segmenter)
    images = [load_rgb(controlnet_gen / "images" / f"{i:04d}.png") for i in range(len(BOXES))]
    preds = [m for m, _ in predict_union_masks(model, images, conf=0.25, imgsz=64, device="cpu")]
    ref = mask_f1(preds, [_rect_mask(64, 64, b) for b in BOXES])
    assert res["value"] == pytest.approx(ref["micro"]) and res["tp"] == ref["tp"] and res["fp"] == ref["fp"]
    inst = res["instance"]
    assert inst["key"] == "f1_instance_yolo_val" and 0.0 <= inst["value"] <= 1.0 and inst["single_cls"]
    assert len(res["weights_sha256"]) == 64


def _paper_mask2yolo(mask: np.ndarray) -> np.ndarray | None:
    """The paper's rule written out with OpenCV: RETR_TREE contours of the 640 px bilinear resize > 127,
    the first contour with the most vertices, coordinates / 640."""
    import cv2

    grey = cv2.resize(np.where(mask, 255, 0).astype(np.uint8), (640, 640), interpolation=cv2.INTER_LINEAR)
    _, thresh = cv2.threshold(grey, 127, 255, 0)
    contours, _ = cv2.findContours(thresh, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    best: list = []
    for c in contours:
        if len(c) > len(np.squeeze(best)):  # the paper compares with the kept contour after squeeze()
            best = c
    return None if len(best) == 0 else np.asarray(best, np.float64).reshape(-1, 2) / 640


def test_mask2yolo_keeps_the_contour_with_the_most_vertices():
    """The paper keeps the contour with the most vertices, not the largest: a big straight-edged block has
    8 vertices after the resize, a small disc many more, so the disc is the label."""
    import cv2

    disc = np.zeros((64, 64), np.uint8)
    cv2.circle(disc, (52, 52), 7, 255, -1)
    mask = _rect_mask(64, 64, (2, 2, 36, 60)) | (disc > 0)
    poly = mask2yolo_polygon(mask)
    assert poly.min(0) == pytest.approx([45 / 64, 45 / 64], abs=0.03)  # the disc around (52, 52), r = 7
    np.testing.assert_array_equal(poly, _paper_mask2yolo(mask))
    two = _rect_mask(64, 64, (4, 4, 20, 20)) | _rect_mask(64, 64, (30, 10, 60, 50))  # equal counts: first
    np.testing.assert_array_equal(mask2yolo_polygon(two), _paper_mask2yolo(two))
    ring = _rect_mask(64, 64, (8, 8, 56, 56)) & ~(disc > 0)  # a hole is a contour too (RETR_TREE)
    np.testing.assert_array_equal(mask2yolo_polygon(ring), _paper_mask2yolo(ring))
    assert mask2yolo_polygon(np.zeros((8, 8), bool)) is None


def _paper_mask2yolo_file(mask_path, dest_path) -> None:
    """The paper's `mask2yolo` (evaluation/controlnet_eval_datasets.py) step by step, as an independent
    reference: cv2.imread of the mask file, 640x640 bilinear, BGR->grey, threshold 127, RETR_TREE contours;
    keep a contour when it has more vertices than the kept one *after squeeze()* (a 1-vertex contour
    squeezes to its 2 coordinates); ultralytics' own `scale_coords(..., normalize=True)`; the text
    "0 x1 y1 ..." with Python's float str, no newline, and no file at all when there is no contour."""
    import cv2
    from ultralytics.utils import ops

    grey = cv2.cvtColor(cv2.resize(cv2.imread(str(mask_path)), (640, 640), interpolation=cv2.INTER_LINEAR),
                        cv2.COLOR_BGR2GRAY)
    _, thresh = cv2.threshold(grey, 127, 255, 0)
    contours, _ = cv2.findContours(thresh, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    kept: object = []
    for c in contours:
        if len(c) > len(kept):
            kept = c.squeeze().astype(float)
    if len(kept) > 0:
        coords = ops.scale_coords((640, 640), kept, (640, 640), normalize=True)
        dest_path.write_text("0 " + " ".join(map(str, coords.flatten().tolist())))


def test_mask2yolo_labels_equal_the_papers_files_including_1_and_2_vertex_contours(tmp_path):
    import cv2

    from lapgen.metrics.spatial import mask2yolo_label

    def canvas():
        return np.zeros((640, 640), np.uint8)

    cases = {}
    cases["lone-pixel"] = canvas()
    cases["lone-pixel"][200, 321] = 255  # 1 vertex: "0 x y"
    cases["two-pixels"] = canvas()
    cases["two-pixels"][40, 100:102] = 255  # 2 vertices
    cases["thin-diagonal"] = canvas()
    cv2.line(cases["thin-diagonal"], (10, 10), (60, 60), 255, 1)  # CHAIN_APPROX_SIMPLE: its 2 end points
    # contours come bottom-up: the lone pixel (row 600) first, then the 2-pixel line (row 50); the paper
    # compares 2 > len(squeezed 1-vertex contour) = 2, so it keeps the lone pixel
    cases["quirk"] = canvas()
    cases["quirk"][600, 100] = 255
    cases["quirk"][50, 300:302] = 255
    cases["tools"] = canvas()
    cv2.rectangle(cases["tools"], (20, 20), (300, 610), 255, -1)
    cv2.circle(cases["tools"], (500, 500), 60, 255, -1)
    cases["small-128"] = np.zeros((128, 128), np.uint8)  # the paper's size: upsampled, no tiny contours
    cases["small-128"][64, 64] = 255
    cases["empty"] = canvas()
    vertices = {}
    for name, mask in cases.items():
        path = tmp_path / f"{name}.png"
        Image.fromarray(mask).save(path)
        theirs = tmp_path / f"{name}.paper.txt"
        _paper_mask2yolo_file(path, theirs)
        ours = mask2yolo_label(conditioning_mask(path))
        if ours is None:
            assert not theirs.exists(), name
        else:
            assert ours == theirs.read_text(), name  # byte for byte
            vertices[name] = (len(ours.split()) - 1) // 2
    assert vertices == {"lone-pixel": 1, "two-pixels": 2, "thin-diagonal": 2, "quirk": 1,
                        "tools": vertices["tools"], "small-128": vertices["small-128"]}
    assert vertices["tools"] >= 3 and vertices["small-128"] >= 3 and "empty" not in vertices
    assert mask2yolo_label(conditioning_mask(tmp_path / "lone-pixel.png")) == f"0 {321 / 640} {200 / 640}"


def test_instance_f1_explains_labels_this_ultralytics_refuses(tmp_path, monkeypatch):
    """A 2-vertex label is a 5-column row, which ultralytics 8.4 refuses in a segment dataset: one line
    saying so, not a traceback; the label counts are recorded when val runs."""
    from lapgen.errors import LapgenError
    from lapgen.metrics.images import open_image_set
    from lapgen.metrics.spatial import instance_f1_yolo_val

    gen = make_image_set(tmp_path / "gen", 2, seed=3)
    masks = [np.zeros((640, 640), bool), np.zeros((640, 640), bool)]
    masks[1][40, 100:102] = True

    class Refusing:
        def val(self, **kwargs):
            raise ValueError("Segment dataset requires equal numbers of boxes and segments, but got ...")

    with pytest.raises(LapgenError, match="1 conditioning mask.*2-vertex label"):
        instance_f1_yolo_val(Refusing(), open_image_set(gen), masks, imgsz=64, device="cpu", batch_size=2)

    class Seg:
        f1, mp, mr, map50 = np.array([0.5]), 0.4, 0.6, 0.3

    class Accepting:
        def val(self, data, **kwargs):
            labels = sorted(p.name for p in (Path(data).parent / "labels" / "val").iterdir())
            assert labels == ["000001.txt"]  # no file for the empty mask, as the paper
            return type("Metrics", (), {"seg": Seg})()

    res = instance_f1_yolo_val(Accepting(), open_image_set(gen), masks, imgsz=64, device="cpu", batch_size=2)
    assert res["labels_by_vertices"] == {"none": 1, "1": 0, "2": 1, "3+": 0} and res["value"] == 0.5


def test_f1_bad_inputs(controlnet_gen, tmp_path):
    plain = make_image_set(tmp_path / "plain", 3, seed=1)
    for argv, needle in (
        (["eval", "f1", str(plain)], "has no metadata.jsonl"),
        (["eval", "f1", str(tmp_path / "none")], "does not exist"),
        (["eval", "f1", str(controlnet_gen), "--conf", "2"], "--conf must be in [0, 1]"),
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
    nomask = make_image_set(tmp_path / "nomask", 2, seed=2, metadata=True)
    result = runner.invoke(app, ["eval", "f1", str(nomask)])
    assert result.exit_code == 2 and "no conditioning_image_file_name" in result.stderr
    colour = tmp_path / "colour.png"
    Image.fromarray(np.dstack([np.full((4, 4), v, np.uint8) for v in (170, 255, 0)])).save(colour)
    with pytest.raises(Exception, match="colour image"):
        conditioning_mask(colour)
