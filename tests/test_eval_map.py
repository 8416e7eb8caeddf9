"""`lapgen eval train-recognizer` and `lapgen eval map` through the CLI (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lapgen.cli.eval_map import register
from lapgen.cli.main import LapgenGroup

runner = CliRunner()


def _app() -> typer.Typer:
    """An `eval` group holding only this module's commands, under lapgen's error-handling top group."""
    app = typer.Typer(cls=LapgenGroup)

    @app.callback()
    def _root() -> None:
        pass

    eval_app = typer.Typer()
    register(eval_app)
    app.add_typer(eval_app, name="eval")
    return app


def _run(*args: str):
    return runner.invoke(_app(), ["eval", *map(str, args)])


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lapgen: error:") and pattern in lines[0], result.stderr


def _independent_scores(folder: Path, recognizer_dir: Path, records: list[dict]) -> dict[str, np.ndarray]:
    """Scores recomputed here: PIL load, the reference transform, forward, sigmoid (no lapgen loop)."""
    import torch
    from PIL import Image

    from lapgen.models.recognition import eval_transform, load_rendezvous

    model = load_rendezvous(recognizer_dir)
    tf = eval_transform(model.config.image_size)
    x = torch.stack([tf(Image.open(folder / r["file_name"]).convert("RGB")) for r in records])
    with torch.no_grad():
        (_, li), (_, lv), (_, lt), livt = model(x)
    return {k: torch.sigmoid(v).double().numpy() for k, v in (("i", li), ("v", lv), ("t", lt), ("ivt", livt))}


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines() if line.strip()]


def test_map_on_generated_set_is_global_and_matches_triplet_map(rdv_generated_dir, tiny_recognizer_dir,
                                                                  one_torch_thread, tmp_path):
    from lapgen.metrics import triplet_map
    from lapgen.models.recognition import label_matrix

    out = tmp_path / "map.json"
    res = _run("map", rdv_generated_dir, "--recognizer", tiny_recognizer_dir, "--boot", "50", "--json",
               "--out", out)
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert json.loads(out.read_text()) == result
    from lapgen.cards import read_card

    assert read_card(out)["kind"] == "eval-result" and read_card(out)["key"] == "map[global,ivt]"
    assert result["metric"] == "map" and result["key"] == "map[global,ivt]" and result["mode"] == "global"
    assert result["set_kind"] == "generated" and result["n_videos"] is None
    recs = _records(rdv_generated_dir)
    labels = label_matrix(recs)
    scores = _independent_scores(rdv_generated_dir, tiny_recognizer_dir, recs)
    ref = triplet_map(labels["ivt"], scores["ivt"])
    assert result["value"] == pytest.approx(ref["mAP"], abs=1e-6)
    assert result["components"]["it"]["mAP"] == pytest.approx(
        triplet_map(labels["ivt"], scores["ivt"], component="it")["mAP"], abs=1e-6)
    # i/v/t come from the component heads (the RDV protocol), scored on the instrument/verb/target labels
    from lapgen.metrics.triplets import class_map

    assert result["components"]["v"]["mAP"] == pytest.approx(class_map(labels["v"], scores["v"])["mAP"], abs=1e-6)
    ci = result["ci"]
    assert ci["unit"] == "frame" and ci["n_boot"] == 50 and ci["low"] <= result["value"] <= ci["high"]
    assert set(result["components"]) == {"ivt", "i", "v", "t", "iv", "it"}
    assert result["weights_sha256"] and result["preprocessing"].startswith("rdv-resize-64x64")
    # an existing --out is never overwritten without --overwrite
    _one_line_error(_run("map", rdv_generated_dir, "--recognizer", tiny_recognizer_dir, "--out", out),
                    "already exists")


def test_map_on_frames_split_is_video_wise(rdv_frames_dir, tiny_recognizer_dir, one_torch_thread):
    from lapgen.metrics import triplet_map
    from lapgen.models.recognition import label_matrix

    res = _run("map", rdv_frames_dir, "--recognizer", tiny_recognizer_dir, "--boot", "40", "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["split"] == "test" and result["mode"] == "video" and result["n_videos"] == 2
    recs = [r for r in _records(rdv_frames_dir) if r["split"] == "test"]
    scores = _independent_scores(rdv_frames_dir, tiny_recognizer_dir, recs)
    ref = triplet_map(label_matrix(recs)["ivt"], scores["ivt"], video_ids=[r["video"] for r in recs])
    assert result["value"] == pytest.approx(ref["mAP"], abs=1e-6)
    assert result["ci"]["unit"] == "video"
    glob = json.loads(_run("map", rdv_frames_dir, "--recognizer", tiny_recognizer_dir, "--mode", "global",
                           "--ignore-null", "--components-from", "triplet", "--boot", "0", "--json").stdout)
    assert glob["key"] == "map[global,ivt]" and glob["ci"] is None
    assert glob["components"]["ivt"]["n_classes"] == 94
    assert glob["value"] == pytest.approx(
        triplet_map(label_matrix(recs)["ivt"], scores["ivt"], ignore_null=True)["mAP"], abs=1e-6)


def test_absent_classes_option_is_applied_and_recorded(rdv_frames_dir, tiny_recognizer_dir, one_torch_thread):
    """`--absent-classes zero` scores classes without a positive as 0 (ivtmetrics 0.1.5 from PyPI) and says so
    in the result and its key; the default `ignore` (ivtmetrics on GitHub) is recorded too."""
    from lapgen.metrics import triplet_map
    from lapgen.models.recognition import label_matrix

    base = ["map", rdv_frames_dir, "--recognizer", tiny_recognizer_dir, "--boot", "0", "--json"]
    ignore = json.loads(_run(*base).stdout)
    zero = json.loads(_run(*base, "--absent-classes", "zero").stdout)
    assert (ignore["absent_classes"], zero["absent_classes"]) == ("ignore", "zero")
    assert ignore["key"] == "map[video,ivt]" and zero["key"] == "map[video,ivt,absent=zero]"
    recs = [r for r in _records(rdv_frames_dir) if r["split"] == "test"]
    scores = _independent_scores(rdv_frames_dir, tiny_recognizer_dir, recs)
    ref = triplet_map(label_matrix(recs)["ivt"], scores["ivt"], video_ids=[r["video"] for r in recs],
                      absent_classes="zero")
    assert ref["n_classes_absent"] > 0  # a small test split lacks most of the 100 triplets
    assert zero["value"] == pytest.approx(ref["mAP"], abs=1e-6) and zero["value"] < ignore["value"]
    assert zero["components"]["ivt"]["n_classes_scored"] == 100
    assert zero["components"]["ivt"]["n_classes_absent"] == ignore["components"]["ivt"]["n_classes_absent"] > 0
    assert zero["tf32"] is False and zero["device"] == "cpu"
    _one_line_error(_run(*base, "--absent-classes", "nan"), "absent-class convention")


def test_map_table_output(rdv_generated_dir, tiny_recognizer_dir, one_torch_thread):
    res = _run("map", rdv_generated_dir, "--recognizer", tiny_recognizer_dir, "--boot", "10")
    assert res.exit_code == 0, res.output
    assert "ivt" in res.stdout and "classes scored" in res.stdout


def test_map_bad_inputs(rdv_frames_dir, tiny_recognizer_dir, tmp_path):
    from tests.fixtures.recognition import write_generated_set

    unlabeled = write_generated_set(rdv_frames_dir, tmp_path / "nolabels", labels=False)
    _one_line_error(_run("map", unlabeled, "--recognizer", tiny_recognizer_dir), "no `triplets` labels")
    bad = write_generated_set(rdv_frames_dir, tmp_path / "badids")
    lines = (bad / "metadata.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["triplets"] = [7, 100]
    (bad / "metadata.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    _one_line_error(_run("map", bad, "--recognizer", tiny_recognizer_dir), "ids in 0..99, got [7, 100]")
    labelled = write_generated_set(rdv_frames_dir, tmp_path / "ok")
    _one_line_error(_run("map", labelled, "--recognizer", "yolov8n-seg"), "not a")  # a segmenter
    _one_line_error(_run("map", labelled, "--recognizer", tmp_path / "nothing"), "does not exist")
    _one_line_error(_run("map", tmp_path / "missing", "--recognizer", tiny_recognizer_dir), "not found")
    _one_line_error(_run("map", labelled, "--recognizer", tiny_recognizer_dir, "--mode", "frame"), "mode")
    _one_line_error(_run("map", rdv_frames_dir, "--recognizer", tiny_recognizer_dir, "--split", "holdout"),
                    "no images in split")


def test_train_recognizer_registers_and_resumes(rdv_frames_dir, tmp_path, one_torch_thread, monkeypatch):
    from lapgen import registry
    from lapgen.cards import read_card
    from lapgen.models.recognition import load_rendezvous
    from lapgen.models.recognition import train as train_mod

    out = tmp_path / "rdv-run"
    real_step = train_mod.train_step
    calls = {"n": 0}

    def interrupted(*args, **kwargs):  # the second epoch is interrupted after one step
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", interrupted)
    args = ["train-recognizer", "--data", rdv_frames_dir, "--out", out, "--name", "rdv-test", "--size", "64",
            "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-augment"]
    res = _run(*args)
    assert res.exit_code == 130 and not out.exists()
    assert (out.parent / "rdv-run.partial" / "last.pt").exists()
    monkeypatch.setattr(train_mod, "train_step", real_step)
    res = _run(*args, "--json")
    assert res.exit_code == 0, res.output
    assert "resuming recognizer training at epoch 2/2" in res.stderr
    card = read_card(out)
    assert card["kind"] == "recognizer" and [r["epoch"] for r in card["history"]] == [1, 2]
    assert card["image_size"] == [64, 64] and card["dataset"]["n_train"] == 14 and card["dataset"]["n_val"] == 7
    assert all("val_map_ivt" in r for r in card["history"]) and not (out / "last.pt").exists()
    model = load_rendezvous(out)
    assert model.config.image_size == (64, 64)
    entry = registry.resolve("rdv-test", kind="recognizer")
    assert entry.path == out.resolve() and registry.default_for("recognizer") == "rdv-test"
    # the registered name now scores a set; without --recognizer the default is used
    res = _run("map", rdv_frames_dir, "--boot", "0", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["recognizer"]["name"] == "rdv-test"
    # existing output is never overwritten without --overwrite
    _one_line_error(_run(*args), "already exists")


def test_train_recognizer_bad_inputs(rdv_frames_dir, rdv_generated_dir, tmp_path, monkeypatch):
    base = ["train-recognizer", "--out", tmp_path / "o", "--name", "r1", "--size", "64"]
    _one_line_error(_run(*base, "--data", tmp_path / "none"), "not found")
    from tests.fixtures.recognition import write_generated_set

    unlabeled = write_generated_set(rdv_frames_dir, tmp_path / "nolabels", labels=False)
    _one_line_error(_run(*base, "--data", unlabeled), "no CholecT50 triplet labels")
    _one_line_error(_run(*base, "--data", rdv_generated_dir), "no images in split 'train'")
    _one_line_error(_run(*base, "--data", rdv_frames_dir, "--size", "huge"), "invalid input size")
    _one_line_error(_run(*base, "--data", rdv_frames_dir, "--backbone", tmp_path / "r18.pth"),
                    "backbone weights file not found")
    _one_line_error(_run("train-recognizer", "--data", rdv_frames_dir, "--out", tmp_path / "o", "--name", "a/b"),
                    "invalid model name")
    # ImageNet initialisation downloads only when asked; offline it is a one-line error, before any output
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached copy
    _one_line_error(_run(*base, "--data", rdv_frames_dir, "--backbone", "imagenet"), "cannot download")
    # a local resnet18 state_dict is accepted; a file of something else is refused
    import torch

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "not-r18.pth")
    _one_line_error(_run(*base, "--data", rdv_frames_dir, "--backbone", tmp_path / "not-r18.pth"),
                    "not a torchvision resnet18 state_dict")
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_map_with_official_checkpoint_through_the_builtin_name(rdv_generated_dir, tmp_path, monkeypatch,
                                                               one_torch_thread):
    """An official-style file (plain torch.save of a LayerNorm model, released name) dropped into
    $LAPGEN_HOME/weights is found by `rdv-cholect50`, loaded strictly and run at 256x448."""
    import torch

    from lapgen.models.recognition import Rendezvous, RendezvousConfig

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    _one_line_error(_run("map", rdv_generated_dir, "--recognizer", "rdv-cholect50"), "no checkpoint on disk")
    weights = tmp_path / "home" / "weights"
    weights.mkdir(parents=True)
    torch.manual_seed(3)
    official = weights / "rendezvous_l8_cholect50_crossval_k1_layernorm_lowres.pth"
    torch.save(Rendezvous(RendezvousConfig(use_ln=True)).state_dict(), official)
    res = _run("map", rdv_generated_dir, "--recognizer", "rdv-cholect50", "--boot", "0", "--batch-size", "4",
               "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["recognizer"]["image_size"] == [256, 448] and result["recognizer"]["use_ln"]
    assert result["preprocessing"].startswith("rdv-resize-256x448")
    from lapgen.outputs import file_sha256

    assert result["weights_sha256"] == file_sha256(official)
    assert 0.0 < result["value"] <= 1.0


def test_map_skips_unlabelled_images_and_resamples_source_videos(rdv_frames_dir, tiny_recognizer_dir, tmp_path,
                                                                 one_torch_thread):
    """A set mixing labelled and unlabelled prompts scores the labelled ones (with a warning); source
    videos recorded by `lapgen sample` make the bootstrap resample whole videos (the mode stays global)."""
    from tests.fixtures.recognition import write_generated_set

    gen = write_generated_set(rdv_frames_dir, tmp_path / "mixed")
    test_recs = [r for r in _records(rdv_frames_dir) if r["split"] == "test"]
    lines = []
    for k, (rec, src) in enumerate(zip(_records(gen), test_recs)):
        rec["video"] = src["video"]
        if k < 3:
            del rec["triplets"]
        lines.append(json.dumps(rec))
    (gen / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    res = _run("map", gen, "--recognizer", tiny_recognizer_dir, "--boot", "20", "--json")
    assert res.exit_code == 0, res.output
    assert "3 of 14 images have no triplet labels" in " ".join(res.stderr.split())
    result = json.loads(res.stdout)
    assert result["n_gen"] == 11 and result["n_unlabelled_skipped"] == 3
    assert result["mode"] == "global" and result["n_videos"] == 2 and result["ci"]["unit"] == "video"


def test_map_result_feeds_the_table1_report(rdv_frames_dir, rdv_generated_dir, tiny_recognizer_dir, tmp_path,
                                            one_torch_thread):
    report = pytest.importorskip("lapgen.metrics.report")
    gen_json, real_json = tmp_path / "gen.json", tmp_path / "real.json"
    assert _run("map", rdv_generated_dir, "--recognizer", tiny_recognizer_dir, "--boot", "0", "--out", gen_json,
                "--model", "t50-unet-clip", "--setup", "CholecT50+80 (UNet+CLIP)", "--epoch", "10").exit_code == 0
    assert _run("map", rdv_frames_dir, "--recognizer", tiny_recognizer_dir, "--boot", "0", "--mode", "global",
                "--out", real_json).exit_code == 0
    built = report.build_report([gen_json, real_json])
    rows = {r["paper_setup"]: r for r in built["rows"]}
    gen_value = json.loads(gen_json.read_text())["value"]
    assert rows["CholecT50+80 (UNet+CLIP)"]["ours"]["map"] == gen_value
    assert rows["CholecT50+80 (UNet+CLIP)"]["paper"]["map"] == 0.2055
    assert rows["real CholecT50 frames (RDV)"]["ours"]["map"] == json.loads(real_json.read_text())["value"]
    assert rows["real CholecT50 frames (RDV)"]["paper"]["map"] == 0.2990
    detail = next(d for d in built["details"] if d["metric"] == "map" and d["epoch"] == 10)
    assert detail["key"] == "map[global,ivt]" and detail["protocol"] == "global"


def test_commands_join_the_lapgen_eval_group():
    from lapgen.cli.main import app

    for command in ("map", "train-recognizer"):
        res = runner.invoke(app, ["eval", command, "--help"])
        assert res.exit_code == 0, res.output
        assert "Rendezvous" in res.stdout
