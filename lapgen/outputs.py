"""Safe output handling shared by every command.

Principle 7 of the architecture: never leave half-written outputs. Long jobs write into a staging folder
`<out>.partial` next to the final path and rename it into place when complete, so an interrupted run
leaves no `<out>` behind and a re-run with the same arguments resumes inside the staging folder. Single
files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lapgen.errors import LapgenError

PARTIAL_SUFFIX = ".partial"


def staging_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def check_writable_parent(out: Path) -> None:
    """Fail early (one line) when `out` cannot be created."""
    parent = out.absolute().parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise LapgenError("output location is not writable", path=out,
                          hint="choose another --out or fix the folder's permissions")
    try:  # permission bits do not tell for root, read-only mounts or pseudo file systems: really try
        with tempfile.TemporaryFile(dir=probe, prefix=".lapgen-probe-"):
            pass
    except OSError as exc:
        raise LapgenError(f"output location is not writable ({exc.strerror})", path=out,
                          hint="choose another --out or fix the folder's permissions") from exc


def prepare_output_dir(out: str | Path, *, overwrite: bool = False, resume: bool = True) -> Path:
    """Check `out` and return the staging folder to write into.

    - `out` exists and `overwrite` is false: error (lapgen never overwrites without `--overwrite`).
    - `out` exists and `overwrite` is true: the old folder stays until `finalize_output_dir` replaces it.
    - a staging folder from an interrupted run is reused when `resume` is true, else cleared.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise LapgenError("output already exists", path=out, hint="pass --overwrite or choose another --out")
    check_writable_parent(out)
    stage = staging_path(out)
    if stage.exists() and not resume:
        shutil.rmtree(stage)
    try:
        stage.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LapgenError(f"cannot create output folder ({exc.strerror})", path=out,
                          hint="choose another --out or fix the folder's permissions") from exc
    return stage


def open_resumable_stage(out: Path, fingerprint: dict, state, *, overwrite: bool, state_file: str,
                         folders: tuple[str, ...] = ()) -> Path:
    """The staging folder `OUT.partial` of a multi-process generation (`lapgen sample`, `lapgen sample-video`),
    resumed only when it was started with the same settings.

    Finished items are skipped on a re-run, so resuming a folder made with another model, seed or prompt set
    would silently mix two sets: that is a one-line error, or a fresh start with `overwrite`. A staging folder
    without `state_file` (written by hand or by an older lapgen) is adopted as is. `state` is accelerate's
    `PartialState`: every rank reads the old settings before the main process writes the new ones and makes
    `folders` inside the stage.
    """
    stage = staging_path(out)
    try:
        previous = json.loads((stage / state_file).read_text())
    except (OSError, ValueError):
        previous = None
    state.wait_for_everyone()
    wanted = json.loads(json.dumps(fingerprint, default=str))  # as it reads back: tuples are lists
    differs = previous is not None and previous != wanted
    if differs and not overwrite:
        changed = ", ".join(k for k in wanted if previous.get(k) != wanted[k])
        raise LapgenError(f"{stage.name} holds an unfinished set made with other settings ({changed})", path=stage,
                          hint="re-run the command that started it to finish it, or pass --overwrite to start over")
    if state.is_main_process:
        prepare_output_dir(out, overwrite=overwrite, resume=not differs)
        (stage / state_file).write_text(json.dumps(wanted, sort_keys=True))
        for folder in folders:
            (stage / folder).mkdir(exist_ok=True)
    state.wait_for_everyone()
    return stage


def finalize_output_dir(out: str | Path) -> Path:
    """Move the completed staging folder into place (replacing an old `out` when overwriting)."""
    out = Path(out)
    stage = staging_path(out)
    if out.exists():
        trash = out.with_name(out.name + ".old")
        if trash.exists():
            shutil.rmtree(trash)
        out.rename(trash)
        stage.rename(out)
        shutil.rmtree(trash)
    else:
        stage.rename(out)
    return out


STAGE_SETTINGS = "run.json"  # inside a staging folder: the settings its content was made with


def claim_stage(stage: str | Path, settings: dict) -> None:
    """Record `settings` in a new staging folder, or check that the staged content was made with them.

    A resumed run must not mix outputs of two settings (another segmenter, threshold, size, ...). A
    staging folder that already holds work but no settings record is refused too. `release_stage`
    removes the record before the folder is finalised.
    """
    stage = Path(stage)
    wanted = json.loads(json.dumps(settings, sort_keys=True, default=str))
    record = stage / STAGE_SETTINGS
    if record.exists():
        try:
            found = json.loads(record.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            found = None
    else:
        found = wanted if not any(stage.iterdir()) else None
    if found != wanted:
        changed = sorted(k for k in wanted if not isinstance(found, dict) or found.get(k) != wanted[k])
        raise LapgenError(
            f"an interrupted run with other settings ({', '.join(changed) or 'unknown'}) is in the "
            "staging folder",
            path=stage,
            hint="re-run with the same options, or delete that folder to start over",
        )
    if not record.exists():
        with atomic_file(record, "w") as fh:
            fh.write(json.dumps(wanted, sort_keys=True))


def release_stage(stage: str | Path) -> None:
    """Remove the settings record of `claim_stage` (call just before `finalize_output_dir`)."""
    (Path(stage) / STAGE_SETTINGS).unlink(missing_ok=True)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator:
    """Open a temporary sibling of `path` for writing and rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode) as fh:
            yield fh
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def lapgen_home() -> Path:
    """`$LAPGEN_HOME`, default `~/.cache/lapgen`: registry file, caches, default demo models."""
    return Path(os.environ.get("LAPGEN_HOME", Path.home() / ".cache" / "lapgen")).expanduser()
