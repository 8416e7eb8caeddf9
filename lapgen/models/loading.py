"""Registry entry -> model objects: diffusers pipelines, ControlNets and AnimateDiff motion adapters, ultralytics YOLO, open_clip CLIP,
torch-fidelity's Inception, Rendezvous and RIFE frame interpolators.

Every loader takes a *source* (registry name, local path, `hf:ORG/NAME`, or an already resolved `Entry`),
a device (`auto|cpu|cuda[:N]`) and, for float models, a dtype (`fp32|fp16|bf16|auto`; fp16 on CPU falls back
to fp32 with a notice). Weights load only through safetensors, `torch.load(weights_only=True)` or, for
OpenAI's TorchScript CLIP files, `torch.jit.load` (TorchScript archives carry no arbitrary Python pickle).

Offline: with `HF_HUB_OFFLINE=1` (lapgen treats it as "offline" for every download) or without network, a
source whose weights are not on disk fails at once with one line naming the entry and how to point it at
a local copy (`lapgen models add NAME PATH`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lapgen.errors import LapgenError
from lapgen.metrics.networks import (  # noqa: F401  (re-exported: the weight-file builders)
    clip_from_file,
    inception_from_file,
    inception_from_state,
    inception_torchscript_from_file,
    safe_state_dict,
)
from lapgen.device import resolve_device, resolve_dtype
from lapgen.progress import notice
from lapgen.registry import Entry, hub_offline, resolve

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import ControlNetModel, MotionAdapter, StableDiffusionPipeline

__all__ = [
    "clip_from_file",
    "ensure_local",
    "inception_from_file",
    "interpolator_weights",
    "load_clip",
    "load_controlnet",
    "load_inception",
    "load_motion_adapter",
    "load_recognizer",
    "load_sd_pipeline",
    "load_segmenter",
    "resolve_device",
    "resolve_dtype",
    "resolve_entry",
    "safe_state_dict",
    "weights_fingerprint",
    "inception_torchscript_from_file",
]

def resolve_entry(source: Any, kind: str) -> Entry:
    """An `Entry` of `kind` from a source or an entry (checked)."""
    if isinstance(source, Entry):
        if source.kind != kind:
            raise LapgenError(f"'{source.name}' is a {source.kind}, not a {kind}")
        return source
    return resolve(source, kind)


def _offline_error(entry: Entry, what: str = "weights") -> LapgenError:
    where = entry.hub_id or entry.source
    if entry.hub_id:
        fetch = f"download it where there is network (`hf download {entry.hub_id} --local-dir DIR`)"
    else:
        fetch = f"get the {what} file(s) ({', '.join(entry.options.get('files', [])) or where})"
    why = "HF_HUB_OFFLINE is set" if hub_offline() else "download failed (no network?)"
    return LapgenError(
        f"model '{entry.name}': {what} from {where} are not on this machine and {why}",
        hint=f"{fetch}, then `lapgen models add {_add_name(entry)} PATH`",
    )


def _add_name(entry: Entry) -> str:
    return entry.name if (entry.builtin or entry.user) else "NAME"


def _check_hub_available(entry: Entry) -> None:
    if hub_offline() and not entry.present():
        raise _offline_error(entry)


def ensure_local(source: Any, kind: str = "pipeline") -> Path | str:
    """A local folder/file for the entry when there is one (materialising `tiny-*`), else its hub id."""
    entry = resolve_entry(source, kind)
    if entry.path is not None:
        if not entry.path.exists():
            raise LapgenError(f"model '{entry.name}': weights path no longer exists", path=entry.path,
                              hint=f"fix it with `lapgen models add {_add_name(entry)} PATH` "
                                   "or remove the entry")
        return entry.path
    if entry.source == "tiny:sd":
        from lapgen.models.tiny import materialize_tiny_sd

        return materialize_tiny_sd(seed=int(entry.options.get("seed", 0)))
    if entry.source == "tiny:controlnet":
        from lapgen.models.tiny import materialize_tiny_controlnet

        return materialize_tiny_controlnet(seed=int(entry.options.get("seed", 0)))
    if entry.hub_id:
        _check_hub_available(entry)
        return entry.hub_id
    raise _offline_error(entry)


def _quiet_loaders() -> None:
    """lapgen shows its own progress; silence diffusers/transformers per-component loading bars."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


def _dtype_kwargs(torch_dtype: torch.dtype) -> dict[str, Any]:
    """Recent diffusers name the argument `dtype` (`torch_dtype` is deprecated); older ones `torch_dtype`."""
    from diffusers.utils import deprecation_utils

    return {"dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype": torch_dtype}


