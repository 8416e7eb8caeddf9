"""The same seed gives byte-identical outputs on CPU: `lapgen prepare`, `lapgen sample` and `lapgen video`,
each run twice into two folders and compared file by file.

Every file must be byte-identical except the provenance cards (`lapgen.yaml`, `<video>.lapgen.yaml`), which
are compared without `created` (a timestamp) and `command` (the command line), and with the output folder's
own path written as `<out>` (the runs write to different folders by construction). One run of each pair is a
`python -m lapgen` subprocess or an in-process CLI run, so the bytes do not depend on the process either;
all runs use the same number of torch threads (float results depend on it).
"""

from __future__ import annotations

from tests.reliability.harness import (
    assert_ok,
    compare_trees,
    in_process_one_thread,
    prepare_args,
    run_subprocess,
    sample_args,
    video_args,
)


def test_prepare_is_deterministic(big_cholect50, prepare_reference, tmp_path):
    out = tmp_path / "frames"
    assert_ok(run_subprocess(prepare_args(big_cholect50, out), cwd=tmp_path))
    compare_trees(out, prepare_reference)


def test_sample_is_deterministic(world, sample_reference, tmp_path):
    out = tmp_path / "gen"
    assert_ok(in_process_one_thread(sample_args(world, out)))
    compare_trees(out, sample_reference)
    images = sorted((out / "images").glob("*.png"))
    assert len({p.read_bytes() for p in images}) == len(images) == 10, "images should differ (seed + index)"


def test_video_is_deterministic(world, tmp_path):
    from lapgen.data.video import read_video

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        assert_ok(in_process_one_thread(video_args(world, tmp_path / name / "clip.mp4")))
    produced = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert produced == [
        "clip.gif",
        "clip.mp4",
        "clip.mp4.lapgen.yaml",
        "clip_frames",
        "clip_side_by_side.mp4",
    ]
    compare_trees(tmp_path / "a", tmp_path / "b", cards=("clip.mp4.lapgen.yaml",))
    frames = read_video(tmp_path / "a" / "clip.mp4")
    assert frames.shape[0] == 6 and frames.std() > 1, "the compared video is empty or flat"
