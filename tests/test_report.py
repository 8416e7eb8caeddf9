"""`lapgen eval report`: which result a Table-1 cell shows, the network it names, and the paper's N per row."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.metrics.paper import OFFICIAL_WEIGHTS, paper_n
from lapgen.metrics.report import build_report, comparability, render_markdown

runner = CliRunner()
SHA = {name: prefix + "0" * (64 - len(prefix)) for name, prefix in OFFICIAL_WEIGHTS.items()}


def _result(metric, value, extractor, *, n=(10_000, 10_000), protocol=None, created="2026-01-01T00:00:00+00:00",
            setup="t50+80-unet+clip", epoch=10, **extra):
    protocol = protocol or {"fid": "clean", "kid": "clean", "clip_fid": "clip-fid", "cmmd": "cmmd"}[metric]
    variant = f"clip={extractor}" if metric == "cmmd" else f"{extractor}-{protocol}"
    return {"schema": "lapgen.eval/1", "metric": metric, "key": f"{metric}[{variant},sha256={SHA[extractor][:12]}]",
            "variant": variant, "value": value, "protocol": protocol, "extractor": extractor,
            "weights_sha256": SHA[extractor], "n_gen": n[0], "n_real": n[1], "gen": "gen/e10", "real": "data/t50",
            "params": {"subset_size": 1000} if metric == "kid" else {}, "model": "clip-e10", "setup": setup,
            "epoch": epoch, "created": created, **extra}


def _write(folder, name, results):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps({"schema": "lapgen.eval/1", "results": results}))


@pytest.mark.parametrize("names", [("X.json", "X-cmmd-l14.json"), ("b-l14.json", "a.json")])
def test_cmmd_cell_shows_the_paper_backbone_whatever_the_file_names(tmp_path, names):
    """`eval fidelity` writes ViT-B/32 CMMD, `eval cmmd --clip clip-vit-l-14-336` the comparable one. The cell
    shows ViT-L/14@336 and says so, in either file order ("-" sorts before "."), and explains the choice."""
    fidelity_file, l14_file = names
    _write(tmp_path, fidelity_file, [_result("fid", 34.2, "inception-v3-clean"),
                                     _result("cmmd", 0.05, "clip-vit-b-32")])
    _write(tmp_path, l14_file, [_result("cmmd", 0.12, "clip-vit-l-14-336", created="2020-01-01T00:00:00+00:00")])
    report = build_report([tmp_path])
    (row,) = report["rows"]
    assert row["ours"]["cmmd"] == 0.12 and row["network"]["cmmd"] == "ViT-L/14@336"
    assert row["shown"]["cmmd"]["source"].endswith(l14_file) and row["comparable"]["cmmd"]
    (choice,) = report["choices"]
    assert "shows `cmmd[clip=clip-vit-l-14-336" in choice["note"] and "ViT-L/14@336) is the paper's" in choice["note"]
    assert "`cmmd[clip=clip-vit-b-32" in choice["note"] and fidelity_file in choice["note"]
    text = render_markdown(report, None)
    assert "| 0.12 (0.119) · ViT-L/14@336 |" in text and "34.2 (34.197) · clean-fid Inception" in text
    assert "Cells with several results" in text
    shown = {d["key"].split(",")[0]: d["in_table"] for d in report["details"] if d["metric"] == "cmmd"}
    assert shown == {"cmmd[clip=clip-vit-l-14-336": True, "cmmd[clip=clip-vit-b-32": False}


def test_a_row_with_only_vit_b_32_is_labelled_and_not_comparable(tmp_path):
    _write(tmp_path, "e10.json", [_result("cmmd", 0.05, "clip-vit-b-32")])
    report = build_report([tmp_path])
    assert report["choices"] == [] and report["rows"][0]["network"]["cmmd"] == "ViT-B/32"
    assert "| 0.05 (0.119) · ViT-B/32 |" in render_markdown(report, None)
    ok, why = comparability(_result("cmmd", 0.05, "clip-vit-b-32"))
    assert not ok and not report["details"][0]["comparable"] and "extractor clip-vit-b-32 (paper: clip-vit-l-14-336)" in why


def test_fid_accepts_either_inception_and_prefers_clean_fids(tmp_path):
    clean, port = _result("fid", 34.0, "inception-v3-clean"), _result("fid", 34.5, "inception-v3")
    assert comparability(clean) == (True, []) and comparability(port) == (True, [])
    assert not comparability({**clean, "weights_sha256": "ab" * 32})[0]  # a random-weight stand-in
    assert "protocol torch-fidelity (paper: clean)" in comparability({**port, "protocol": "torch-fidelity"})[1]
    _write(tmp_path, "port.json", [port])
    _write(tmp_path, "clean.json", [clean])
    report = build_report([tmp_path])
    row = report["rows"][0]
    assert row["ours"]["fid"] == 34.0 and row["network"]["fid"] == "clean-fid Inception"
    assert "clean-fid Inception) is the paper's" in report["choices"][0]["note"]
    assert "differs in value, extractor, weights_sha256" in report["choices"][0]["note"]


def test_newest_of_equally_comparable_results_wins_and_agreeing_duplicates_are_silent(tmp_path):
    _write(tmp_path, "z-old.json", [_result("kid", 0.0300, "inception-v3-clean", created="2026-01-01T00:00:00+00:00")])
    _write(tmp_path, "a-new.json", [_result("kid", 0.0250, "inception-v3-clean", created="2026-02-01T00:00:00+00:00")])
    report = build_report([tmp_path])
    assert report["rows"][0]["ours"]["kid"] == 0.0250
    assert "because it is the newest evaluation" in report["choices"][0]["note"]
    same = tmp_path / "same"
    _write(same, "one.json", [_result("kid", 0.0250, "inception-v3-clean")])
    _write(same, "two.json", [_result("kid", 0.0250, "inception-v3-clean")])
    assert build_report([same])["choices"] == []  # nothing comparable differs: nothing to explain


def test_controlnet_row_uses_the_paper_codes_n(tmp_path):
    """The paper's ControlNet set is every row of its test.jsonl, 4,000 images, against the 10,000 real
    frames; the other rows are 10,000 / 10,000."""
    assert paper_n("ControlNet") == (4_000, 10_000) and paper_n("CholecT50 (UNet)") == (10_000, 10_000)
    cn = {"setup": "controlnet", "epoch": 100}
    assert comparability(_result("fid", 38.1, "inception-v3-clean", n=(4_000, 10_000), **cn)) == (True, [])
    ok, why = comparability(_result("fid", 38.1, "inception-v3-clean", **cn))
    assert not ok and why == ["N 10000/10000 != 4000/10000"]
    ok, why = comparability(_result("fid", 38.1, "inception-v3-clean", n=(4_000, 10_000)))
    assert not ok and why == ["N 4000/10000 != 10000/10000"]  # a text-to-image row
    f1 = {"metric": "f1_instance", "value": 0.7, "setup": "controlnet", "n_gen": 10_000}
    assert "N 10000 != 4000" in comparability(f1)[1]


def test_report_command_prints_the_choice(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "X.json", [_result("cmmd", 0.05, "clip-vit-b-32")])
    _write(runs, "X-cmmd-l14.json", [_result("cmmd", 0.12, "clip-vit-l-14-336")])
    out = tmp_path / "table1.md"
    result = runner.invoke(app, ["eval", "report", str(runs), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"][0]["ours"]["cmmd"] == 0.12
    assert "· ViT-L/14@336" in out.read_text()


def test_epoch_plot_one_colour_per_model_and_incomparable_values_off_the_paper_axes(tmp_path):
    """report.png: a model has one colour in every panel, the one legend says which, and values that are not
    comparable with the paper (here a random-weight demo Inception) are drawn on axes of their own."""
    from lapgen.metrics.epoch_plot import draw_epochs, epoch_series

    results = []
    for epoch, fid, kid_value in ((1, 50.0, 0.04), (5, 40.0, 0.03), (10, 35.0, 0.02)):
        results += [_result("fid", fid, "inception-v3-clean", epoch=epoch),
                    _result("kid", kid_value, "inception-v3-clean", epoch=epoch)]
        results += [{**_result("fid", fid * 9, "inception-v3-clean", epoch=epoch, setup="demo"),
                     "model": "demo-sd", "extractor": "demo-inception-random", "weights_sha256": "f" * 64},
                    {**_result("kid", kid_value * 3, "inception-v3-clean", epoch=epoch, setup="demo"),
                     "model": "demo-controlnet", "extractor": "demo-inception-random", "weights_sha256": "f" * 64}]
    _write(tmp_path, "r.json", results)
    series = epoch_series(build_report([tmp_path / "r.json"]))
    fid_panel = series["panels"]["fid"]
    assert set(fid_panel["beside_paper"]) == {"clip-e10 [t50+80-unet+clip]"}
    assert set(fid_panel["own_axes"]) == {"demo-sd [demo]"} and "paper: CholecT50 (UNet)" in fid_panel["paper"]
    assert set(series["panels"]["kid"]["own_axes"]) == {"demo-controlnet [demo]"}

    fig = draw_epochs(series)
    colour_of: dict[str, set] = {}
    paper_axes = [ax for ax in fig.axes if "(beside the paper)" in ax.get_title()]
    apart = [ax for ax in fig.axes if "(not comparable with the paper)" in ax.get_title()]
    assert len(paper_axes) == 2 and len(apart) == 2
    for ax in fig.axes:
        for line in ax.get_lines():
            colour_of.setdefault(line.get_label(), set()).add(line.get_color())
    assert all(len(c) == 1 for c in colour_of.values())  # one colour per model across panels
    assert len({next(iter(c)) for label, c in colour_of.items() if not label.startswith("paper:")}) == 3
    assert all(line.get_label() in ("clip-e10 [t50+80-unet+clip]",) or line.get_label().startswith("paper:")
               for ax in paper_axes for line in ax.get_lines())
    [legend] = fig.legends
    assert {t.get_text() for t in legend.get_texts()} == set(colour_of)
    import matplotlib.pyplot as plt

    plt.close(fig)
