"""`lapgen demo`: one `--quick` run through the CLI (module-scoped), its artefacts, report, registry entries
and printed paths; resuming; the studio preselecting the demo's models; errors; the hand-set VAE and the
trained-vs-untrained comparison against independent computations."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lapgen.cli.main import app

runner = CliRunner()


# The library functions behind the demo's printed commands: (module, function). The demo calls them itself;
# `lapgen <command>` calls the same function with the configuration it builds from its options.
LIBRARY_CALLS = (
    ("lapgen.data.synthetic_release", "write_synthetic_release"),
    ("lapgen.data.prepare", "prepare"),
    ("lapgen.data.yolo_convert", "convert"),
    ("lapgen.models.segmentation", "train"),
    ("lapgen.models.segmenter_eval", "evaluate_segmenter"),
    ("lapgen.models.annotate", "annotate"),
    ("lapgen.registry", "add_entry"),
    ("lapgen.models.finetune", "finetune"),
    ("lapgen.models.controlnet", "train_controlnet"),
    ("lapgen.models.recognition.train", "train_recognizer"),
    ("lapgen.models.sampling", "sample_images"),
    ("lapgen.studio.silhouettes", "save_silhouette"),
    ("lapgen.models.mask_sequences", "animate_masks"),
    ("lapgen.models.video_generation", "generate_video"),
    ("lapgen.metrics.evaluate", "evaluate_fidelity"),
    ("lapgen.models.mask_f1", "evaluate_mask_f1"),
    ("lapgen.models.recognition.evaluate", "evaluate_map"),
    ("lapgen.models.motion", "train_motion"),
    ("lapgen.models.mask_sequences", "extract_clips"),
    ("lapgen.models.sample_video", "sample_videos"),
    ("lapgen.models.video_eval", "evaluate_videos"),
    ("lapgen.metrics.report", "build_report"),
    ("lapgen.registry", "set_default"),
)


def _patch_library(mp, record, *, run: bool) -> None:
    """Wrap every LIBRARY_CALLS function: record (name, args, kwargs), then run it or stop the command. Only
    outermost calls are recorded (`sample_videos` calls `generate_video` once per clip, as the command does)."""
    import importlib
    import inspect

    depth = [0]
    for module_name, name in LIBRARY_CALLS:
        module = importlib.import_module(module_name)
        real = getattr(module, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            bound = inspect.signature(_real).bind(*args, **kwargs)
            bound.apply_defaults()  # a default the command spells out equals one the demo leaves implicit
            if depth[0] == 0:
                record.append((_name, dict(bound.arguments)))
            if not run:
                raise _Stop
            depth[0] += 1
            try:
                return _real(*args, **kwargs)
            finally:
                depth[0] -= 1

        mp.setattr(module, name, wrapper)


class _Stop(Exception):
    """Raised by a recording wrapper to stop a command right after it built its configuration."""


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """One quick demo with `--motion` (every step runs) in a registry home of its own (its defaults must not leak
    into other tests), with every library call it makes recorded."""
    root = tmp_path_factory.mktemp("demo")
    calls: list = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAPGEN_HOME", str(root / "home"))
        with pytest.MonkeyPatch.context() as recording:
            _patch_library(recording, calls, run=True)
            result = runner.invoke(app, ["demo", "--quick", "--motion", "--out", str(root / "demo"), "--device",
                                          "cpu"])
        yield {"root": root, "out": root / "demo", "result": result, "home": root / "home", "mp": mp,
               "calls": calls}


@pytest.fixture
def demo_home(quick_demo, monkeypatch):
    monkeypatch.setenv("LAPGEN_HOME", str(quick_demo["home"]))
    return quick_demo


def test_quick_demo_writes_every_artefact(quick_demo):
    result, out = quick_demo["result"], quick_demo["out"]
    assert result.exit_code == 0, result.output + repr(result.exception)
    for rel in (
        "video/clip.mp4",
        "video/clip_side_by_side.mp4",
        "video/clip.gif",
        "report.md",
        "report.json",
        "data/frames/metadata.jsonl",
        "data/controlnet/metadata.jsonl",
        "runs/sd/model_index.json",
        "runs/controlnet/config.json",
        "runs/segmenter/weights/best.pt",
        "demo-state.json",
        "video/real-clips/clip_000/masks",  # real clips for `eval video`
        "eval/video-controlvideo.json",
        "data/clips/metadata.jsonl",  # --motion
        "runs/motion/config.json",
        "video/animatediff.mp4",
        "video/strip_animatediff.png",
        "video/set-controlvideo/metadata.jsonl",
        "video/set-animatediff/metadata.jsonl",
        "eval/video-set-animatediff.json",
    ):
        assert (out / rel).exists(), rel
    import av

    with av.open(str(out / "video" / "clip.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(out / "video" / "clip_side_by_side.mp4")) as container:
        side = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert len(frames) == 4 and frames[0].shape == (128, 128, 3)
    assert side.shape[1] == 2 * frames[0].shape[1]  # mask | video
    state = json.loads((out / "demo-state.json").read_text())
    from lapgen.demo import STEPS

    assert list(state["done"]) == [s.name for s in STEPS]


def test_printed_paths_and_commands(quick_demo):
    result, out = quick_demo["result"], quick_demo["out"]
    stdout = result.stdout
    for label, rel in (
        ("video:", "video/clip.mp4"),
        ("mask | video:", "video/clip_side_by_side.mp4"),
        ("report:", "report.md"),
        ("AnimateDiff:", "video/animatediff.mp4"),
        ("its strip:", "video/strip_animatediff.png"),
    ):
        line = next(ln for ln in stdout.splitlines() if ln.startswith(label))
        assert Path(line.split(":", 1)[1].strip()) == out / rel
    report = json.loads((out / "report.json").read_text())
    cv = next(r for r in report["video"]["rows"] if r["model"] == "demo video (ControlVideo)")
    line = next(ln for ln in stdout.splitlines() if ln.startswith("demo video (ControlVideo) against the real clips:"))
    assert f"warp error {cv['values']['warp_error']:.4f} (real clips {cv['real_values']['warp_error']:.4f})" in line
    from lapgen.demo import STEPS

    # piped output (not a terminal): each step's banner is one short plain line, not a console-wide rule
    assert f"── [1/{len(STEPS)}] {STEPS[0].title}" in result.stderr.splitlines()
    printed = [ln[2:] for ln in result.stderr.splitlines() if ln.startswith("$ lapgen ")]
    assert any(ln.startswith("lapgen finetune ") for ln in printed)
    assert any(ln.startswith("lapgen eval report ") for ln in printed)


# What a printed command may legitimately leave out: the demo re-runs its own steps over their outputs
# (overwrite), shows progress (on_step) and records itself as the origin of the defaults it sets.
# `masks clips` builds its segment function itself (its segmenter_info names the model both used).
IGNORED = {"overwrite", "on_step", "origin", "on_plan", "advance", "on_clip", "segment"}


def _plain(value):
    """A comparable form of a call argument: dataclasses as dicts (ignored fields dropped), paths as text."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in IGNORED}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):  # (in label dicts, a key given as None is a key not given)
        return {k: _plain(v) for k, v in value.items() if k not in IGNORED and v is not None}
    return value


