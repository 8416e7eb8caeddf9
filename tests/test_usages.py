"""The three usages lapgen was specified with, run verbatim from a folder that holds `path`, `dir/`, `gen/`
and `real/`:

    lapgen prepare --cholec80 path
    lapgen video --prompt "grasper retract liver" --masks dir/
    lapgen eval fid gen/ real/

The registry defaults they fall back to are set the way a user sets them (`lapgen models add` / `use`): the
tiny built-in pipeline and ControlNet, and the test's random-weight Inception file under the default
extractor's name. (`lapgen demo` sets such defaults in real life.)"""

from __future__ import annotations

import json
import shlex
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app

PREPARE = "lapgen prepare --cholec80 path"
VIDEO = 'lapgen video --prompt "grasper retract liver" --masks dir/'
FID = "lapgen eval fid gen/ real/"


def _run(usage: str):
    argv = shlex.split(usage)
    assert argv[0] == "lapgen"
    return CliRunner().invoke(app, argv[1:])


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))  # the defaults set here stay here
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _setup(*commands: str) -> None:
    for command in commands:
        result = _run(command)
        assert result.exit_code == 0, f"{command}: {result.output}"


def test_prepare_cholec80_path_writes_frames_here_and_says_where(workdir):
    _setup("lapgen synthetic --out raw --cholect50-videos '' --cholec80-videos 3 --cholec80-frames 50 "
           "--cholecseg8k-videos '' --artnet-train 0,0 --artnet-test 0,0")
    shutil.move(workdir / "raw" / "cholec80", workdir / "path")

    result = _run(PREPARE)
    assert result.exit_code == 0, result.output
    out = workdir / "frames"
    assert f"-> {out}" in result.stderr  # where it wrote, as an absolute path
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all((out / r["file_name"]).is_file() for r in records)  # 1 fps of 50 frames
    again = _run(PREPARE)
    assert again.exit_code == 2 and "output already exists" in again.stderr


def test_video_prompt_masks_dir_uses_the_registry_defaults(workdir, video_one_thread):
    _setup("lapgen models use tiny-sd", "lapgen models use tiny-controlnet",
           "lapgen masks silhouette grasper --out grasper.png",
           "lapgen masks animate --mask grasper.png --path '50,50;70,60' --frames 2 --out dir")

    result = _run(VIDEO)
    assert result.exit_code == 0, result.output
    assert "model: tiny-sd (registry default" in result.stderr
    assert (workdir / "clip.mp4").stat().st_size > 0
    from lapgen.data.video import probe

    info = probe(workdir / "clip.mp4")
    assert info.frames == 2 and (info.width, info.height) == (128, 128)


def test_eval_fid_gen_real_uses_the_default_extractor(workdir, image_sets, inception_weights):
    shutil.copytree(image_sets["gen"], workdir / "gen")
    shutil.copytree(image_sets["real"], workdir / "real")
    _setup(f"lapgen models add inception-v3 {shlex.quote(str(inception_weights))}")

    result = _run(FID)
    assert result.exit_code == 0, result.output
    assert "fid" in result.stdout and "inception-v3" in result.stdout
    with Image.open(next((workdir / "gen").iterdir())) as img:
        assert img.size == (64, 64)  # the sets were read as they are (Inception resizes them itself)
