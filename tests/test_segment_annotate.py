"""`lapgen segment annotate` / `predict`: masks at dataset resolution, binary, empty frames, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.data.frames import read_records
from lapgen.errors import LapgenError
from lapgen.models.annotate import MaskConfig, annotate, mask_name, predict_folder
from tests.fixtures.segmentation import record_network, write_frames_fixture

runner = CliRunner()


@pytest.fixture(scope="module")
def wide_frames(tmp_path_factory) -> Path:
    """Frames at 160x96 (not square, not the model's 64 px): masks must come back at 160x96."""
    return write_frames_fixture(tmp_path_factory.mktemp("wide") / "frames", n=6, size=(160, 96), seed=5)


def _ultralytics_union(run: Path, image: Path, conf: float) -> np.ndarray:
    """ultralytics' own union mask of one image file, read by ultralytics itself."""
    from lapgen.models.segmentation import load_yolo

    res = load_yolo(run).predict(
        str(image), conf=conf, imgsz=64, retina_masks=True, verbose=False, device="cpu"
    )[0]
    h, w = res.orig_shape
    return np.zeros((h, w), bool) if res.masks is None else (res.masks.data > 0.5).any(0).numpy()


def _binary(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "L"
    values = np.asarray(img)
    assert set(np.unique(values)) <= {0, 255}
    return values > 0


def test_annotate_real_segmenter_masks_match_ultralytics(confident_segmenter, wide_frames, tmp_path):
    run = confident_segmenter
    records = read_records(wide_frames)
    conf = 0.5
    expect_kept = [
        r["file_name"] for r in records if _ultralytics_union(run, wide_frames / r["file_name"], conf).any()
    ]
    assert expect_kept, "the confident fixture segmenter must find tools"
    out = tmp_path / "cn"
    with record_network() as attempts:
        summary = annotate(
            MaskConfig(
                source=wide_frames, out=out, segmenter=str(run), conf=conf, imgsz=64, batch=4, device="cpu"
            )
        )
    assert attempts == []
    assert summary["kept"] == len(expect_kept) and summary["dropped_empty"] == len(records) - len(expect_kept)
    kept = read_records(out)  # the frames-dataset reader accepts the output (files exist, keys valid)
    assert [r["file_name"] for r in kept] == expect_kept
    for rec in kept:
        assert rec["conditioning_image_file_name"] == mask_name(rec["file_name"])
        assert rec["conditioning_image_file_name"].startswith("masks/")
        mask = _binary(out / rec["conditioning_image_file_name"])
        assert mask.shape == (96, 160) and mask.any()  # dataset resolution, un-letterboxed
        np.testing.assert_array_equal(mask, _ultralytics_union(run, wide_frames / rec["file_name"], conf))
        np.testing.assert_array_equal(
            np.asarray(Image.open(out / rec["file_name"])),
            np.asarray(Image.open(wide_frames / rec["file_name"])),
        )
        src = next(r for r in records if r["file_name"] == rec["file_name"])
        assert {k: v for k, v in rec.items() if k != "conditioning_image_file_name"} == src
    card = (out / "lapgen.yaml").read_text()
    assert "kind: frames-dataset" in card and "tool-mask" in card and not (out / "progress.jsonl").exists()


def test_predict_real_segmenter(confident_segmenter, wide_frames, tmp_path):
    images = tmp_path / "gen"
    (images / "sub").mkdir(parents=True)
    for i, rec in enumerate(read_records(wide_frames)[:3]):
        Image.open(wide_frames / rec["file_name"]).save(
            images / ("sub" if i else "") / f"g{i}.jpg", quality=95
        )
    out = tmp_path / "masks"
    result = runner.invoke(
        app,
        [
            "segment",
            "predict",
            str(images),
            "--segmenter",
            str(confident_segmenter),
            "--out",
            str(out),
            "--conf",
            "0.5",
            "--imgsz",
            "64",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 3
    rows = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == ["g0.jpg", "sub/g1.jpg", "sub/g2.jpg"]
    for row in rows:
        mask = _binary(out / row["file_name"])
        assert mask.shape == (96, 160) and row["tool_fraction"] == pytest.approx(mask.mean())
        np.testing.assert_array_equal(
            mask, _ultralytics_union(confident_segmenter, images / row["image"], 0.5)
        )
    assert summary["instances"] > 0
    assert "kind: mask-set" in (out / "lapgen.yaml").read_text()


class Scripted:
    """A deterministic stand-in predictor: frame i gets a tool iff i is in `with_tool`; counts calls."""

    def __init__(self, with_tool: set[int], fail_on_call: int | None = None):
        self.with_tool, self.fail_on_call, self.calls, self.seen = with_tool, fail_on_call, 0, 0

    def __call__(self, images):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt
        out = []
        for img in images:
            index = int(img[0, 0, 0])  # frame index stamped into the top-left pixel
            mask = np.zeros(img.shape[:2], bool)
            if index in self.with_tool:
                mask[2:10, 3:20] = True
            out.append((mask, int(index in self.with_tool)))
        self.seen += len(images)
        return out


@pytest.fixture
def stamped_frames(tmp_path) -> Path:
    root = write_frames_fixture(tmp_path / "frames", n=8, size=(48, 32), seed=9)
    for i, rec in enumerate(read_records(root)):
        img = np.asarray(Image.open(root / rec["file_name"])).copy()
        img[0, 0] = i
        Image.fromarray(img).save(root / rec["file_name"])
    return root


def test_empty_frames_dropped_or_kept(stamped_frames, tmp_path):
    info = {"name": "scripted"}
    s = annotate(MaskConfig(source=stamped_frames, out=tmp_path / "a", batch=3), (Scripted({1, 4, 6}), info))
    assert (s["frames"], s["kept"], s["dropped_empty"], s["empty"]) == (8, 3, 5, 5)
    assert [r["frame"] for r in read_records(tmp_path / "a")] == [1, 4, 6]
    assert len(list((tmp_path / "a" / "masks").rglob("*.png"))) == 3
    assert len(list((tmp_path / "a" / "images").rglob("*.png"))) == 3
    s = annotate(
        MaskConfig(source=stamped_frames, out=tmp_path / "b", keep_empty=True, batch=3),
        (Scripted({1, 4, 6}), info),
    )
    assert (s["kept"], s["dropped_empty"], s["empty"]) == (8, 0, 5)
    recs = read_records(tmp_path / "b")
    assert [int(_binary(tmp_path / "b" / r["conditioning_image_file_name"]).any()) for r in recs] == [
        0,
        1,
        0,
        0,
        1,
        0,
        1,
        0,
    ]
    with pytest.raises(LapgenError, match="no tool in any of the 8 frames"):
        annotate(MaskConfig(source=stamped_frames, out=tmp_path / "c"), (Scripted(set()), info))


def test_annotate_resumes_after_interruption(stamped_frames, tmp_path):
    out = tmp_path / "cn"
    first = Scripted({0, 3, 5, 7}, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        annotate(MaskConfig(source=stamped_frames, out=out, batch=2), (first, {"name": "s"}))
    assert first.seen == 4 and not out.exists() and (tmp_path / "cn.partial").exists()
    second = Scripted({0, 3, 5, 7})
    s = annotate(MaskConfig(source=stamped_frames, out=out, batch=2), (second, {"name": "s"}))
    assert second.seen == 4  # only the frames the first run did not finish
    assert s["kept"] == 4 and [r["frame"] for r in read_records(out)] == [0, 3, 5, 7]
    assert not (tmp_path / "cn.partial").exists()


def test_resume_keeps_settings_apart(stamped_frames, tmp_path):
    """A re-run may change --keep-empty (it only filters the result) but not what shapes the masks."""
    out = tmp_path / "cn"
    first = Scripted({2, 5}, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        annotate(MaskConfig(source=stamped_frames, out=out, batch=3), (first, {"name": "s"}))
    with pytest.raises(LapgenError, match=r"cn.partial: an interrupted run with other settings \(conf\)"):
        annotate(
            MaskConfig(source=stamped_frames, out=out, batch=3, conf=0.1), (Scripted({2, 5}), {"name": "s"})
        )
    with pytest.raises(LapgenError, match=r"other settings \(segmenter\)"):
        annotate(MaskConfig(source=stamped_frames, out=out, batch=3), (Scripted({2, 5}), {"name": "other"}))
    second = Scripted({2, 5})
    s = annotate(
        MaskConfig(source=stamped_frames, out=out, batch=3, keep_empty=True), (second, {"name": "s"})
    )
    assert second.seen == 5 and (s["kept"], s["dropped_empty"], s["empty"]) == (8, 0, 6)
    recs = read_records(out)
    assert [int(_binary(out / r["conditioning_image_file_name"]).any()) for r in recs] == [
        0,
        0,
        1,
        0,
        0,
        1,
        0,
        0,
    ]
    assert sorted(p.name for p in out.iterdir()) == ["images", "lapgen.yaml", "masks", "metadata.jsonl"]
    masks = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        predict_folder(
            MaskConfig(source=stamped_frames, out=masks, batch=3), (Scripted(set(), 2), {"name": "s"})
        )
    with pytest.raises(LapgenError, match=r"other settings \(iou\)"):
        predict_folder(
            MaskConfig(source=stamped_frames, out=masks, iou=0.5), (Scripted(set()), {"name": "s"})
        )


def test_no_tool_anywhere_leaves_nothing_and_keep_empty_works(stamped_frames, tmp_path):
    """The error's own advice (--keep-empty) must work when followed, and the failed run leaves no folder."""
    out = tmp_path / "cn"
    with pytest.raises(LapgenError, match="no tool in any of the 8 frames.*--keep-empty"):
        annotate(MaskConfig(source=stamped_frames, out=out), (Scripted(set()), {"name": "s"}))
    assert list(tmp_path.iterdir()) == [stamped_frames]
    s = annotate(
        MaskConfig(source=stamped_frames, out=out, keep_empty=True), (Scripted(set()), {"name": "s"})
    )
    assert (s["kept"], s["empty"]) == (8, 8)
    assert all(not _binary(out / r["conditioning_image_file_name"]).any() for r in read_records(out))


def test_predict_resumes(stamped_frames, tmp_path):
    images = stamped_frames / "images"
    out = tmp_path / "m"
    first = Scripted({2}, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(MaskConfig(source=images, out=out, batch=5), (first, {"name": "s"}))
    second = Scripted({2})
    s = predict_folder(MaskConfig(source=images, out=out, batch=5), (second, {"name": "s"}))
    assert second.seen == 3 and s["images"] == 8 and s["empty"] == 7


def test_predict_on_a_generated_set_segments_only_its_images(stamped_frames, tmp_path):
    """A folder with metadata.jsonl (a `lapgen sample` set) is segmented by its file_name images only:
    the conditioning masks stored beside them are not images to segment."""
    (stamped_frames / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((32, 48), np.uint8)).save(stamped_frames / "masks" / f"{i:05d}.png")
    scripted = Scripted({0, 5})
    s = predict_folder(
        MaskConfig(source=stamped_frames, out=tmp_path / "m", batch=4), (scripted, {"name": "s"})
    )
    names = [r["file_name"] for r in read_records(stamped_frames)]
    assert s["images"] == scripted.seen == len(names) == 8 and s["empty"] == 6
    rows = [json.loads(x) for x in (tmp_path / "m" / "metadata.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == names
    assert sorted(
        p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*.png")
    ) == sorted(names)


def test_bad_input(tmp_path, tiny_segmenter_run, stamped_frames):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    cases = [
        (
            [
                "segment",
                "predict",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "o1"),
                "--segmenter",
                str(tiny_segmenter_run.path),
            ],
            "no images",
        ),
        (
            [
                "segment",
                "predict",
                str(stamped_frames),
                "--out",
                str(tmp_path / "o2"),
                "--segmenter",
                "tiny-sd",
            ],
            "not a tool segmenter",
        ),
        (
            [
                "segment",
                "annotate",
                "--data",
                str(stamped_frames),
                "--out",
                str(tmp_path / "o3"),
                "--segmenter",
                "no-such-model",
            ],
            "unknown tool segmenter model",
        ),
        (
            ["segment", "annotate", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o4")],
            "no metadata.jsonl",
        ),
        (
            [
                "segment",
                "annotate",
                "--data",
                str(stamped_frames),
                "--out",
                str(tmp_path / "o5"),
                "--conf",
                "2",
            ],
            "--conf",
        ),
    ]
    for args, needle in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


def test_cli_annotate_keep_empty(tiny_segmenter_run, stamped_frames, tmp_path):
    out = tmp_path / "cn"
    args = [
        "segment",
        "annotate",
        "--data",
        str(stamped_frames),
        "--segmenter",
        str(tiny_segmenter_run.path),
        "--out",
        str(out),
        "--keep-empty",
        "--conf",
        "0.99",
        "--device",
        "cpu",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kept"] == summary["frames"] == 8
    for rec in read_records(out):
        assert _binary(out / rec["conditioning_image_file_name"]).shape == (32, 48)
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
