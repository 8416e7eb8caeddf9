"""`lapgen sample`: evaluation sets with per-index seeds, labels and masks in metadata.jsonl, skipping finished
images on re-runs; compared against diffusers' own pipelines called directly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.models.sampling import SampleConfig, sample_images

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _px(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_sample_with_controlnet_from_a_dataset(controlnet_frames_dir, tiny_sd_dir, tiny_controlnet_dir, tmp_path):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionPipeline

    out = tmp_path / "gen"
    result = runner.invoke(app, ["sample", "--model", str(tiny_sd_dir), "--controlnet", str(tiny_controlnet_dir),
                                 "--prompts-from", str(controlnet_frames_dir), "--split", "test", "--n", "5",
                                 "--steps", "2", "--batch-size", "2", "--seed", "10", "--device", "cpu", "--out",
                                 str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"out": str(out), "images": 5, "generated": 5}
    rows = [json.loads(x) for x in (out / "metadata.jsonl").read_text().splitlines()]
    source = {json.loads(x)["file_name"]: json.loads(x)
              for x in (controlnet_frames_dir / "metadata.jsonl").read_text().splitlines()}
    assert [r["file_name"] for r in rows] == [f"images/{i:05d}.png" for i in range(5)]
    for i, r in enumerate(rows):
        src = source[r["source_file_name"]]
        assert src["split"] == "test" and r["text"] == src["text"] and r["triplets"] == src["triplets"]
        assert r["seed"] == 10 + i and r["conditioning_image_file_name"] == f"masks/{i:05d}.png"
        mask = np.asarray(Image.open(out / r["conditioning_image_file_name"]))
        truth = np.asarray(Image.open(controlnet_frames_dir / src["conditioning_image_file_name"]))
        assert np.array_equal(mask > 127, truth > 127)
    assert __import__("yaml").safe_load((out / "lapgen.yaml").read_text())["kind"] == "generated-set"
    # image 3 equals diffusers' ControlNet pipeline called directly with seed 10 + 3 (up to batching noise)
    base = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=ControlNetModel.from_pretrained(
        tiny_controlnet_dir))
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(rows[3]["text"], Image.open(out / "masks/00003.png").convert("RGB"), height=128, width=128,
               num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(13)).images[0]
    assert np.abs(_px(out / "images/00003.png") - np.asarray(ref, dtype=np.int16)).max() <= 2


def test_per_index_seeds_and_skip_finished(tiny_sd_dir, tmp_path):
    a = sample_images(SampleConfig(out=str(tmp_path / "a"), model=str(tiny_sd_dir), prompt="hook dissect cystic-duct",
                                   n=3, steps=2, batch_size=3, device="cpu"))
    assert a.generated == 3
    b = sample_images(SampleConfig(out=str(tmp_path / "b"), model=str(tiny_sd_dir), prompt="hook dissect cystic-duct",
                                   n=2, steps=2, batch_size=1, device="cpu"))
    assert b.generated == 2
    for i in range(2):  # image i depends on its index, not on n or the batch size
        assert np.abs(_px(tmp_path / "a" / f"images/{i:05d}.png") - _px(tmp_path / "b" / f"images/{i:05d}.png")).max() <= 2
    assert np.abs(_px(tmp_path / "a/images/00000.png") - _px(tmp_path / "a/images/00001.png")).max() > 10

    # an interrupted run: the staging folder holds images 0 and 2 only; the re-run makes the rest
    partial = tmp_path / "c.partial"
    shutil.copytree(tmp_path / "a", partial)
    for name in ("images/00001.png", "metadata.jsonl", "lapgen.yaml"):
        (partial / name).unlink()
    kept = {i: (partial / f"images/{i:05d}.png").stat().st_mtime_ns for i in (0, 2)}
    c = sample_images(SampleConfig(out=str(tmp_path / "c"), model=str(tiny_sd_dir), prompt="hook dissect cystic-duct",
                                   n=3, steps=2, batch_size=3, device="cpu"))
    assert c.generated == 1 and not partial.exists()
    assert {i: (tmp_path / "c" / f"images/{i:05d}.png").stat().st_mtime_ns for i in (0, 2)} == kept
    assert len((tmp_path / "c" / "metadata.jsonl").read_text().splitlines()) == 3


def test_sample_bad_inputs(frames_dir, tiny_sd_dir, tiny_controlnet_dir, tmp_path):
    def error(args) -> str:
        result = runner.invoke(app, ["sample", "--device", "cpu", "--steps", "1", "--out", str(tmp_path / "g"), *args])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lapgen: error: ")
        return lines[0]

    assert "exactly one of" in error(["--model", str(tiny_sd_dir), "--n", "1"])
    assert "exactly one of" in error(["--model", str(tiny_sd_dir), "--prompt", "x", "--prompts-from",
                                      str(frames_dir)])
    assert "needs masks" in error(["--model", str(tiny_sd_dir), "--controlnet", str(tiny_controlnet_dir),
                                   "--prompts-from", str(frames_dir)])
    assert "needs --mask" in error(["--model", str(tiny_sd_dir), "--controlnet", str(tiny_controlnet_dir),
                                    "--prompt", "x"])
    assert "no records" in error(["--model", str(tiny_sd_dir), "--prompts-from", str(frames_dir), "--split", "val"])
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()


def test_resume_only_with_the_same_settings(tiny_sd_dir, tmp_path, monkeypatch):
    """An interrupted set resumes with the same settings; other settings are refused (one line) instead of
    mixing two sets, and `--overwrite` starts over."""
    from lapgen.errors import LapgenError
    from lapgen.models import sampling

    def cfg(**kw) -> SampleConfig:
        base = dict(out=str(tmp_path / "g"), model=str(tiny_sd_dir), prompt="grasper in preparation", n=3,
                    steps=2, batch_size=1, seed=0, device="cpu")
        return SampleConfig(**{**base, **kw})

    real, calls = sampling._save_png, []

    def dies_on_second_image(image, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(image, path)

    monkeypatch.setattr(sampling, "_save_png", dies_on_second_image)
    with pytest.raises(KeyboardInterrupt):
        sample_images(cfg())
    monkeypatch.setattr(sampling, "_save_png", real)
    partial = tmp_path / "g.partial"
    assert [p.name for p in (partial / "images").iterdir()] == ["00000.png"]
    first = (partial / "images" / "00000.png").read_bytes()
    with pytest.raises(LapgenError, match=r"unfinished set made with other settings \(seed\)"):
        sample_images(cfg(seed=7))
    assert (partial / "images" / "00000.png").read_bytes() == first  # untouched
    assert sample_images(cfg(seed=7, overwrite=True)).generated == 3  # started over
    meta = [json.loads(x) for x in (tmp_path / "g" / "metadata.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in meta] == [7, 8, 9] and not (tmp_path / "g" / ".sample-config.json").exists()
    assert (tmp_path / "g" / "images" / "00000.png").read_bytes() != first


def test_hub_model_not_on_this_machine_fails_before_any_output(tmp_path):
    result = runner.invoke(app, ["sample", "--model", "hf:nobody-lapgen/not-cached", "--prompt", "x",
                                 "--n", "1", "--device", "cpu", "--out", str(tmp_path / "g")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not on this machine and HF_HUB_OFFLINE is set" in lines[0]
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()
