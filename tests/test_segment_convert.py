"""`lapgen segment convert`: readers, polygon rules, splits, round trip, ultralytics' own dataset check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.data import artnet, cholecseg8k
from lapgen.data.yolo_convert import ConvertConfig, convert, split_videos
from lapgen.data.yolo_seg import mask_iou, mask_to_polygons, polygons_to_mask, read_label_file
from lapgen.errors import LapgenError

runner = CliRunner()
GRASPER_RGB, HOOK_RGB = (170, 255, 0), (169, 255, 184)  # CholecSeg8k annotation colours (data-formats 3.2)


def _colour_tools(frame: cholecseg8k.SegFrame) -> np.ndarray:
    """Tool pixels from the colour mask by exact colour tuples: independent of the watershed path."""
    rgb = np.asarray(Image.open(frame.image.with_name(frame.image.stem + "_color_mask.png")).convert("RGB"))
    return (rgb == GRASPER_RGB).all(-1) | (rgb == HOOK_RGB).all(-1)


# ---------------------------------------------------------------------------------------------- readers


def test_find_frames_layout(cholecseg8k_dir):
    frames = cholecseg8k.find_frames(cholecseg8k_dir)
    assert len(frames) == 12
    assert cholecseg8k.videos(frames) == ["video01", "video12", "video48"]
    assert frames[0].clip == "video01_00080" and frames[0].frame == 80 and frames[0].key == "video01_000080"
    assert [f.frame for f in frames[:4]] == [80, 81, 82, 83]


def test_tool_pixels_by_exact_watershed_codes(cholecseg8k_dir):
    for frame in cholecseg8k.find_frames(cholecseg8k_dir):
        size, tools = cholecseg8k.read_frame_masks(frame)
        codes = cholecseg8k.read_watershed(frame.watershed)
        assert size == (160, 96) and codes.shape == (96, 160)
        np.testing.assert_array_equal(tools["grasper"], codes == 31)
        np.testing.assert_array_equal(tools["hook"], codes == 32)
        np.testing.assert_array_equal(tools["grasper"] | tools["hook"], _colour_tools(frame))
        assert not tools["grasper"].any() or not (tools["grasper"] & tools["hook"]).any()


def test_border_and_unannotated_pixels_are_not_tools(cholecseg8k_dir):
    frame = cholecseg8k.find_frames(cholecseg8k_dir)[1]
    codes = cholecseg8k.read_watershed(frame.watershed)
    assert (codes[0] == 255).all() and (codes[:, -1] == 255).all()
    assert (codes == 0).any(), "fixture must hold unannotated pixels"
    tools = cholecseg8k.tool_masks(codes)
    union = tools["grasper"] | tools["hook"]
    assert not union[codes == 255].any() and not union[codes == 0].any()
    assert tools["grasper"].any() and tools["hook"].any()


def test_rgba_watershed_read_as_grey(cholecseg8k_dir, tmp_path):
    first = cholecseg8k.find_frames(cholecseg8k_dir)[0]
    assert Image.open(first.watershed).mode == "RGBA"
    codes = cholecseg8k.read_watershed(first.watershed)
    rgba = np.asarray(Image.open(first.watershed))
    np.testing.assert_array_equal(codes, rgba[..., 0])
    bad_alpha = rgba.copy()
    bad_alpha[0, 0, 3] = 0
    Image.fromarray(bad_alpha, "RGBA").save(tmp_path / "alpha.png")
    with pytest.raises(LapgenError, match="alpha"):
        cholecseg8k.read_watershed(tmp_path / "alpha.png")
    colour = np.asarray(Image.open(first.image.with_name(first.image.stem + "_color_mask.png")))
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(LapgenError, match="channels differ"):
        cholecseg8k.read_watershed(tmp_path / "colour.png")


def test_unknown_watershed_codes(tmp_path):
    codes = np.full((10, 12), 21, np.uint8)
    codes[2:5, 2:5] = 77
    codes[6:8, 6:9] = 31
    with pytest.raises(LapgenError, match=r"no CholecSeg8k class: \[77\]"):
        cholecseg8k.tool_masks(codes)
    tools = cholecseg8k.tool_masks(codes, strict=False)
    assert tools["grasper"].sum() == 6 and not tools["hook"].any()


def test_artnet_reader(artnet_dir):
    samples = artnet.find_samples(artnet_dir)
    assert [(s.split, s.positive) for s in samples].count(("train", True)) == 3
    assert sum(s.split == "test" for s in samples) == 4
    pos = next(s for s in samples if s.positive)
    assert pos.mask.name == f"{pos.image.stem}_Tool_Mask.png"
    size, mask = artnet.read_tool_mask(pos)
    stored = np.asarray(Image.open(pos.mask).convert("L"))
    assert size == (128, 96) and mask.shape == (96, 128) and stored.shape == (192, 256)
    np.testing.assert_array_equal(mask, stored[::2, ::2] > 0)  # NEAREST halving of a 2x mask
    neg = next(s for s in samples if not s.positive)
    assert neg.mask is None and not artnet.read_tool_mask(neg)[1].any()


# -------------------------------------------------------------------------------------------- polygons


def test_polygon_rules_holes_fragments_regions():
    mask = np.zeros((60, 80), bool)
    mask[5:35, 5:45] = True
    mask[15:25, 15:25] = False  # 100-px hole: kept
    mask[8:10, 38:40] = False  # 4-px hole: filled
    mask[45:55, 60:75] = True  # second region
    mask[50:52, 5:7] = True  # 4-px fragment: dropped
    mask[40, 50:75] = True  # 1-px line of 25 px: a region
    polys = mask_to_polygons(mask, min_area=16, min_hole_area=16)
    assert len(polys) == 3
    back = polygons_to_mask(polys, (80, 60))
    assert not back[15:25, 15:25].any(), "large hole must stay a hole"
    assert back[8:10, 38:40].all(), "small hole is filled"
    assert not back[50:52, 5:7].any(), "fragment is dropped"
    expected = mask.copy()
    expected[8:10, 38:40] = True
    expected[50:52, 5:7] = False
    assert mask_iou(back, expected) > 0.97


def test_polygons_agree_with_ultralytics_rasteriser():
    from ultralytics.data.utils import polygon2mask

    mask = np.zeros((48, 64), bool)
    mask[4:30, 6:50] = True
    mask[10:20, 20:30] = False
    polys = mask_to_polygons(mask)
    ours = polygons_to_mask(polys, (64, 48))
    theirs = polygon2mask((48, 64), [p.reshape(-1).astype(np.float64) for p in polys]).astype(bool)
    np.testing.assert_array_equal(ours, theirs)
    assert mask_iou(ours, mask) == 1.0


# ------------------------------------------------------------------------------------------------ convert


def test_round_trip_iou_on_synthetic_data(yolo_dataset_dir, cholecseg8k_dir, artnet_dir):
    by_key = {f.key: f for f in cholecseg8k.find_frames(cholecseg8k_dir)}
    by_key.update({s.key: s for s in artnet.find_samples(artnet_dir)})
    checked = 0
    for label in sorted((yolo_dataset_dir / "labels").rglob("*.txt")):
        item = by_key[label.stem]
        if isinstance(item, cholecseg8k.SegFrame):
            size, tools = cholecseg8k.read_frame_masks(item)
            source = tools["grasper"] | tools["hook"]
        else:
            size, source = artnet.read_tool_mask(item)
        polys = read_label_file(label, size)
        assert all(cls == 0 for cls, _ in polys)
        back = polygons_to_mask([p for _, p in polys], size)
        assert mask_iou(back, source) >= 0.95, label.name
        checked += int(source.any())
    assert checked >= 10
    card = yaml.safe_load((yolo_dataset_dir / "lapgen.yaml").read_text())
    assert card["kind"] == "yolo-seg-dataset" and card["summary"]["round_trip_iou"]["min"] >= 0.95


def test_split_is_by_video(yolo_dataset_dir):
    def videos(split):
        return {p.stem.split("_")[0] for p in (yolo_dataset_dir / "images" / split).glob("video*")}

    train, val = videos("train"), videos("val")
    assert train and val and not train & val
    assert train | val == {"video01", "video12", "video48"}
    data = yaml.safe_load((yolo_dataset_dir / "data.yaml").read_text())
    assert data["names"] == {0: "tool"} and Path(data["path"]) == yolo_dataset_dir.absolute()
    assert (yolo_dataset_dir / "images/val/artnet_test_pos_Test_Pos_001.png").exists()
    assert (yolo_dataset_dir / "labels/train/artnet_train_neg_Train_Neg_001.txt").read_text() == ""


def test_split_videos_rules():
    assert split_videos(
        ["video01", "video02"], val_videos=["2"], val_fraction=0.2, seed=0, has_other_val=False
    ) == (["video01"], ["video02"])
    train, val = split_videos(
        [f"video{i:02d}" for i in range(1, 11)], val_videos=[], val_fraction=0.2, seed=3, has_other_val=False
    )
    assert len(val) == 2 and not set(train) & set(val)
    assert split_videos(["video01"], val_videos=[], val_fraction=0.2, seed=0, has_other_val=True) == (
        ["video01"],
        [],
    )
    with pytest.raises(LapgenError, match="one video"):
        split_videos(["video01"], val_videos=[], val_fraction=0.2, seed=0, has_other_val=False)
    with pytest.raises(LapgenError, match="not in the CholecSeg8k folder"):
        split_videos(
            ["video01", "video02"], val_videos=["video09"], val_fraction=0.2, seed=0, has_other_val=False
        )


def test_per_tool_classes(tmp_path, cholecseg8k_dir, artnet_dir):
    out = tmp_path / "pertool"
    summary = convert(
        ConvertConfig(
            out=out,
            cholecseg8k=cholecseg8k_dir,
            artnet=artnet_dir,
            classes="per-tool",
            val_videos=["video12"],
        )
    )
    assert summary["names"] == ["grasper", "hook"] and summary["artnet"]["positives_skipped_untyped"] == 5
    assert not list((out / "images").rglob("artnet_*_pos_*"))
    frame = cholecseg8k.find_frames(cholecseg8k_dir)[0]
    size, tools = cholecseg8k.read_frame_masks(frame)
    labels = read_label_file(out / "labels/train" / f"{frame.key}.txt", size)
    for cls, name in ((0, "grasper"), (1, "hook")):
        back = polygons_to_mask([p for c, p in labels if c == cls], size)
        assert mask_iou(back, tools[name]) >= 0.95
    extra = convert(
        ConvertConfig(
            out=tmp_path / "extra",
            cholecseg8k=cholecseg8k_dir,
            artnet=artnet_dir,
            classes="per-tool",
            artnet_per_tool="extra-class",
        )
    )
    assert extra["names"] == ["grasper", "hook", "tool"]
    line = (tmp_path / "extra/labels/train/artnet_train_pos_Train_Pos_001.txt").read_text().split()
    assert line[0] == "2"


def test_artnet_alone(tmp_path, artnet_dir):
    """Either source alone works: ART-Net only (Train -> train, Test -> val, negatives empty labels)."""
    out = tmp_path / "art"
    summary = convert(ConvertConfig(out=out, artnet=artnet_dir))
    assert "cholecseg8k" not in summary and summary["names"] == ["tool"]
    assert summary["splits"]["train"]["images"] == 6 and summary["splits"]["val"]["images"] == 4
    assert summary["splits"]["train"]["empty"] == 3 and summary["splits"]["val"]["empty"] == 2
    for sample in artnet.find_samples(artnet_dir):
        split = "train" if sample.split == "train" else "val"
        size, source = artnet.read_tool_mask(sample)
        polys = read_label_file(out / "labels" / split / f"{sample.key}.txt", size)
        assert bool(polys) == sample.positive
        assert mask_iou(polygons_to_mask([p for _, p in polys], size), source) >= 0.95


def test_edge_cases_end_to_end(tmp_path, edge_cholecseg8k_dir):
    out = tmp_path / "edge"
    summary = convert(ConvertConfig(out=out, cholecseg8k=edge_cholecseg8k_dir))
    assert summary["fragments_dropped"] == 3  # one 4-px fragment per video
    assert summary["round_trip_iou"]["min"] >= 0.95
    frame = cholecseg8k.find_frames(edge_cholecseg8k_dir)[0]  # k=0 carries a 5x5 hole in the grasper
    size, tools = cholecseg8k.read_frame_masks(frame)
    split = "val" if (out / "labels/val" / f"{frame.key}.txt").exists() else "train"
    back = polygons_to_mask(
        [p for _, p in read_label_file(out / f"labels/{split}/{frame.key}.txt", size)], size
    )
    holes = (~tools["grasper"]) & polygons_to_mask(
        mask_to_polygons(tools["grasper"], min_hole_area=10**6), size
    )
    assert holes.sum() >= 25 and not (back & holes).any()


def test_ultralytics_accepts_the_dataset(copy_yolo_dataset):
    from lapgen.models.segmentation import check_dataset, configure_ultralytics

    configure_ultralytics()
    from ultralytics.data.dataset import YOLODataset

    info = check_dataset(copy_yolo_dataset)
    assert info["nc"] == 1 and Path(info["train"]).is_dir()
    for split, n_images in (("train", 14), ("val", 8)):
        ds = YOLODataset(img_path=info[split], imgsz=64, data=info, task="segment", augment=False)
        assert len(ds.labels) == n_images
        cache = np.load(next((copy_yolo_dataset / "labels").glob(f"{split}.cache")), allow_pickle=True).item()
        nf, nm, ne, nc, total = cache["results"]
        assert (nf, nm, nc, total) == (n_images, 0, 0, n_images) and ne >= 2  # found, missing, corrupt
        assert sum(len(lb["segments"]) for lb in ds.labels) == sum(
            len(p.read_text().splitlines()) for p in (copy_yolo_dataset / "labels" / split).glob("*.txt")
        )


# ------------------------------------------------------------------------------------------ bad input, CLI


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_watershed_mask_is_one_line_error(tmp_path, cholecseg8k_dir):
    root = _copy(cholecseg8k_dir, tmp_path / "seg")
    victim = next(root.rglob("frame_81_endo_watershed_mask.png"))
    victim.unlink()
    result = runner.invoke(
        app, ["segment", "convert", "--cholecseg8k", str(root), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "frame_81_endo.png" in result.stderr
    assert "watershed mask missing" in result.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_wrong_size_mask_is_one_line_error(tmp_path, cholecseg8k_dir):
    root = _copy(cholecseg8k_dir, tmp_path / "seg")
    victim = next(root.rglob("frame_82_endo_watershed_mask.png"))
    Image.open(victim).resize((80, 48), Image.NEAREST).save(victim)
    result = runner.invoke(
        app, ["segment", "convert", "--cholecseg8k", str(root), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "80x48 but its frame is 160x96" in result.stderr
    assert not (tmp_path / "o").exists()


def test_artnet_positive_without_mask(tmp_path, artnet_dir):
    root = _copy(artnet_dir, tmp_path / "art")
    next(root.rglob("Train_Pos_002_Tool_Mask.png")).unlink()
    with pytest.raises(LapgenError, match="Train_Pos_002_Tool_Mask.png"):
        artnet.find_samples(root)
    (tmp_path / "empty" / "Train").mkdir(parents=True)
    with pytest.raises(LapgenError, match="no ART-Net images"):
        artnet.find_samples(tmp_path / "empty")


def test_cli_convert_json_and_overwrite(tmp_path, cholecseg8k_dir, artnet_dir):
    out = tmp_path / "cli"
    args = [
        "segment",
        "convert",
        "--cholecseg8k",
        str(cholecseg8k_dir),
        "--artnet",
        str(artnet_dir),
        "--out",
        str(out),
        "--val-videos",
        "video48",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["cholecseg8k"]["val_videos"] == ["video48"]
    assert summary["splits"]["val"]["images"] == 4 + 4
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0
    none = runner.invoke(app, ["segment", "convert", "--out", str(tmp_path / "x")])
    assert none.exit_code == 2 and "no source given" in none.stderr
    nowhere = runner.invoke(
        app, ["segment", "convert", "--cholecseg8k", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]
    )
    assert nowhere.exit_code == 2 and nowhere.stderr.count("\n") == 1
    assert nowhere.stderr.strip().endswith(
        "CholecSeg8k folder not found; pass the folder holding video01/, video09/, ..."
    )
    bad = runner.invoke(
        app,
        [
            "segment",
            "convert",
            "--cholecseg8k",
            str(cholecseg8k_dir),
            "--out",
            str(tmp_path / "y"),
            "--classes",
            "organs",
        ],
    )
    assert bad.exit_code == 2 and "unknown class scheme" in bad.stderr
