"""Studio generation with the built-in tiny models (CPU, 2 steps): outputs, CLI equivalence, failures,
one generation at a time; the page's wiring; the `lapgen studio` command's checks."""

from __future__ import annotations

import shlex
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.errors import LapgenError
from lapgen.studio import authoring
from lapgen.studio.silhouettes import tool_silhouette

pytest.importorskip("gradio", reason='the studio extra is not installed (pip install -e ".[studio]")')


def _tracks():
    tracks = authoring.add_track([], "grasper", tool_silhouette("grasper", 128), 128)
    tracks = authoring.add_keyframe(tracks, 40, 40)
    return authoring.add_keyframe(tracks, 80, 90, 30, 1.2)


def _request(**overrides):
    from lapgen.studio.generation import GenerationRequest

    fields = {
        "prompt": "grasper retract liver in preparation",
        "model": "tiny-sd",
        "controlnet": "tiny-controlnet",
        "frames": 4,
        "fps": 8,
        "steps": 2,
        "guidance": 3.0,
        "seed": 3,
    }
    fields.update(overrides)
    return GenerationRequest(**fields)


def test_generate_writes_video_downloads_card_and_commands(studio, tmp_path):
    from lapgen.cards import read_card
    from lapgen.data.video import probe, read_video

    steps = []
    result = studio.generate(_request(), tracks=_tracks(), on_step=lambda i, n: steps.append((i, n)))
    assert steps[-2:] == [(1, 2), (2, 2)]  # denoising progress for the page's bar
    info = probe(result.video)
    assert info.frames == 4 and info.fps == 8 and (info.width, info.height) == (128, 128)
    assert probe(result.side_by_side).width == 256
    for path in result.downloads():
        assert path.is_file() and path.stat().st_size > 0
    card = read_card(result.video)
    assert card["kind"] == "video" and card["models"]["model"] == "tiny-sd"
    assert card["studio"]["commands"] == result.commands
    assert "tiny-controlnet" in result.card_text()

    # The shown commands, run as written (outputs moved aside), make the same masks and the same video.
    animate, video = (shlex.split(c) for c in result.commands)
    assert animate[:3] == ["lapgen", "masks", "animate"] and video[:2] == ["lapgen", "video"]
    out_masks, out_video = tmp_path / "cli-masks", tmp_path / "cli.mp4"
    animate[animate.index("--out") + 1] = str(out_masks)
    video[video.index("--out") + 1] = str(out_video)
    video[video.index("--masks") + 1] = str(out_masks)
    runner = CliRunner()
    for args in (animate, video):
        res = runner.invoke(app, ["--quiet", *args[1:]])
        assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_video(out_video), read_video(result.video))


def test_failure_is_clear_and_the_studio_stays_usable(studio):
    runs = studio.config.runs
    with pytest.raises(LapgenError, match="unknown pipeline 'nope'"):
        studio.generate(_request(model="nope"), tracks=_tracks())
    with pytest.raises(LapgenError, match="no tool yet"):
        studio.generate(_request(), tracks=[])
    with pytest.raises(LapgenError, match="steps must be"):
        studio.generate(_request(steps=0), tracks=_tracks())
    not_video = runs.parent / "nothing.txt"
    not_video.write_text("x")
    with pytest.raises(LapgenError, match="not a video"):  # fails inside the run: its folder is removed
        studio.generate(_request(source="video"), mask_video=str(not_video))
    assert not runs.exists() or not any(p.name.startswith("run-") for p in runs.iterdir())
    assert studio.generate(_request(steps=1), tracks=_tracks()).video.is_file()


def test_one_generation_at_a_time(studio):
    events, errors = [], []

    def work(tag):
        try:
            studio.generate(
                _request(steps=2, frames=2), tracks=_tracks(), on_step=lambda i, n: events.append((tag, i))
            )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    tags = [tag for tag, _ in events]
    assert set(tags) == {"a", "b"} and tags in (sorted(tags), sorted(tags, reverse=True))  # never interleaved


def test_preview_and_clips(studio, tmp_path):
    from lapgen.data.masks import write_mask_sequence

    gif = studio.preview("authored", _tracks(), None, None, 5, 8)
    assert gif.suffix == ".gif" and gif.is_file()
    with pytest.raises(LapgenError, match="no real clips"):
        studio.preview("clip", None, None, "clip_000", 5, 8)
    clips = tmp_path / "clips"
    write_mask_sequence(clips / "clip_000" / "masks", authoring.animate_tracks(_tracks(), 6, 128))
    (clips / "clip_000" / "clip.json").write_text("{}")
    studio.config.clips = clips
    from lapgen.studio.generation import clip_choices

    assert clip_choices(clips) == ["clip_000"]
    assert studio.preview("clip", None, None, "clip_000", 3, 8).is_file()
    with pytest.raises(LapgenError, match="unknown clip"):
        studio.clip_masks("../clip_000")  # names only, never paths


def test_page_queues_generation_one_at_a_time(studio):
    from lapgen.studio.app import build_app

    demo = build_app(studio)
    generate = [f for f in demo.fns.values() if f.name == "on_generate"]
    assert len(generate) == 1 and generate[0].concurrency_limit == 1 and generate[0].concurrency_id == "gpu"


