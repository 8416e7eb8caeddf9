"""`lapgen prepare` on bad input: one line on stderr, exit code 2, no dataset at --out."""

from __future__ import annotations

import json
import shutil

import av
import pytest
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.data import synthetic
from tests.fixtures.data import copy_tree

runner = CliRunner()


def _fails(args, out, message):
    result = runner.invoke(app, ["prepare", *map(str, args), "--out", str(out), "--size", "16", "--workers", "1"])
    assert result.exit_code == 2, result.output
    # the error is one line (a progress bar drawn before a mid-run error may precede it)
    lines = [ln for ln in result.stderr.strip().splitlines() if "lapgen: error" in ln]
    assert len(lines) == 1 and lines[0].startswith("lapgen: error: "), result.stderr
    assert result.stderr.strip().splitlines()[-1] == lines[0]
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
    return lines[0]


def _t50(tmp_path, synthetic_cholect50, edit=None):
    root = copy_tree(synthetic_cholect50, tmp_path / "t50")
    if edit:
        path = root / "labels" / "VID08.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return root


def test_no_source_and_bad_options(tmp_path, synthetic_cholec80):
    _fails([], tmp_path / "o", "nothing to prepare")
    _fails(["--cholec80", synthetic_cholec80, "--split", "fold9"], tmp_path / "o", "unknown split 'fold9'")
    result = runner.invoke(app, ["prepare", "--cholec80", str(synthetic_cholec80), "--out", str(tmp_path / "o"),
                                 "--size", "4"])
    assert result.exit_code == 2 and "--size must be in 8..4096" in result.stderr


def test_missing_folders_and_files(tmp_path, synthetic_cholect50, synthetic_cholec80):
    _fails(["--cholect50", tmp_path / "nowhere"], tmp_path / "o", "CholecT50 folder not found")
    _fails(["--cholec80", tmp_path / "nowhere"], tmp_path / "o", "Cholec80 folder not found")
    c80 = copy_tree(synthetic_cholec80, tmp_path / "c80")
    (c80 / "tool_annotations" / "video03-tool.txt").unlink()
    _fails(["--cholec80", c80], tmp_path / "o", "tool annotation file not found")
    t50 = _t50(tmp_path, synthetic_cholect50)
    (t50 / "videos" / "VID08" / "000002.png").unlink()
    _fails(["--cholect50", t50], tmp_path / "o", "no PNG")


def test_only_shared_cholec80_videos(tmp_path):
    root = synthetic.write_cholec80(tmp_path / "c80", videos=(1,), num_frames=30)
    _fails(["--cholec80", root], tmp_path / "o", "none of the Cholec80 videos is Cholec80-only")


def test_corrupt_and_truncated_mp4(tmp_path, synthetic_cholec80):
    c80 = copy_tree(synthetic_cholec80, tmp_path / "c80")
    mp4 = c80 / "videos" / "video03.mp4"
    good = mp4.read_bytes()
    mp4.write_bytes(b"\x00garbage" * 500)
    _fails(["--cholec80", c80], tmp_path / "o", "corrupt, truncated or not a video")
    mp4.write_bytes(good[: len(good) * 2 // 3])  # index (moov) at the end: lost
    _fails(["--cholec80", c80], tmp_path / "o", "video03.mp4")


def test_truncated_mp4_with_index_first(tmp_path, synthetic_cholec80):
    """A 'faststart' MP4 cut short still opens; the missing frames are found while decoding."""
    c80 = copy_tree(synthetic_cholec80, tmp_path / "c80")
    mp4 = c80 / "videos" / "video03.mp4"
    frames = [f.to_ndarray(format="rgb24") for f in av.open(str(mp4)).decode(video=0)]
    with av.open(str(mp4), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 128, 72, "yuv420p"
        stream.options = {"keyint": "10"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = mp4.read_bytes()
    mp4.write_bytes(data[: len(data) // 2])
    line = _fails(["--cholec80", c80], tmp_path / "o", "video03.mp4")
    assert "truncated" in line or "corrupt" in line


def test_truncated_png(tmp_path, synthetic_cholect50):
    t50 = _t50(tmp_path, synthetic_cholect50)
    png = t50 / "videos" / "VID08" / "000006.png"
    png.write_bytes(png.read_bytes()[:200])
    line = _fails(["--cholect50", t50], tmp_path / "o", "000006.png")
    assert "corrupt or truncated" in line


@pytest.mark.parametrize("edit, message", [
    (None, "invalid JSON"),
    (lambda d: d["annotations"]["5"].append([17, 0, 1, -1, -1, -1, -1, 1, 42, 1, -1, -1, -1, -1, 0]),
     "unknown target id 42"),
    (lambda d: d["categories"]["triplet"].__setitem__("100", "grasper,cut,liver"), "unknown triplet id 100"),
])
def test_bad_labels(tmp_path, synthetic_cholect50, edit, message):
    t50 = _t50(tmp_path, synthetic_cholect50, edit)
    if edit is None:
        (t50 / "labels" / "VID08.json").write_text("{\"video\": 8, \"annotations\": ")
    line = _fails(["--cholect50", t50], tmp_path / "o", message)
    assert "VID08.json" in line


def test_annotations_longer_than_video(tmp_path, synthetic_cholec80):
    c80 = copy_tree(synthetic_cholec80, tmp_path / "c80")
    phase = c80 / "phase_annotations" / "video03-phase.txt"
    phase.write_text(phase.read_text() + "".join(f"{c}\tCleaningCoagulation\n" for c in range(110, 140)))
    _fails(["--cholec80", c80], tmp_path / "o", "do not match the video")


def test_unwritable_output(tmp_path, synthetic_cholec80):
    (tmp_path / "file").write_text("not a folder")
    _fails(["--cholec80", synthetic_cholec80], tmp_path / "file" / "out", "not writable")


def test_no_half_written_dataset_after_a_worker_error(tmp_path, synthetic_cholect50):
    t50 = _t50(tmp_path, synthetic_cholect50)
    png = t50 / "videos" / "VID103" / "000009.png"
    png.write_bytes(png.read_bytes()[:100])
    result = runner.invoke(app, ["prepare", "--cholect50", str(t50), "--out", str(tmp_path / "o"), "--size", "16",
                                 "--workers", "2"])
    assert result.exit_code == 2 and "000009.png" in result.stderr
    assert not (tmp_path / "o").exists()
    shutil.copy(synthetic_cholect50 / "videos" / "VID103" / "000009.png", png)  # fix the input, re-run: resumes
    result = runner.invoke(app, ["prepare", "--cholect50", str(t50), "--out", str(tmp_path / "o"), "--size", "16",
                                 "--workers", "2"])
    assert result.exit_code == 0 and (tmp_path / "o" / "metadata.jsonl").exists()


def test_a_full_disk_is_reported_as_an_output_error(tmp_path, monkeypatch, synthetic_cholect50,
                                                    synthetic_cholec80):
    """A write failure names the output image and says what to do; it is never blamed on the input frame."""
    import errno

    from PIL import Image

    real_save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        if str(fp).endswith(".png.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    for source, root in (("--cholect50", synthetic_cholect50), ("--cholec80", synthetic_cholec80)):
        line = _fails([source, root], tmp_path / "o", "cannot write the output image (No space left")
        assert "o.partial" in line and "free disk space" in line and "corrupt" not in line