@contextmanager
def _library_warnings_silenced() -> Iterator[None]:
    """diffusers and transformers log their own lines while they try the hub ("Couldn't connect to the Hub:
    ...", "Will try to load from local cache."); lapgen says what happened in its one line, so their
    warnings are held back while a hub name loads (errors still show)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    before = (dlog.get_verbosity(), tlog.get_verbosity())
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(before[0])
        tlog.set_verbosity(before[1])


def _from_pretrained(cls: Any, entry: Entry, location: Path | str, **kwargs: Any) -> Any:
    """`cls.from_pretrained`, turning hub/network failures into one-line errors."""
    _quiet_loaders()
    if isinstance(location, str) and entry.revision:
        kwargs["revision"] = entry.revision
    try:
        if isinstance(location, str):  # a hub name: the libraries' own hub messages would precede lapgen's
            with _library_warnings_silenced():
                return cls.from_pretrained(location, **kwargs)
        return cls.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        if isinstance(location, Path):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise LapgenError(f"model '{entry.name}' could not be loaded ({first})", path=location,
                              hint="point at a folder written by diffusers' save_pretrained") from exc
        raise _offline_error(entry) from exc


def _check_pipeline_components(entry: Entry, location: Path) -> None:
    """Every component folder that model_index.json lists must exist (an incomplete copy of a pipeline,
    e.g. without `tokenizer/`, otherwise fails deep inside transformers with a misleading message)."""
    import json

    try:
        index = json.loads((location / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise LapgenError(f"model '{entry.name}': model_index.json is not valid JSON", path=location,
                          hint="point at a folder written by diffusers' save_pretrained") from exc
    missing = [name for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if isinstance(index.get(name), list) and index[name][0] is not None
               and not (location / name).is_dir()]
    if missing:
        folders = ", ".join(m + "/" for m in missing)
        raise LapgenError(f"model '{entry.name}': the pipeline folder has no {folders} "
                          "(listed in model_index.json)", path=location,
                          hint="copy the complete folder (e.g. tokenizer/ from the SD 1.5 folder)")


def load_sd_pipeline(source: Any = None, *, device: Any = "auto", dtype: Any = "fp32",
                     entry: Entry | None = None) -> StableDiffusionPipeline:
    """A diffusers `StableDiffusionPipeline` (safety checker off) on `device` in `dtype`.

    `source=None` uses the default pipeline (the last trained Stage-1 model, else `sd15`).
    """
    from diffusers import StableDiffusionPipeline

    entry = entry or resolve_entry(source, "pipeline")
    location = ensure_local(entry, "pipeline")
    if isinstance(location, Path) and not (location / "model_index.json").exists():
        raise LapgenError(f"model '{entry.name}' is not a diffusers pipeline folder (no model_index.json)",
                          path=location,
                          hint="give the folder written by `lapgen finetune` or save_pretrained")
    if isinstance(location, Path):
        _check_pipeline_components(entry, location)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    pipe = _from_pretrained(StableDiffusionPipeline, entry, location, **_dtype_kwargs(torch_dtype),
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)


def load_controlnet(source: Any = None, *, device: Any = "auto", dtype: Any = "fp32") -> ControlNetModel:
    """A diffusers `ControlNetModel` (default: the last trained Stage-2 ControlNet)."""
    from diffusers import ControlNetModel

    entry = resolve_entry(source, "controlnet")
    location = ensure_local(entry, "controlnet")
    if isinstance(location, Path) and not (location / "config.json").exists():
        sub = location / "controlnet"
        if (sub / "config.json").exists():
            location = sub
        else:
            raise LapgenError(f"model '{entry.name}' is not a ControlNet folder (no config.json)",
                              path=location,
                              hint="give the folder written by `lapgen train-controlnet` or save_pretrained")
    dev = resolve_device(device)
    model = _from_pretrained(ControlNetModel, entry, location, **_dtype_kwargs(resolve_dtype(dtype, dev)))
    return model.to(dev).eval()


def motion_adapter_location(source: Any = None, *, announce: bool = True) -> tuple[Entry, Path | str]:
    """The entry of a motion adapter and where its weights are: a local folder holding `config.json` (the
    folder itself, or its `motion_adapter/` of a lapgen checkpoint) or a hub id. Nothing is loaded; offline
    and not cached is a one-line error here, before any other work. `source=None` takes the registry's
    default, named on stderr unless `announce` is false (the caller then names it once its checks pass)."""
    if source is None and not announce:
        from lapgen.registry import default_for

        default = default_for("motion-adapter")
        if default is None:
            resolve_entry(None, "motion-adapter")  # the registry's one-line "no default yet" error
        source = default
    entry = resolve_entry(source, "motion-adapter")
    location = ensure_local(entry, "motion-adapter")
    if isinstance(location, Path):
        if not (location / "config.json").exists() and (location / "motion_adapter" / "config.json").exists():
            location = location / "motion_adapter"
        if not (location / "config.json").exists():
            raise LapgenError(f"model '{entry.name}' is not a motion adapter folder (no config.json)",
                              path=location, hint="give a folder written by `lapgen train-motion` or "
                              "MotionAdapter.save_pretrained")
    return entry, location


def load_motion_adapter(source: Any = None, *, device: Any = "auto", dtype: Any = "fp32") -> MotionAdapter:
    """A diffusers `MotionAdapter` (AnimateDiff motion modules; default: the last `lapgen train-motion` run,
    else the built-in `animatediff-v1-5-2` from the hub)."""
    from diffusers import MotionAdapter

    entry, location = motion_adapter_location(source)
    dev = resolve_device(device)
    model = _from_pretrained(MotionAdapter, entry, location, **_dtype_kwargs(resolve_dtype(dtype, dev)))
    return model.to(dev).eval()


def load_segmenter(source: Any = None, *, device: Any = "auto") -> Any:
    """An ultralytics `YOLO` segmenter via `lapgen.models.segmentation.load_yolo`.

    `source`: registry name, `.pt` file, `lapgen segment train` folder, an ultralytics model config
    (`yolov8n-seg.yaml`, random weights) or None (the default segmenter). Without a weights file the
    built-in `yolov8n-seg` is built from its yaml with random weights, and a notice says so.
    """
    from lapgen.models.segmentation import load_yolo, resolve_segmenter

    if isinstance(source, Entry):
        entry = resolve_entry(source, "segmenter")
        target = entry.path or entry.options.get("yaml")
        info = {"name": entry.name, "random_init": entry.path is None}
        if target is None:
            raise _offline_error(entry)
    else:  # the segmentation module's resolution also knows ultralytics' bundled model configs
        target, info = resolve_segmenter(None if source is None else str(source))
    if isinstance(target, Path) and not target.exists():
        raise LapgenError(f"segmenter '{info.get('name')}': weights do not exist", path=target,
                          hint=f"fix it with `lapgen models add {info.get('name')} PATH`")
    if info.get("random_init"):
        notice(f"segmenter '{info.get('name')}': no weights file; building {target} with random weights "
               f"(point it at weights with `lapgen models add NAME PATH`)")
    model = load_yolo(target)
    return model.to(resolve_device(device))


def load_recognizer(source: Any = None, *, device: Any = "auto") -> Any:
    """A Rendezvous model (official or lapgen-trained) via `lapgen.models.recognition.checkpoint`."""
    from lapgen.models.recognition.checkpoint import load_recognizer as load

    return load(source, device=device)


def interpolator_weights(source: Any = None) -> tuple[Entry, Path]:
    """The entry and weights file of a frame interpolator (default: the registry's default, `rife-v3`).

    Nothing is downloaded: without a file on disk, one line says where to get it and how to register it (the
    default is named on stderr only once it is usable, so the error stays the only line).
    """
    from lapgen.registry import announce_default, default_for

    by_default = source is None
    entry = resolve_entry(default_for("interpolator") if by_default else source, "interpolator")
    if entry.path is None:
        files = ", ".join(entry.options.get("files", [])) or "the weights file"
        url = entry.options.get("url")
        raise LapgenError(
            f"interpolator '{entry.name}': no weights on this machine (looked for {files} in $LAPGEN_HOME/weights)",
            hint=f"get {files}{' from ' + url if url else ''}, then `lapgen models add {_add_name(entry)} PATH` "
                 "(lapgen never downloads it), or use --interpolator flow",
        )
    if not entry.path.is_file():
        raise LapgenError(f"interpolator '{entry.name}': weights file does not exist", path=entry.path,
                          hint=f"fix it with `lapgen models add {_add_name(entry)} PATH`")
    if by_default:
        announce_default("interpolator")
    return entry, entry.path


# --------------------------------------------------------------------------------------------------
# Feature extractors


def weights_fingerprint(source: Any, kind: str = "feature-extractor") -> str:
    """A stable id of an entry's weights for cache keys: sha256 of a local file, else the source string."""
    from lapgen.outputs import file_sha256

    entry = resolve_entry(source, kind)
    if entry.path is not None and entry.path.is_file():
        return "sha256:" + file_sha256(entry.path)
    if entry.hub_id:
        return f"{entry.source}"
    return str(entry.path or entry.source)


def load_clip(source: Any = "clip-vit-b-32", *, device: Any = "auto", dtype: Any = "fp32",
              arch: str | None = None) -> tuple[Any, Any]:
    """An open_clip CLIP model (eval, on `device`) and its evaluation preprocessing transform.

    Local weights (an entry's path) load into the entry's architecture (`arch` overrides it, needed for
    user entries that are not built-ins) through `clip_from_file`; otherwise open_clip's pretrained tag is
    fetched (or read from the hub cache) unless offline.
    """
    import open_clip

    entry = resolve_entry(source if source is not None else "clip-vit-b-32", "feature-extractor")
    arch = arch or entry.options.get("arch") or (entry.card or {}).get("arch")
    if entry.options.get("loader", "open_clip") != "open_clip" or not arch:
        raise LapgenError(f"'{entry.name}' is not an open_clip CLIP model",
                          hint="use clip-vit-b-32 or clip-vit-l-14-336, or pass the architecture")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if entry.path is not None:
        model, preprocess = clip_from_file(arch, entry.path, label=f"CLIP '{entry.name}' ({arch})")
    else:
        _check_hub_available(entry)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                arch, pretrained=entry.options["pretrained"])
        except (OSError, RuntimeError, FileNotFoundError) as exc:
            raise _offline_error(entry) from exc
    return model.to(dev, torch_dtype).eval(), preprocess