def test_studio_command_checks_before_serving(monkeypatch):
    runner = CliRunner()
    res = runner.invoke(app, ["studio", "--model", "no-such-model"])
    assert res.exit_code == 2 and "unknown diffusion pipeline model 'no-such-model'" in res.output
    res = runner.invoke(app, ["studio", "--clips", "/no/such/folder"])
    assert res.exit_code == 2 and "--clips folder does not exist" in res.output
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a)
    )
    res = runner.invoke(app, ["studio"])
    assert res.exit_code == 2 and 'pip install -e ".[studio]"' in res.output


def test_launch_binds_localhost_without_share_link(studio, monkeypatch):
    import gradio as gr

    from lapgen.studio.app import launch

    seen = {}

    def fake_launch(self, **kwargs):
        seen.update(kwargs)
        return None, "http://127.0.0.1:1/", None

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    launch(studio, block=False, quiet=True)
    assert seen["server_name"] == "127.0.0.1" and seen["share"] is False
    assert seen["max_file_size"] == "20mb" and str(studio.config.runs.resolve()) in seen["allowed_paths"]


def test_mask_from_a_real_frame(studio, monkeypatch):
    """The registry segmenter runs on the uploaded frame; finding nothing is a clear message, a found mask
    becomes a tool at the canvas size."""
    from lapgen.models import segmentation

    rgb = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    with pytest.raises(LapgenError, match="found no tool in this frame"):  # yolov8n-seg, random weights
        studio.mask_from_frame(rgb, "yolov8n-seg")
    with pytest.raises(LapgenError, match="unknown segmenter"):
        studio.mask_from_frame(rgb, "../weights.pt")

    found = np.zeros((96, 160), bool)
    found[40:60, 50:140] = True
    seen = {}

    def fake_predict(model, images, **kwargs):
        seen["shape"] = images[0].shape
        return [(found, 1)]

    monkeypatch.setattr(segmentation, "predict_union_masks", fake_predict)
    mask = studio.mask_from_frame(rgb, "yolov8n-seg")
    assert seen["shape"] == (96, 160, 3) and mask is found
    tracks = authoring.add_track([], "mask from frame", mask, 128)
    assert tracks[0].mask.shape == (128, 128) and tracks[0].mask.any()


def test_authored_masks_use_the_masks_animate_function(studio, tmp_path):
    from lapgen.cards import read_card
    from lapgen.data.masks import read_mask_sequence

    linear = _tracks()
    run = tmp_path / "linear"
    folder, shown = studio.write_authored_masks(linear, 5, run)
    assert len(shown) == 1 and shown[0].startswith("lapgen masks animate")
    assert read_card(folder)["kind"]  # written by lapgen.models.mask_sequences.animate_masks, with its card
    np.testing.assert_array_equal(read_mask_sequence(folder).masks, authoring.animate_tracks(linear, 5, 128))

    per_key = authoring.add_keyframe(linear, 100, 40, 0, 1.0)  # rotation 0 -> 30 -> 0: not one ramp
    folder, shown = studio.write_authored_masks(per_key, 5, tmp_path / "per-key")
    assert len(shown) == 1 and "--rotate 0:30:0" in shown[0]
    np.testing.assert_array_equal(read_mask_sequence(folder).masks, authoring.animate_tracks(per_key, 5, 128))
    # the shown command, run as the user would, writes the same sequence
    import shlex

    from typer.testing import CliRunner

    from lapgen.cli.main import app

    argv = shlex.split(shown[0].replace(str(folder), str(tmp_path / "cli-masks")))[1:]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_mask_sequence(tmp_path / "cli-masks").masks, read_mask_sequence(folder).masks)


def test_uploaded_mask_video_previews_and_generates(studio, tmp_path):
    from lapgen.data.video import probe, write_mp4

    masks = authoring.animate_tracks(_tracks(), 5, 128)
    upload = write_mp4(np.repeat((masks[..., None] * 255).astype(np.uint8), 3, -1), tmp_path / "up.bin", fps=8)
    gif = studio.preview("video", None, str(upload), None, 3, 8)
    assert gif.is_file()
    result = studio.generate(_request(source="video", frames=3, steps=1), mask_video=str(upload))
    assert probe(result.video).frames == 3
    assert (result.run_dir / "uploaded_masks.mp4").is_file()
    assert "--masks " + str(result.run_dir / "uploaded_masks.mp4") in result.commands[0]


def test_registry_defaults_are_preselected_and_generate_offline(tiny_sd_dir, tiny_controlnet_dir, tmp_path,
                                                                 monkeypatch):
    """What `lapgen demo && lapgen studio` relies on: models registered as the defaults of their kinds (as
    the demo and every training run register theirs) are preselected on the page without --model /
    --controlnet, and generate with the hub offline."""
    from lapgen import registry
    from lapgen.studio.app import build_app
    from lapgen.studio.generation import Studio, StudioConfig

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry.register_artifact("my-stage1", "pipeline", tiny_sd_dir, make_default=True)
    registry.register_artifact("my-stage2", "controlnet", tiny_controlnet_dir, make_default=True)
    studio = Studio(StudioConfig(runs=tmp_path / "runs", device="cpu"))  # no model named
    page = build_app(studio)
    chosen = {b.elem_id: b.value for b in page.blocks.values() if b.elem_id in ("model", "controlnet")}
    assert chosen == {"model": "my-stage1", "controlnet": "my-stage2"}
    result = studio.generate(_request(model=chosen["model"], controlnet=chosen["controlnet"], frames=2, steps=1),
                             tracks=_tracks())
    assert result.video.is_file() and "--model my-stage1 --controlnet my-stage2" in result.commands[-1]
