"""CholecT50 / Cholec80 readers on synthetic releases, and every validation error."""

from __future__ import annotations

import json

import pytest

from lapgen.data import cholec80, cholect50
from lapgen.errors import LapgenError
from tests.fixtures.data import C80_FRAMES, T50_FRAMES, T50_VIDEOS, copy_tree


def test_read_cholect50(synthetic_cholect50):
    videos = cholect50.read_cholect50(synthetic_cholect50)
    assert [v.video for v in videos] == sorted(T50_VIDEOS)
    vid = videos[0]
    assert vid.name == "VID01"
    by_frame = {f.frame: f for f in vid.frames}
    assert 4 not in by_frame and any("frame 4 has an empty annotation list" in w for w in vid.warnings)
    assert len(vid.frames) == T50_FRAMES - 1
    f0, f1, f2, f3 = (by_frame[k] for k in range(4))
    assert (f0.triplets, f0.instruments, f0.phase) == ([], [], 0)
    assert (f1.triplets, f1.instruments, f1.verbs, f1.targets) == ([94], [0], [9], [14])
    assert f2.triplets == [17]  # duplicates binarised
    assert (f3.triplets, f3.instruments, f3.verbs, f3.targets) == ([17, 60], [0, 2], [1, 2], [0])
    assert f3.path == synthetic_cholect50 / "videos" / "VID01" / "000003.png"
    assert [v.video for v in cholect50.read_cholect50(synthetic_cholect50, videos=[8])] == [8]
    with pytest.raises(LapgenError, match="no labels for video"):
        cholect50.read_cholect50(synthetic_cholect50, videos=[2])


def _edit_labels(root, name, fn):
    path = root / "labels" / f"{name}.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["annotations"]["5"].append([150] + [-1] * 13 + [0]), "unknown triplet id 150"),
    (lambda d: d["annotations"]["5"].append([1, 9] + [-1] * 12 + [0]), "unknown instrument id 9"),
    (lambda d: d["annotations"].__setitem__("5", [[-1] * 14 + [7]]), "unknown phase id 7"),
    (lambda d: d["annotations"].__setitem__("5", [[-1] * 14 + [1], [-1] * 14 + [2]]), "disagree on the phase"),
    (lambda d: d["annotations"].__setitem__("5", [[1, 0, 1]]), "15 fields"),
    (lambda d: d["annotations"].__setitem__("x", []), "frame numbers"),
    (lambda d: d["annotations"].__setitem__("5", [["a"] * 15]), "must be numbers"),
    (lambda d: d["categories"]["verb"].__setitem__("12", "stitch"), "unknown verb id 12 in categories"),
    (lambda d: d.pop("annotations"), "no `annotations`"),
    (lambda d: d["annotations"].__setitem__("99", [[-1] * 14 + [0]]), "no PNG"),
])
def test_cholect50_validation(tmp_path, synthetic_cholect50, edit, message):
    root = copy_tree(synthetic_cholect50, tmp_path / "t50")
    path = _edit_labels(root, "VID08", edit)
    with pytest.raises(LapgenError, match=message) as info:
        cholect50.read_cholect50(root)
    assert "\n" not in info.value.one_line()
    assert str(path) in str(info.value) or "VID08" in str(info.value)


def test_cholect50_layout_errors(tmp_path, synthetic_cholect50):
    with pytest.raises(LapgenError, match="CholecT50 folder not found"):
        cholect50.read_cholect50(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LapgenError, match="no videos/ subfolder"):
        cholect50.read_cholect50(tmp_path / "empty")
    root = copy_tree(synthetic_cholect50, tmp_path / "t50")
    (root / "labels" / "VID06.json").write_text('{"annotations": {"0": [[')
    with pytest.raises(LapgenError, match="invalid JSON at line 1"):
        cholect50.read_cholect50(root)
    root = copy_tree(synthetic_cholect50, tmp_path / "t50b")
    import shutil

    shutil.rmtree(root / "videos" / "VID06")
    with pytest.raises(LapgenError, match="frame folder for VID06.json not found"):
        cholect50.read_cholect50(root)


