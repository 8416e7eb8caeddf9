"""benchmarks/run_all.py on stub scripts (the real benchmarks take minutes to hours and are not run here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_ALL = ROOT / "benchmarks" / "run_all.py"

STUBS = {
    "a_pass.py": 'print("noise line")\nprint("RESULT fast_thing ratio=0.500 goal<=0.75")\n',
    "b_alt_format.py": ('print("RESULT slow_thing ratio=1.20 goal=<=1.05")\n'
                        'print("RESULT speedup ratio=1.5 goal=>1.0")\n'),
    "c_quick.py": ('import argparse\np = argparse.ArgumentParser()\n'
                   'p.add_argument("--quick", action="store_true")\na = p.parse_args()\n'
                   'print(f"RESULT quick_seen ratio={1.0 if a.quick else 9.0} goal<=2")\n'),
    "d_skip.py": 'print("SKIP tool_cmp ffmpeg not found on PATH")\n',
    "e_crash.py": ('print("RESULT partial ratio=0.1 goal<=1")\n'
                   'raise RuntimeError("out of memory in stage 2")\n'),
    "f_silent.py": "x = 1\n",
    "g_nan.py": 'print("RESULT nothing_measured ratio=nan goal>=1.0")\n',
    "_helper.py": 'raise SystemExit("a private module is not a benchmark")\n',
}


def _load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _write_stubs(folder: Path) -> Path:
    folder.mkdir()
    for name, body in STUBS.items():
        (folder / name).write_text(body)
    return folder


def test_run_all_table_on_stub_scripts(tmp_path):
    stubs = _write_stubs(tmp_path / "bench")
    out_json = tmp_path / "rows.json"
    cmd = [sys.executable, str(RUN_ALL), "--dir", str(stubs), "--quick", "--json", str(out_json)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr  # a ratio misses its goal and scripts fail
    rows = json.loads(out_json.read_text())
    got = [(r["script"], r["name"], r["ratio"], r["goal"], r["status"]) for r in rows]
    assert got == [
        ("a_pass.py", "fast_thing", 0.5, "<= 0.75", "pass"),
        ("b_alt_format.py", "slow_thing", 1.2, "<= 1.05", "fail"),
        ("b_alt_format.py", "speedup", 1.5, "> 1.0", "pass"),
        ("c_quick.py", "quick_seen", 1.0, "<= 2", "pass"),  # --quick reached the script that declares it
        ("d_skip.py", "tool_cmp", None, "", "skipped"),
        ("e_crash.py", "partial", 0.1, "<= 1", "pass"),
        ("e_crash.py", "-", None, "", "error"),
        ("f_silent.py", "-", None, "", "error"),
        ("g_nan.py", "nothing_measured", rows[-1]["ratio"], ">= 1.0", "fail"),
    ]
    assert rows[-1]["ratio"] != rows[-1]["ratio"]  # NaN: nothing measured is not a pass
    notes = {r["script"]: r["note"] for r in rows}
    assert notes["d_skip.py"] == "ffmpeg not found on PATH"
    assert "RuntimeError: out of memory in stage 2" in next(r["note"] for r in rows if r["status"] == "error")
    assert notes["f_silent.py"] == "printed no RESULT or SKIP line"

    table = done.stdout.strip().splitlines()
    assert table[0].startswith("| benchmark | result | measured ratio | goal | status |")
    assert len(table) == 2 + len(rows)
    assert "| d_skip.py | tool_cmp | - | - | skipped: ffmpeg not found on PATH |" in done.stdout
    assert "| b_alt_format.py | slow_thing | 1.2 | <= 1.05 | fail |" in done.stdout


def test_run_all_only_and_exit_codes(tmp_path):
    stubs = _write_stubs(tmp_path / "bench")

    def run(*args):
        return subprocess.run([sys.executable, str(RUN_ALL), "--dir", str(stubs), *args], capture_output=True,
                              text=True, timeout=120, check=False)

    done = run("--only", "a_pass.py", "--only", "d_skip")
    assert done.returncode == 0, done.stdout + done.stderr  # passes and skips only
    scripts = [line.split("|")[1].strip() for line in done.stdout.strip().splitlines()[2:]]
    assert scripts == ["a_pass.py", "d_skip.py"]
    done = run("--only", "c_quick")  # without --quick the script runs its full size
    assert done.returncode == 1 and "| c_quick.py | quick_seen | 9 | <= 2 | fail |" in done.stdout
    bad = run("--only", "nope")
    assert bad.returncode == 2 and "no benchmark named nope" in bad.stderr


def test_parse_and_discover():
    run_all = _load_run_all()
    rows = run_all.parse_output("x.py", "RESULT r ratio=0.99 goal<=1\nRESULT s ratio=3 goal<2\n", "", 0, 1.0)
    assert [(r.name, r.status) for r in rows] == [("r", "pass"), ("s", "fail")]
    rows = run_all.parse_output("x.py", "", "Traceback\nValueError: bad\n", 1)
    assert [(r.status, r.note) for r in rows] == [("error", "exit code 1: ValueError: bad")]
    # the real scripts: every one declares --quick and prints its goals in RESULT lines
    scripts = run_all.discover(ROOT / "benchmarks")
    assert {s.name for s in scripts} >= {"eval_suite.py", "map_bootstrap.py", "prepare_vs_ffmpeg.py",
                                         "train_step.py", "video_scaling.py"}
    for script in scripts:
        text = script.read_text()
        assert run_all.has_quick(script), script.name
        assert "RESULT " in text and "goal" in text, script.name
