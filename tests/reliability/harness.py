"""Helpers of the reliability suite: run the real CLI (in a subprocess or with CliRunner), snapshot folders,
and check the user-error contract (exit code 2, one `lapgen: error:` line, no traceback, no output left).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Float results depend on the number of intra-op threads; every run of the suite (subprocesses and the
# in-process runs they are compared with) uses one thread.
THREADS = 1


@dataclass
class World:
    """Valid inputs of every command (session-scoped, read-only: cases copy what they break)."""

    t50: Path  # CholecT50 release (4 videos x 10 PNG frames + labels JSON)
    c80: Path  # Cholec80 release (2 MP4s + phase/tool annotations)
    seg8k: Path  # CholecSeg8k release
    artnet: Path  # ART-Net release
    yolo: Path  # `lapgen segment convert` output
    frames: Path  # frames dataset (12 frames, 128 px, no masks)
    frames_masks: Path  # the same with conditioning masks (ControlNet dataset)
    tiny_sd: Path  # saved tiny SD pipeline folder
    tiny_controlnet: Path  # saved tiny ControlNet folder
    images: dict[str, Path]  # plain image folders: real, gen, gen2, real_copy (10 PNGs each, 64x64)
    masks: Path  # a folder of 6 binary 128 px mask PNGs (a square moving right)
    mask_video: Path  # the same masks as an MP4
    segmenter: Path  # a yolov8n-seg .pt file (random weights, saved from the config)
    clip: tuple[str, Path]  # (extractor name, weights) of a tiny random CLIP registered in this process


@dataclass
class Run:
    """What one CLI invocation produced."""

    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None  # CliRunner only: the exception that ended the command


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `python -m lapgen` subprocess: the test session's (offline, its LAPGEN_HOME), one
    torch thread, no colour codes, a wide console so rich does not wrap one-line messages."""
    env = dict(os.environ)
    env.update(
        {
            "OMP_NUM_THREADS": str(THREADS),
            "MKL_NUM_THREADS": str(THREADS),
            "NO_COLOR": "1",
            "COLUMNS": "400",
            "TERM": "dumb",
            "PYTHONPATH": str(REPO),
        }
    )
    env.pop("FORCE_COLOR", None)
    env.update(extra)
    return env


def lapgen_argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "lapgen", *map(str, args)]


def run_subprocess(args: list[str], *, cwd: Path, timeout: float = 240, env: dict | None = None) -> Run:
    proc = subprocess.run(
        lapgen_argv(args),
        check=False,
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def run_in_process(args: list[str]) -> Run:
    """The Typer app through CliRunner (same process: heavy imports are paid once per session)."""
    from typer.testing import CliRunner

    from lapgen.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "400", "NO_COLOR": "1"})
    return Run(result.exit_code, result.stdout, result.stderr, result.exception)


def snapshot(*roots: Path) -> dict[str, str]:
    """{path: sha256 of the bytes (or '<dir>')} of everything under `roots` (symlinks not followed)."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = "<dir>"
            for f in filenames:
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def snapshot_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Human-readable differences: '+ new', '- removed', '~ changed'."""
    diff = [f"+ {p}" for p in sorted(set(after) - set(before))]
    diff += [f"- {p}" for p in sorted(set(before) - set(after))]
    diff += [f"~ {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return diff


def error_line(run: Run) -> str:
    """Check the user-error contract on `run` and return its one error line."""
    text = run.stdout + run.stderr
    assert "Traceback" not in text, f"traceback printed:\n{text}"
    if run.exception is not None:
        assert isinstance(run.exception, SystemExit), f"command raised {run.exception!r}"
    assert run.exit_code == 2, (
        f"exit code {run.exit_code}, expected 2\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    )
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{run.stderr}"
    assert lines[0].startswith("lapgen: error: "), lines[0]
    return lines[0]
