"""The studio's method choice: AnimateDiff with a registered motion adapter, through the Studio object (the
shown commands reproduce the video) and in a real headless browser (Debian's chromium via playwright)."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.errors import LapgenError

pytest.importorskip("gradio", reason='the studio extra is not installed (pip install -e ".[studio]")')


@pytest.fixture
def motion_studio(tmp_path, monkeypatch, tiny_adapter_dir):
    """A Studio over tiny-sd, tiny-controlnet and the tiny adapter registered as `tiny-motion` (own registry)."""
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    from lapgen.registry import add_entry
    from lapgen.studio.generation import Studio, StudioConfig

    assert add_entry("tiny-motion", str(tiny_adapter_dir)).kind == "motion-adapter"  # kind read from config.json
    return Studio(StudioConfig(runs=tmp_path / "runs", model="tiny-sd", controlnet="tiny-controlnet",
                               motion_adapter="tiny-motion", device="cpu"))


def _request(**overrides):
    from lapgen.studio.generation import GenerationRequest

    fields = dict(prompt="grasper retract liver in preparation", model="tiny-sd", controlnet="tiny-controlnet",
                  frames=4, fps=8, steps=2, seed=3, method="animatediff", motion_adapter="tiny-motion")
    fields.update(overrides)
    return GenerationRequest(**fields)


def _tracks():
    from lapgen.studio import authoring
    from lapgen.studio.silhouettes import tool_silhouette

    tracks = authoring.add_track([], "grasper", tool_silhouette("grasper", 128), 128)
    tracks = authoring.add_keyframe(tracks, 40, 40)
    return authoring.add_keyframe(tracks, 80, 90, 30, 1.2)


def test_animatediff_from_the_studio_and_its_commands(motion_studio, tmp_path):
    from lapgen.cards import read_card
    from lapgen.data.video import probe, read_video

    result = motion_studio.generate(_request(), tracks=_tracks())
    assert probe(result.video).frames == 4
    card = read_card(result.video)
    assert card["result"]["method"] == "animatediff" and card["models"]["motion_adapter"] == "tiny-motion"
    animate, video = (shlex.split(c) for c in result.commands)
    assert video[video.index("--method") + 1] == "animatediff" and "--long" not in video
    assert video[video.index("--motion-adapter") + 1] == "tiny-motion"
    out_masks, out_video = tmp_path / "cli-masks", tmp_path / "cli.mp4"
    animate[animate.index("--out") + 1] = str(out_masks)
    video[video.index("--out") + 1] = str(out_video)
    video[video.index("--masks") + 1] = str(out_masks)
    for args in (animate, video):
        res = CliRunner().invoke(app, ["--quiet", *args[1:]])
        assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_video(out_video), read_video(result.video))

    with pytest.raises(LapgenError, match="unknown motion-adapter 'nope'"):
        motion_studio.generate(_request(motion_adapter="nope"), tracks=_tracks())
    with pytest.raises(LapgenError, match="unknown method 'sora'"):
        motion_studio.generate(_request(method="sora"), tracks=_tracks())
    assert motion_studio.generate(_request(method="controlvideo"), tracks=_tracks()).video.is_file()  # switches


def test_the_page_offers_the_method(motion_studio, browser_page):
    from lapgen.studio.app import launch
    from tests.fixtures.studio import free_port

    demo, url = launch(motion_studio, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    page = browser_page
    try:
        page.goto(url)
        page.wait_for_selector("#generate")
        assert page.locator("#motion-adapter input").input_value() == "tiny-motion"  # preselected
        page.click("#add-silhouette")
        page.wait_for_function("(document.querySelector('#tools-summary')?.innerText || '').includes('tool 1')")
        canvas = page.locator("#canvas img")
        box = canvas.bounding_box()
        canvas.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.3})
        page.locator("#frames input[type=number]").fill("3")
        page.locator("#frames input[type=number]").press("Enter")
        page.locator("#steps input[type=number]").fill("1")
        page.locator("#steps input[type=number]").press("Enter")
        page.locator("#method label", has_text="AnimateDiff").click()
        page.click("#generate")
        page.wait_for_function("(document.querySelector('#status')?.innerText || '').includes('Done')")
        commands = page.locator("#commands").inner_text()
        assert "--method animatediff" in commands and "--motion-adapter tiny-motion" in commands
        from lapgen.cards import read_card

        runs = sorted(motion_studio.config.runs.glob("run-*"))
        assert len(runs) == 1 and read_card(runs[0] / "video.mp4")["result"]["method"] == "animatediff"
    finally:
        demo.close()
