"""Provenance cards: the small plain-data file beside every artefact lapgen writes.

A card is `lapgen.yaml` in the artefact folder (or `<file>.lapgen.yaml` beside a single-file output). It
is `yaml.safe_dump` of plain data (str, int, float, bool, list, dict; never pickled objects) saying what
made the artefact: kind, command, config, inputs with content hashes, parent checkpoint, library versions.
The checkpoint registry reads these cards.
"""

from __future__ import annotations

import datetime as _dt
import platform
import shlex
import sys
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from lapgen import __version__
from lapgen.errors import LapgenError

CARD_NAME = "lapgen.yaml"

_TRACKED_LIBRARIES = (
    "torch", "diffusers", "transformers", "accelerate", "ultralytics", "open_clip_torch",
    "torch-fidelity", "av", "numpy",
)


def plain(value: Any) -> Any:
    """Turn dataclasses, paths, tuples and numpy scalars into YAML-safe plain data."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [plain(v) for v in items]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return plain(value.item())
    return str(value)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape lapgen's results (no imports, metadata only)."""
    out = {"lapgen": __version__, "python": platform.python_version()}
    for name in _TRACKED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def card_path(artefact: str | Path) -> Path:
    """Where the card of `artefact` lives: inside a folder, or beside a file."""
    artefact = Path(artefact)
    if artefact.is_dir() or artefact.suffix == "":
        return artefact / CARD_NAME
    return artefact.with_name(artefact.name + "." + CARD_NAME)


def command_line() -> str | None:
    """The running `lapgen ...` command, shell-quoted so that it can be pasted back into a shell."""
    if not sys.argv or "lapgen" not in sys.argv[0]:
        return None
    return shlex.join(["lapgen", *sys.argv[1:]])


def make_card(kind: str, **fields: Any) -> dict[str, Any]:
    """A card dict with the standard header (kind, lapgen version, time, command line, libraries)."""
    card: dict[str, Any] = {
        "kind": kind,
        "lapgen_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": command_line(),
        "libraries": library_versions(),
    }
    card.update(plain(fields))
    return card


def write_card(artefact: str | Path, card: dict[str, Any]) -> Path:
    """Write `card` for `artefact` atomically; returns the card's path."""
    path = card_path(artefact)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(plain(card), sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path


def read_card(artefact: str | Path, *, required: bool = True) -> dict[str, Any] | None:
    """Read the card of `artefact` (a folder, a file, or the card itself)."""
    artefact = Path(artefact)
    path = artefact if artefact.name.endswith(CARD_NAME) else card_path(artefact)
    if not path.exists():
        if required:
            raise LapgenError(f"no provenance card {path.name} found", path=artefact,
                              hint="point at a folder written by lapgen")
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LapgenError(f"provenance card is not valid YAML ({exc.__class__.__name__})", path=path,
                          hint="fix or delete the card") from exc
    if not isinstance(data, dict):
        raise LapgenError("provenance card is not a mapping", path=path, hint="fix or delete the card")
    return data


def update_card(artefact: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into an existing card (e.g. metrics once evaluated)."""
    card = read_card(artefact) or {}
    for key, value in plain(fields).items():
        if isinstance(value, dict) and isinstance(card.get(key), dict):
            card[key].update(value)
        else:
            card[key] = value
    write_card(artefact, card)
    return card
