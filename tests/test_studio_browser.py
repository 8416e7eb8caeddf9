"""End to end in a real headless browser (Debian's chromium via playwright): the studio page served on a free
127.0.0.1 port with the tiny models; compose a prompt, add a tool, place two keyframes, generate a short
video in 2 steps, and check the video element, the downloads and the CLI commands appear.

LAPGEN_STUDIO_SCREENSHOT=docs/images/studio.png saves the page with its result (tiny-model output)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("gradio", reason='the studio extra is not installed (pip install -e ".[studio]")')


def _wait_text(page, selector: str, needle: str) -> None:
    page.wait_for_function(
        "([sel, needle]) => (document.querySelector(sel)?.innerText || '').includes(needle)",
        arg=[selector, needle],
    )


def _set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_compose_place_generate_download(studio_server, browser_page):
    url, studio = studio_server
    page = browser_page
    page.goto(url)
    page.wait_for_selector("#generate")

    # Action: irrigator -> aspirate -> fluid, plus grasper retract liver, in cleaning-and-coagulation.
    _choose(page, "instrument", "irrigator")
    _choose(page, "verb", "aspirate")
    _choose(page, "target", "fluid")
    page.wait_for_function(  # the triplet the dropdowns show is in the prompt before "Add triplet"
        "(want) => document.querySelector('#prompt-preview textarea').value === want",
        arg="irrigator aspirate fluid in carlot-triangle-dissection",
    )
    page.click("#add-triplet")
    _choose(page, "instrument", "grasper")
    _choose(page, "verb", "retract")
    _choose(page, "target", "liver")
    page.click("#add-triplet")
    _choose(page, "phase", "Cleaning and coagulation (prompt: cleaning-and-coagulation)")
    expected = "grasper retract liver and irrigator aspirate fluid in cleaning-and-coagulation"
    page.wait_for_function(
        "(want) => document.querySelector('#prompt-preview textarea').value === want", arg=expected
    )

    # Tools: a grasper silhouette, two keyframes clicked on the canvas.
    page.click("#add-silhouette")
    _wait_text(page, "#tools-summary", "tool 1")
    canvas = page.locator("#canvas img")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.3})
    _wait_text(page, "#tools-summary", "×1)")
    canvas.click(position={"x": box["width"] * 0.7, "y": box["height"] * 0.65})
    page.wait_for_function("document.querySelector('#tools-summary').innerText.split('°').length === 3")

    # Short video, few steps; the mask preview first.
    _set_number(page, "frames", 4)
    _set_number(page, "steps", 2)
    page.click("#preview-masks")
    page.wait_for_selector("#mask-preview img")
    page.click("#generate")
    _wait_text(page, "#status", "Done")

    video = page.locator("#result-video video")
    video.wait_for()
    assert video.get_attribute("src")
    downloads = page.locator("#downloads a[download]")
    names = [
        downloads.nth(i).get_attribute("download") or downloads.nth(i).inner_text()
        for i in range(downloads.count())
    ]
    assert any(n.endswith(".mp4") for n in names) and any(n.endswith(".gif") for n in names)
    assert any(n.endswith(".zip") for n in names)
    with page.expect_download() as dl:
        downloads.first.click()
    assert dl.value.suggested_filename.endswith(".mp4")
    commands = page.locator("#commands").inner_text()
    assert "lapgen masks animate" in commands and "lapgen video" in commands
    assert "tiny-controlnet" in page.locator("#card").inner_text()
    # The session gallery shows a still thumbnail (mask | middle frame) that the browser really decoded.
    thumb = page.locator("#gallery img").first
    thumb.wait_for()
    page.wait_for_function("document.querySelector('#gallery img')?.complete && "
                           "document.querySelector('#gallery img').naturalWidth > 0")
    lit = page.evaluate(
        """() => { const img = document.querySelector('#gallery img');
                   const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
                   const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                   const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
                   for (let i = 0; i < d.length; i += 4) { if (d[i] + d[i + 1] + d[i + 2] > 60) n++; }
                   return n; }"""
    )
    assert lit > 0  # not a blank image

    # The result on disk is what the page announced, with the composed prompt.
    runs = sorted(studio.config.runs.glob("run-*"))
    assert len(runs) == 1 and (runs[0] / "video.mp4").is_file()
    assert expected in (runs[0] / "video.mp4.lapgen.yaml").read_text()
    if os.environ.get("LAPGEN_STUDIO_SCREENSHOT"):  # how docs/images/studio.png is made
        page.screenshot(path=os.environ["LAPGEN_STUDIO_SCREENSHOT"], full_page=True)


def test_failed_generation_shows_a_message_and_the_page_stays_usable(studio_server, browser_page):
    url, _ = studio_server
    page = browser_page
    page.goto(url)
    page.wait_for_selector("#generate")
    page.click("#generate")  # no tool placed yet
    _wait_text(page, "#status", "Generation failed: no tool yet")
    page.click("#add-silhouette")
    _wait_text(page, "#tools-summary", "tool 1")


@pytest.mark.slow
def test_studio_after_the_demo_draws_the_tool_where_it_is_placed(tmp_path, browser_page, monkeypatch):
    """The page over `lapgen demo`'s models (LAPGEN_STUDIO_DEMO_HOME: the $LAPGEN_HOME a full demo wrote):
    place a grasper, move it, generate; the frames show the tool inside its masks (the model-free check of
    tests/test_demo_full.py). With LAPGEN_STUDIO_SCREENSHOT it saves the page: docs/images/studio.png."""
    import numpy as np
    from PIL import Image

    from tests.test_demo_full import separability

    home = os.environ.get("LAPGEN_STUDIO_DEMO_HOME")
    if not home:
        pytest.skip("set LAPGEN_STUDIO_DEMO_HOME to the LAPGEN_HOME of a full `lapgen demo`")
    monkeypatch.setenv("LAPGEN_HOME", home)
    from lapgen.studio.app import launch
    from lapgen.studio.generation import Studio, StudioConfig
    from tests.fixtures.studio import free_port

    studio = Studio(StudioConfig(runs=tmp_path / "runs", device="cpu"))  # the registry defaults: the demo's
    demo, url = launch(studio, host="127.0.0.1", port=free_port(), block=False, quiet=True)
    try:
        page = browser_page
        page.goto(url)
        page.wait_for_selector("#generate")
        _choose(page, "instrument", "grasper")
        _choose(page, "verb", "retract")
        _choose(page, "target", "gallbladder")
        page.click("#add-silhouette")
        _wait_text(page, "#tools-summary", "tool 1")
        canvas = page.locator("#canvas img")
        box = canvas.bounding_box()
        canvas.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.35})
        _wait_text(page, "#tools-summary", "×1)")
        canvas.click(position={"x": box["width"] * 0.55, "y": box["height"] * 0.55})
        page.wait_for_function("document.querySelector('#tools-summary').innerText.split('°').length === 3")
        _set_number(page, "frames", 8)
        _set_number(page, "steps", 15)
        page.click("#generate")
        _wait_text(page, "#status", "Done")
        page.locator("#result-video video").wait_for()
        assert "demo-controlnet" in page.locator("#card").inner_text()
        if os.environ.get("LAPGEN_STUDIO_SCREENSHOT"):
            page.screenshot(path=os.environ["LAPGEN_STUDIO_SCREENSHOT"], full_page=True)
    finally:
        demo.close()
    run = sorted(studio.config.runs.glob("run-*"))[-1]
    frames = sorted((run / "video_frames").glob("*.png"))
    assert len(frames) == 8
    images = [np.asarray(Image.open(f).convert("RGB")) for f in frames]
    masks = [np.asarray(Image.open(f.parent / "masks" / f.name).convert("L")) > 127 for f in frames]
    assert separability(images, masks) > 0.8
