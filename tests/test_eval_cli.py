"""`lapgen eval fid|kid|clip-fid|cmmd|fidelity|report`: values equal the library on the same features,
one pass per extractor, the cache across runs, confidence options, outputs and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.metrics import cmmd, frechet_distance, kid
from lapgen.metrics.confidence import summarize
from lapgen.metrics.features import FeatureExtractor, compute_features
from lapgen.metrics.images import open_image_set
from tests.fixtures.metrics import make_image_set

runner = CliRunner()


@pytest.fixture()
def args(small_inception, tiny_clip):
    """Extractor options pointing every metric at the random-weight test extractors."""
    inc, inc_w = small_inception
    clip, clip_w = tiny_clip
    return ["--inception", inc, "--weights", str(inc_w), "--clip-fid-model", clip, "--clip-fid-weights",
            str(clip_w), "--clip", clip, "--cmmd-weights", str(clip_w)]


def _run(argv):
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, (result.output, result.stderr if result.stderr_bytes is not None else "")
    return json.loads(result.stdout)


def _feats(name, weights, folder, protocol):
    return compute_features(open_image_set(folder), FeatureExtractor(name, weights=weights), protocol,
                            use_cache=False).features


def test_fidelity_equals_library_on_the_same_features(args, small_inception, tiny_clip, image_sets):
    out = _run(["eval", "fidelity", str(image_sets["gen"]), str(image_sets["real"]), *args, "--json"])
    by = {r["metric"]: r for r in out["results"]}
    assert set(by) == {"fid", "kid", "clip_fid", "cmmd"}
    gi, ri = (_feats(*small_inception, image_sets[k], "clean") for k in ("gen", "real"))
    gc, rc = (_feats(*tiny_clip, image_sets[k], "cmmd") for k in ("gen", "real"))
    assert by["fid"]["value"] == pytest.approx(frechet_distance(gi, ri), rel=1e-6)
    assert by["kid"]["value"] == pytest.approx(kid(gi, ri, subset_size=10)[0], rel=1e-6)
    assert by["kid"]["params"]["subset_size"] == 10  # min(N_gen, N_real, 1000), recorded
    assert by["clip_fid"]["value"] == pytest.approx(frechet_distance(gc, rc), rel=1e-6)
    assert by["cmmd"]["value"] == pytest.approx(cmmd(gc, rc), rel=1e-6)
    for r in out["results"]:
        assert r["n_gen"] == 10 and r["n_real"] == 10 and len(r["weights_sha256"]) == 64
        assert r["schema"] == "lapgen.eval/1" and r["libraries"]["torch-fidelity"]
    assert by["fid"]["protocol"] == "clean" and by["fid"]["extractor"] == "test-inception-75"
    assert by["fid"]["value"] > 0.05 and by["cmmd"]["value"] > 0


def test_single_metric_commands_match_fidelity(args, image_sets, small_inception, tiny_clip):
    both = {r["metric"]: r["value"] for r in _run(["eval", "fidelity", str(image_sets["gen2"]),
                                                    str(image_sets["real"]), *args, "--json"])["results"]}
    inc, inc_w = small_inception
    clip, clip_w = tiny_clip
    fid = _run(["eval", "fid", str(image_sets["gen2"]), str(image_sets["real"]), "--inception", inc,
                "--weights", str(inc_w), "--json"])
    cm = _run(["eval", "cmmd", str(image_sets["gen2"]), str(image_sets["real"]), "--clip", clip,
               "--weights", str(clip_w), "--json"])
    cf = _run(["eval", "clip-fid", str(image_sets["gen2"]), str(image_sets["real"]), "--clip-fid-model", clip,
               "--weights", str(clip_w), "--json"])
    assert (fid["value"], cm["value"], cf["value"]) == (both["fid"], both["cmmd"], both["clip_fid"])
    assert fid["cached"] == {"gen": True, "real": True}  # the second evaluation reads every feature


def test_one_clip_pass_for_clip_fid_and_cmmd_and_cache_for_real(args, tmp_path, monkeypatch):
    calls: dict[str, int] = {}
    real_forward = FeatureExtractor.forward

    def counting(self, batch, protocol):
        calls[self.name] = calls.get(self.name, 0) + len(batch)
        return real_forward(self, batch, protocol)

    monkeypatch.setattr(FeatureExtractor, "forward", counting)
    real = make_image_set(tmp_path / "real", 6, seed=40)
    gen_a = make_image_set(tmp_path / "a", 6, shift=0.1, seed=41)
    gen_b = make_image_set(tmp_path / "b", 6, shift=0.2, seed=42)
    _run(["eval", "fidelity", str(gen_a), str(real), *args, "--json"])
    assert calls == {"test-inception-75": 12, "test-tiny-clip": 12}  # one pass per extractor per set
    calls.clear()
    out = _run(["eval", "fidelity", str(gen_b), str(real), *args, "--json"])
    assert calls == {"test-inception-75": 6, "test-tiny-clip": 6}  # REAL came from the cache
    assert all(r["cached"]["real"] for r in out["results"])
    calls.clear()
    _run(["eval", "fidelity", str(gen_a), str(real), *args, "--json", "--no-cache"])
    assert calls == {"test-inception-75": 12, "test-tiny-clip": 12}  # without the cache: still one CLIP pass


def test_non_square_images_take_two_clip_passes(args, tmp_path, monkeypatch):
    calls = []
    real_forward = FeatureExtractor.forward
    monkeypatch.setattr(FeatureExtractor, "forward",
                        lambda self, b, p: calls.append(p) or real_forward(self, b, p))
    real = make_image_set(tmp_path / "real", 4, seed=43, size=(80, 64))
    gen = make_image_set(tmp_path / "gen", 4, seed=44, size=(80, 64))
    out = _run(["eval", "fidelity", str(gen), str(real), *args, "--json", "--no-cache"])
    by = {r["metric"]: r for r in out["results"]}
    assert by["clip_fid"]["preprocessing"] != by["cmmd"]["preprocessing"]
    assert calls.count("clip-fid") == 2 and calls.count("cmmd") == 2


def test_seeds_splits_and_several_gen_sets(args, image_sets, tmp_path):
    seeds = tmp_path / "seeds"
    for i in range(3):
        make_image_set(seeds / f"seed{i}", 10, shift=0.15, seed=60 + i)
    out = _run(["eval", "cmmd", str(seeds), str(image_sets["real"]), *args[-4:], "--seeds", "3", "--json"])
    each = [_run(["eval", "cmmd", str(seeds / f"seed{i}"), str(image_sets["real"]), *args[-4:], "--json"])["value"]
            for i in range(3)]
    assert out["spread"]["method"] == "seeds" and out["spread"]["values"] == each
    assert out["value"] == pytest.approx(summarize(each)["mean"]) and out["spread"]["sd"] > 0
    split = _run(["eval", "fid", str(image_sets["gen"]), str(image_sets["real"]), *args[:4], "--splits", "2",
                  "--json"])
    assert split["spread"]["method"] == "disjoint-splits" and split["spread"]["n_gen_per_split"] == 5
    multi = _run(["eval", "fid", str(image_sets["gen"]), str(image_sets["gen2"]), str(image_sets["real"]),
                  *args[:4], "--json"])
    assert [Path(r["gen"]).name for r in multi["results"]] == ["gen", "gen2"]


def test_unequal_n_warns_and_out_file(args, image_sets, tmp_path):
    small = make_image_set(tmp_path / "small", 6, seed=70)
    out = tmp_path / "res" / "fid.json"
    result = runner.invoke(app, ["eval", "fid", str(small), str(image_sets["real"]), *args[:4], "--out", str(out)])
    assert result.exit_code == 0
    assert "differs from N_real=10" in " ".join(result.stderr.split())
    data = json.loads(out.read_text())
    assert data["metric"] == "fid" and data["n_gen"] == 6
    assert (out.parent / "fid.json.lapgen.yaml").exists()
    again = runner.invoke(app, ["eval", "fid", str(small), str(image_sets["real"]), *args[:4], "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.stderr


def _one_line_error(argv, needle):
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lapgen: error:") and needle in lines[0], lines
    return lines[0]


def test_bad_inputs_are_one_line_errors(args, image_sets, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(["eval", "fid", str(empty), str(image_sets["real"]), *args[:4]], "has no images")
    mixed = make_image_set(tmp_path / "mixed", 3, seed=80)
    make_image_set(tmp_path / "other", 1, seed=81, size=(32, 48))
    (tmp_path / "other" / "0000.png").replace(mixed / "9999.png")
    _one_line_error(["eval", "fid", str(mixed), str(image_sets["real"]), *args[:4]], "mixed image sizes")
    _one_line_error(["eval", "kid", str(image_sets["gen"]), str(image_sets["real"]), *args[:4],
                     "--kid-subset-size", "50"], "KID subset size 50")
    _one_line_error(["eval", "fid", str(image_sets["gen"]), str(tmp_path / "nope"), *args[:4]], "does not exist")
    _one_line_error(["eval", "fid", str(image_sets["gen"])], "at least one GEN")
    _one_line_error(["eval", "fid", str(image_sets["gen"]), str(image_sets["real"]), "--weights",
                     str(tmp_path / "missing.pth")], "weights file does not exist")
    _one_line_error(["eval", "cmmd", str(image_sets["gen"]), str(image_sets["real"]), "--clip", "vit-h"],
                    "unknown feature extractor")
    _one_line_error(["eval", "fid", str(image_sets["gen"]), str(image_sets["real"]), *args[:4], "--protocol",
                     "legacy"], "unknown protocol")
    _one_line_error(["eval", "cmmd", str(image_sets["gen"]), str(image_sets["real"]), *args[-4:], "--seeds", "3"],
                    "--seeds 3 but 1 generated set")


def test_report_with_paper_numbers_plot_and_map_column(args, image_sets, tmp_path):
    runs = tmp_path / "runs"
    for epoch, key in ((1, "gen2"), (5, "gen")):
        _run(["eval", "fidelity", str(image_sets[key]), str(image_sets["real"]), *args, "--setup", "t50+80",
              "--epoch", str(epoch), "--model", "mine", "--out", str(runs / f"fid-e{epoch}.json"), "--json"])
    # mAP results from `lapgen eval map`, in both accepted shapes
    (runs / "map-e1.json").write_text(json.dumps({"metric": "map", "value": 0.061, "variant": "global",
                                                  "model": "mine", "setup": "t50+80", "epoch": 1,
                                                  "n_gen": 10, "gen": "x", "extractor": "rdv",
                                                  "ci": {"low": 0.05, "high": 0.07, "method": "bootstrap"}}))
    (runs / "map-e5.json").write_text(json.dumps({"map": {"ivt": 0.11}, "model": "mine", "setup": "t50+80",
                                                  "epoch": 5, "gen": "x"}))
    (runs / "notes.json").write_text(json.dumps({"unrelated": True}))
    (runs / "f1.json").write_text(json.dumps({"metric": "f1", "value": 0.42, "model": "cn", "setup": "controlnet",
                                              "epoch": 100, "n_gen": 6, "gen": "y", "extractor": "yolo",
                                              "ci": {"micro_ci": [0.4, 0.45], "method": "image-bootstrap"},
                                              "instance": {"value": 0.5, "key": "f1_instance_yolo_val"}}))
    out = tmp_path / "report" / "report.md"
    result = runner.invoke(app, ["eval", "report", str(runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| mine | t50+80 | 1 |" in text and "(49.428)" in text and "(0.0526)" in text  # paper beside ours
    assert "0.061 (0.0526)" in text and "0.11 (0.0939)" in text
    assert "no: N 10/10 != 10000/10000" in text and "Protocol notes" in text
    assert "| cn | controlnet | 100 |" in text and "0.5 (0.71)" in text and "[0.4, 0.45]" in text
    report = json.loads(out.with_suffix(".json").read_text())
    row = next(r for r in report["rows"] if r["epoch"] == 5)
    assert row["paper_setup"] == "CholecT50+80 (UNet)" and row["paper"]["fid"] == 40.011
    fid5 = json.loads((runs / "fid-e5.json").read_text())["results"][0]
    assert row["ours"]["fid"] == fid5["value"]
    assert out.with_suffix(".png").stat().st_size > 1000
    again = runner.invoke(app, ["eval", "report", str(runs), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.stderr
    _one_line_error(["eval", "report", str(tmp_path / "empty-none"), "--out", str(tmp_path / "r.md")],
                    "does not exist")
    (tmp_path / "nothing").mkdir()
    _one_line_error(["eval", "report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r.md")],
                    "no eval results")


def test_extractors_list():
    out = _run(["eval", "extractors", "--json"])
    names = {r["name"] for r in out}
    assert {"inception-v3", "clip-vit-b-32", "clip-vit-l-14-336"} <= names


def test_eval_help_is_light():
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom lapgen.cli.main import app\n"
            "for c in ['fid', 'kid', 'clip-fid', 'cmmd', 'fidelity', 'f1', 'report', 'extractors']:\n"
            "    assert CliRunner().invoke(app, ['eval', c, '--help']).exit_code == 0, c\n"
            "print([m for m in ('torch', 'open_clip', 'ultralytics', 'torch_fidelity', 'cv2') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_protocol_is_recorded_and_changes_the_value(args, image_sets, small_inception):
    clean = _run(["eval", "fid", str(image_sets["gen"]), str(image_sets["real"]), *args[:4], "--json"])
    tf = _run(["eval", "fid", str(image_sets["gen"]), str(image_sets["real"]), *args[:4], "--protocol",
               "torch-fidelity", "--json"])
    assert (clean["protocol"], tf["protocol"]) == ("clean", "torch-fidelity")
    assert clean["preprocessing"] != tf["preprocessing"] and clean["value"] != tf["value"]
    gi, ri = (_feats(*small_inception, image_sets[k], "torch-fidelity") for k in ("gen", "real"))
    assert tf["value"] == pytest.approx(frechet_distance(gi, ri), rel=1e-6)


def test_labels_from_the_card_and_the_trained_model(args, image_sets, tmp_path):
    from lapgen.cards import make_card, write_card
    from lapgen.registry import register_artifact

    run = tmp_path / "run"
    run.mkdir()
    register_artifact("t50-unet-run", "pipeline", run, make_card("pipeline", training={"epochs": 5, "steps": 9}),
                      make_default=False)
    gen = make_image_set(tmp_path / "gen", 10, shift=0.1, seed=90)
    write_card(gen, make_card("generated-set", model="t50-unet-run", controlnet=None, setup="t50-unet"))
    out = _run(["eval", "cmmd", str(gen), str(image_sets["real"]), *args[-4:], "--json"])
    assert (out["model"], out["setup"], out["epoch"]) == ("t50-unet-run", "t50-unet", 5)
    over = _run(["eval", "cmmd", str(gen), str(image_sets["real"]), *args[-4:], "--epoch", "7", "--json"])
    assert over["epoch"] == 7


def test_map_comparability_follows_the_paper_row():
    """Generated rows compare with a global (one pseudo-video) mAP; the real-frames row (0.2990, the
    published RDV AP_IVT) with a video-wise one."""
    from lapgen.metrics.report import comparability

    gen = {"metric": "map", "value": 0.2, "setup": "t50+80-unet+clip", "epoch": 10}
    real = {"metric": "map", "value": 0.3, "setup": "real", "model": "frames"}
    assert not any("mode" in w for w in comparability({**gen, "variant": "global"})[1])
    assert any("paper: one pseudo-video = global" in w for w in comparability({**gen, "variant": "video"})[1])
    assert not any("mode" in w for w in comparability({**real, "variant": "video"})[1])
    assert any("video-wise" in w for w in comparability({**real, "variant": "global"})[1])
    assert any("published Rendezvous" in w for w in comparability(real)[1])


def test_weights_from_the_registry_or_a_one_line_error_offline(image_sets, inception_weights, tmp_path,
                                                               monkeypatch):
    """Without --weights: a copy of the released file under its released name in $LAPGEN_HOME/weights is
    the built-in entry's file; with no file anywhere and the hub offline, one line names --weights."""
    import shutil

    from lapgen.metrics.features import FeatureExtractor
    from lapgen.metrics.weights import INCEPTION_URL

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no torch hub copy either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen, real = str(image_sets["gen"]), str(image_sets["real"])
    _one_line_error(["eval", "fid", gen, real], "--weights")
    _one_line_error(["eval", "cmmd", gen, real], "--weights")
    released = tmp_path / "home" / "weights" / INCEPTION_URL.rsplit("/", 1)[1]
    released.parent.mkdir(parents=True)
    shutil.copyfile(inception_weights, released)
    ext = FeatureExtractor("inception-v3")
    assert ext.weights_path == released and ext.describe()["weights"] == str(released)