def _differences(got, want, where: str = "") -> list[str]:
    if isinstance(got, dict) and isinstance(want, dict):
        return [d for k in sorted(set(got) | set(want), key=str)
                for d in _differences(got.get(k, "<absent>"), want.get(k, "<absent>"), f"{where}.{k}")]
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _differences(g, w, f"{where}[{i}]")]
    return [] if got == want else [f"{where}: command {got!r}, demo {want!r}"]


def test_printed_commands_build_the_configuration_the_demo_ran(quick_demo, monkeypatch):
    """Every printed `lapgen ...` line, run through the real CLI, calls the same library function with the same
    configuration as the demo did, in the same order: the printed commands are the demo."""
    from lapgen.demo import STEPS
    from lapgen.demo.sizes import QUICK
    from lapgen.demo.steps import Context

    ctx = Context(out=quick_demo["out"], seed=0, sizes=QUICK, device="cpu", motion=True)
    lines = [line for step in STEPS for line in step.commands(ctx) if line.startswith("lapgen ")]
    monkeypatch.setenv("LAPGEN_HOME", str(quick_demo["home"]))
    from_cli: list = []
    _patch_library(monkeypatch, from_cli, run=False)
    for line in lines:
        before = len(from_cli)
        result = runner.invoke(app, shlex.split(line)[1:])
        assert len(from_cli) == before + 1, f"{line}\n{result.output}"
        assert isinstance(result.exception, _Stop), f"{line}\n{result.output}"
    from_demo = quick_demo["calls"]
    assert [c[0] for c in from_cli] == [c[0] for c in from_demo]
    for line, (name, arguments), (_, demo_arguments) in zip(lines, from_cli, from_demo):
        got, want = _plain(arguments), _plain(demo_arguments)
        assert got == want, f"{line}: {name} differs from the demo's call: {_differences(got, want)}"


