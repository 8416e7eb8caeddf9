"""Weights of lapgen's feature extractors: where they come from, and their SHA-256.

Order: `--weights PATH` (or a registry name) > the checkpoint registry's `feature-extractor` entry when it
has a local file (`lapgen.registry`, e.g. `$LAPGEN_HOME/weights` or the torch hub cache) > the libraries'
own cache/download (torch-fidelity's release file, open_clip's `openai` tag). NVIDIA's TorchScript Inception
(`inception-v3-clean`) is never downloaded: only a local file is used. Offline without weights is a
one-line error naming `--weights` and the registered extractors of the same family, with which of them have
local weights. Hashes are memoised by (path, size, mtime) under `$LAPGEN_HOME/cache`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lapgen.errors import LapgenError
from lapgen.metrics.extractors import EXTRACTORS, ExtractorSpec, family_names, get_spec

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")


def cache_root() -> Path:
    """Where lapgen caches features and weight hashes: $LAPGEN_HOME/cache."""
    from lapgen.outputs import lapgen_home

    return lapgen_home() / "cache"


def weights_sha256(path: Path) -> str:
    """SHA-256 of a weights file, memoised by (absolute path, size, mtime) in the cache folder."""
    from lapgen.outputs import atomic_file, file_sha256

    path = path.resolve()
    stat = path.stat()
    memo_path = cache_root() / "weights-sha256.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    stamp = [stat.st_size, stat.st_mtime_ns]
    entry = memo.get(str(path))
    if entry and entry.get("stamp") == stamp:
        return entry["sha256"]
    digest = file_sha256(path)
    memo[str(path)] = {"stamp": stamp, "sha256": digest}
    with atomic_file(memo_path, "w") as fh:
        json.dump(memo, fh)
    return digest


def _registry_weights(name: str) -> Path | None:
    """The local file of a `feature-extractor` registry entry, when the registry knows one."""
    from lapgen import registry

    try:
        entry = registry.resolve(name, kind="feature-extractor")
    except LapgenError:
        if name in EXTRACTORS:
            return None
        raise
    path = getattr(entry, "path", None)
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise LapgenError(f"registry entry {name!r} points at a missing weights file", path=path,
                          hint="fix the entry or pass --weights PATH")
    return path


def _family_status(spec: ExtractorSpec) -> str:
    """'inception-v3 (no local weights), demo-inception-random (local weights; random-weight demo extractor)':
    the built-in extractors of `spec`'s family and the registry's own feature-extractor entries that name the
    family, for the missing-weights error."""
    from lapgen import registry

    parts = []
    for name in family_names(spec.family):
        try:
            here = _registry_weights(name) is not None
        except LapgenError:
            here = False
        parts.append(f"{name} ({'local weights' if here else 'no local weights'})")
    for entry in registry.list_entries("feature-extractor"):
        text = f"{entry.name} {entry.description}".lower()
        if entry.builtin or entry.name in EXTRACTORS or spec.family not in text:
            continue
        status = "local weights" if entry.path is not None and entry.path.exists() else "weights missing"
        if "random" in text:
            status += "; random-weight demo extractor, values not comparable with published ones"
        parts.append(f"{entry.name} ({status})")
    return ", ".join(parts)


def _default_weights(spec: ExtractorSpec) -> Path:
    """The libraries' own weight files (downloaded once into their caches when online)."""
    kind = {"inception": "Inception", "clip": "CLIP", "video": "video"}.get(spec.family, spec.family)
    hint = (f"pass --weights PATH (or a registered NAME) to a local copy, or `lapgen models add {spec.name} "
            f"PATH`; registered {kind} extractors: {_family_status(spec)}")
    if spec.family == "video":  # I3D / VideoMAE files: docs/metrics-video.md says where to get them
        files, flag = {"i3d-torchscript": ("StyleGAN-V's i3d_torchscript.pt", "--i3d-weights"),
                       "videomae": ("VideoMAE-v2's vit_g_hybrid_pt_1200e_ssv2_ft.pth", "--videomae-weights")
                       }.get(spec.loader, ("its weights file", "--weights"))
        raise LapgenError(f"no local weights for {spec.name} ({files}; lapgen never downloads it, see "
                          "docs/metrics-video.md)", hint=hint.replace("--weights", flag, 1))
    if spec.loader == "torchscript":
        raise LapgenError(f"no local weights for {spec.name} (NVIDIA's inception-2015-12-05.pt, the file "
                          "clean-fid downloads; lapgen never downloads it)", hint=hint)
    try:
        if spec.family == "inception":
            import torch

            dst = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]
            if not dst.exists():
                if os.environ.get("HF_HUB_OFFLINE") == "1":
                    raise OSError("offline mode")
                dst.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(INCEPTION_URL, str(dst), hash_prefix="6726825d", progress=False)
            return dst
        import open_clip

        cfg = open_clip.get_pretrained_cfg(spec.open_clip_model, "openai")
        if not cfg:
            raise LapgenError(f"no default weights are known for extractor {spec.name}", hint=hint)
        found = open_clip.download_pretrained(cfg)
        if not found or not Path(found).is_file():
            raise OSError("open_clip returned no weights file")
        return Path(found)
    except LapgenError:
        raise
    except Exception as exc:  # network, offline hub, permissions: all fixed the same way
        raise LapgenError(f"cannot find or download the {spec.name} weights ({exc.__class__.__name__})",
                          hint=hint) from exc


def resolve_weights(spec: ExtractorSpec, weights: str | Path | None) -> Path:
    """The weights file to use: `weights` (a path or registry name) > registry entry > library default."""
    if weights is not None:
        candidate = Path(weights).expanduser()
        if candidate.is_file():
            return candidate
        if candidate.suffix or os.sep in str(weights):
            raise LapgenError("weights file does not exist", path=candidate, hint="check --weights")
        found = _registry_weights(str(weights))
        if found is None:
            raise LapgenError(f"--weights {weights!r} is neither a file nor a registry entry with a local file")
        return found
    return _registry_weights(spec.name) or _default_weights(spec)


class RegisteredNetwork:
    """A registry feature network whose weights are resolved and hashed now and whose model is built on first use
    (a cache hit never loads it). Subclasses name the extractor families they accept (`FAMILIES`), the one-line
    error for any other (`WRONG_FAMILY`: message with `{name}`, hint) and build `_model`."""

    FAMILIES: tuple[str, ...] = ()
    WRONG_FAMILY: tuple[str, str] = ("{name} is not a network of this kind", "")

    def __init__(self, name: str, *, weights: str | Path | None = None, device: str = "cpu"):
        self.spec = get_spec(name)
        if self.spec.family not in self.FAMILIES:
            message, hint = self.WRONG_FAMILY
            raise LapgenError(message.format(name=name), hint=hint)
        self.weights_path = resolve_weights(self.spec, weights)
        self.weights_sha256 = weights_sha256(self.weights_path)
        self.device = device
        self._model = None

    @property
    def name(self) -> str:
        return self.spec.name
