"""`lapgen prepare --clips`: the clip dataset from the synthetic Cholec80 / CholecT50 releases (real layouts):
clip timing, prompts and per-frame labels from the annotations, pixels from prepare's own decoding path,
video-disjoint splits, resume after an interruption, and one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.data import clips, prompts
from lapgen.data import prepare as prep
from lapgen.data.prepare import PrepareConfig, prepare
from lapgen.errors import LapgenError

runner = CliRunner()


def _records(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "metadata.jsonl").read_text().splitlines()]


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != "lapgen.yaml"}


def test_clip_timing():
    timing = clips.ClipTiming(frames=16, fps=8.0)
    assert timing.offsets(25) == [0, 3, 6, 9, 13, 16, 19, 22, 25, 28, 31, 34, 38, 41, 44, 47]  # round(k*25/8)
    assert timing.offsets(1) is None  # 1 fps PNGs cannot give 8 fps clips
    assert clips.ClipTiming(frames=4, fps=1.0).offsets(1) == [0, 1, 2, 3]
    assert timing.starts(25, last=149, span=47) == [0, 50, 100]  # back to back: a clip every 2 s
    assert clips.ClipTiming(16, 8.0, every=1.0).starts(25, last=99, span=47) == [0, 25, 50]
    with pytest.raises(LapgenError, match="--clip-fps must be positive"):
        clips.ClipTiming(16, 0.0).check()


def test_clips_from_cholec80_and_cholect50(tmp_path, synthetic_cholect50, synthetic_cholec80):
    """video03 (Cholec80 only): Cholec80 labels; video01 (shared): pixels from its MP4, CholecT50 triplets."""
    from lapgen.data.cholec80 import read_video_annotations
    from lapgen.data.cholect50 import read_cholect50

    out = tmp_path / "clips"
    prepare(PrepareConfig(out=out, cholect50=synthetic_cholect50, cholec80=synthetic_cholec80, size=32, workers=1,
                          clips=True, clip_frames=8, clip_fps=8.0))
    records = _records(out)
    by_video = {}
    for r in records:
        by_video.setdefault(r["video"], []).append(r)
    # 110 frames at 25 fps = 4.4 s: four 1-second clips per video; the 1 fps CholecT50-only VID103 gives none
    assert [r["clip"] for r in by_video["video03"]] == [f"clips/video03/{s:06d}" for s in (0, 25, 50, 75)]
    assert set(by_video) == {"video03", "video01"}
    card = __import__("yaml").safe_load((out / "lapgen.yaml").read_text())
    assert card["kind"] == "clip-dataset" and "VID103" in card["skipped_videos"]
    assert any("too sparse" in w for w in card["warnings"])

    c80 = read_video_annotations(synthetic_cholec80, 3)
    samples = {s.frame // 25: s for s in c80.samples}
    for r in by_video["video03"]:
        assert r["source"] == "cholec80" and r["labels_from"] == "cholec80" and r["split"] == "train"
        assert r["source_frames"] == [r["source_frames"][0] + o for o in (0, 3, 6, 9, 13, 16, 19, 22)]
        middle = samples[r["source_frames"][4] // 25]  # the annotated second of the middle frame
        assert r["text"] == prompts.tools_prompt(middle.tools, middle.phase)
        assert [lab["tools"] for lab in r["labels"]] == [samples[i // 25].tools for i in r["source_frames"]]
        assert len(list((out / r["clip"]).glob("*.png"))) == 8
    t50 = {f.frame: f for f in next(v for v in read_cholect50(synthetic_cholect50) if v.video == 1).frames}
    for r in by_video["video01"]:
        assert r["source"] == "cholec80" and r["labels_from"] == "cholect50"
        second = t50[r["source_frames"][4] // 25]
        assert r["text"] == clips.t50_prompt(second, "paper")[0] and r["triplets"] == second.triplets
        assert r["split"] == "train"  # VID01 is an RDV training video

    # the pixels are prepare's: a clip frame at C-index 25 is byte-identical to the frames dataset's image
    frames = tmp_path / "frames"
    prepare(PrepareConfig(out=frames, cholec80=synthetic_cholec80, size=32, workers=1))
    clip = next(r for r in by_video["video03"] if 25 in r["source_frames"])
    k = clip["source_frames"].index(25)
    assert (out / clip["clip"] / f"{k:06d}.png").read_bytes() == (frames / "images/video03/000025.png").read_bytes()
    with Image.open(out / clip["clip"] / "000000.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    assert clips.read_clips(out, "train") == records


def test_splits_are_video_disjoint(tmp_path):
    """A shared video takes its official CholecT50 split even with Cholec80's labels (video06: RDV test)."""
    from lapgen.data import synthetic

    c80 = synthetic.write_cholec80(tmp_path / "c80", videos=(3, 6), num_frames=60)
    out = tmp_path / "clips"
    result = prepare(PrepareConfig(out=out, cholec80=c80, size=16, workers=1, clips=True, clip_frames=4,
                                   clip_fps=4.0))
    splits = {(r["video"], r["split"]) for r in _records(out)}
    assert splits == {("video03", "train"), ("video06", "test")}
    assert {row["split"] for row in result.counts} == {"train", "test"}
    assert clips.read_clips(out, "test")[0]["video"] == "video06"


