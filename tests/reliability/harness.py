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


def kill_when(args: list, *, cwd: Path, ready, timeout: float = 300, poll: float = 0.002) -> str:
    """Start `python -m lapgen ARGS`, wait until `ready()` is true, then SIGKILL it (its whole process group).

    Progress is detected from files the command writes (`ready` polls them), never from a sleep. Fails if
    the command ends on its own first. Returns what it printed on stderr before it was killed.
    """
    import signal
    import time

    proc = subprocess.Popen(
        lapgen_argv(args),
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(
                    f"the command ended (exit {proc.returncode}) before the kill point:\n{proc.stderr.read()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the kill point was not reached within {timeout} s")
            time.sleep(poll)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"expected death by SIGKILL, got exit {proc.returncode}"
    return proc.stderr.read()


def files_by_inode(folder: Path, pattern: str = "**/*.png") -> dict[str, tuple[int, int]]:
    """{relative path: (inode, mtime_ns)} of the complete files under `folder` (temp files excluded). A file
    rewritten through a temp name and a rename gets a new inode, so equal inodes mean 'not redone'."""
    out = {}
    for p in folder.glob(pattern):
        if p.is_file() and ".tmp" not in p.name:
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_ino, st.st_mtime_ns)
    return out


# Fields of a provenance card that legitimately differ between two runs of the same command into two
# folders: when it was made and the command line. Paths naming the output folder itself differ too; they are
# compared with that folder written as `<out>`.
CARD_VOLATILE = ("created", "command")


def comparable_card(path: Path, root: Path) -> dict:
    """A card without its volatile fields, with the output folder `root` written as `<out>`."""
    import yaml

    card = yaml.safe_load(path.read_text().replace(str(root.resolve()), "<out>").replace(str(root), "<out>"))
    for key in CARD_VOLATILE:
        card.pop(key, None)
    return card


def compare_trees(a: Path, b: Path, *, cards: tuple[str, ...] = ("lapgen.yaml",)) -> None:
    """Assert two output folders hold the same files with the same bytes; the named card files are compared
    without their volatile fields (`comparable_card`)."""
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b, f"different files:\n{sorted(set(files_a) ^ set(files_b))}"
    differ = []
    for rel in files_a:
        if Path(rel).name in cards:
            if comparable_card(a / rel, a) != comparable_card(b / rel, b):
                differ.append(rel)
        elif (a / rel).read_bytes() != (b / rel).read_bytes():
            differ.append(rel)
    assert not differ, f"{len(differ)} of {len(files_a)} files differ, e.g. {differ[:5]}"
    assert files_a, "nothing to compare"


def assert_ok(run: Run) -> None:
    assert run.exit_code == 0, f"exit {run.exit_code}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"


# The commands the interruption and determinism tests run (small, CPU, seeded).


def prepare_args(raw: Path, out: Path) -> list:
    return ["prepare", "--cholect50", raw, "--out", out, "--size", 128, "--workers", 1]


def sample_args(world: World, out: Path) -> list:
    return [
        "sample",
        "--out",
        out,
        "--model",
        world.tiny_sd,
        "--prompts-from",
        world.frames,
        "--split",
        "train",
        "--n",
        10,
        "--steps",
        4,
        "--resolution",
        64,
        "--batch-size",
        1,
        "--seed",
        5,
        "--device",
        "cpu",
    ]


def finetune_args(world: World, out: Path) -> list:
    return [
        "finetune",
        "--data",
        world.frames,
        "--out",
        out,
        "--base",
        world.tiny_sd,
        "--resolution",
        64,
        "--batch-size",
        2,
        "--max-steps",
        8,
        "--checkpointing-steps",
        2,
        "--lr",
        "1e-3",
        "--seed",
        3,
        "--resume",
        "latest",
        "--device",
        "cpu",
    ]


def video_args(world: World, out: Path) -> list:
    return [
        "video",
        "--prompt",
        "grasper retract gallbladder in calot-triangle-dissection",
        "--masks",
        world.masks,
        "--out",
        out,
        "--model",
        world.tiny_sd,
        "--controlnet",
        world.tiny_controlnet,
        "--steps",
        3,
        "--resolution",
        64,
        "--seed",
        11,
        "--gif",
        "--save-frames",
        "--side-by-side",
        "--device",
        "cpu",
    ]


def in_process_one_thread(args: list) -> Run:
    """`run_in_process` with torch on `THREADS` threads (as the subprocesses), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return run_in_process(args)
    finally:
        torch.set_num_threads(before)
