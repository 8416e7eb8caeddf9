"""`lapgen sample-video`: one video per real clip (prompt, masks, length, fps, seed + index), the same frames as
`generate_video` itself, metadata tying videos to clips, resume, refused mixed settings, and `eval video` on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from tests.fixtures.video import make_moving_masks

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("video_one_thread")
FAST = ["--steps", "2", "--interpolator", "linear", "--smoother-steps", "none", "--device", "cpu"]


def _clips(root, n=3, frames=5, fps=(25, 12, 25)):
    """A `lapgen masks clips`-style folder: clip_NNN/{masks/, frames/, prompt.txt, clip.json}."""
    prompts = ["grasper retract gallbladder", "hook dissect cystic-duct", "clipper clip cystic-artery"]
    for k in range(n):
        folder = root / f"clip_{k:03d}"
        (folder / "masks").mkdir(parents=True)
        (folder / "frames").mkdir()
        for i, m in enumerate(make_moving_masks(frames, step=3 + k)):
            m.save(folder / "masks" / f"{i:06d}.png")
            Image.fromarray(np.full((128, 128, 3), 90 + 20 * k, np.uint8)).save(folder / "frames" / f"{i:06d}.png")
        (folder / "prompt.txt").write_text(prompts[k] + "\n")
        (folder / "clip.json").write_text(json.dumps({"clip": folder.name, "video": 1, "frames": frames,
                                                      "fps": fps[k], "prompt": prompts[k]}))
    return root


def _models(tiny_sd_dir, tiny_controlnet_dir):
    return ["--model", str(tiny_sd_dir), "--controlnet", str(tiny_controlnet_dir)]


def _frames(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_one_video_per_clip_equal_to_generate_video(tmp_path, tiny_sd_dir, tiny_controlnet_dir):
    from lapgen.cards import read_card
    from lapgen.data.video import probe
    from lapgen.models.video_generation import VideoConfig, generate_video

    clips = _clips(tmp_path / "clips")
    out = tmp_path / "set"
    res = runner.invoke(app, ["sample-video", "--clips", str(clips), "--out", str(out), "--seed", "7", "--json",
                              *FAST, *_models(tiny_sd_dir, tiny_controlnet_dir)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"out": str(out), "videos": 3, "generated": 3}
    rows = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert [(r["clip"], r["seed"], r["frames"], r["fps"]) for r in rows] == [
        ("clip_000", 7, 5, 25.0), ("clip_001", 8, 5, 12.0), ("clip_002", 9, 5, 25.0)]
    assert rows[1]["prompt"] == "hook dissect cystic-duct" and rows[1]["source"] == str((clips / "clip_001").resolve())
    for r in rows:
        info = probe(out / r["video"], count=True)
        assert (info.frames, info.fps, info.size) == (5, r["fps"], (128, 128))
        masks = _frames(out / r["masks"]) > 127
        clip_masks = _frames(clips / r["clip"] / "masks") > 127
        assert (masks == clip_masks).all()  # the clip's own masks, in order
    card = read_card(out)
    assert card["kind"] == "generated-video-set" and card["videos"] == 3 and card["method"] == "controlvideo"
    assert card["controlnet"] == str(tiny_controlnet_dir.resolve())
    # clip 1 is exactly what the Stage-3 library function makes from the clip's prompt, masks, fps and seed 7 + 1
    alone = tmp_path / "alone.mp4"
    generate_video(VideoConfig(prompt="hook dissect cystic-duct", masks=str(clips / "clip_001" / "masks"),
                               out=str(alone), model=str(tiny_sd_dir), controlnet=str(tiny_controlnet_dir), fps=12,
                               steps=2, seed=8, interpolator="linear", smoother_steps="none", device="cpu",
                               save_frames=True))
    assert np.array_equal(_frames(out / rows[1]["frames_dir"]), _frames(tmp_path / "alone_frames"))


def test_resume_skips_finished_clips_and_refuses_other_settings(tmp_path, tiny_sd_dir, tiny_controlnet_dir,
                                                                 monkeypatch):
    import lapgen.models.video_generation as vg

    clips = _clips(tmp_path / "clips")
    out = tmp_path / "set"
    argv = ["sample-video", "--clips", str(clips), "--out", str(out), *FAST, *_models(tiny_sd_dir, tiny_controlnet_dir)]
    real, made = vg.generate_video, []

    def flaky(config, **kw):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(config.seed)
        return real(config, **kw)

    monkeypatch.setattr(vg, "generate_video", flaky)
    assert runner.invoke(app, argv).exit_code == 130
    assert not out.exists() and (tmp_path / "set.partial").is_dir()
    # another seed would mix two sets in one folder: refused in one line
    res = runner.invoke(app, [*argv, "--seed", "3"])
    assert res.exit_code == 2 and "seed" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    monkeypatch.setattr(vg, "generate_video", lambda config, **kw: made.append(config.seed) or real(config, **kw))
    res = runner.invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert made == [0, 1, 2]  # clips 0 and 1 were finished before the interruption
    assert len((out / "metadata.jsonl").read_text().splitlines()) == 3 and not (tmp_path / "set.partial").exists()


def test_bad_clips_fail_in_one_line(tmp_path, tiny_sd_dir, tiny_controlnet_dir):
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["sample-video", "--clips", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *FAST])
    assert res.exit_code == 2 and "no clips" in res.stderr
    clips = _clips(tmp_path / "clips", n=1)
    res = runner.invoke(app, ["sample-video", "--clips", str(clips), "--out", str(tmp_path / "o"), "--frames", "9",
                              *FAST, *_models(tiny_sd_dir, tiny_controlnet_dir)])
    assert res.exit_code == 2 and "has 5 masks" in res.stderr and not (tmp_path / "o.partial").exists()


def test_eval_video_reads_a_sample_video_set(tmp_path, tiny_sd_dir, tiny_controlnet_dir):
    from lapgen.metrics.video import MaskPredictor, VideoEvalConfig, evaluate_videos
    from lapgen.metrics.video_sets import open_video_set

    clips = _clips(tmp_path / "clips", n=2)
    out = tmp_path / "set"
    assert runner.invoke(app, ["sample-video", "--clips", str(clips), "--out", str(out), *FAST,
                               *_models(tiny_sd_dir, tiny_controlnet_dir)]).exit_code == 0
    vs = open_video_set(out)
    assert vs.kind == "video-set" and [i.name for i in vs.items] == ["videos/clip_000_frames", "videos/clip_001_frames"]
    assert vs.has_masks and vs.items[0].prompt == "grasper retract gallbladder"
    seen = []

    def predict(frames):  # records what it is shown: the generated frames, one decode each
        seen.append(frames.shape)
        return np.zeros(frames.shape[:3], bool)

    r = evaluate_videos(VideoEvalConfig(gen=out, real=clips, metrics=("mask_f1", "warp_error"), device="cpu",
                                        use_cache=False, n_boot=0),
                        predictor=MaskPredictor(predict, {"name": "empty"}))
    assert r["gen_kind"] == "video-set" and r["real_kind"] == "clips" and r["n_gen"] == 2
    assert r["metrics"]["mask_f1"] == 0.0 and seen[:2] == [(5, 128, 128, 3)] * 2


@pytest.mark.slow
def test_two_processes_give_the_one_process_set(tmp_path, tiny_sd_dir, tiny_controlnet_dir):
    """torchrun, 2 CPU processes (gloo): each its share of the clips, the same frames as one process."""
    clips = _clips(tmp_path / "clips")
    args = ["sample-video", "--clips", str(clips), *FAST, *_models(tiny_sd_dir, tiny_controlnet_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAPGEN_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "lapgen", "--quiet", *args, "--out", str(tmp_path / "two")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "one")]).exit_code == 0
    from lapgen.cards import read_card

    assert read_card(tmp_path / "two")["processes"] == 2
    for k in range(3):
        a = _frames(tmp_path / "two" / "videos" / f"clip_{k:03d}_frames").astype(int)
        b = _frames(tmp_path / "one" / "videos" / f"clip_{k:03d}_frames").astype(int)
        assert np.abs(a - b).max() <= 2


def test_animatediff_set_equals_generate_video_and_records_its_adapter(tmp_path, tiny_sd_dir, tiny_controlnet_dir,
                                                                       tiny_adapter_dir):
    """--method animatediff makes the same frames as `lapgen video --method animatediff` for that clip, and the
    set's card names the method and adapter; ControlVideo-only options stay errors."""
    from lapgen.cards import read_card
    from lapgen.models.video_generation import VideoConfig, generate_video

    clips = _clips(tmp_path / "clips", n=2)
    out = tmp_path / "set"
    ad = ["--method", "animatediff", "--motion-adapter", str(tiny_adapter_dir), "--steps", "2", "--device", "cpu"]
    res = runner.invoke(app, ["sample-video", "--clips", str(clips), "--out", str(out), "--seed", "3", *ad,
                              *_models(tiny_sd_dir, tiny_controlnet_dir)])
    assert res.exit_code == 0, res.output
    card = read_card(out)
    assert card["method"] == "animatediff" and card["motion_adapter"] == str(tiny_adapter_dir)
    rows = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    assert read_card(out / rows[1]["video"])["result"]["method"] == "animatediff"
    alone = tmp_path / "alone.mp4"
    generate_video(VideoConfig(prompt="hook dissect cystic-duct", masks=str(clips / "clip_001" / "masks"),
                               out=str(alone), model=str(tiny_sd_dir), controlnet=str(tiny_controlnet_dir), fps=12,
                               steps=2, seed=4, device="cpu", save_frames=True, method="animatediff",
                               motion_adapter=str(tiny_adapter_dir)))
    assert np.array_equal(_frames(out / rows[1]["frames_dir"]), _frames(tmp_path / "alone_frames"))
    bad = runner.invoke(app, ["sample-video", "--clips", str(clips), "--out", str(tmp_path / "bad"), *ad,
                              "--interpolator", "linear", *_models(tiny_sd_dir, tiny_controlnet_dir)])
    assert bad.exit_code == 2 and "--interpolator applies to --method controlvideo only" in bad.output
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