def load_inception(source: Any = "inception-v3", *, device: Any = "auto",
                   features: tuple[str, ...] = ("2048",)) -> Any:
    """torch-fidelity's FID `FeatureExtractorInceptionV3` (input: uint8 (N, 3, H, W); fp32 inside), or for a
    `torchscript` entry (`inception-v3-clean`) NVIDIA's TorchScript module as clean-fid loads it.

    Local weights are read with `safe_state_dict` (torch-fidelity itself would unpickle them fully) by
    `inception_from_file`; TorchScript archives by `inception_torchscript_from_file`, never downloaded.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    entry = resolve_entry(source if source is not None else "inception-v3", "feature-extractor")
    loader = entry.options.get("loader", "torch-fidelity")
    if loader == "torchscript":
        if entry.path is None:
            files = ", ".join(entry.options.get("files", [])) or "the TorchScript file"
            raise LapgenError(f"model '{entry.name}': {files} is not on this machine (lapgen never downloads it)",
                              hint=f"get {files} (the file clean-fid downloads), then "
                                   f"`lapgen models add {_add_name(entry)} PATH`")
        return inception_torchscript_from_file(entry.path, label=f"Inception '{entry.name}'").to(
            resolve_device(device))
    if loader != "torch-fidelity":
        raise LapgenError(f"'{entry.name}' is not an Inception model", hint="use inception-v3 or inception-v3-clean")
    if entry.path is not None:
        model = inception_from_file(entry.path, features=features, label=f"Inception '{entry.name}'")
    else:
        if hub_offline():
            raise _offline_error(entry)
        try:
            model = tfi.FeatureExtractorInceptionV3("inception-v3-compat", list(features))
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise _offline_error(entry) from exc
    return model.to(resolve_device(device)).eval()


def load_video_extractor(source: Any = "i3d-kinetics400", *, device: Any = "auto") -> Any:
    """The network of a video feature-extractor entry (eval, on `device`): StyleGAN-V's I3D TorchScript file
    (`i3d-kinetics400`, FVD) or a VideoMAE-v2 encoder (`videomae-v2-g`, CD-FVD). Local files only, never
    downloaded; built by `lapgen.metrics.video_networks.load_i3d` / `lapgen.metrics.videomae.videomae_from_file`,
    as `lapgen eval video` builds them."""
    from lapgen.metrics.video_networks import is_torchscript, load_i3d
    from lapgen.metrics.videomae import videomae_from_file

    entry = resolve_entry(source if source is not None else "i3d-kinetics400", "feature-extractor")
    loader = entry.options.get("loader")
    if loader is None and entry.path is not None and entry.path.is_file():  # a user entry: the file says which
        loader = "i3d-torchscript" if is_torchscript(entry.path) else "videomae"
    if loader not in ("i3d-torchscript", "videomae"):
        raise LapgenError(f"'{entry.name}' is not a video network", hint="use i3d-kinetics400 or videomae-v2-g")
    if entry.path is None:
        files = " or ".join(entry.options.get("files", [])) or "its weights file"
        raise LapgenError(f"model '{entry.name}': {files} is not on this machine (lapgen never downloads it)",
                          hint=f"get it (docs/metrics-video.md), then `lapgen models add {_add_name(entry)} PATH`")
    build = load_i3d if loader == "i3d-torchscript" else videomae_from_file
    return build(entry.path, label=f"'{entry.name}'").to(resolve_device(device)).eval()
