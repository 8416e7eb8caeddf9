"""Synthetic datasets: real layouts (the edge cases of docs/data-formats.md), labels consistent with pixels."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from lapgen.data import synthetic, vocab
from lapgen.data.synthetic_render import render_frame
from lapgen.data.video import iter_indexed_frames, probe
from tests.fixtures.data import C80_FRAMES, T50_FRAMES, T50_VIDEOS


@pytest.mark.parametrize("tools", [["grasper"], ["hook", "grasper"], ["bipolar", "scissors"],
                                   ["clipper", "irrigator", "specimenbag"]])
def test_masks_cover_the_drawn_tools_exactly(tools):
    bare, _ = render_frame(3, 7, 12.5, [], 160, 96)
    rgb, per_tool = render_frame(3, 7, 12.5, tools, 160, 96, tool_masks=True)
    _, union = render_frame(3, 7, 12.5, tools, 160, 96)
    changed = np.any(rgb != bare, axis=2)
    drawn = np.zeros_like(changed)
    for name in tools:
        assert per_tool[name].any(), name
        drawn |= per_tool[name] > 0
    assert not (changed & ~drawn).any()  # nothing drawn outside the masks
    assert (drawn & ~changed).sum() <= 0.02 * drawn.sum()  # and the masks hold only drawn pixels
    instruments = [t for t in tools if t != "specimenbag"]
    expect = np.zeros_like(changed)
    for name in instruments:
        expect |= per_tool[name] > 0
    np.testing.assert_array_equal(union > 0, expect)  # the bag is not an instrument
    assert set(np.unique(union)) <= {0, 255}


def test_cholect50_layout_and_labels(synthetic_cholect50, synthetic_cholect50_masks):
    root = synthetic_cholect50
    assert (root / "label_mapping.txt").read_text() == vocab.maps_txt()
    for v in T50_VIDEOS:
        name = vocab.t50_video_name(v)
        pngs = sorted(p.name for p in (root / "videos" / name).iterdir())
        assert pngs == [f"{k:06d}.png" for k in range(T50_FRAMES)]
        data = json.loads((root / "labels" / f"{name}.json").read_text())
        assert data["video"] == v and data["fps"] == 1 and data["num_frames"] == T50_FRAMES
        cats = data["categories"]
        assert cats["triplet"] == {str(k): n for k, n in enumerate(vocab.TRIPLETS)}
        assert cats["phase"]["1"] == "carlot-triangle-dissection" and len(cats["target"]) == 15
        ann = data["annotations"]
        assert sorted(ann, key=int) == [str(k) for k in range(T50_FRAMES)]
        # fixture checklist: no triplet, null triplet, duplicate instances, descending order, empty list
        assert [vec[0] for vec in ann["0"]] == [-1] and ann["0"][0][:14] == [-1] * 14
        assert [vec[0] for vec in ann["1"]] == [94]
        assert [vec[0] for vec in ann["2"]] == [17, 17]
        assert [vec[0] for vec in ann["3"]] == [60, 17]
        assert ann["4"] == []
        for k, vectors in ann.items():
            for vec in vectors:
                assert len(vec) == 15 and vec[14] == vectors[0][14]
                if vec[0] != -1:
                    assert tuple(vec[i] for i in (1, 7, 8)) == vocab.TRIPLET_COMPONENTS[vec[0]]
            # the drawn tools are the labelled instruments: the ground-truth mask is empty iff none
            mask = np.asarray(Image.open(synthetic_cholect50_masks / name / f"{int(k):06d}.png"))
            has_tool = any(vec[1] != -1 for vec in vectors)
            assert mask.any() == has_tool, (name, k)
    img = np.asarray(Image.open(root / "videos" / "VID08" / "000005.png"))
    rgb, mask = synthetic.cholect50_frame(8, 5, num_frames=T50_FRAMES)
    np.testing.assert_array_equal(img, rgb)
    assert img.shape == (72, 128, 3) and mask.shape == (72, 128)


def test_cholec80_layout_and_alignment(synthetic_cholec80):
    root = synthetic_cholec80
    for stem in ("video03", "video01"):
        info = probe(root / "videos" / f"{stem}.mp4")
        assert (info.frames, info.fps, info.size) == (C80_FRAMES, 25.0, (128, 72))
        phase = (root / "phase_annotations" / f"{stem}-phase.txt").read_text().splitlines()
        assert phase[0] == "Frame\tPhase" and len(phase) == 1 + C80_FRAMES
        assert all(line.split("\t")[1] in vocab.CHOLEC80_PHASES for line in phase[1:])
        tool = (root / "tool_annotations" / f"{stem}-tool.txt").read_text().splitlines()
        assert tool[0].split("\t") == ["Frame", *vocab.CHOLEC80_TOOLS]
        assert [int(line.split("\t")[0]) for line in tool[1:]] == list(range(0, C80_FRAMES, 25))
    # decoded frame 25k is the frame rendered for tool row k (lossy codec: close, not equal)
    for idx, rgb in iter_indexed_frames(root / "videos" / "video03.mp4", step=25):
        ref, _ = synthetic.cholec80_frame(3, idx, num_frames=C80_FRAMES)
        err = np.abs(rgb.astype(int) - ref.astype(int)).mean()
        other, _ = synthetic.cholec80_frame(3, max(idx - 24, 0) if idx else 24, num_frames=C80_FRAMES)
        assert err < 4.0 and (idx == 0 or err < np.abs(rgb.astype(int) - other.astype(int)).mean())


def test_cholecseg8k_layout(synthetic_cholecseg8k):
    clip = synthetic_cholecseg8k / "video01" / "video01_00080"
    names = sorted(p.name for p in clip.iterdir())
    assert len(names) == 80 * 4
    frames = sorted({int(re.match(r"frame_(\d+)_endo", n).group(1)) for n in names})
    assert frames == list(range(80, 160))
    allowed = {v for _n, v, _c in synthetic.CHOLECSEG8K_CLASSES.values()} | {0, 255}
    first = Image.open(clip / "frame_80_endo_watershed_mask.png")
    assert first.mode == "RGBA" and np.all(np.asarray(first)[..., 3] == 255)
    for n in (80, 121):
        ws = np.asarray(Image.open(clip / f"frame_{n}_endo_watershed_mask.png"))[..., :3]
        assert (ws[..., 0] == ws[..., 1]).all() and (ws[..., 0] == ws[..., 2]).all()
        codes = ws[..., 0]
        assert set(np.unique(codes)) <= allowed and {0, 31, 32, 255} <= set(np.unique(codes))
        assert (codes[0] == 255).all() and (codes[:, -1] == 255).all()  # image border
        colour = np.asarray(Image.open(clip / f"frame_{n}_endo_color_mask.png"))
        for _cid, (_name, value, rgb) in synthetic.CHOLECSEG8K_CLASSES.items():
            if (codes == value).any():
                assert (colour[codes == value] == rgb).all()
        assert (colour[codes == 0] == 255).all() and (colour[codes == 255] == 255).all()
        endo = np.asarray(Image.open(clip / f"frame_{n}_endo.png"))
        assert endo.shape == (72, 128, 3)
        # tool pixels look metallic (grey), not tissue-red
        tool = endo[np.isin(codes, (31, 32))].astype(int)
        assert np.abs(tool[:, 0] - tool[:, 2]).mean() < 25


def test_artnet_layout(synthetic_artnet):
    root = synthetic_artnet
    for split, (n_pos, n_neg) in (("Train", (4, 4)), ("Test", (2, 2))):
        pos = sorted((root / split / f"{split}_Positive").glob("*.png"))
        neg = sorted((root / split / f"{split}_Negative").glob("*.png"))
        assert len(pos) == n_pos and len(neg) == n_neg
        for p in pos:
            mask = np.asarray(Image.open(root / split / f"{split}_Positive_Tool_Mask" / f"{p.stem}_Tool_Mask.png"))
            assert mask.ndim == 2 and mask.any() and set(np.unique(mask)) <= {0, 255}
            tip = np.asarray(Image.open(root / split / f"{split}_Positive_TipPoint" / f"{p.stem}_TipPoint.png"))
            assert tip.max() > 200
        assert pos[0].stem.startswith(f"{split}_Pos")


def test_seeded_and_sized(tmp_path):
    a = synthetic.write_cholect50(tmp_path / "a", videos=(2,), num_frames=3, seed=5)
    b = synthetic.write_cholect50(tmp_path / "b", videos=(2,), num_frames=3, seed=5)
    c = synthetic.write_cholect50(tmp_path / "c", videos=(2,), num_frames=3, seed=6, size=(96, 54))
    same = (a / "videos/VID02/000001.png").read_bytes() == (b / "videos/VID02/000001.png").read_bytes()
    assert same and (a / "labels/VID02.json").read_text() == (b / "labels/VID02.json").read_text()
    assert Image.open(c / "videos/VID02/000001.png").size == (96, 54)
    art = synthetic.write_artnet(tmp_path / "art", train=(1, 0), test=(0, 0), mask_size=(64, 36))
    assert Image.open(art / "Train/Train_Positive_Tool_Mask/Train_Pos_001_Tool_Mask.png").size == (64, 36)