def test_cholect50_frames_at_one_fps(tmp_path, synthetic_cholect50):
    out = tmp_path / "clips"
    prepare(PrepareConfig(out=out, cholect50=synthetic_cholect50, size=16, workers=1, clips=True, clip_frames=4,
                          clip_fps=1.0, split="all"))
    records = _records(out)
    assert records and all(r["source"] == "cholect50" and r["source_fps"] == 1.0 for r in records)
    r = records[0]
    assert r["source_frames"] == list(range(r["source_frames"][0], r["source_frames"][0] + 4))
    src = synthetic_cholect50 / "videos" / r["video"] / f"{r['source_frames'][1]:06d}.png"
    with Image.open(src) as im:
        expected = np.asarray(im.convert("RGB").resize((16, 16), Image.BILINEAR, reducing_gap=None))
    with Image.open(out / r["clip"] / "000001.png") as im:
        np.testing.assert_array_equal(np.asarray(im), expected)


def test_resume_after_interruption_gives_identical_bytes(tmp_path, monkeypatch, synthetic_cholec80):
    def cfg(out):
        return PrepareConfig(out=out, cholec80=synthetic_cholec80, size=16, workers=1, clips=True, clip_frames=8,
                             clip_fps=8.0, clip_every=0.5)  # overlapping clips: frames with two destinations

    prepare(cfg(tmp_path / "full"))
    real, calls = prep.save_resized, {"n": 0}

    def dying(image, size, dest):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        real(image, size, dest)

    monkeypatch.setattr(prep, "save_resized", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg(tmp_path / "resumed"))
    assert not (tmp_path / "resumed").exists()
    assert len(list((tmp_path / "resumed.partial").rglob("*.png"))) == 19
    monkeypatch.setattr(prep, "save_resized", real)
    prepare(cfg(tmp_path / "resumed"))
    full = _tree(tmp_path / "full")
    assert full == _tree(tmp_path / "resumed") and len(full) > 100
    assert len(_records(tmp_path / "full")) == 14  # every 0.5 s from 0 to 3.5 s, in two videos


def test_cli_and_one_line_errors(tmp_path, synthetic_cholect50, synthetic_cholec80):
    result = runner.invoke(app, ["prepare", "--clips", "--cholec80", str(synthetic_cholec80), "--out",
                                 str(tmp_path / "c"), "--size", "16", "--clip-frames", "8", "--workers", "1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["records"] == 8 and sum(row["clips"] for row in payload["counts"]) == 8

    def error(args) -> str:
        res = runner.invoke(app, ["prepare", *map(str, args), "--out", str(tmp_path / "bad"), "--workers", "1"])
        assert res.exit_code == 2, res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lapgen: error: "), res.stderr
        assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
        return lines[0]

    assert "--clip-frames applies to clip mode only" in error(["--cholec80", synthetic_cholec80,
                                                               "--clip-frames", 4])
    assert "video-disjoint split" in error(["--clips", "--cholec80", synthetic_cholec80, "--split", "paper"])
    msg = error(["--clips", "--cholect50", synthetic_cholect50, "--split", "all"])
    assert "no video is long enough for one 16-frame clip at 8 fps" in msg and "--cholec80" in msg
    assert "--clip-fps must be positive" in error(["--clips", "--cholec80", synthetic_cholec80, "--clip-fps", 0])


def test_reader_rejects_broken_clip_datasets(tmp_path, synthetic_cholec80):
    out = tmp_path / "c"
    prepare(PrepareConfig(out=out, cholec80=synthetic_cholec80, size=16, workers=1, clips=True, clip_frames=8))
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    first = _records(broken)[0]
    (broken / first["clip"] / "000005.png").unlink()
    with pytest.raises(LapgenError, match=r"lacks 1 of its 8 frames \(first: .*000005.png\)"):
        clips.read_clips(broken)
    with pytest.raises(LapgenError, match="split 'val' holds no clips"):
        clips.read_clips(out, "val")
