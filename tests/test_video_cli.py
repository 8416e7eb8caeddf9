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
            "at:1",
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
    # the frames folder is a generated set: `lapgen eval f1` pairs every frame with the mask it was made from
    from lapgen.metrics.images import open_image_set
    from lapgen.metrics.spatial import mask_pairs

    gen = open_image_set(tmp_path / "clip_frames")
    assert [gen.path(i).name for i in range(len(gen))] == [f.name for f in frames]
    pairs = mask_pairs(gen)
    assert [p.relative_to(tmp_path / "clip_frames").as_posix() for p in pairs] == [
        f"masks/{f.name}" for f in frames
    ]
    assert {r["text"] for r in gen.records} == {"grasper retract liver"}
    sbs = read_video(tmp_path / "clip_side_by_side.mp4")
    assert sbs[0][:, :128].mean() < sbs[0][:, :128].max()  # the mask half is a binary picture
    card = read_card(out)
    assert card["kind"] == "video" and card["config"]["steps"] == 3
    assert card["masks"]["frames"] == 10 and card["result"]["fps"] == 12.0
    assert card["result"]["interpolator"] == {"requested": "linear", "used": "linear", "ran": True}
    assert card["result"]["long_video"] is False and "10 frames <= 16" in card["result"]["long_video_reason"]
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
        (["--interpolator", "rife"], "lapgen models add rife-v3 PATH"),
        (["--interpolator", "rife:/nonexistent/flownet.pkl"], "not found"),
        (["--smoother-steps", "0,1"], "must be >= 1"),
        (["--smoother-reencode", "median"], "unknown --smoother-reencode"),
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
            smoother_steps="at:2,3",
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
    assert names == ["auto", "flow", "linear", "rife", "rife-v3"]
    assert "rife-v3\tregistered RIFE weights (default): no weights on this machine" in res.stdout


# ---- RIFE weights and several ControlNets ---------------------------------------------------------


def _frames_of(folder):
    from PIL import Image

    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("*.png"))])


def _run(tmp_path, name, mask_dir, models, *extra):
    args = ["video", "--prompt", "grasper retract liver", "--masks", str(mask_dir), "--frames", "4"]
    args += ["--steps", "2", "--smoother-steps", "at:1", "--save-frames", "--device", "cpu", "--json"]
    args += ["--out", str(tmp_path / f"{name}.mp4"), *models, *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1]), _frames_of(tmp_path / f"{name}_frames")


def test_published_rife_file_from_the_command_line(
    tmp_path, monkeypatch, mask_dir, tiny_sd_dir, awake_controlnets
):
    """A flownet.pkl in the published layout (torch.save of a state dict with `module.` keys) runs through
    `--interpolator rife:PATH`: the video equals the one made with the from-scratch RIFE computation of
    test_controlvideo_rife as the smoother's interpolator, and the card names the file. Registered as the
    built-in `rife-v3`, the default `--interpolator auto` picks it up."""
    import torch

    from lapgen.cards import read_card
    from lapgen.outputs import file_sha256
    from tests.test_controlvideo_rife import published_state, reference_midpoint

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    state = published_state(seed=2)
    torch.save(state, tmp_path / "flownet.pkl")
    models = _models(tiny_sd_dir, awake_controlnets[0])  # masks matter, so neighbouring frames differ
    payload, rife = _run(
        tmp_path, "rife", mask_dir, models, "--interpolator", f"rife:{tmp_path / 'flownet.pkl'}"
    )
    card = read_card(tmp_path / "rife.mp4")["result"]["interpolator"]
    assert card == {
        "requested": f"rife:{tmp_path / 'flownet.pkl'}",
        "used": "rife",
        "weights": str(tmp_path / "flownet.pkl"),
        "sha256": file_sha256(tmp_path / "flownet.pkl"),
        "ran": True,
    }
    assert payload["interpolator"] == card and payload["smoothed_steps"] == [1]

    sd = {k[len("module.") :]: v for k, v in state.items()}

    def independent(a, b):
        assert not any(torch.equal(x, y) for x, y in zip(a, b))  # the network runs on every pair
        with torch.no_grad():
            return reference_midpoint(sd, a.float(), b.float()).clamp(0, 1).to(a.dtype)

    from lapgen.models.controlvideo import interpolators
    from lapgen.models.video_generation import VideoConfig, generate_video

    config = VideoConfig(
        prompt="grasper retract liver",
        masks=str(mask_dir),
        out=str(tmp_path / "ref.mp4"),
        frames=4,
        steps=2,
        device="cpu",
        model=str(tiny_sd_dir),
        controlnet=str(awake_controlnets[0]),
        smoother_steps="at:1",
        save_frames=True,
    )
    with monkeypatch.context() as m:
        m.setattr(
            interpolators,
            "resolve_interpolator",
            lambda name: interpolators.InterpolatorChoice(independent, "reference", name),
        )
        generate_video(config)
    assert np.abs(rife.astype(int) - _frames_of(tmp_path / "ref_frames").astype(int)).max() <= 1
    # flow gives another video: the RIFE weights were used
    _, flow = _run(tmp_path, "flow", mask_dir, models, "--interpolator", "flow")
    assert np.abs(flow.astype(int) - rife.astype(int)).max() > 1

    res = runner.invoke(app, ["models", "add", "rife-v3", str(tmp_path / "flownet.pkl")])
    assert res.exit_code == 0, res.output
    payload, auto = _run(tmp_path, "auto", mask_dir, models)
    assert payload["interpolator"]["used"] == "rife" and payload["interpolator"]["entry"] == "rife-v3"
    np.testing.assert_array_equal(auto, rife)


