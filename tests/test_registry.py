"""Checkpoint registry and `lapgen models`: built-ins, user entries, defaults, trained artefacts, errors.

Every test gets its own $LAPGEN_HOME so registering defaults never leaks into other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from lapgen import registry
from lapgen.cards import make_card, update_card, write_card
from lapgen.cli.main import app
from lapgen.errors import LapgenError

runner = CliRunner()
BUILTINS = ["sd15", "tiny-sd", "clip-vit-b-32", "clip-vit-l-14-336", "inception-v3", "yolov8n-seg",
            "rdv-cholect50"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _pipeline_dir(root, name="pipe"):
    d = root / name
    d.mkdir(parents=True)
    (d / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return d


def _controlnet_dir(root, name="cn"):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    return d


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lapgen: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- contract over every built-in ---------------------------------------------------------------------

@pytest.mark.parametrize("name", registry.builtin_names())
def test_every_builtin_resolves_and_shows(name):
    entry = registry.resolve(name)
    assert entry.name == name and entry.builtin and not entry.user
    assert entry.kind in registry.KINDS
    assert entry.source and entry.description
    assert registry.resolve(name, entry.kind) == entry
    result = runner.invoke(app, ["models", "show", name, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["name"] == name and shown["kind"] == entry.kind and shown["source"] == entry.source


def test_required_builtins_and_their_sources():
    assert set(BUILTINS) <= set(registry.builtin_names())
    assert registry.resolve("sd15").hub_id == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert registry.resolve("clip-vit-b-32").options["arch"] == "ViT-B-32-quickgelu"
    kinds = {n: registry.resolve(n).kind for n in BUILTINS}
    assert kinds == {"sd15": "pipeline", "tiny-sd": "pipeline", "clip-vit-b-32": "feature-extractor",
                     "clip-vit-l-14-336": "feature-extractor", "inception-v3": "feature-extractor",
                     "yolov8n-seg": "segmenter", "rdv-cholect50": "recognizer"}


def test_list_table_and_json():
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    for name in BUILTINS:
        assert name in result.stdout
    rows = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["tiny-sd"]["present"] is True  # built offline from configs
    assert by_name["sd15"]["present"] is False  # not in the (empty) hub cache
    assert by_name["sd15"]["default"] is True
    only = json.loads(runner.invoke(app, ["models", "list", "--kind", "segmenter", "--json"]).stdout)
    assert [r["name"] for r in only] == ["yolov8n-seg"]


def test_list_and_show_do_not_import_torch(tmp_path):
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom lapgen.cli.main import app\n"
        "r = CliRunner()\n"
        "assert r.invoke(app, ['models', 'list']).exit_code == 0\n"
        "assert r.invoke(app, ['models', 'show', 'sd15']).exit_code == 0\n"
        "heavy = ('torch', 'diffusers', 'transformers', 'open_clip', 'ultralytics')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "LAPGEN_HOME": str(tmp_path)})
    assert out.stdout.strip() == ""


# -- sources ---------------------------------------------------------------------------------------------

def test_hub_source():
    entry = registry.resolve("hf:someorg/some-model@v2", "pipeline")
    assert entry.hub_id == "someorg/some-model" and entry.revision == "v2" and entry.path is None
    assert registry.resolve("hf:someorg/cn", "controlnet").kind == "controlnet"
    with pytest.raises(LapgenError, match="hf:ORG/NAME"):
        registry.resolve("hf:not-a-repo")


def test_local_paths_detect_kind(tmp_path):
    pipe, cn = _pipeline_dir(tmp_path), _controlnet_dir(tmp_path)
    assert registry.resolve(str(pipe)).kind == "pipeline"
    assert registry.resolve(str(cn)).kind == "controlnet"
    assert registry.resolve(str(pipe)).path == pipe.resolve()
    yolo = tmp_path / "yolov8n-seg-trained.pt"
    yolo.write_bytes(b"x")
    assert registry.resolve(str(yolo)).kind == "segmenter"
    with pytest.raises(LapgenError, match="is a diffusion pipeline, not a ControlNet"):
        registry.resolve(str(pipe), "controlnet")


def test_unknown_name_lists_valid_names():
    with pytest.raises(LapgenError) as err:
        registry.resolve("sd-15", "pipeline")
    msg = str(err.value)
    assert "unknown diffusion pipeline model 'sd-15'" in msg and "sd15" in msg and "tiny-sd" in msg
    assert "yolov8n-seg" not in msg  # only names of the asked kind
    line = _one_line_error(runner.invoke(app, ["models", "show", "nope"]))
    assert "sd15" in line and "hf:ORG/NAME" in line


def test_missing_local_path_and_kind_mismatch_errors(tmp_path):
    line = _one_line_error(runner.invoke(app, ["models", "show", str(tmp_path / "no" / "such")]))
    assert "does not exist" in line and str(tmp_path / "no" / "such") in line
    with pytest.raises(LapgenError, match="is a tool segmenter, not a diffusion pipeline"):
        registry.resolve("yolov8n-seg", "pipeline")
    with pytest.raises(LapgenError, match="unknown model kind"):
        registry.resolve("sd15", "vae")


# -- user entries and defaults ---------------------------------------------------------------------------

def test_add_show_use_remove_cycle(tmp_path, home):
    pipe = _pipeline_dir(tmp_path)
    write_card(pipe, make_card("pipeline", description="my stage-1 model", parent="sd15"))
    result = runner.invoke(app, ["models", "add", "mine", str(pipe)])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load((home / "registry.yaml").read_text())
    assert data["entries"]["mine"]["path"] == str(pipe.resolve())
    shown = json.loads(runner.invoke(app, ["models", "show", "mine", "--json"]).stdout)
    assert shown["kind"] == "pipeline" and shown["card"]["parent"] == "sd15"
    assert shown["description"] == "my stage-1 model"
    assert registry.default_for("pipeline") == "sd15"
    assert runner.invoke(app, ["models", "use", "mine"]).exit_code == 0
    assert registry.default_for("pipeline") == "mine"
    assert registry.resolve(None, "pipeline").name == "mine"
    assert runner.invoke(app, ["models", "remove", "mine"]).exit_code == 0
    assert registry.default_for("pipeline") == "sd15"  # default dropped with the entry
    _one_line_error(runner.invoke(app, ["models", "show", "mine"]))


def test_add_errors(tmp_path):
    assert "pass --kind" in _one_line_error(runner.invoke(app, ["models", "add", "x", str(tmp_path)]))
    missing = runner.invoke(app, ["models", "add", "x", str(tmp_path / "nope")])
    assert "does not exist" in _one_line_error(missing)
    assert "invalid model name" in _one_line_error(runner.invoke(app, ["models", "add", "a/b", "hf:o/n"]))
    assert "cannot be removed" in _one_line_error(runner.invoke(app, ["models", "remove", "sd15"]))
    line = _one_line_error(runner.invoke(app, ["models", "add", "inception-v3", "hf:o/n"]))
    assert "not the hub" in line


def test_hub_entry_and_kind_option():
    result = runner.invoke(app, ["models", "add", "cn-hub", "hf:org/controlnet", "--kind", "controlnet"])
    assert result.exit_code == 0
    entry = registry.resolve("cn-hub", "controlnet")
    assert entry.hub_id == "org/controlnet" and entry.present() is False


def test_builtin_pointed_at_local_weights(tmp_path):
    weights = tmp_path / "ViT-B-32.pt"
    weights.write_bytes(b"weights")
    assert runner.invoke(app, ["models", "add", "clip-vit-b-32", str(weights)]).exit_code == 0
    entry = registry.resolve("clip-vit-b-32", "feature-extractor")
    assert entry.builtin and entry.user and entry.path == weights.resolve() and entry.present()
    assert entry.options["arch"] == "ViT-B-32-quickgelu"  # keeps the built-in's meaning
    registry.remove_entry("clip-vit-b-32")
    assert registry.resolve("clip-vit-b-32").path is None


def test_builtin_weights_found_in_home_weights_folder(home):
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    entry = registry.resolve("inception-v3")
    assert entry.path == home / "weights" / "weights-inception-2015-12-05-6726825d.pth" and entry.present()


def test_register_artifact_becomes_default_and_card_updates_show(tmp_path):
    run = _controlnet_dir(tmp_path, "run1")
    card = make_card("controlnet", parent="stage1", dataset="/data/frames", epochs=3, config={"lr": 1e-5})
    entry = registry.register_artifact("cn-v1", "controlnet", run, card)
    assert (run / "lapgen.yaml").exists()  # written since the folder had no card
    assert entry.kind == "controlnet" and entry.card["epochs"] == 3
    assert registry.default_for("controlnet") == "cn-v1"
    assert registry.resolve(None, "controlnet").path == run.resolve()
    update_card(run, metrics={"fid": 12.5})
    assert registry.resolve("cn-v1").card["metrics"]["fid"] == 12.5
    run2 = _controlnet_dir(tmp_path, "run2")
    registry.register_artifact("cn-v2", "controlnet", run2, card, make_default=False)
    assert registry.default_for("controlnet") == "cn-v1"
    registry.register_artifact("cn-v2", "controlnet", run2, card)  # re-register: last trained wins
    assert registry.default_for("controlnet") == "cn-v2"


def test_register_artifact_errors(tmp_path):
    with pytest.raises(LapgenError, match="built-in model name"):
        registry.register_artifact("sd15", "pipeline", _pipeline_dir(tmp_path))
    with pytest.raises(LapgenError, match="does not exist"):
        registry.register_artifact("x", "pipeline", tmp_path / "missing")
    with pytest.raises(LapgenError, match="unknown model kind"):
        registry.register_artifact("x", "vae", tmp_path)


def test_no_default_controlnet_yet():
    with pytest.raises(LapgenError, match="no default ControlNet yet"):
        registry.resolve(None, "controlnet")


def test_corrupt_registry_file_is_a_one_line_error(home):
    home.mkdir(parents=True)
    (home / "registry.yaml").write_text("entries: [unclosed")
    line = _one_line_error(runner.invoke(app, ["models", "list"]))
    assert "registry.yaml" in line


def test_hub_cache_makes_entry_present(tmp_path, monkeypatch):
    """A hub snapshot in the Hugging Face cache layout counts as present (no network)."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hub"
    snap = cache / "models--org--cached" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text("{}")
    (cache / "models--org--cached" / "refs").mkdir()
    (cache / "models--org--cached" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    assert registry.resolve("hf:org/cached").present() is True
    assert registry.resolve("hf:org/absent").present() is False


def test_lapgen_dataset_folder_is_not_a_model(tmp_path):
    data = tmp_path / "frames"
    write_card(data, make_card("frames-dataset"))
    with pytest.raises(LapgenError, match="this is a frames-dataset written by lapgen, not a model"):
        registry.resolve(str(data), "pipeline")
    yolo_data = tmp_path / "yolo"
    write_card(yolo_data, make_card("yolo-seg-dataset"))
    assert registry.detect_kind(yolo_data) is None


def test_add_refuses_a_dataset_or_a_folder_of_another_kind(tmp_path):
    data = tmp_path / "frames"
    write_card(data, make_card("frames-dataset"))
    line = _one_line_error(runner.invoke(app, ["models", "add", "x", str(data), "--kind", "pipeline"]))
    assert "this is a frames-dataset written by lapgen, not a model" in line
    cn = _controlnet_dir(tmp_path)
    line = _one_line_error(runner.invoke(app, ["models", "add", "x", str(cn), "--kind", "pipeline"]))
    assert "cn is a ControlNet, not a diffusion pipeline" in line and "--kind controlnet" in line
    line = _one_line_error(runner.invoke(app, ["models", "add", "sd15", str(cn)]))
    assert "not a diffusion pipeline" in line
    assert registry.list_entries() == [registry.resolve(n) for n in registry.builtin_names()]  # nothing added
    # agreeing kinds still register; a weights file may take any kind (its name is only a guess)
    assert runner.invoke(app, ["models", "add", "x", str(cn), "--kind", "controlnet"]).exit_code == 0
    weights = tmp_path / "clip_yolo.pt"
    weights.write_bytes(b"w")
    assert runner.invoke(app, ["models", "add", "y", str(weights), "--kind", "recognizer"]).exit_code == 0
    assert registry.resolve("y").kind == "recognizer"


def test_builtin_table_is_plain_data():
    from lapgen.registry_builtins import BUILTIN_DEFAULTS, BUILTINS

    assert yaml.safe_load(yaml.safe_dump(BUILTINS)) == BUILTINS
    for kind, name in BUILTIN_DEFAULTS.items():
        assert kind in registry.KINDS and (name is None or BUILTINS[name]["kind"] == kind)


def _trained(tmp_path, name, kind):
    folder = _pipeline_dir(tmp_path, name) if kind == "pipeline" else _controlnet_dir(tmp_path, name)
    card = make_card(kind, name=name, training={"steps": 3, "epochs": 1})
    registry.register_artifact(name, kind, folder, card)
    return folder


def _generated(tmp_path, name, **card):
    folder = tmp_path / name
    write_card(folder, make_card("generated-set", **card))
    return folder


FID_KEY = "fid[inception-v3-clean,sha256=0123456789ab]"


def _result(gen, key=FID_KEY, value=12.5, n_real=4, real="/data/real"):
    return {"metric": key.split("[")[0], "key": key, "value": value, "gen": str(gen), "real": real,
            "n_gen": 4, "n_real": n_real, "extractor": "inception-v3", "protocol": "clean", "setup": "t2i",
            "created": "2026-01-01T00:00:00+00:00"}


def _values(card, key=FID_KEY):
    return [(r["value"], r["n_real"]) for r in card["metrics"][key]]


def test_eval_results_are_recorded_in_the_trained_models_card(tmp_path):
    """A registered artefact's card carries its metrics once evaluated (`models show`)."""
    stage1 = _trained(tmp_path, "stage1", "pipeline")
    _trained(tmp_path, "cn", "controlnet")
    plain = _generated(tmp_path, "gen-plain", model="stage1", controlnet=None)
    controlled = _generated(tmp_path, "gen-cn", model="stage1", controlnet="cn")
    by_path = _generated(tmp_path, "gen-path", model=str(stage1))
    builtin = _generated(tmp_path, "gen-sd15", model="sd15")
    assert registry.record_metrics([_result(plain)]) == ["stage1"]
    assert registry.record_metrics([_result(controlled, value=9.0)]) == ["cn"]  # the ControlNet made it
    assert registry.record_metrics([_result(builtin), _result(tmp_path / "no-card")]) == []
    assert registry.record_metrics([_result(by_path, key="kid[x]", value=0.01)]) == [str(stage1.resolve())]
    shown = json.loads(runner.invoke(app, ["models", "show", "stage1", "--json"]).stdout)
    metrics = shown["card"]["metrics"]
    assert set(metrics) == {FID_KEY, "kid[x]"} and _values(shown["card"]) == [(12.5, 4)]
    assert metrics["kid[x]"][0]["gen"] == str(by_path) and metrics["kid[x]"][0]["setup"] == "t2i"
    assert _values(registry.resolve("cn").card) == [(9.0, 4)]
    # a re-run of the same measurement (same sets, same N, same protocol) replaces it; the card keeps the rest
    registry.record_metrics([_result(plain, value=11.0)])
    card = registry.resolve("stage1").card
    assert _values(card) == [(11.0, 4)]
    assert card["training"] == {"steps": 3, "epochs": 1} and len(card["metrics"]) == 2
    # a folder that lapgen did not train (no `training` in its card) is never written to
    external = _pipeline_dir(tmp_path, "external")
    write_card(external, make_card("pipeline", name="external"))
    registry.add_entry("external", str(external))
    assert registry.record_metrics([_result(_generated(tmp_path, "gen-ext", model="external"))]) == []
    assert "metrics" not in registry.resolve("external").card


def test_a_card_never_mixes_protocols_silently(tmp_path):
    """FID against 297 real images is kept beside FID against 24, each with its N; KID measured only against
    24 stays recorded with N=24, so no value on the card claims a protocol it was not measured with."""
    _trained(tmp_path, "stage1", "pipeline")
    gen = _generated(tmp_path, "gen", model="stage1")
    registry.record_metrics([_result(gen, value=80.0, n_real=24, real="/demo/real"),
                             _result(gen, key="kid[clean]", value=0.05, n_real=24, real="/demo/real")])
    registry.record_metrics([_result(gen, value=60.0, n_real=297, real="/data/real-297")])
    card = registry.resolve("stage1").card
    assert _values(card) == [(80.0, 24), (60.0, 297)]
    assert _values(card, "kid[clean]") == [(0.05, 24)]
    assert {r["real"] for r in card["metrics"][FID_KEY]} == {"/demo/real", "/data/real-297"}
    # another protocol on the same sets is another measurement, kept too
    registry.record_metrics([{**_result(gen, value=61.0, n_real=297, real="/data/real-297"),
                              "protocol": "torch-fidelity"}])
    assert [r["protocol"] for r in registry.resolve("stage1").card["metrics"][FID_KEY]] == [
        "clean", "clean", "torch-fidelity"]


def test_an_older_card_entry_is_kept_when_a_new_result_arrives(tmp_path):
    from lapgen.cards import update_card

    stage1 = _trained(tmp_path, "stage1", "pipeline")
    old = {k: v for k, v in _result(tmp_path / "old-gen").items() if k in ("metric", "value", "gen", "n_real")}
    update_card(stage1, metrics={FID_KEY: old})  # the one-dict-per-key layout of earlier lapgen versions
    registry.record_metrics([_result(_generated(tmp_path, "gen", model="stage1"), value=3.0)])
    assert [r["value"] for r in registry.resolve("stage1").card["metrics"][FID_KEY]] == [12.5, 3.0]


def test_lapgen_eval_records_its_result(tmp_path, monkeypatch):
    from lapgen.metrics import evaluate

    _trained(tmp_path, "stage1", "pipeline")
    gen = _generated(tmp_path, "gen", model="stage1")
    monkeypatch.setattr(evaluate, "evaluate_fidelity", lambda cfg: [_result(gen, value=7.0)])
    result = runner.invoke(app, ["eval", "fid", str(gen), str(tmp_path / "real"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["value"] == 7.0
    assert "recorded in the card of stage1" in result.stderr
    assert _values(registry.resolve("stage1").card) == [(7.0, 4)]


# ------------------------------------------------------------------------------ which default a command took


def test_a_default_is_named_once_with_who_set_it(tmp_path, capsys):
    """Falling back to a default prints one line naming the model and why; an explicit name prints nothing."""
    registry.reset_announcements()
    assert registry.resolve(None, "pipeline").name == "sd15"
    assert capsys.readouterr().err.strip() == "model: sd15 (registry default, built-in default)"

    registry.add_entry("stage1", str(_pipeline_dir(tmp_path)))
    registry.set_default("stage1", origin="set by lapgen demo")
    registry.resolve(None, "pipeline")
    registry.resolve(None, "pipeline")  # the same command asking again: no second line
    assert capsys.readouterr().err.strip() == "model: stage1 (registry default, set by lapgen demo)"
    registry.resolve("stage1", "pipeline")
    assert capsys.readouterr().err == ""

    registry.reset_announcements()  # the next command says it again
    registry.set_default("stage1")
    registry.resolve(None, "pipeline")
    assert capsys.readouterr().err.strip() == "model: stage1 (registry default, set by lapgen models use)"

    registry.register_artifact("cn1", "controlnet", _controlnet_dir(tmp_path))
    assert registry.describe_default("controlnet") == ("cn1", "set when lapgen trained it with --name")
    registry.remove_entry("cn1")
    assert registry.describe_default("controlnet") == (None, "built-in default")


def test_quiet_silences_the_default_line(tmp_path, capsys):
    from lapgen import progress

    registry.reset_announcements()
    progress.set_quiet(True)
    try:
        registry.resolve(None, "segmenter")
    finally:
        progress.set_quiet(False)
    assert capsys.readouterr().err == ""


def test_a_command_names_the_defaults_it_uses(tmp_path, monkeypatch, tiny_sd_dir, tiny_controlnet_dir):
    """`lapgen video --prompt P --masks DIR` with registry defaults says which two models it took and why."""
    from tests.fixtures.video import make_moving_masks

    monkeypatch.chdir(tmp_path)
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    for i, m in enumerate(make_moving_masks(2, step=5)):
        m.save(mask_dir / f"m{i}.png")
    registry.add_entry("stage1", str(tiny_sd_dir))
    registry.add_entry("stage2", str(tiny_controlnet_dir))
    registry.set_default("stage1", origin="set by lapgen demo")
    registry.set_default("stage2", origin="set by lapgen demo")
    res = runner.invoke(app, ["video", "--prompt", "grasper retract liver", "--masks", str(mask_dir),
                              "--frames", "2", "--steps", "1", "--out", str(tmp_path / "v.mp4")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines.count("model: stage1 (registry default, set by lapgen demo)") == 1, res.output
    assert lines.count("controlnet: stage2 (registry default, set by lapgen demo)") == 1, res.output
    res = runner.invoke(app, ["video", "--prompt", "grasper retract liver", "--masks", str(mask_dir),
                              "--model", "stage1", "--controlnet", "stage2", "--frames", "2", "--steps", "1",
                              "--out", str(tmp_path / "w.mp4")])
    assert res.exit_code == 0 and "registry default" not in res.output, res.output


def test_a_command_that_fails_prints_only_its_error_line(tmp_path):
    """The default's line waits for the command's next output: bad input found after a default was resolved
    still gives exactly one line (here: the default interpolator, rife-v3, has no weights file)."""
    from tests.fixtures.video import make_moving_masks

    masks = tmp_path / "masks"
    masks.mkdir()
    for i, m in enumerate(make_moving_masks(2, step=5)):
        m.save(masks / f"m{i}.png")
    res = runner.invoke(app, ["video", "--prompt", "grasper retract liver", "--masks", str(masks),
                              "--interpolator", "rife", "--out", str(tmp_path / "v.mp4")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "rife-v3" in res.output and "registry default" not in res.output


def test_held_notices_print_before_the_next_output(capsys):
    from lapgen import progress

    progress.hold_notices(True)
    try:
        progress.notice("first, held", hold=True)
        assert capsys.readouterr().err == ""
        progress.notice("second")
        assert capsys.readouterr().err.splitlines() == ["first, held", "second"]
        progress.notice("dropped", hold=True)
        progress.drop_notices()
        progress.flush_notices()
        assert capsys.readouterr().err == ""
    finally:
        progress.hold_notices(False)
    progress.notice("not held outside a command", hold=True)
    assert capsys.readouterr().err.strip() == "not held outside a command"
