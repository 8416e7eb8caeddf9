"""The checkpoint registry: one name per set of weights, for every stage and every metric.

A *source* is what a user types after `--model`, `--controlnet`, `--segmenter`, `--clip`...:

- a registry name: a built-in (`sd15`, `tiny-sd`, `clip-vit-b-32`, ...) or a user entry;
- a local path (a diffusers folder, a `.pt`/`.pth`/`.safetensors` file, a lapgen artefact folder);
- a Hugging Face Hub id written `hf:ORG/NAME` (optionally `hf:ORG/NAME@REVISION`).

User entries live in `$LAPGEN_HOME/registry.yaml` (plain YAML): `lapgen models add NAME SOURCE`, and every
artefact lapgen trains registers itself under the user's `--name` (`register_artifact`) and becomes the
default of its kind. A user entry with a built-in's name keeps the built-in's meaning and points it at
local weights (`lapgen models add clip-vit-b-32 /data/weights/ViT-B-32.pt`): how offline clusters work.

This module never imports torch (`lapgen models list/show` stay light); `lapgen.models.loading` turns an
`Entry` into objects. Design after torch-fidelity's `registry.py` and open_clip's `pretrained.py`. The user
file, hub-cache lookups and local weight files are in `lapgen.registry_store` (re-exported here).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any


from lapgen.cards import read_card
from lapgen.errors import LapgenError
from lapgen.registry_builtins import BUILTIN_DEFAULTS, BUILTINS
from lapgen.registry_store import (  # noqa: F401  (re-exported: part of lapgen.registry's interface)
    REGISTRY_FILE,
    Entry,
    edit_user,
    find_builtin_file,
    hub_cached,
    hub_offline,
    looks_like_path,
    parse_hub_source,
    read_user,
    registry_path,
    safe_card,
    weights_dirs,
)

KINDS = ("pipeline", "controlnet", "motion-adapter", "segmenter", "feature-extractor", "recognizer", "interpolator")
KIND_LABELS = {
    "pipeline": "diffusion pipeline",
    "controlnet": "ControlNet",
    "motion-adapter": "motion adapter",
    "segmenter": "tool segmenter",
    "feature-extractor": "feature extractor",
    "recognizer": "action-triplet recognizer",
    "interpolator": "frame interpolator",
}
# How a command names the model it took by default (the option that would have chosen it).
DEFAULT_LABELS = {
    "pipeline": "model",
    "controlnet": "controlnet",
    "motion-adapter": "motion adapter",
    "segmenter": "segmenter",
    "feature-extractor": "feature extractor",
    "recognizer": "recognizer",
    "interpolator": "interpolator",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# --------------------------------------------------------------------------------------------------
# Built-in entries (table in lapgen/registry_builtins.py)

_BUILTINS: dict[str, Entry] = {
    name: Entry(name, spec["kind"], spec["source"], description=spec["description"], builtin=True,
                options=dict(spec.get("options", {})))
    for name, spec in BUILTINS.items()
}


def builtin_names() -> list[str]:
    return list(_BUILTINS)


def _card_kind(card: dict[str, Any] | None) -> str | None:
    kind = str((card or {}).get("kind", ""))
    return kind if kind in KINDS else None


def detect_kind(path: Path) -> str | None:
    """Guess the kind of a local artefact from its card or layout (no torch import)."""
    card = safe_card(path)
    if (kind := _card_kind(card)) is not None:
        return kind
    if path.is_dir():
        if (path / "model_index.json").exists():
            return "pipeline"
        config = path / "config.json"
        if config.exists():
            try:
                cls = json.loads(config.read_text()).get("_class_name", "")
            except (OSError, ValueError):
                cls = ""
            if cls == "ControlNetModel":
                return "controlnet"
            if cls == "MotionAdapter":
                return "motion-adapter"
        if (path / "weights" / "best.pt").exists() or (path / "weights" / "last.pt").exists():
            return "segmenter"
        return None
    name = path.name.lower()
    if "yolo" in name:
        return "segmenter"
    if "rendezvous" in name or "rdv" in name:
        return "recognizer"
    if "inception" in name or "clip" in name or name.startswith("vit-") or "i3d" in name or "videomae" in name:
        return "feature-extractor"
    if "flownet" in name or "rife" in name:
        return "interpolator"
    return None


# --------------------------------------------------------------------------------------------------
# Names and kinds


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise LapgenError(f"unknown model kind '{kind}'", hint=f"valid kinds: {', '.join(KINDS)}")
    return kind


def check_name(name: str, *, allow_builtin: bool = False) -> str:
    """Validate a name for a new entry (call before heavy work, e.g. on `--name`)."""
    if not _NAME_RE.match(name or ""):
        raise LapgenError(f"invalid model name '{name}'",
                          hint="use letters, digits and . _ + - (no slashes), starting with a letter/digit")
    if name in _BUILTINS and not allow_builtin:
        raise LapgenError(f"'{name}' is a built-in model name", hint="choose another --name")
    return name


# --------------------------------------------------------------------------------------------------
# Resolution


def _from_user(name: str, raw: dict[str, Any]) -> Entry:
    base = _BUILTINS.get(name)
    path = Path(raw["path"]) if raw.get("path") else None
    if base is not None:  # a built-in pointed at local weights
        hub = str(raw.get("source", "")).startswith("hf:")
        return replace(base, path=path or base.path, user=True, card=safe_card(path) if path else None,
                       description=raw.get("description") or base.description,
                       source=raw["source"] if hub else base.source)
    card = safe_card(path) if path else None
    return Entry(name=name, kind=raw.get("kind", "pipeline"), source=str(raw.get("source", path)), path=path,
                 description=raw.get("description") or str((card or {}).get("description") or ""), card=card,
                 user=True)


def _builtin(name: str) -> Entry:
    entry = _BUILTINS[name]
    found = find_builtin_file(entry.options)
    return replace(entry, path=found) if found else entry


def list_entries(kind: str | None = None) -> list[Entry]:
    """Built-in entries (with user overrides) then user entries, optionally of one kind."""
    user = read_user()["entries"]
    out = [(_from_user(n, user[n]) if n in user else _builtin(n)) for n in _BUILTINS]
    out += [_from_user(n, raw) for n, raw in user.items() if n not in _BUILTINS]
    return [e for e in out if kind is None or e.kind == kind]


def _unknown(name: str, kind: str | None) -> LapgenError:
    names = [e.name for e in list_entries(kind)]
    what = f"{KIND_LABELS[kind]} " if kind else ""
    return LapgenError(f"unknown {what}model '{name}'",
                       hint=f"valid names: {', '.join(names) or '(none yet)'}; "
                            "or give a local path or hf:ORG/NAME")


def _local_entry(source: str, kind: str | None) -> Entry:
    path = Path(source).expanduser().absolute()
    if not path.exists():
        raise LapgenError("model path does not exist", path=path,
                          hint="check the path, or see `lapgen models list` for registered names")
    path = path.resolve()
    card = read_card(path, required=False)  # a path the user gave: a broken card is an error, not "no card"
    detected = detect_kind(path)
    if card and card.get("kind") and card["kind"] not in KINDS:  # e.g. a frames-dataset folder
        raise LapgenError(f"this is a {card['kind']} written by lapgen, not a model", path=path,
                          hint="point at a model folder or file, or a name from `lapgen models list`")
    return Entry(name=str(path), kind=detected or kind or "pipeline", source=str(path), path=path,
                 description=(card or {}).get("description", ""), card=card)


_announced: set[tuple[str, str]] = set()  # (kind, name) defaults this process has named on stderr


def reset_announcements() -> None:
    """Forget which defaults were announced (the CLI calls it at the start of every command)."""
    _announced.clear()


def announce_default(kind: str) -> tuple[str, str] | None:
    """Say on stderr, once per command, which model a command takes by default and why (a held notice: a
    command that then fails on bad input prints only its error line).

    E.g. `model: demo-sd (registry default, set by lapgen demo)`. Returns (name, why), or None without one.
    """
    from lapgen.progress import notice

    name, why = describe_default(kind)
    if name is None:
        return None
    if (kind, name) not in _announced:
        _announced.add((kind, name))
        notice(f"{DEFAULT_LABELS.get(kind, kind)}: {name} (registry default, {why})", hold=True)
    return name, why


def describe_default(kind: str) -> tuple[str | None, str]:
    """(the default name of `kind`, who made it the default in words)."""
    check_kind(kind)
    user = read_user()
    name = user["defaults"].get(kind)
    if name and (name in user["entries"] or name in _BUILTINS):
        return name, user["default_origins"].get(kind) or "set by lapgen models use"
    builtin = BUILTIN_DEFAULTS[kind]
    return builtin, "built-in default"


def resolve(source: str | Path | None = None, kind: str | None = None) -> Entry:
    """Turn a registry name, local path or `hf:ORG/NAME` into an `Entry` (no download, no torch).

    `source=None` takes the default of `kind` and says so on stderr (`announce_default`). With `kind`
    given, an entry of another kind is an error.
    """
    if kind is not None:
        check_kind(kind)
    if source is None or str(source) == "":
        if kind is None:
            raise LapgenError("no model given", hint="pass a registry name, a local path or hf:ORG/NAME")
        name = default_for(kind)
        if name is None:
            raise LapgenError(f"no default {KIND_LABELS[kind]} yet",
                              hint="train one, pass a name/path, or set one with `lapgen models use NAME`")
        entry = resolve(name, kind)
        announce_default(kind)
    else:
        source = str(source)
        user = read_user()["entries"]
        if source.startswith("hf:"):
            parse_hub_source(source)
            entry = Entry(name=source, kind=kind or "pipeline", source=source)
        elif source in user:
            entry = _from_user(source, user[source])
        elif source in _BUILTINS:
            entry = _builtin(source)
        elif looks_like_path(source) or Path(source).expanduser().exists():
            entry = _local_entry(source, kind)
        else:
            raise _unknown(source, kind)
    if kind is not None and entry.kind != kind:
        raise LapgenError(f"'{entry.name}' is a {KIND_LABELS[entry.kind]}, not a {KIND_LABELS[kind]}",
                          hint=f"pick a {kind} from `lapgen models list`")
    return entry


def default_for(kind: str) -> str | None:
    """The name used when a command gets no model of `kind`: set by `models use` or the last training."""
    return describe_default(kind)[0]


# --------------------------------------------------------------------------------------------------
# Editing


def add_entry(name: str, source: str, kind: str | None = None, description: str | None = None) -> Entry:
    """`lapgen models add`: a user entry for a local path or hub id (a built-in name keeps its meaning)."""
    check_name(name, allow_builtin=True)
    base = _BUILTINS.get(name)
    if kind is not None:
        check_kind(kind)
        if base is not None and kind != base.kind:
            raise LapgenError(f"'{name}' is a built-in {KIND_LABELS[base.kind]}",
                              hint="drop --kind or use another name")
    raw: dict[str, Any] = {}
    if source.startswith("hf:"):
        parse_hub_source(source)
        if base is not None and not base.source.startswith("hf:"):
            raise LapgenError(f"'{name}' loads through {base.source.split(':')[0]}, not the hub",
                              hint="point it at a local weights file instead")
        raw.update(kind=kind or (base.kind if base else "pipeline"), source=source)
    else:
        path = Path(source).expanduser().absolute()
        if not path.exists():
            raise LapgenError("model path does not exist", path=path, hint="give an existing file or folder")
        path = path.resolve()
        card = safe_card(path)
        if card and card.get("kind") and card["kind"] not in KINDS:  # e.g. a frames-dataset folder
            raise LapgenError(f"this is a {card['kind']} written by lapgen, not a model", path=path,
                              hint="point at a model folder or weights file")
        # What the folder itself says (its card, or a diffusers/ultralytics layout) must agree with the kind;
        # file names are only a guess, so a file may be registered under any kind.
        known = _card_kind(card) or (detect_kind(path) if path.is_dir() else None)
        kind = kind or (base.kind if base else detect_kind(path))
        if kind is None:
            raise LapgenError(f"cannot tell what kind of model {path.name} is", path=path,
                              hint=f"pass --kind ({', '.join(KINDS)})")
        if known is not None and known != kind:
            raise LapgenError(f"{path.name} is a {KIND_LABELS[known]}, not a {KIND_LABELS[kind]}", path=path,
                              hint=f"register it as --kind {known}" if base is None else "use another name")
        raw.update(kind=kind, source=str(path), path=str(path))
    if description:
        raw["description"] = description
    with edit_user() as data:
        data["entries"][name] = raw
    return resolve(name)


def remove_entry(name: str) -> None:
    """`lapgen models remove`: drop a user entry (a built-in reverts to its own weights)."""
    with edit_user() as data:
        if name not in data["entries"]:
            if name in _BUILTINS:
                raise LapgenError(f"'{name}' is a built-in model and cannot be removed",
                                  hint="only entries added with `lapgen models add` or trained by lapgen can")
            raise _unknown(name, None)
        del data["entries"][name]
        for kind, default in list(data["defaults"].items()):
            if default == name:
                del data["defaults"][kind]
                data["default_origins"].pop(kind, None)


def set_default(name: str, origin: str = "set by lapgen models use") -> Entry:
    """`lapgen models use`: make `name` the default of its kind; `origin` says who did (shown when used)."""
    entry = resolve(name)
    if entry.name not in _BUILTINS and not entry.user:
        raise LapgenError(f"'{name}' is not a registered name",
                          hint="register it first with `lapgen models add`")
    with edit_user() as data:
        data["defaults"][entry.kind] = entry.name
        data["default_origins"][entry.kind] = origin
    return entry


def register_artifact(name: str, kind: str, path: str | Path, card: dict[str, Any] | None = None, *,
                      make_default: bool = True, description: str | None = None) -> Entry:
    """Register a trained artefact folder under `name` (the user's `--name`); it becomes the default.

    The folder's card (`lapgen.yaml`) is read at resolve time, so metrics added later with
    `cards.update_card` show up in `lapgen models show`. If `card` is given and the folder has none yet,
    it is written there.
    """
    from lapgen.cards import write_card

    check_name(name)
    check_kind(kind)
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise LapgenError("artefact to register does not exist", path=path)
    if card is not None and safe_card(path) is None:
        write_card(path, card)
    card = safe_card(path) or card or {}
    raw = {"kind": kind, "source": str(path), "path": str(path),
           "description": description or card.get("description") or f"{KIND_LABELS[kind]} trained by lapgen",
           "parent": card.get("parent")}
    with edit_user() as data:
        data["entries"][name] = {k: v for k, v in raw.items() if v is not None}
        if make_default:
            data["defaults"][kind] = name
            data["default_origins"][kind] = "set when lapgen trained it with --name"
    return resolve(name, kind)


# What a model card keeps of one `lapgen eval` result, and which fields make two results the same measurement.
METRIC_RECORD_FIELDS = ("metric", "value", "extractor", "protocol", "gen", "real", "n_gen", "n_real", "setup",
                        "created")
METRIC_SAME_RUN = ("gen", "real", "n_gen", "n_real", "protocol")


def record_metrics(results: list[dict[str, Any]]) -> list[str]:
    """Add `lapgen eval` results to the provenance card of the lapgen-trained model that made each set.

    A generated set's card (written by `lapgen sample`) names its pipeline (`model`) and its ControlNet. Each
    result goes into the card of the ControlNet when there is one, else of the pipeline, but only when that
    model is a folder written by `lapgen finetune` or `lapgen train-controlnet` (built-in, hub and external
    weights are left alone). Returns the names of the models whose cards were updated; `lapgen models show
    NAME` then lists the metrics.

    A card never mixes protocols silently: `metrics[<result key>]` is a list of results, each with its sets,
    N and setup. A result replaces only the one measured on the same GEN and REAL sets with the same N (a
    re-run); another N or another REAL set is kept beside it.
    """
    from lapgen.cards import update_card

    updated: list[str] = []
    for result in results:
        gens = (result.get("spread") or {}).get("gens") or [result.get("gen")]  # seed replicates: any one
        gen_card = safe_card(Path(gens[0])) if gens[0] else None
        if not gen_card or gen_card.get("kind") != "generated-set":
            continue
        name = gen_card.get("controlnet") or gen_card.get("model")
        try:
            entry = resolve(name) if name else None
        except LapgenError:  # the model was removed or moved since the set was sampled
            continue
        if (entry is None or entry.path is None or not entry.path.is_dir()
                or _card_kind(entry.card) not in ("pipeline", "controlnet")
                or not isinstance(entry.card.get("training"), dict)):
            continue
        record = {k: result.get(k) for k in METRIC_RECORD_FIELDS}
        held = (entry.card.get("metrics") or {}).get(result["key"])
        held = held if isinstance(held, list) else [held] if isinstance(held, dict) else []  # (older cards)
        kept = [r for r in held if [r.get(k) for k in METRIC_SAME_RUN] != [record[k] for k in METRIC_SAME_RUN]]
        update_card(entry.path, metrics={result["key"]: [*kept, record]})
        updated.append(entry.name)
    return sorted(set(updated))
