"""`lapgen synthetic` and `lapgen masks silhouette`: the command-line routes to synthetic data and tool masks.

The written releases are read back by lapgen's own readers of the real formats, and compared with the
writers of `lapgen.data.synthetic` called directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.data import artnet, cholec80, cholecseg8k, cholect50, synthetic
from lapgen.data.synthetic_release import SyntheticConfig, write_synthetic_release
from lapgen.errors import LapgenError
from lapgen.studio.silhouettes import tool_silhouette

SMALL = ["--cholect50-videos", "1,2", "--cholect50-frames", "3", "--cholec80-videos", "3", "--cholec80-frames",
         "26", "--cholecseg8k-videos", "12", "--cholecseg8k-clips", "2", "--cholecseg8k-frames", "2",
         "--artnet-train", "2,1", "--artnet-test", "1,0", "--size", "64x48", "--seed", "3"]


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_synthetic_writes_every_release_readable_by_the_real_readers(tmp_path):
    out = tmp_path / "syn"
    result = _run("synthetic", "--out", str(out), *SMALL, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert sorted(summary["written"]) == ["ART-Net", "CholecSeg8k", "CholecT50", "cholec80"]
    assert summary["skipped"] == []
    assert not (tmp_path / "syn.partial").exists()

    t50 = cholect50.read_cholect50(out / "CholecT50")
    assert [v.video for v in t50] == [1, 2] and all(len(v.frames) == 3 for v in t50)
    c80 = cholec80.read_cholec80(out / "cholec80")
    assert [v.video for v in c80] == [3] and c80[0].num_frames == 26
    seg = cholecseg8k.find_frames(out / "CholecSeg8k")
    assert len(seg) == 2 * 2 and {f.video for f in seg} == {"video12"}
    samples = artnet.find_samples(out / "ART-Net")
    assert sorted((s.split, s.positive) for s in samples) == [("test", True), ("train", False), ("train", True),
                                                               ("train", True)]
    with Image.open(out / "CholecT50" / "videos" / "VID01" / "000000.png") as img:
        assert img.size == (64, 48)


def test_synthetic_bytes_equal_the_writers_called_directly(tmp_path):
    out = tmp_path / "syn"
    write_synthetic_release(SyntheticConfig(out=out, cholect50_videos=(2,), cholect50_frames=2, cholec80_videos=(),
                                            cholecseg8k_videos=(), artnet_train=(0, 0), artnet_test=(0, 0),
                                            size=(48, 32), seed=5))
    direct = synthetic.write_cholect50(tmp_path / "direct", videos=(2,), num_frames=2, size=(48, 32), seed=5)
    for name in ("videos/VID02/000000.png", "videos/VID02/000001.png", "labels/VID02.json"):
        assert (out / "CholecT50" / name).read_bytes() == (direct / name).read_bytes()


def test_an_empty_video_list_skips_its_source(tmp_path):
    out = tmp_path / "syn"
    result = _run("synthetic", "--out", str(out), "--cholect50-videos", "1", "--cholect50-frames", "1",
                  "--cholec80-videos", "", "--cholecseg8k-videos", "", "--artnet-train", "0,0",
                  "--artnet-test", "0,0")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["CholecT50", "lapgen.yaml"]
    assert "skipped cholec80, CholecSeg8k, ART-Net" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--size", "64"], "--size '64' is not WIDTHxHEIGHT"),
    (["--size", "63x48"], "width and height must be even"),
    (["--size", "8x8", "--cholec80-videos", ""], "--size 8x8 is too small"),
    (["--cholec80-videos", "81"], "--cholec80-videos: video id 81 is outside 1..80"),
    (["--cholect50-videos", "1,a"], "not a comma-separated list of video ids"),
    (["--artnet-train", "4"], "--artnet-train '4' is not POS,NEG"),
    (["--cholecseg8k-frames", "0"], "--cholecseg8k-frames must be at least 1"),
    (["--tool-scale", "0"], "--tool-scale must be positive"),
])
def test_bad_values_fail_in_one_line_before_writing(tmp_path, args, message):
    out = tmp_path / "syn"
    result = _run("synthetic", "--out", str(out), *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists() and not (tmp_path / "syn.partial").exists()


def test_existing_output_needs_overwrite_and_a_stage_resumes(tmp_path, monkeypatch):
    out = tmp_path / "syn"
    cfg = dict(out=out, cholect50_videos=(1,), cholect50_frames=1, cholec80_videos=(), cholecseg8k_videos=(1,),
               cholecseg8k_frames=1, artnet_train=(1, 0), artnet_test=(0, 0), size=(32, 32))
    calls = []
    real = synthetic.write_artnet

    def interrupted(*a, **k):
        calls.append("artnet")
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_artnet", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_release(SyntheticConfig(**cfg))
    stage = tmp_path / "syn.partial"
    assert (stage / "CholecT50").is_dir() and (stage / "CholecSeg8k").is_dir() and not out.exists()
    stamp = (stage / "CholecT50" / "labels" / "VID01.json").stat().st_mtime_ns

    monkeypatch.setattr(synthetic, "write_artnet", real)
    summary = write_synthetic_release(SyntheticConfig(**cfg))
    assert sorted(summary["written"]) == ["ART-Net", "CholecSeg8k", "CholecT50"]
    assert (out / "CholecT50" / "labels" / "VID01.json").stat().st_mtime_ns == stamp  # kept, not rewritten
    with pytest.raises(LapgenError, match="output already exists"):
        write_synthetic_release(SyntheticConfig(**cfg))
    write_synthetic_release(SyntheticConfig(**cfg, overwrite=True))
    assert (out / "ART-Net").is_dir()


def test_tool_scale_thickens_the_drawn_tools(tmp_path):
    areas = []
    for scale in ("1", "2.5"):
        out = tmp_path / f"syn{scale}"
        result = _run("synthetic", "--out", str(out), "--cholect50-videos", "1", "--cholect50-frames", "6",
                      "--cholec80-videos", "", "--cholecseg8k-videos", "", "--artnet-train", "3,0",
                      "--artnet-test", "0,0", "--tool-scale", scale)
        assert result.exit_code == 0, result.output
        areas.append(sum(int((np.asarray(Image.open(s.mask)) > 127).sum())
                         for s in artnet.find_samples(out / "ART-Net") if s.mask))
    assert areas[1] > areas[0] > 0


def test_masks_silhouette_writes_the_studio_silhouette(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _run("masks", "silhouette", "hook", "--size", "64")
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(tmp_path / "hook.png"))
    assert written.dtype == np.uint8 and set(np.unique(written)) == {0, 255}
    assert np.array_equal(written > 127, tool_silhouette("hook", 64))
    assert "hook.png" in result.stderr

    again = _run("masks", "silhouette", "hook", "--size", "64")
    assert again.exit_code == 2 and "output already exists" in again.stderr
    assert _run("masks", "silhouette", "hook", "--out", "h.png", "--angle", "90", "--json").exit_code == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "h.png")) > 127, written > 127)


def test_masks_silhouette_output_drives_masks_animate(tmp_path):
    assert _run("masks", "silhouette", "grasper", "--out", str(tmp_path / "g.png"), "--size", "64").exit_code == 0
    result = _run("masks", "animate", "--mask", str(tmp_path / "g.png"), "--path", "20,20;40,40", "--frames", "3",
                  "--out", str(tmp_path / "seq"))
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "seq").glob("*.png"))) == 3


def test_masks_silhouette_unknown_tool_lists_the_valid_ones(tmp_path):
    result = _run("masks", "silhouette", "forceps", "--out", str(tmp_path / "f.png"))
    assert result.exit_code == 2
    assert "unknown tool silhouette 'forceps'" in result.stderr and "grasper" in result.stderr
    assert not (tmp_path / "f.png").exists()


def test_a_cholec80_video_also_in_cholect50_spans_its_cholect50_seconds(tmp_path):
    """Video 01 is in both releases: its MP4 covers every annotated CholecT50 second (25 frames each), so the
    real-clip route (`lapgen masks clips`) finds frames for any window; a Cholec80-only video keeps
    --cholec80-frames."""
    from lapgen.data.mask_clips import plan_clips
    from lapgen.data.video import probe

    out = tmp_path / "syn"
    result = _run("synthetic", "--out", str(out), "--cholect50-videos", "1", "--cholect50-frames", "4",
                  "--cholec80-videos", "3,1", "--cholec80-frames", "30", "--cholecseg8k-videos", "",
                  "--artnet-train", "0,0", "--artnet-test", "0,0", "--size", "32x24", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["written"]["cholec80"]["frames"] == {"03": 30, "01": 100}
    assert probe(out / "cholec80" / "videos" / "video03.mp4", count=True).frames == 30
    assert probe(out / "cholec80" / "videos" / "video01.mp4", count=True).frames == 100
    clips, _found = plan_clips(out / "CholecT50", out / "cholec80", seconds=1, n=50)
    assert clips and max(c.c_range().stop for c in clips) <= 100