@pytest.fixture(scope="module")
def awake_controlnets(tmp_path_factory, tiny_sd_dir):
    """Two saved tiny ControlNets whose zero convolutions have small random weights (masks matter)."""
    from diffusers import UNet2DConditionModel

    from lapgen.models.tiny import build_tiny_controlnet
    from tests.fixtures.video import wake_zero_convs

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet")
    folders = []
    for k in range(2):
        net = build_tiny_controlnet(unet, seed=k)
        wake_zero_convs(net, seed=5 + k)
        folder = tmp_path_factory.mktemp("cn") / f"cn{k}"
        net.save_pretrained(folder)
        folders.append(folder)
    return folders


def test_several_controlnets_from_the_command_line(tmp_path, mask_dir, tiny_sd_dir, awake_controlnets):
    """Repeated --controlnet/--masks pairs with per-net scales. Scales (0.8, 0) give exactly the video of the
    first ControlNet alone at 0.8; (0.8, 0.8) another one; the card lists both nets and mask sequences."""
    from lapgen.cards import read_card

    other = tmp_path / "other_masks"
    other.mkdir()
    for i, m in enumerate(make_moving_masks(12, step=2, box=70)):
        m.save(other / f"o{i}.png")
    first, second = (str(p) for p in awake_controlnets)
    pairs = ["--controlnet", first, "--masks", str(mask_dir), "--controlnet", second, "--masks", str(other)]
    base = ["video", "--prompt", "grasper retract liver", "--frames", "4", "--steps", "2", "--device", "cpu"]
    base += ["--model", str(tiny_sd_dir), "--save-frames", "--smoother-steps", "none"]

    def run(name, *extra):
        res = runner.invoke(app, [*base, "--out", str(tmp_path / f"{name}.mp4"), *extra])
        assert res.exit_code == 0, res.output
        return _frames_of(tmp_path / f"{name}_frames")

    only_first = run("single", "--controlnet", first, "--masks", str(mask_dir), "--controlnet-scale", "0.8")
    gated = run("gated", *pairs, "--controlnet-scale", "0.8", "--controlnet-scale", "0")
    both = run("both", *pairs, "--controlnet-scale", "0.8")
    np.testing.assert_array_equal(gated, only_first)
    assert np.abs(both.astype(int) - only_first.astype(int)).max() > 0
    card = read_card(tmp_path / "both.mp4")
    assert [c["source"] for c in card["models"]["controlnet"]] == [first, second]
    assert [m["source"] for m in card["masks"]] == [str(mask_dir), str(other)]
    assert card["config"]["controlnet_scale"] == 0.8
    assert (tmp_path / "both_frames" / "masks_2").is_dir()

    for extra, needle in (
        (pairs[:6], "one --masks per --controlnet (got 1 --masks and 2 --controlnet)"),
        ([*pairs, "--controlnet-scale", "1", "--controlnet-scale", "1", "--controlnet-scale", "1"], "not 3"),
    ):
        res = runner.invoke(app, [*base, "--out", str(tmp_path / "bad.mp4"), *extra])
        assert res.exit_code == 2 and needle in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "bad.mp4").exists()


def test_a_missing_masks_path_fails_before_torch_is_imported(tmp_path):
    """Bad arguments are reported without loading torch or diffusers (a new user waits well under a second)."""
    import subprocess
    import sys

    code = ("import sys\nfrom lapgen.cli.main import app\ntry:\n    app(['video', '--prompt', 'grasper retract liver', "
            f"'--masks', {str(tmp_path / 'missing')!r}, '--out', {str(tmp_path / 'x.mp4')!r}])\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules, 'diffusers' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "exit 2 False False", run.stdout + run.stderr
    assert "masks not found" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.mp4").exists()
