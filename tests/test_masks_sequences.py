"""Mask sequences: reading, trajectories, `lapgen masks animate|from-video|clips|preview`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.errors import LapgenError

runner = CliRunner()


def _tool(tmp_path, name="tool.png", size=(96, 64)):
    m = np.zeros((size[1], size[0]), np.uint8)
    m[20:30, 10:40] = 255  # a 30x10 bar, centroid (24.5, 24.5)
    Image.fromarray(m).save(tmp_path / name)
    return tmp_path / name


# ---- reading -------------------------------------------------------------------------------------


def test_read_sequence_natural_order_threshold_and_resize(tmp_path):
    from lapgen.data.masks import read_mask_sequence

    for i in (10, 2, 1):
        m = np.zeros((20, 30), np.uint8)
        m[:, i] = 200 if i == 2 else 255  # frame 2 is not strictly binary
        Image.fromarray(m).save(tmp_path / f"f{i}.png")
    seq = read_mask_sequence(tmp_path)
    assert seq.files == ["f1.png", "f2.png", "f10.png"]
    assert seq.thresholded == 1 and seq.resized_from is None
    assert [int(np.nonzero(m[0])[0][0]) for m in seq.masks] == [1, 2, 10]
    small = read_mask_sequence(tmp_path, size=(15, 10), frames=2)
    assert small.masks.shape == (2, 10, 15) and small.resized_from == (30, 20)
    assert small.masks.dtype == bool
    with pytest.raises(LapgenError, match="only 3"):
        read_mask_sequence(tmp_path, frames=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LapgenError, match="no images"):
        read_mask_sequence(tmp_path / "empty")


def test_frames_of_different_sizes_are_one_line_naming_the_first_odd_file(tmp_path):
    from lapgen.data.masks import read_mask_sequence

    masks = tmp_path / "masks"
    masks.mkdir()
    for i, (w, h) in enumerate([(128, 128), (128, 128), (96, 64), (64, 96)]):
        Image.fromarray(np.full((h, w), 255, np.uint8)).save(masks / f"{i:06d}.png")
    with pytest.raises(LapgenError) as err:
        read_mask_sequence(masks, size=(128, 128))
    assert err.value.path == masks / "000002.png"
    assert "this one is 96x64, the first (000000.png) is 128x128" in err.value.one_line()
    assert read_mask_sequence(masks, frames=2).resized_from is None  # the first two agree: no resize, no notice
    out = tmp_path / "clip.mp4"
    result = runner.invoke(app, ["video", "--prompt", "grasper retract liver", "--masks", str(masks), "--out",
                                 str(out), "--model", "tiny-sd", "--controlnet", "tiny-controlnet"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "000002.png: mask frames differ in size" in lines[0], result.stderr
    assert not out.exists()


# ---- authoring -----------------------------------------------------------------------------------


def test_trajectory_hits_keyframes_and_is_smooth():
    from lapgen.data.mask_motion import parse_points, smooth_trajectory

    pts = parse_points("10,10; 50,20;90,60")
    path = smooth_trajectory(pts, 21)
    assert path.shape == (21, 2)
    np.testing.assert_allclose(path[0], (10, 10))
    np.testing.assert_allclose(path[10], (50, 20))  # middle key at the middle frame
    np.testing.assert_allclose(path[-1], (90, 60))
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps.max() < 3 * steps.mean()  # no jumps
    with pytest.raises(LapgenError, match="bad trajectory point"):
        parse_points("1,2;3")


def test_animate_cli_endpoints_frames_binary_and_rotation(tmp_path):
    from lapgen.cards import read_card
    from lapgen.data.mask_motion import mask_centroid
    from lapgen.data.masks import read_mask_sequence

    tool = _tool(tmp_path)
    out = tmp_path / "anim"
    res = runner.invoke(
        app,
        [
            "masks",
            "animate",
            "--mask",
            str(tool),
            "--path",
            "20,30;60,40;80,20",
            "--rotate",
            "0:90",
            "--scale",
            "1:1.5",
            "--frames",
            "9",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    files = sorted(out.glob("*.png"))
    assert len(files) == 9 and json.loads(res.stdout)["frames"] == 9
    raw = np.asarray(Image.open(files[0]))
    assert set(np.unique(raw)) <= {0, 255} and raw.shape == (64, 96)
    seq = read_mask_sequence(out)
    np.testing.assert_allclose(mask_centroid(seq.masks[0]), (20, 30), atol=0.6)
    np.testing.assert_allclose(mask_centroid(seq.masks[-1]), (80, 20), atol=1.0)  # nearest-neighbour raster
    ys, xs = np.nonzero(seq.masks[0])
    assert np.ptp(xs) > np.ptp(ys)  # horizontal bar at the start
    ys, xs = np.nonzero(seq.masks[-1])
    assert np.ptp(ys) > np.ptp(xs)  # rotated by 90 degrees at the end
    assert seq.masks[-1].sum() > 1.8 * seq.masks[0].sum()  # scaled 1.5x in both directions
    assert read_card(out)["method"] == "animate"


def test_animate_two_tools_union_and_errors(tmp_path):
    tool = _tool(tmp_path)
    out = tmp_path / "two"
    res = runner.invoke(
        app,
        [
            "masks",
            "animate",
            "--mask",
            str(tool),
            "--path",
            "20,20",
            "--mask",
            str(tool),
            "--path",
            "70,45",
            "--frames",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    m = np.asarray(Image.open(out / "000000.png")) > 127
    assert m[20, 20] and m[45, 70] and m.sum() == 2 * 300
    bad = runner.invoke(
        app,
        [
            "masks",
            "animate",
            "--mask",
            str(tool),
            "--path",
            "1,1",
            "--path",
            "2,2",
            "--frames",
            "2",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and "one --path per --mask" in bad.output
    again = runner.invoke(
        app, ["masks", "animate", "--mask", str(tool), "--path", "1,1", "--frames", "2", "--out", str(out)]
    )
    assert again.exit_code == 2 and "already exists" in again.output


def test_animate_per_keyframe_rotation_and_scale(tmp_path):
    """One --rotate/--scale value per keyframe: each keyframe's frame has exactly that pose, and frames
    between keyframes are linearly interpolated (checked against single-pose placements)."""
    from lapgen.data.mask_motion import animate_mask
    from lapgen.data.masks import read_mask, read_mask_sequence

    tool = _tool(tmp_path)
    out = tmp_path / "per-key"
    argv = ["masks", "animate", "--mask", str(tool), "--path", "20,30;48,32;80,20", "--rotate", "0:90:0",
            "--scale", "1:2:1", "--frames", "9", "--out", str(out)]
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, res.output
    seq = read_mask_sequence(out).masks
    mask = read_mask(tool)

    def placed(xy, angle, factor):
        return animate_mask(mask, [xy], 1, rotate=(angle,), scale=(factor,))[0]

    np.testing.assert_array_equal(seq[0], placed((20, 30), 0, 1))
    np.testing.assert_array_equal(seq[4], placed((48, 32), 90, 2))  # keyframe 1 sits at frame 4 of 9
    np.testing.assert_array_equal(seq[8], placed((80, 20), 0, 1))
    from lapgen.data.mask_motion import smooth_trajectory

    xy = tuple(smooth_trajectory([(20, 30), (48, 32), (80, 20)], 9)[2])
    np.testing.assert_array_equal(seq[2], placed(xy, 45, 1.5))  # halfway between keyframes 0 and 1
    # a start:end pair still ramps over the whole clip, whatever the number of keyframes
    ramp = animate_mask(mask, [(20, 30), (48, 32), (80, 20)], 9, rotate=(0, 80))
    np.testing.assert_array_equal(ramp[2], placed(xy, 20, 1))
    # a count that is neither 1, 2 nor one per keyframe is refused before anything is written
    bad = runner.invoke(app, [*argv[:6], "--rotate", "0:10:20:30", "--frames", "9", "--out",
                              str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "4 rotation values for a path of 3 keyframes" in bad.output
    assert not (tmp_path / "bad").exists()


# ---- extraction ----------------------------------------------------------------------------------


def test_segment_with_reuse_keeps_previous_mask():
    from lapgen.data.mask_clips import segment_with_reuse

    frames = [np.full((4, 4, 3), v, np.uint8) for v in (0, 1, 0, 2)]
    hit = np.eye(4, dtype=bool)

    def segment(batch):  # detects something only in frames whose value is 1
        return [(hit if f[0, 0, 0] == 1 else np.zeros((4, 4), bool), int(f[0, 0, 0] == 1)) for f in batch]

    masks, reused = segment_with_reuse(segment, frames, None)
    assert reused == 3
    assert not masks[0].any()  # nothing before: empty
    assert masks[1] is hit and masks[2] is hit and masks[3] is hit


def test_clip_windows_cut_runs():
    from lapgen.data.mask_clips import clip_windows

    prompts = {s: "a" for s in range(25)} | {25: "b", 26: "b"} | {30 + s: "c" for s in range(10)}
    assert clip_windows(prompts, 10) == [(0, 9, "a"), (10, 19, "a"), (30, 39, "c")]
    gap = {0: "a", 1: "a", 3: "a", 4: "a"}  # a missing second breaks the run
    assert clip_windows(gap, 2) == [(0, 1, "a"), (3, 4, "a")]


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory):
    """CholecT50 VID01 with known prompt runs (8 s) and its Cholec80 video01 (200 frames, 64x48)."""
    from lapgen.data import synthetic

    base = tmp_path_factory.mktemp("clipdata")
    t50 = synthetic.write_cholect50(base / "CholecT50", videos=(1,), num_frames=8)
    labels = json.loads((t50 / "labels" / "VID01.json").read_text())
    vec = lambda t, i, v, tg: [t, i, 1.0, -1, -1, -1, -1, v, tg, 1.0, -1, -1, -1, -1, 2]
    # seconds 0-4: triplet 17 (grasper retract gallbladder); 5-7: triplet 60 (hook dissect gallbladder)
    labels["annotations"] = {str(s): [vec(17, 0, 3, 0)] if s < 5 else [vec(60, 2, 2, 0)] for s in range(8)}
    (t50 / "labels" / "VID01.json").write_text(json.dumps(labels))
    c80 = synthetic.write_cholec80(base / "cholec80", videos=(1,), num_frames=200, size=(64, 48))
    return t50, c80


def test_clips_finds_the_runs_and_writes_clips(tmp_path, clip_data, monkeypatch):
    from lapgen.data.mask_clips import plan_clips
    from lapgen.data.video import read_video
    from lapgen.models import mask_sequences

    t50, c80 = clip_data
    clips, found = plan_clips(t50, c80, seconds=2, n=50, seed=0)
    assert found == 3
    assert [(c.t_start, c.t_end) for c in clips] == [(0, 1), (2, 3), (5, 6)]
    assert clips[0].prompt == "grasper retract gallbladder in clipping-and-cutting"  # phase 2
    assert clips[2].prompt.startswith("hook dissect gallbladder")
    assert list(clips[2].c_range()) == list(range(125, 175))

    def fake_segment_fn(
        segmenter, device="auto", conf=0.25
    ):  # threshold bright pixels: a deterministic "segmenter"
        def segment(frames):
            return [((f.mean(-1) > 200), int((f.mean(-1) > 200).any())) for f in frames]

        return segment, {"name": "threshold"}

    monkeypatch.setattr(mask_sequences, "make_segment_fn", fake_segment_fn)
    out = tmp_path / "clips"
    res = runner.invoke(
        app,
        [
            "masks",
            "clips",
            "--cholec80",
            str(c80),
            "--cholect50",
            str(t50),
            "--out",
            str(out),
            "--seconds",
            "2",
            "--n",
            "2",
            "--seed",
            "3",
            "--size",
            "32",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["clips"] == 2 and result["windows_found"] == 3
    records = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    for rec in records:
        folder = out / rec["clip"]
        assert rec["frames"] == 50 and rec["c_end"] - rec["c_start"] == 49
        assert len(list((folder / "masks").glob("*.png"))) == 50
        frames = sorted((folder / "frames").glob("*.png"))
        assert len(frames) == 50 and Image.open(frames[0]).size == (32, 32)
        assert (folder / "prompt.txt").read_text().strip() == rec["prompt"]
        # the frames are the right Cholec80 frames: compare with a direct decode
        video = read_video(c80 / "videos" / "video01.mp4")
        want = np.asarray(
            Image.fromarray(video[rec["c_start"]]).resize((32, 32), Image.BILINEAR, reducing_gap=None)
        )
        assert np.array_equal(np.asarray(Image.open(frames[0])), want)


def test_from_video_and_preview(tmp_path, monkeypatch):
    from lapgen.data.video import write_mp4
    from lapgen.models import mask_sequences

    frames = np.zeros((6, 32, 32, 3), np.uint8)
    for i in range(6):
        if i != 3:  # frame 3: nothing to find
            frames[i, 8:16, 4 + 3 * i : 12 + 3 * i] = 255
    write_mp4(frames, tmp_path / "clip.mp4", fps=25)

    def fake_segment_fn(segmenter, device="auto", conf=0.25):
        def segment(batch):
            return [((f.mean(-1) > 128), int((f.mean(-1) > 128).any())) for f in batch]

        return segment, {"name": "threshold"}

    monkeypatch.setattr(mask_sequences, "make_segment_fn", fake_segment_fn)
    out = tmp_path / "masks"
    res = runner.invoke(
        app, ["masks", "from-video", str(tmp_path / "clip.mp4"), "--out", str(out), "--size", "0", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["reused_masks"] == 1
    masks = [np.asarray(Image.open(p)) > 127 for p in sorted(out.glob("*.png"))]
    assert len(masks) == 6 and np.array_equal(masks[3], masks[2]) and masks[2].any()
    gif = tmp_path / "p.gif"
    res = runner.invoke(app, ["masks", "preview", str(out), "--out", str(gif)])
    assert res.exit_code == 0, res.output
    img = Image.open(gif)
    total = 0
    for k in range(img.n_frames):  # Pillow merges identical consecutive frames (2 and 3), adding durations
        img.seek(k)
        total += img.info["duration"]
    assert abs(total - 6 * 125) <= 6 * 10  # 6 frames at 8 fps; GIF stores 10 ms units
    missing = runner.invoke(
        app, ["masks", "from-video", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")]
    )
    assert missing.exit_code == 2 and "not found" in missing.output


def test_from_video_with_the_default_segmenter(tmp_path):
    """The real route: the registry's default YOLOv8-seg (random weights offline) on a short clip."""
    from lapgen.data.video import write_mp4

    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    write_mp4(frames, tmp_path / "clip.mp4", fps=25)
    res = runner.invoke(
        app,
        [
            "masks",
            "from-video",
            str(tmp_path / "clip.mp4"),
            "--out",
            str(tmp_path / "m"),
            "--size",
            "64",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    masks = sorted((tmp_path / "m").glob("*.png"))
    assert len(masks) == 3 and Image.open(masks[0]).size == (64, 64)
    assert set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 255}


class _Threshold:
    """A deterministic stand-in segmenter (bright pixels); raises KeyboardInterrupt on call `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.calls, self.frames = stop_at, 0, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.frames += len(batch)
        return [((f.mean(-1) > 128), int((f.mean(-1) > 128).any())) for f in batch]


def test_from_video_resumes_only_with_the_same_settings(tmp_path):
    from lapgen.data.video import write_mp4
    from lapgen.models.mask_sequences import masks_from_video

    frames = np.zeros((6, 32, 32, 3), np.uint8)
    for i in range(6):
        frames[i, 8:16, 2 + 3 * i : 10 + 3 * i] = 255
    write_mp4(frames, tmp_path / "clip.mp4", fps=25)
    out, info = tmp_path / "masks", {"name": "threshold"}
    with pytest.raises(KeyboardInterrupt):
        masks_from_video(tmp_path / "clip.mp4", out, _Threshold(stop_at=2), batch=2, segmenter_info=info)
    assert len(list((tmp_path / "masks.partial").glob("0*.png"))) == 2
    with pytest.raises(LapgenError, match=r"other settings \(size\)"):
        masks_from_video(tmp_path / "clip.mp4", out, _Threshold(), size=16, batch=2, segmenter_info=info)
    with pytest.raises(LapgenError, match=r"other settings \(segmenter\)"):
        masks_from_video(tmp_path / "clip.mp4", out, _Threshold(), batch=2, segmenter_info={"name": "other"})
    again = _Threshold()
    result = masks_from_video(tmp_path / "clip.mp4", out, again, batch=2, segmenter_info=info)
    assert again.frames == 4 and result["frames"] == 6  # only the frames the first run did not finish
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(6)] + ["lapgen.yaml"]
    whole = masks_from_video(
        tmp_path / "clip.mp4", tmp_path / "ref", _Threshold(), batch=2, segmenter_info=info
    )
    assert whole["frames"] == 6
    for i in range(6):
        assert np.array_equal(
            np.asarray(Image.open(out / f"{i:06d}.png")),
            np.asarray(Image.open(tmp_path / "ref" / f"{i:06d}.png")),
        )


def test_clips_resume_only_with_the_same_plan(tmp_path, clip_data):
    from lapgen.models.mask_sequences import extract_clips

    t50, c80 = clip_data
    out, info = tmp_path / "clips", {"name": "threshold"}
    kw = {"seconds": 2, "n": 3, "size": 16, "segmenter_info": info}
    with pytest.raises(KeyboardInterrupt):  # the first clip (50 frames = 4 segment calls) finishes
        extract_clips(c80, t50, out, _Threshold(stop_at=5), seed=0, **kw)
    assert len(list((tmp_path / "clips.partial").glob("clip_*/clip.json"))) == 1
    with pytest.raises(LapgenError, match=r"other settings \(seed\)"):
        extract_clips(c80, t50, out, _Threshold(), seed=1, **kw)
    again = _Threshold()
    result = extract_clips(c80, t50, out, again, seed=0, **kw)
    assert result["clips"] == 3 and again.frames == 2 * 50
    assert not (out / "run.json").exists()


def test_from_video_and_clips_bad_options_are_one_line_errors(tmp_path, clip_data):
    from lapgen.data.video import write_mp4

    write_mp4(np.zeros((2, 16, 16, 3), np.uint8), tmp_path / "clip.mp4", fps=25)
    t50, c80 = clip_data
    clips = ["masks", "clips", "--cholec80", str(c80), "--cholect50", str(t50), "--seconds", "2"]
    cases = [
        (["masks", "from-video", str(tmp_path / "clip.mp4"), "--conf", "3"], "--conf must be in [0, 1]"),
        (["masks", "from-video", str(tmp_path / "clip.mp4"), "--size", "-5"], "--size must be a positive"),
        ([*clips, "--size", "-3"], "--size must be a positive"),
        ([*clips, "--conf", "-0.5"], "--conf must be in [0, 1]"),
    ]
    for k, (args, needle) in enumerate(cases):
        res = runner.invoke(app, [*args, "--out", str(tmp_path / f"o{k}")])
        assert res.exit_code == 2, res.output
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_preview_of_a_clip_folder_puts_frames_beside_masks(tmp_path):
    """`masks preview CLIP` on a `masks clips` folder: each GIF frame is real frame | mask."""
    clip = tmp_path / "clip_000"
    (clip / "masks").mkdir(parents=True)
    (clip / "frames").mkdir()
    for i in range(3):
        mask = np.zeros((24, 32), np.uint8)
        mask[4:12, 2 + 8 * i : 10 + 8 * i] = 255
        Image.fromarray(mask).save(clip / "masks" / f"{i:06d}.png")
        Image.fromarray(np.full((24, 32, 3), 40 + 80 * i, np.uint8)).save(clip / "frames" / f"{i:06d}.png")
    res = runner.invoke(app, ["masks", "preview", str(clip), "--out", str(tmp_path / "p.gif")])
    assert res.exit_code == 0, res.output
    gif = Image.open(tmp_path / "p.gif")
    assert gif.size == (64, 24) and gif.n_frames == 3
    for i in range(3):
        gif.seek(i)
        tile = np.asarray(gif.convert("L")).astype(int)
        assert np.abs(tile[:, :32] - (40 + 80 * i)).max() <= 2  # the real frame on the left
        want = np.asarray(Image.open(clip / "masks" / f"{i:06d}.png")) > 127
        assert np.array_equal(tile[:, 32:] > 127, want)  # its mask on the right


def test_animate_warns_when_the_path_leaves_the_canvas(tmp_path):
    from lapgen.cards import read_card

    tool = _tool(tmp_path)  # 96x64 canvas, a 30x10 bar
    out = tmp_path / "off"
    argv = ["masks", "animate", "--mask", str(tool), "--path", "20,30;300,30", "--frames", "5"]
    res = runner.invoke(app, [*argv, "--out", str(out)])
    assert res.exit_code == 0, res.output
    empty = [not (np.asarray(Image.open(p)) > 127).any() for p in sorted(out.glob("*.png"))]
    assert empty[0] is False and sum(empty) >= 2  # x = 20, 90, 160, 230, 300: the last three are off
    assert f"{sum(empty)} of 5 frames have no tool pixel" in res.stderr and "96x64" in res.stderr
    assert read_card(out)["empty_frames"] == sum(empty)
    inside = runner.invoke(app, [*argv[:5], "20,30;70,30", "--frames", "5", "--out", str(tmp_path / "in")])
    assert inside.exit_code == 0 and "no tool pixel" not in inside.stderr


def test_animate_canvas_size_must_be_positive(tmp_path):
    tool = _tool(tmp_path)
    for size in ("0x5", "-4x5"):
        argv = ["masks", "animate", "--mask", str(tool), "--path", "1,2", "--frames", "2", "--size", size]
        res = runner.invoke(app, [*argv, "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and f"--size {size} is not a canvas" in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()