def test_read_cholec80(synthetic_cholec80):
    files = cholec80.video_files(synthetic_cholec80)
    assert sorted(files) == [1, 3]
    vid = cholec80.read_video_annotations(synthetic_cholec80, 3)
    assert vid.name == "video03" and vid.num_frames == C80_FRAMES and vid.fps == 25
    assert [s.frame for s in vid.samples] == [0, 25, 50, 75, 100]
    assert vid.samples[0].tools == [] and vid.samples[1].tools == ["grasper", "hook"]
    phases = cholec80.read_phase_file(synthetic_cholec80 / "phase_annotations" / "video03-phase.txt")
    assert vid.samples[2].phase_name == phases[50]
    assert vid.samples[0].phase == 0


def test_cholec80_files_tolerate_crlf_and_column_order(tmp_path):
    p = tmp_path / "video09-tool.txt"
    p.write_text("Frame\tHook\tGrasper\tBipolar\tScissors\tClipper\tIrrigator\tSpecimenBag\r\n"
                 "0\t1\t0\t0\t0\t0\t0\t1\r\n25 0 1 0 0 0 0 0\r\n")
    assert cholec80.read_tool_file(p) == {0: ["hook", "specimenbag"], 25: ["grasper"]}
    q = tmp_path / "video09-phase.txt"
    q.write_text("Frame\tPhase\r\n0\tPreparation\r\n1\tCalotTriangleDissection\r\n")
    assert cholec80.read_phase_file(q) == {0: "Preparation", 1: "CalotTriangleDissection"}


@pytest.mark.parametrize("kind, content, message", [
    ("phase", "Frame\tPhase\n0\tPrep\n", "unknown phase 'Prep'"),
    ("phase", "0\tPreparation\n", "header"),
    ("phase", "Frame\tPhase\nx\tPreparation\n", "not an integer"),
    ("tool", "Frame\tGrasper\tHook\n0\t1\t0\n", "lacks column"),
    ("tool", "Frame\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\tSpecimenBag\n0\t1\t0\t0\t0\t0\t0\n",
     "expected 8 columns"),
    ("tool", "Frame\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\tSpecimenBag\n0\t2\t0\t0\t0\t0\t0\t0\n",
     "0 or 1"),
])
def test_cholec80_annotation_errors(tmp_path, synthetic_cholec80, kind, content, message):
    root = copy_tree(synthetic_cholec80, tmp_path / "c80")
    (root / f"{kind}_annotations" / f"video03-{kind}.txt").write_text(content)
    with pytest.raises(LapgenError, match=message):
        cholec80.read_video_annotations(root, 3)


def test_cholec80_length_and_video_errors(tmp_path, synthetic_cholec80):
    root = copy_tree(synthetic_cholec80, tmp_path / "c80")
    tool = root / "tool_annotations" / "video03-tool.txt"
    tool.write_text(tool.read_text() + "125\t1\t0\t0\t0\t0\t0\t0\n")  # past the last frame (109)
    with pytest.raises(LapgenError, match="do not match the video"):
        cholec80.read_video_annotations(root, 3)
    # annotations shorter than the video: the unlabelled tail is a warning, not an error
    short = copy_tree(synthetic_cholec80, tmp_path / "c80s")
    assert cholec80.read_video_annotations(short, 3).warnings == []  # one phase row per frame: silent
    phase = short / "phase_annotations" / "video03-phase.txt"
    phase.write_text("\n".join(phase.read_text().splitlines()[:81]) + "\n")  # frames 0..79 of 110
    (short / "tool_annotations" / "video03-tool.txt").write_text(
        "\n".join((short / "tool_annotations" / "video03-tool.txt").read_text().splitlines()[:4]) + "\n")
    vid = cholec80.read_video_annotations(short, 3)
    assert [s.frame for s in vid.samples] == [0, 25, 50]
    assert len(vid.warnings) == 1 and "ends at frame 79 but the video has 110 frames" in vid.warnings[0]
    root = copy_tree(synthetic_cholec80, tmp_path / "c80b")
    mp4 = root / "videos" / "video03.mp4"
    mp4.write_bytes(mp4.read_bytes()[:3000])
    with pytest.raises(LapgenError, match="corrupt, truncated"):
        cholec80.read_video_annotations(root, 3)
    (root / "phase_annotations" / "video01-phase.txt").unlink()
    with pytest.raises(LapgenError, match="phase annotation file not found"):
        cholec80.read_video_annotations(root, 1)
    with pytest.raises(LapgenError, match="no videos/ subfolder"):
        cholec80.video_files(root / "videos")
