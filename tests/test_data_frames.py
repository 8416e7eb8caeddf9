"""The frames-dataset contract: read_records validation, write_records, FramesDataset tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lapgen.data import frames
from lapgen.errors import LapgenError
from tests.fixtures.data import copy_tree


def test_read_records_and_splits(synthetic_frames):
    everything = frames.read_records(synthetic_frames)
    train = frames.read_records(synthetic_frames, split="train")
    val = frames.read_records(synthetic_frames, split="val")
    test = frames.read_records(synthetic_frames, split="test")
    assert len(train) + len(val) + len(test) == len(everything)
    assert {r["video"] for r in val} == {"VID08"} and {r["video"] for r in test} == {"VID06"}
    with pytest.raises(LapgenError, match="unknown split"):
        frames.read_records(synthetic_frames, split="dev")


def _write_meta(folder, lines):
    (folder / "metadata.jsonl").write_text("".join(
        (ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 1 is not valid JSON"),
    ({"text": "x"}, "missing key `file_name`"),
    ({"file_name": "images/none.png", "text": "x"}, "does not exist"),
    ({"file_name": "../escape.png", "text": "x"}, "must be relative"),
    ({"file_name": "a.png", "text": 3}, "`text` must be a string"),
    ({"file_name": "a.png", "text": "x", "split": "dev"}, "`split` must be one of"),
    ({"file_name": "a.png", "text": "x", "phase": 9}, "`phase` must be a CholecT50 phase id"),
    ({"file_name": "a.png", "text": "x", "triplets": [100]}, "`triplets` must be a list of ids in 0..99"),
    ({"file_name": "a.png", "text": "x", "source": "m2cai"}, "`source` must be one of"),
    ({"file_name": "a.png", "text": "x", "conditioning_image_file_name": "m.png"}, "does not exist"),
])
def test_read_records_validation(tmp_path, line, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    _write_meta(tmp_path, [line])
    with pytest.raises(LapgenError, match=message):
        frames.read_records(tmp_path)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(LapgenError, match="folder not found"):
        frames.read_records(tmp_path / "none")
    with pytest.raises(LapgenError, match="no metadata.jsonl"):
        frames.read_records(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    _write_meta(tmp_path, [{"file_name": "a.png", "text": "x"}])
    with pytest.raises(LapgenError, match="has no `split`"):
        frames.read_records(tmp_path, split="train")


def test_write_records_round_trip(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rec = {"triplets": [3], "text": "grasper grasp cystic_artery in preparation", "file_name": "a.png",
           "split": "train", "extra": 1}
    frames.write_records(tmp_path, [rec])
    line = (tmp_path / "metadata.jsonl").read_text()
    assert line.startswith('{"file_name": "a.png", "text": ') and line.endswith('"extra": 1}\n')
    assert frames.read_records(tmp_path) == [rec]
    with pytest.raises(LapgenError):
        frames.write_records(tmp_path, [{"file_name": "b.png", "text": "x"}])
    assert frames.read_records(tmp_path) == [rec]  # a failed write leaves the old file intact


def test_dataset_images_and_masks(tmp_path, synthetic_frames, synthetic_cholect50_masks):
    ds = frames.FramesDataset(synthetic_frames, split="train")
    item = ds[0]
    x = item["pixel_values"]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    img = np.asarray(Image.open(synthetic_frames / ds.records[0]["file_name"]), np.float32)
    torch.testing.assert_close(x, torch.from_numpy(img / 127.5 - 1).permute(2, 0, 1))
    assert item["text"] == ds.records[0]["text"] and not ds.conditioning
    with pytest.raises(LapgenError, match="not a ControlNet dataset"):
        frames.FramesDataset(synthetic_frames, conditioning=True)
    # a ControlNet dataset: the ground-truth masks (128x72) beside 64x64 images -> resized NEAREST to 64
    root = copy_tree(synthetic_frames, tmp_path / "cn")
    n = frames.attach_masks(root, synthetic_cholect50_masks)
    records = frames.read_records(root)
    assert n == len(records) and all(r["source"] == "cholect50" and r["tools"] for r in records)
    assert n == sum(1 for r in frames.read_records(synthetic_frames) if r["source"] == "cholect50" and r["tools"])
    with Image.open(root / records[0]["conditioning_image_file_name"]) as m:
        assert m.mode == "L" and m.size == (64, 64) and set(np.unique(np.asarray(m))) <= {0, 255}
    ds = frames.FramesDataset(root, size=32)
    assert ds.conditioning
    k = 0
    item = ds[k]
    c = item["conditioning_pixel_values"]
    assert item["pixel_values"].shape == (3, 32, 32) and c.shape == (3, 32, 32)
    assert set(c.unique().tolist()) == {0.0, 1.0} and torch.equal(c[0], c[2])
    src = Image.open(root / ds.records[k]["conditioning_image_file_name"]).resize((32, 32), Image.NEAREST)
    np.testing.assert_array_equal(c[0].numpy() > 0.5, np.asarray(src) >= 128)
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and len(batch["text"]) == 4
