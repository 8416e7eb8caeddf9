"""The checkpoint registry's `Entry` and what it reads from disk: the user file `$LAPGEN_HOME/registry.yaml`
(read, and edited under a lock, written atomically), the Hugging Face cache (whether a hub file is here,
offline mode), a built-in's released weight files, and artefact cards.

`lapgen.registry` resolves names into entries on these and re-exports them. No torch here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lapgen.cards import read_card
from lapgen.errors import LapgenError
from lapgen.outputs import lapgen_home

REGISTRY_FILE = "registry.yaml"


@dataclass(frozen=True)
class Entry:
    """A resolved source. `path` is the local weights (file or folder) when there are any."""

    name: str
    kind: str
    source: str  # "hf:ORG/NAME", a local path, or a scheme of a built-in ("tiny:sd", "open_clip:...")
    path: Path | None = None
    description: str = ""
    card: dict[str, Any] | None = None
    builtin: bool = False  # a built-in name (possibly pointed at local weights by a user entry)
    user: bool = False  # has a user entry in registry.yaml
    options: dict[str, Any] = field(default_factory=dict)  # loader hints (architecture, file names, ...)

    @property
    def hub_id(self) -> str | None:
        """`ORG/NAME` for a hub source (without revision), else None."""
        return parse_hub_source(self.source)[0] if self.source.startswith("hf:") else None

    @property
    def revision(self) -> str | None:
        return parse_hub_source(self.source)[1] if self.source.startswith("hf:") else None

    def weights_location(self) -> str:
        """Where the weights come from, for tables and errors."""
        return str(self.path) if self.path is not None else self.source

    def present(self) -> bool:
        """Whether the weights are usable without a download (no torch import)."""
        if self.path is not None:
            return self.path.exists()
        if self.source.startswith("tiny:"):
            return True  # built from configs, offline
        for repo, filenames in self.options.get("hub_files", {}).items():
            if any(hub_cached(repo, f) for f in filenames):
                return True
        if self.hub_id:
            default_marker = "model_index.json" if self.kind == "pipeline" else "config.json"
            marker = self.options.get("marker_file", default_marker)
            return hub_cached(self.hub_id, marker, revision=self.revision)
        return False


def registry_path() -> Path:
    """`$LAPGEN_HOME/registry.yaml`."""
    return lapgen_home() / REGISTRY_FILE


def read_user() -> dict[str, Any]:
    path = registry_path()
    if not path.exists():
        return {"version": 1, "entries": {}, "defaults": {}, "default_origins": {}}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LapgenError("model registry is not valid YAML", path=path,
                          hint="fix or delete the file (it only holds user entries)") from exc
    if not isinstance(data, dict):
        raise LapgenError("model registry is not a mapping", path=path, hint="fix or delete the file")
    data.setdefault("version", 1)
    data["entries"] = data.get("entries") or {}
    data["defaults"] = data.get("defaults") or {}
    data["default_origins"] = data.get("default_origins") or {}  # kind -> who set the default, in words
    return data


@contextmanager
def edit_user() -> Iterator[dict[str, Any]]:
    """Read-modify-write the registry file under an exclusive lock, written atomically."""
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(REGISTRY_FILE + ".lock"), "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: best effort
            pass
        data = read_user()
        yield data
        tmp = path.with_name(f".{REGISTRY_FILE}.tmp{os.getpid()}")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        tmp.replace(path)


def hub_offline() -> bool:
    """True when the user asked for offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cached(repo_id: str, filename: str, revision: str | None = None) -> bool:
    """Whether `filename` of hub repo `repo_id` is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except Exception:  # invalid repo id etc.
        return False
    return isinstance(found, str)


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """`hf:ORG/NAME[@REV]` -> (`ORG/NAME`, REV); a one-line error when malformed."""
    body = source[3:]
    repo, _, rev = body.partition("@")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo):
        raise LapgenError(f"malformed hub id '{source}'",
                          hint="write it as hf:ORG/NAME, e.g. hf:stable-diffusion-v1-5/stable-diffusion-v1-5")
    return repo, (rev or None)


def weights_dirs(options: dict[str, Any]) -> list[Path]:
    """Where a built-in's weight files are looked for: $LAPGEN_HOME/weights, and torch hub's checkpoints
    for entries with `search_torch_hub`."""
    dirs = [lapgen_home() / "weights"]
    if options.get("search_torch_hub"):
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        torch_home = Path(os.environ.get("TORCH_HOME", cache / "torch")).expanduser()
        dirs.append(torch_home / "hub" / "checkpoints")  # where torch.hub downloads land
    return dirs


def find_builtin_file(options: dict[str, Any]) -> Path | None:
    """The first of a built-in's released file names (`options["files"]`) found in `weights_dirs`."""
    for folder in weights_dirs(options):
        for name in options.get("files", []):
            if (folder / name).is_file():
                return folder / name
    return None


def looks_like_path(source: str) -> bool:
    return (os.sep in source or "/" in source or source.startswith((".", "~"))
            or source.endswith((".pt", ".pth", ".safetensors", ".yaml", ".bin", ".ckpt", ".pkl")))


def safe_card(path: Path) -> dict[str, Any] | None:
    """A folder's lapgen card, or None when it has none or an unreadable one."""
    try:
        return read_card(path, required=False)
    except LapgenError:
        return None
