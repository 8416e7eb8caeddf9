"""`lapgen video` end to end with tiny saved models: outputs, card, errors, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lapgen.cli.main import app
from tests.fixtures.video import make_moving_masks

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("video_one_thread")


@pytest.fixture(scope="module")
def mask_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("masks")
    for i, m in enumerate(make_moving_masks(12, step=5)):
        m.save(folder / f"m{i}.png")  # natural sort: m2 before m10
    return folder


def _models(tiny_sd_dir, tiny_controlnet_dir):
    return ["--model", str(tiny_sd_dir), "--controlnet", str(tiny_controlnet_dir)]


def test_video_writes_mp4_gif_frames_side_by_side_and_card(
    tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir
):
    from lapgen.cards import read_card
    from lapgen.data.video import probe, read_video

    out = tmp_path / "clip.mp4"
    res = runner.invoke(
        app,
        [
            "video",
            "--prompt",
            "grasper retract liver",
            "--masks",
            str(mask_dir),
            "--out",
            str(out),
            "--frames",
            "10",
            "--steps",
            "3",
            "--fps",
            "12",
            "--interpolator",
            "linear",
            "--smoother-steps",
            "1",
            "--gif",
            "--save-frames",
            "--side-by-side",
            "--device",
            "cpu",
            "--json",
            *_models(tiny_sd_dir, tiny_controlnet_dir),
        ],
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout.strip().splitlines()[-1])
    assert payload["frames"] == 10 and payload["smoothed_steps"] == [1]
    info = probe(out, count=True)
    assert (info.frames, info.fps, info.size, info.codec) == (10, 12.0, (128, 128), "h264")
    assert (tmp_path / "clip.gif").exists()
    frames = sorted((tmp_path / "clip_frames").glob("*.png"))
    assert len(frames) == 10 and len(list((tmp_path / "clip_frames" / "masks").glob("*.png"))) == 10
    assert probe(tmp_path / "clip_side_by_side.mp4").size == (256, 128)
    sbs = read_video(tmp_path / "clip_side_by_side.mp4")
    assert sbs[0][:, :128].mean() < sbs[0][:, :128].max()  # the mask half is a binary picture
    card = read_card(out)
    assert card["kind"] == "video" and card["config"]["steps"] == 3
    assert card["masks"]["frames"] == 10 and card["result"]["fps"] == 12.0
    assert not (tmp_path / "clip.mp4.partial").exists()


def test_masks_from_a_video_are_thresholded_and_resized(tmp_path, tiny_sd_dir, tiny_controlnet_dir):
    from lapgen.data.video import probe, write_mp4

    masks = np.stack([np.asarray(m) for m in make_moving_masks(4, size=64, box=20)])
    write_mp4(masks, tmp_path / "masks.mp4", fps=25)  # lossy greyscale: not strictly binary any more
    out = tmp_path / "v.mp4"
    res = runner.invoke(
        app,
        [
            "video",
            "--prompt",
            "grasper retract liver",
            "--masks",
            str(tmp_path / "masks.mp4"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--device",
            "cpu",
            *_models(tiny_sd_dir, tiny_controlnet_dir),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "thresholded" in res.output and "resized from 64x64" in res.output
    assert probe(out, count=True).frames == 4


def test_unknown_prompt_words_warn_but_run(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir):
    res = runner.invoke(
        app,
        [
            "video",
            "--prompt",
            "grasper juggles liver",
            "--masks",
            str(mask_dir),
            "--frames",
            "2",
            "--out",
            str(tmp_path / "w.mp4"),
            "--steps",
            "1",
            "--device",
            "cpu",
            *_models(tiny_sd_dir, tiny_controlnet_dir),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "juggles" in res.output and "warning" in res.output


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--masks", "/nonexistent/masks"], "masks not found"),
        (["--long", "maybe"], "unknown --long"),
        (["--interpolator", "magic"], "unknown interpolator"),
        (["--frames", "99"], "only 12"),
        (["--out", "clip.avi"], ".mp4"),
        (["--smoother-steps", "x"], "--smoother-steps"),
        (["--interpolator", "rife"], "--interpolator rife:PATH"),
        (["--interpolator", "flow:model.pt"], "takes no model file"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir, extra, needle):
    args = [
        "video",
        "--prompt",
        "grasper retract liver",
        "--masks",
        str(mask_dir),
        "--out",
        str(tmp_path / "x.mp4"),
        "--steps",
        "1",
        *_models(tiny_sd_dir, tiny_controlnet_dir),
    ]
    for k in range(0, len(extra), 2):
        i = args.index(extra[k]) if extra[k] in args else None
        if i is None:
            args += extra[k : k + 2]
        else:
            args[i + 1] = extra[k + 1]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists()


def test_existing_output_and_missing_default_controlnet(tmp_path, mask_dir, tiny_sd_dir):
    (tmp_path / "o.mp4").write_bytes(b"x")
    res = runner.invoke(
        app, ["video", "--prompt", "grasper", "--masks", str(mask_dir), "--out", str(tmp_path / "o.mp4")]
    )
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(
        app,
        [
            "video",
            "--prompt",
            "grasper",
            "--masks",
            str(mask_dir),
            "--out",
            str(tmp_path / "n.mp4"),
            "--model",
            str(tiny_sd_dir),
        ],
    )
    assert res.exit_code == 2 and "ControlNet" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_registry_defaults_make_the_short_command_work(
    tmp_path, monkeypatch, mask_dir, tiny_sd_dir, tiny_controlnet_dir
):
    """Once a Stage-1 and a Stage-2 model are the registry's defaults, `lapgen video --prompt P --masks DIR`
    needs nothing else (--out defaults to clip.mp4; steps and frames cut only to keep the test short)."""
    from lapgen.cards import read_card
    from lapgen.data.video import probe

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))  # keep the session's registry untouched
    monkeypatch.chdir(tmp_path)
    for name, path in (("stage1", tiny_sd_dir), ("stage2", tiny_controlnet_dir)):
        assert runner.invoke(app, ["models", "add", name, str(path)]).exit_code == 0
        assert runner.invoke(app, ["models", "use", name]).exit_code == 0
    as_written = ["video", "--prompt", "grasper retract liver", "--masks", str(mask_dir)]
    res = runner.invoke(app, [*as_written, "--frames", "3", "--steps", "2"])
    assert res.exit_code == 0, res.output
    assert probe(tmp_path / "clip.mp4", count=True).frames == 3
    card = read_card(tmp_path / "clip.mp4")
    assert card["models"]["model"]["name"] == "stage1" and card["models"]["controlnet"]["name"] == "stage2"
    assert card["config"]["model"] is None and card["config"]["controlnet"] is None


def test_interrupted_run_resumes_to_the_same_video(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir):
    from PIL import Image

    from lapgen.models.video_generation import VideoConfig, generate_video

    def config(out, **kw):
        return VideoConfig(
            prompt="grasper retract liver",
            masks=str(mask_dir),
            out=str(out),
            frames=5,
            steps=6,
            model=str(tiny_sd_dir),
            controlnet=str(tiny_controlnet_dir),
            interpolator="linear",
            smoother_steps="2,3",
            save_frames=True,
            device="cpu",
            checkpoint_every=2,
            **kw,
        )

    ref = generate_video(config(tmp_path / "ref.mp4"))
    assert ref.resumed_from_step == 0 and ref.smoothed_steps == [2, 3]

    def stop(i, total):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_video(config(tmp_path / "run.mp4"), on_step=stop)
    assert not (tmp_path / "run.mp4").exists() and (tmp_path / "run.mp4.partial").exists()
    again = generate_video(config(tmp_path / "run.mp4"))
    assert again.resumed_from_step == 2 and again.smoothed_steps == [2, 3]
    for a, b in zip(
        sorted((tmp_path / "ref_frames").glob("*.png")), sorted((tmp_path / "run_frames").glob("*.png"))
    ):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_rife_model_file_from_the_command_line(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir):
    """--interpolator rife:PATH runs the user's model in the smoother: a TorchScript pixel average must
    give exactly the video of the built-in linear interpolator."""
    import torch
    from PIL import Image

    class Average(torch.nn.Module):
        def forward(self, a, b, t: float):
            return a * (1 - t) + b * t

    torch.jit.script(Average()).save(str(tmp_path / "avg.pt"))
    videos = {}
    for name, spec in (("linear", "linear"), ("rife", f"rife:{tmp_path / 'avg.pt'}")):
        args = ["video", "--prompt", "grasper retract liver", "--masks", str(mask_dir), "--frames", "4"]
        args += ["--steps", "2", "--smoother-steps", "1", "--interpolator", spec, "--save-frames"]
        args += [
            "--device",
            "cpu",
            "--out",
            str(tmp_path / f"{name}.mp4"),
            *_models(tiny_sd_dir, tiny_controlnet_dir),
        ]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        frames = sorted((tmp_path / f"{name}_frames").glob("*.png"))
        videos[name] = np.stack([np.asarray(Image.open(f)) for f in frames])
    assert videos["rife"].shape == (4, 128, 128, 3)
    np.testing.assert_array_equal(videos["rife"], videos["linear"])


def test_list_interpolators():
    res = runner.invoke(app, ["video", "--list-interpolators"])
    assert res.exit_code == 0, res.output
    names = [line.split("\t")[0] for line in res.stdout.strip().splitlines()]
    assert names == ["flow", "linear", "rife"]
