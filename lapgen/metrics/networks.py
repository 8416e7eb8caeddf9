"""Weights file -> network: the one builder of each feature-extractor network lapgen runs.

`clip_from_file` (open_clip CLIP), `inception_from_file` (torch-fidelity's FID Inception-v3) and
`inception_torchscript_from_file` (NVIDIA's TorchScript Inception, the network clean-fid runs) read a local
file safely (`safe_state_dict`: safetensors, `torch.load(weights_only=True)` or a TorchScript archive, never a
full pickle) and return the network on the CPU in eval mode. The metrics' feature extractors
(`lapgen.metrics.features`) and the registry loaders (`lapgen.models.loading.load_clip` / `load_inception`)
both build through them, so a metric and a loaded model are always the same network.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lapgen.errors import LapgenError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def safe_state_dict(path: str | Path) -> dict[str, "torch.Tensor"]:
    """A state dict from safetensors, `torch.load(weights_only=True)` or a TorchScript archive (CPU)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            is_script = any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())
        if is_script:  # OpenAI's CLIP .pt files are TorchScript archives
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
            extra = ("input_resolution", "context_length", "vocab_size")  # ints, not weights
            return {k: v for k, v in state.items() if k not in extra}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LapgenError(f"cannot read weights ({exc.__class__.__name__})", path=path,
                          hint="lapgen loads safetensors or plain tensor state dicts "
                               "(torch.load weights_only)") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise LapgenError("weights file does not hold a state dict", path=path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_error(label: str, path: Path, exc: BaseException) -> LapgenError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return LapgenError(f"cannot load {label} weights ({exc.__class__.__name__}{': ' + first if first else ''})",
                       path=path, hint="point at the weights file of this model (safetensors, a tensor "
                                       "state dict, or OpenAI's TorchScript CLIP .pt)")


class _DropRandomInitWarning:
    """A logging filter: open_clip warns (on the root logger) that a model built without a pretrained tag
    is "initialized randomly"; `clip_from_file` loads the weights right after, so the warning would mislead."""

    @staticmethod
    def filter(record: Any) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def clip_from_file(arch: str, path: str | Path, *, label: str | None = None) -> tuple[Any, Any]:
    """open_clip model `arch` (fp32, CPU, eval) with the weights of a local file loaded strictly, and its
    evaluation transform.

    The one CLIP builder of lapgen: `load_clip` (registry entries) and the metrics' feature extractors
    (`lapgen.metrics.features`) both call it. The file is read by `safe_state_dict`: safetensors, a tensor
    state dict (`torch.load(weights_only=True)`) or OpenAI's TorchScript `ViT-*.pt` (same key names as
    open_clip's CLIP, so it loads into the named architecture).
    """
    import open_clip

    path = Path(path)
    label = label or arch
    if not path.is_file():
        raise LapgenError(f"{label}: weights file does not exist", path=path)
    import logging

    root = logging.getLogger()
    root.addFilter(_DropRandomInitWarning)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        model.load_state_dict(safe_state_dict(path), strict=True)
    except LapgenError:
        raise
    except Exception as exc:  # wrong architecture, wrong file: one line naming the file
        raise _load_error(label, path, exc) from exc
    finally:
        root.removeFilter(_DropRandomInitWarning)
    return model.float().eval(), preprocess


def inception_from_state(state: dict[str, Any], features: tuple[str, ...] = ("2048",)) -> Any:
    """torch-fidelity's FID `FeatureExtractorInceptionV3` built from an in-memory state dict.

    torch-fidelity's constructor fetches its weights with `load_state_dict_from_url` (and unpickles them
    fully); lapgen hands it the safely read state through that hook instead.
    """
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    original = tfi.load_state_dict_from_url
    tfi.load_state_dict_from_url = lambda *a, **k: state
    try:
        return tfi.FeatureExtractorInceptionV3("inception-v3-compat", list(features)).eval()
    finally:
        tfi.load_state_dict_from_url = original


def inception_from_file(path: str | Path, *, features: tuple[str, ...] = ("2048",),
                        label: str = "inception-v3") -> Any:
    """torch-fidelity's FID Inception (CPU, eval) with the weights of a local file (`safe_state_dict`).

    The one Inception builder of lapgen: `load_inception` and the metrics' feature extractors call it.
    """
    path = Path(path)
    if not path.is_file():
        raise LapgenError(f"{label}: weights file does not exist", path=path)
    state = safe_state_dict(path)
    try:
        return inception_from_state(state, features)
    except Exception as exc:  # a state dict of another network
        raise _load_error(label, path, exc) from exc


def inception_torchscript_from_file(path: str | Path, *, label: str = "inception-v3-clean") -> Any:
    """NVIDIA's TorchScript Inception (`inception-2015-12-05.pt`, the network clean-fid runs), CPU, eval.

    Read with `torch.jit.load` (a TorchScript archive, no Python pickle). The archive must have the
    interface clean-fid's `InceptionV3W` relies on: a `layers` submodule mapping (x - 128) / 128 at
    299x299 to 2048 pool3 features. lapgen never downloads it.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise LapgenError(f"{label}: weights file does not exist", path=path)
    is_script = False
    if zipfile.is_zipfile(path):  # torch.save files are zip archives too; TorchScript ones carry code/
        with zipfile.ZipFile(path) as zf:
            is_script = any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())
    if not is_script:
        raise LapgenError(f"{label}: not a TorchScript archive", path=path,
                          hint="point at NVIDIA's inception-2015-12-05.pt (the file clean-fid downloads)")
    import warnings

    try:
        with warnings.catch_warnings():  # torch >= 2.10 flags torch.jit as deprecated; the file format is fixed
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise _load_error(label, path, exc) from exc
    if not hasattr(model, "layers"):
        raise LapgenError(f"{label}: the TorchScript archive has no `layers` submodule, so it is not "
                          "clean-fid's Inception", path=path,
                          hint="point at NVIDIA's inception-2015-12-05.pt (the file clean-fid downloads)")
    return model.eval()