def test_offline_error_lists_the_registered_extractors_and_marks_random_demo_ones(image_sets, inception_weights,
                                                                                  tmp_path, monkeypatch):
    """The missing-weights line names the registry's own Inception entries (the demo registers random-weight
    ones) and says which are random; `--weights NAME` then uses one."""
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    added = runner.invoke(app, ["models", "add", "demo-inception-random", str(inception_weights), "--kind", "feature-extractor",
                  "--description", "Inception-v3, lapgen demo: RANDOM weights (seeded)"])
    assert added.exit_code == 0, added.output
    assert runner.invoke(app, ["models", "add", "my-clip", str(inception_weights), "--kind", "feature-extractor",
                 "--description", "CLIP ViT-B/32 weights"]).exit_code == 0
    gen, real = str(image_sets["gen"]), str(image_sets["real"])
    line = _one_line_error(["eval", "fid", gen, real], "registered Inception extractors")
    assert "demo-inception-random (local weights; random-weight demo extractor" in line
    assert "inception-v3 (no local weights)" in line and "my-clip" not in line
    result = _run(["eval", "fid", gen, real, "--weights", "demo-inception-random", "--json"])
    from lapgen.outputs import file_sha256

    assert result["extractor"] == "inception-v3" and result["weights_sha256"] == file_sha256(inception_weights)
