"""`lapgen prepare` on synthetic CholecT50 + Cholec80: schema, alignment, splits, resume, parallel work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.data import frames, vocab
from lapgen.data import prepare as prep
from lapgen.data.prepare import PrepareConfig, prepare
from lapgen.data.video import iter_indexed_frames
from tests.fixtures.data import T50_FRAMES, T50_VIDEOS

runner = CliRunner()
N_T50 = len(T50_VIDEOS) * (T50_FRAMES - 1)  # frame 4 of every video has an empty annotation list
N_C80 = 5  # video03: C-index 0, 25, 50, 75, 100 (video01 is also in CholecT50: skipped)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _card_without_time(folder: Path) -> dict:
    card = yaml.safe_load((folder / "lapgen.yaml").read_text())
    for key in ("created", "command"):
        card.pop(key)
    card["config"].pop("workers")
    card["config"].pop("out")
    return card


def test_cli_end_to_end(tmp_path, synthetic_cholect50, synthetic_cholec80):
    out = tmp_path / "ds"
    result = runner.invoke(app, ["prepare", "--cholect50", str(synthetic_cholect50), "--cholec80",
                                 str(synthetic_cholec80), "--out", str(out), "--size", "64", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "cholect50" in result.stdout and "carlot-triangle-dissection" in result.stdout  # summary table
    assert "video01" in result.stdout  # the skipped shared video is named
    assert "prepare frames" in result.stderr and "frames/s" in result.stderr  # progress bar with rate
    assert f"{N_T50 + N_C80}/{N_T50 + N_C80}" in result.stderr
    records = frames.read_records(out)
    assert len(records) == N_T50 + N_C80
    by_key = {(r["video"], r["frame"]): r for r in records}
    r = by_key[("VID01", 3)]
    assert r == {"file_name": "images/VID01/000003.png", "source": "cholect50", "video": "VID01", "frame": 3,
                 "split": "train", "phase": 2, "tools": ["grasper", "hook"], "triplets": [17, 60],
                 "instruments": [0, 2], "verbs": [1, 2], "targets": [0],
                 "text": "grasper retract gallbladder and hook dissect gallbladder in clipping-and-cutting"}
    assert by_key[("VID01", 1)]["text"] == "grasper in preparation"
    assert by_key[("VID01", 0)]["text"] == "preparation" and ("VID01", 4) not in by_key
    assert {r["split"] for r in records if r["video"] == "VID08"} == {"val"}
    assert {r["split"] for r in records if r["video"] == "VID06"} == {"test"}
    c80 = [r for r in records if r["source"] == "cholec80"]
    assert [r["frame"] for r in c80] == [0, 25, 50, 75, 100] and {r["video"] for r in c80} == {"video03"}
    assert all(r["split"] == "train" and "triplets" not in r for r in c80)
    assert c80[1]["text"] == "grasper and hook in " + vocab.PHASES[c80[1]["phase"]]
    # imagefolder conventions: metadata.jsonl at the root, file_name relative to it, every image listed
    listed = {r["file_name"] for r in records}
    assert listed == {str(p.relative_to(out)) for p in out.rglob("*.png")}
    with Image.open(out / records[0]["file_name"]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    card = yaml.safe_load((out / "lapgen.yaml").read_text())
    assert card["kind"] == "frames-dataset" and card["prompt_format"] == "paper" and card["split"] == "rdv"
    assert card["inputs"]["cholect50"]["path"] == str(synthetic_cholect50.resolve())
    assert card["inputs"]["cholec80"]["skipped_shared_videos"] == ["video01"]
    assert card["records"] == len(records) and card["lapgen_version"]
    assert sum(row["frames"] for row in card["counts"]) == len(records)
    assert not (tmp_path / "ds.partial").exists()


def test_frames_are_the_annotated_ones_resized_with_antialiasing(synthetic_frames, synthetic_cholect50,
                                                                 synthetic_cholec80, tmp_path):
    decoded = dict(iter_indexed_frames(synthetic_cholec80 / "videos" / "video03.mp4"))
    stored = np.asarray(Image.open(synthetic_frames / "images" / "video03" / "000025.png"))

    def resized(rgb):
        prep.save_resized(Image.fromarray(rgb), 64, tmp_path / "r.png")
        return np.asarray(Image.open(tmp_path / "r.png"))

    np.testing.assert_array_equal(stored, resized(decoded[25]))  # frame 25k, not 25k - 1
    assert not np.array_equal(stored, resized(decoded[24]))
    src = np.asarray(Image.open(synthetic_cholect50 / "videos" / "VID06" / "000007.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(synthetic_frames / "images/VID06/000007.png")), resized(src))
    # antialiasing: a 1-pixel checkerboard at 854x480 averages to grey instead of aliasing
    checker = ((np.indices((480, 854)).sum(0) % 2) * 255).astype(np.uint8)
    small = resized(np.repeat(checker[..., None], 3, 2)).astype(int)
    assert abs(small.mean() - 127.5) < 3 and small.std() < 8


def test_quiet(tmp_path, synthetic_cholec80):
    result = runner.invoke(app, ["--quiet", "prepare", "--cholec80", str(synthetic_cholec80), "--out",
                                 str(tmp_path / "q"), "--size", "16", "--workers", "1"])
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    assert (tmp_path / "q" / "metadata.jsonl").exists()
    from lapgen.progress import set_quiet

    set_quiet(False)


def test_cholec80_alone_json_and_calot(tmp_path, synthetic_cholec80):
    out = tmp_path / "c80only"
    result = runner.invoke(app, ["prepare", "--cholec80", str(synthetic_cholec80), "--out", str(out), "--size", "32",
                                 "--json", "--normalize-phase-names", "--workers", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["records"] == N_C80 and summary["skipped_videos"] == ["video01"]
    texts = [r["text"] for r in frames.read_records(out)]
    assert any("calot-triangle-dissection" in t for t in texts) and not any("carlot" in t for t in texts)
    assert yaml.safe_load((out / "lapgen.yaml").read_text())["prompt_format"] == "paper-calot"


@pytest.mark.parametrize("split, expect", [
    ("challenge", {"VID01": "train", "VID08": "train", "VID06": "train", "VID103": "test"}),
    ("fold1", {"VID01": "val", "VID08": "train", "VID06": "test", "VID103": "train"}),
    ("fold3", {"VID01": "val", "VID08": "test", "VID06": "train", "VID103": "test"}),
    ("all", {"VID01": "train", "VID08": "train", "VID06": "train", "VID103": "train"}),
])
def test_video_splits(tmp_path, synthetic_cholect50, split, expect):
    prepare(PrepareConfig(out=tmp_path / "o", cholect50=synthetic_cholect50, size=16, split=split, workers=1))
    got = {}
    for r in frames.read_records(tmp_path / "o"):
        got.setdefault(r["video"], set()).add(r["split"])
    assert got == {v: {s} for v, s in expect.items()}


def test_paper_split_is_frame_level_and_seeded(tmp_path, synthetic_cholect50, synthetic_cholec80):
    def run(name, seed):
        prepare(PrepareConfig(out=tmp_path / name, cholect50=synthetic_cholect50, cholec80=synthetic_cholec80,
                              size=16, split="paper", paper_test_frames=8, seed=seed, workers=1))
        return frames.read_records(tmp_path / name)

    a, b, c = run("a", 42), run("b", 42), run("c", 7)
    test_a = [(r["video"], r["frame"]) for r in a if r["split"] == "test"]
    assert len(test_a) == 8 and all(r["source"] == "cholect50" for r in a if r["split"] == "test")
    assert test_a == [(r["video"], r["frame"]) for r in b if r["split"] == "test"]
    assert test_a != [(r["video"], r["frame"]) for r in c if r["split"] == "test"]
    leaked = {r["video"] for r in a if r["split"] == "test"} & {r["video"] for r in a if r["split"] == "train"}
    assert leaked  # documented: the paper protocol leaks videos across splits
    assert {r["split"] for r in a if r["source"] == "cholec80"} == {"train"}


def test_overwrite(tmp_path, synthetic_cholec80):
    args = ["prepare", "--cholec80", str(synthetic_cholec80), "--out", str(tmp_path / "o"), "--size", "16",
            "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    (tmp_path / "o" / "marker").write_text("old")
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert not (tmp_path / "o" / "marker").exists() and (tmp_path / "o" / "metadata.jsonl").exists()


def test_resume_after_interruption_gives_identical_bytes(tmp_path, monkeypatch, synthetic_cholect50,
                                                         synthetic_cholec80):
    def cfg(out, **kw):
        return PrepareConfig(out=out, cholect50=synthetic_cholect50, cholec80=synthetic_cholec80, size=24,
                             workers=1, **kw)

    prepare(cfg(tmp_path / "full"))
    real = prep.save_resized
    calls = {"n": 0}

    def dying(image, size, dest):
        calls["n"] += 1
        if calls["n"] == 13:
            dest.with_name(f".{dest.name}.tmp").write_bytes(b"half a png")  # killed mid-write
            raise KeyboardInterrupt
        real(image, size, dest)

    monkeypatch.setattr(prep, "save_resized", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg(tmp_path / "resumed"))
    stage = tmp_path / "resumed.partial"
    assert not (tmp_path / "resumed").exists() and len(list(stage.rglob("*.png"))) == 12
    monkeypatch.setattr(prep, "save_resized", real)
    calls["n"] = 0
    prepare(cfg(tmp_path / "resumed"))
    full, resumed = _tree(tmp_path / "full"), _tree(tmp_path / "resumed")
    full.pop("lapgen.yaml")
    resumed.pop("lapgen.yaml")
    assert full == resumed
    assert _card_without_time(tmp_path / "full") == _card_without_time(tmp_path / "resumed")
    assert not stage.exists()


def test_interrupted_run_with_other_arguments_starts_over(tmp_path, monkeypatch, synthetic_cholect50):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "save_resized", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(out=tmp_path / "o", cholect50=synthetic_cholect50, size=16, workers=1))
    (tmp_path / "o.partial" / "images" / "VID01").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16)).save(tmp_path / "o.partial" / "images" / "VID01" / "000000.png")
    monkeypatch.undo()
    prepare(PrepareConfig(out=tmp_path / "o", cholect50=synthetic_cholect50, size=20, workers=1))
    with Image.open(tmp_path / "o" / "images" / "VID01" / "000000.png") as im:
        assert im.size == (20, 20)  # the 16 px leftover of the other run was not reused


def test_parallel_workers_match_serial(tmp_path, synthetic_cholect50, synthetic_cholec80):
    def run(name, workers):
        prepare(PrepareConfig(out=tmp_path / name, cholect50=synthetic_cholect50, cholec80=synthetic_cholec80,
                              size=24, workers=workers))
        tree = _tree(tmp_path / name)
        tree.pop("lapgen.yaml")
        return tree

    assert run("serial", 1) == run("parallel", 2)


def test_benchmark_without_ffmpeg_says_so(monkeypatch, capsys):
    import importlib.util
    import shutil

    path = Path(__file__).parent.parent / "benchmarks" / "prepare_vs_ffmpeg.py"
    spec = importlib.util.spec_from_file_location("prepare_vs_ffmpeg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert module.main(["--videos", "1", "--seconds", "1"]) == 0  # a SKIP line, not a failure (run_all.py)
    captured = capsys.readouterr()
    assert captured.out.startswith("SKIP prepare_vs_ffmpeg ffmpeg not found") and "RESULT" not in captured.out