def test_report_has_trained_and_untrained_rows(quick_demo):
    report = json.loads((quick_demo["out"] / "report.json").read_text())
    rows = {r["model"]: r["ours"] for r in report["rows"]}
    for label in (
        "demo-sd (trained)",
        "demo-base (untrained)",
        "demo-controlnet (trained)",
        "demo-sd + demo-controlnet-untrained",
    ):
        assert {"fid", "kid", "clip_fid", "cmmd"} <= set(rows[label]), label
        assert np.isfinite(rows[label]["fid"])
    assert "map" in rows["demo-sd (trained)"] and "map" in rows["demo-base (untrained)"]
    assert "map" in rows["real test frames"]
    md = (quick_demo["out"] / "report.md").read_text()
    assert "demo-sd (trained)" in md and "demo-base (untrained)" in md
    # the printed comparison table is the report's numbers
    from lapgen.demo.summary import compare

    summary = compare(report)
    fid = next(r for r in summary["stages"][0]["rows"] if r["metric"] == "fid")
    assert (
        fid["trained"] == rows["demo-sd (trained)"]["fid"]
        and fid["untrained"] == rows["demo-base (untrained)"]["fid"]
    )
    assert f"{fid['trained']:.4g}" in quick_demo["result"].stdout


def test_training_changed_the_weights(quick_demo):
    """Independent of the metrics: the trained UNet is not the base's, and the ControlNet left zero."""
    from safetensors.numpy import load_file

    out = quick_demo["out"]
    base = load_file(str(out / "models" / "demo-base" / "unet" / "diffusion_pytorch_model.safetensors"))
    sd = load_file(str(out / "runs" / "sd" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert base.keys() == sd.keys()
    assert any(not np.array_equal(base[k], sd[k]) for k in base)
    cn = load_file(str(out / "runs" / "controlnet" / "diffusion_pytorch_model.safetensors"))
    zero_convs = [k for k in cn if k.startswith("controlnet_down_blocks") and k.endswith("weight")]
    assert zero_convs and any(np.abs(cn[k]).max() > 0 for k in zero_convs)


def test_registry_defaults_and_studio_preselection(demo_home):
    from lapgen.registry import default_for, resolve
    from lapgen.studio.generation import model_choices

    out = demo_home["out"]
    assert default_for("pipeline") == "demo-sd"
    assert default_for("controlnet") == "demo-controlnet"
    assert default_for("segmenter") == "demo-segmenter"
    assert default_for("recognizer") == "demo-recognizer"
    assert default_for("motion-adapter") == "demo-motion"  # --motion
    assert default_for("feature-extractor") == "inception-v3"  # random demo weights never become defaults
    assert resolve("demo-sd").path == (out / "runs" / "sd").resolve()
    assert resolve("demo-base").path == (out / "models" / "demo-base").resolve()
    assert "RANDOM" in resolve("demo-inception-random", "feature-extractor").description
    names, chosen = model_choices("pipeline")
    assert chosen == "demo-sd" and "demo-base" in names
    names, chosen = model_choices("controlnet")
    assert chosen == "demo-controlnet"


def test_rerun_resumes_and_other_settings_are_refused(demo_home):
    from lapgen.demo import STEPS

    out = demo_home["out"]
    before = (out / "report.md").stat().st_mtime_ns
    result = runner.invoke(app, ["demo", "--quick", "--motion", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "done before, skipped" in result.stderr
    assert (out / "report.md").stat().st_mtime_ns == before
    assert f"{len(STEPS) - 1} steps done before" in result.stdout  # all but the registry step
    (out / "report.md").unlink()  # a lost output: its step and every later one run again
    result = runner.invoke(app, ["demo", "--quick", "--motion", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and f"{len(STEPS) - 2} steps done before" in result.stdout
    assert "$ lapgen eval report" in result.stderr and "$ lapgen eval fidelity" not in result.stderr
    result = runner.invoke(app, ["demo", "--quick", "--seed", "1", "--out", str(out)])
    assert result.exit_code == 2
    assert (
        result.stderr.strip().startswith("lapgen: error: ") and len(result.stderr.strip().splitlines()) == 1
    )
    assert "other settings" in result.stderr and "--force" in result.stderr
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out)])  # the same run without --motion
    assert result.exit_code == 2 and "motion True" in result.stderr


def test_motion_steps_run_only_with_motion(tmp_path):
    """Without --motion the demo skips the motion module and the method comparison, and evaluates its one
    ControlVideo video against the real clips; with it, it adds the AnimateDiff video and the two sets."""
    from lapgen.demo import STEPS
    from lapgen.demo.sizes import QUICK
    from lapgen.demo.steps import Context
    from lapgen.demo.video_eval import video_jobs

    motion_only = {"prepare-clips", "train-motion", "video-animatediff", "sample-video"}
    plain = Context(out=tmp_path, seed=0, sizes=QUICK)
    assert {s.name for s in STEPS} - {s.name for s in STEPS if s.active(plain)} == motion_only
    assert [name for *_x, name in video_jobs(plain)] == ["video-controlvideo.json"]
    with_motion = Context(out=tmp_path, seed=0, sizes=QUICK, motion=True)
    assert all(s.active(with_motion) for s in STEPS)
    assert [name for *_x, name in video_jobs(with_motion)] == [
        "video-controlvideo.json", "video-animatediff.json", "video-set-controlvideo.json",
        "video-set-animatediff.json"]


def test_report_shows_the_videos_beside_the_real_clips(quick_demo):
    """The report's video table: each demo video's mask adherence and warp error, with the real clips' values
    beside them, and the --motion sets with FVD over the random I3D."""
    report = json.loads((quick_demo["out"] / "report.json").read_text())
    rows = {r["model"]: r for r in report["video"]["rows"]}
    assert set(rows) == {"demo video (ControlVideo)", "demo video (AnimateDiff)", "real-clip set (ControlVideo)",
                         "real-clip set (AnimateDiff)"}
    for row in rows.values():
        assert row["values"]["warp_error"] is not None and row["real_values"]["warp_error"] is not None
        assert "mask_f1" in row["values"]
    assert rows["real-clip set (AnimateDiff)"]["values"]["fvd"] is not None
    assert rows["demo video (ControlVideo)"]["n_gen"] == 1 and rows["demo video (ControlVideo)"]["n_real"] == 2
    text = (quick_demo["out"] / "report.md").read_text()
    assert "## Video metrics" in text and "| demo video (ControlVideo) |" in text


@pytest.mark.parametrize("case", ["under-a-file", "is-a-file", "foreign-folder"])
def test_bad_out_is_one_line_exit_2(tmp_path, case):
    if case == "under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "demo"
    elif case == "is-a-file":
        out = tmp_path / "demo.txt"
        out.write_text("x")
    else:
        out = tmp_path / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["demo", "--quick", "--force", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lapgen: error: ") and str(out) in lines[0]
    assert "Traceback" not in result.output
    if case == "foreign-folder":
        assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == [
            "notes.txt"
        ]


@pytest.mark.parametrize("levels", [4, 3])
def test_box_vae_is_block_average_and_blur(levels):
    """The hand-set VAE against numpy: latents = f x f block means of the image (f = 8 for 4 levels, the
    demo's f = 4 for 3); decoding = those means upsampled (nearest x2 and a [1 2 1] blur, per level)."""
    import torch

    from lapgen.demo.assets import BOX_VAE_SCALING, build_box_vae

    f = 2 ** (levels - 1)
    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, (3, 128, 128)).astype(np.float32)
    vae = build_box_vae(levels)
    with torch.no_grad():
        z = vae.encode(torch.from_numpy(img)[None]).latent_dist.sample()[0].numpy()
        y = vae.decode(torch.from_numpy(z)[None]).sample[0].numpy()
    blocks = img.reshape(3, 128 // f, f, 128 // f, f).mean(axis=(2, 4))
    assert z.shape == (4, 128 // f, 128 // f)
    assert np.abs(z[:3] - blocks).max() < 2e-3 and np.abs(z[3]).max() < 1e-3
    assert vae.config.scaling_factor == BOX_VAE_SCALING
    expected = blocks
    k = np.array([1.0, 2.0, 1.0]) / 4
    for _ in range(levels - 1):
        expected = expected.repeat(2, axis=1).repeat(2, axis=2)
        pad = np.pad(expected, ((0, 0), (1, 1), (1, 1)))  # zero padding, as the 3x3 conv
        rows = k[0] * pad[:, :-2] + k[1] * pad[:, 1:-1] + k[2] * pad[:, 2:]
        expected = k[0] * rows[:, :, :-2] + k[1] * rows[:, :, 1:-1] + k[2] * rows[:, :, 2:]
    # GroupNorm's scale is exact up to a relative ~1/K plus the blur's zero padding at the border
    assert np.abs(y - expected).max() < 1e-2 and np.abs(y - expected).mean() < 2e-3


def test_compare_flags_a_stage_that_did_not_improve():
    from lapgen.demo.summary import compare

    def row(model, **ours):
        return {"model": model, "ours": ours}

    report = {
        "rows": [
            row("demo-sd (trained)", fid=10.0, kid=0.1, clip_fid=5.0, cmmd=1.0, map=0.3),
            row("demo-base (untrained)", fid=20.0, kid=0.2, clip_fid=6.0, cmmd=2.0, map=0.1),
            row("demo-controlnet (trained)", fid=30.0, kid=0.3, clip_fid=7.0, cmmd=3.0, f1=0.1),
            row(
                "demo-sd + demo-controlnet-untrained",
                fid=10.0,
                kid=0.1,
                clip_fid=5.0,
                cmmd=1.0,
                f1=float("nan"),
            ),
            row("real test frames", map=0.5),
        ]
    }
    s = compare(report)
    assert s["stages"][0]["ok"] and s["stages"][0]["wins"] == 5
    assert not s["stages"][1]["ok"] and s["stages"][1]["decided"] == 4  # NaN F1 is undecided
    assert not s["ok"] and s["real_map"] == 0.5
    from lapgen.demo.summary import summary_lines

    lines = summary_lines(s)
    assert lines[0].endswith("training worked") and "TRAINING DID NOT HELP" in lines[1]
    quick = summary_lines(compare(report, {"quick": True, "frames_with_tool_mask": 0, "annotated_frames": 9}))
    assert all("no verdict with --quick" in line for line in quick[:2])
    assert "none of the 9 frames" in quick[2]
