"""Run every benchmark in benchmarks/ and print one table of measured ratios against their goals.

Each script runs as its own subprocess (with `--quick` when this runner is given `--quick` and the script
declares that option). The goals come from the scripts themselves, from the machine-readable lines they
print on stdout:

    RESULT <name> ratio=<value> goal<op><bound>     op: <=, >=, <, > (also written goal=<op><bound>)
    SKIP <name> <reason>                            the benchmark cannot run here (a missing tool, RAM)

A script that exits non-zero without any of these lines is reported as an error with its last stderr line.
Usage:

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--timeout SECONDS] [--json FILE]

Prints progress on stderr and the table (markdown) on stdout; exits 1 when a ratio misses its goal or a
script fails, 0 otherwise (skipped benchmarks do not fail the run).
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_LINE = re.compile(
    r"^RESULT\s+(?P<name>\S+)\s+ratio=(?P<ratio>\S+)\s+goal=?(?P<op><=|>=|<|>)(?P<bound>[-+.\deE]+)")
SKIP_LINE = re.compile(r"^SKIP\s+(?P<name>\S+)\s*(?P<reason>.*)$")
OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@dataclass
class Row:
    script: str
    name: str
    ratio: float | None
    goal: str
    status: str  # pass, fail, skipped, error
    note: str = ""
    seconds: float | None = None


def discover(folder: Path) -> list[Path]:
    """The benchmark scripts of a folder: every `*.py` except this runner and private modules."""
    return sorted(p for p in folder.glob("*.py")
                  if p.name != Path(__file__).name and not p.name.startswith("_"))


def has_quick(script: Path) -> bool:
    return re.search(r"add_argument\(\s*[\"']--quick[\"']", script.read_text()) is not None


def parse_output(script: str, stdout: str, stderr: str, returncode: int,
                 seconds: float | None = None) -> list[Row]:
    """Rows for one script's output: one per RESULT or SKIP line, or one error row."""
    rows = []
    for line in stdout.splitlines():
        if m := RESULT_LINE.match(line.strip()):
            try:
                ratio = float(m["ratio"])
            except ValueError:
                ratio = math.nan
            goal = f"{m['op']} {m['bound']}"
            ok = not math.isnan(ratio) and OPERATORS[m["op"]](ratio, float(m["bound"]))
            rows.append(Row(script, m["name"], ratio, goal, "pass" if ok else "fail",
                            "" if not math.isnan(ratio) else "no value measured", seconds))
        elif m := SKIP_LINE.match(line.strip()):
            rows.append(Row(script, m["name"], None, "", "skipped", m["reason"].strip(), seconds))
    if returncode != 0 and not any(r.status == "skipped" for r in rows):
        last = next((x for x in reversed(stderr.strip().splitlines()) if x.strip()), "no stderr")
        rows.append(Row(script, "-", None, "", "error", f"exit code {returncode}: {last.strip()}", seconds))
    elif not rows:
        rows.append(Row(script, "-", None, "", "error", "printed no RESULT or SKIP line", seconds))
    return rows


def run_script(script: Path, quick: bool, timeout: float) -> list[Row]:
    cmd = [sys.executable, str(script)] + (["--quick"] if quick and has_quick(script) else [])
    shown = " ".join([os.path.relpath(script), *cmd[2:]])
    print(f"running {shown} ...", file=sys.stderr, flush=True)
    path = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}  # the scripts import lapgen (and eval_suite tests.fixtures)
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return [Row(script.name, "-", None, "", "error", f"timed out after {timeout:.0f} s",
                    time.perf_counter() - start)]
    seconds = time.perf_counter() - start
    rows = parse_output(script.name, done.stdout, done.stderr, done.returncode, seconds)
    for row in rows:
        print(f"  {row.name}: {row.status}" + (f" ({row.ratio:.3g})" if row.ratio is not None else ""),
              file=sys.stderr, flush=True)
    return rows


def format_table(rows: list[Row]) -> str:
    lines = ["| benchmark | result | measured ratio | goal | status | time |", "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.3g}"
        status = r.status + (f": {r.note}" if r.note else "")
        took = "-" if r.seconds is None else f"{r.seconds:.0f} s"
        lines.append(f"| {r.script} | {r.name} | {ratio} | {r.goal or '-'} | {status} | {took} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script that has it")
    parser.add_argument("--only", action="append", default=[], help="run only this script (name or stem)")
    parser.add_argument("--dir", type=Path, default=HERE, help="folder of benchmark scripts")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per script")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    scripts = discover(args.dir)
    if args.only:
        wanted = {Path(n).stem for n in args.only}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            parser.error(f"no benchmark named {', '.join(sorted(unknown))} in {args.dir}")
        scripts = [s for s in scripts if s.stem in wanted]
    rows = [row for script in scripts for row in run_script(script, args.quick, args.timeout)]
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return 1 if any(r.status in ("fail", "error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
