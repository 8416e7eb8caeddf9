"""Frame interpolators for the interleaved-frame smoother (ControlVideo, Zhang et al. 2023, §3.3).

An interpolator maps two batches of frames `a`, `b` (tensors `(N, 3, H, W)`, float in [0, 1]) to their
temporal midpoints `(N, 3, H, W)`. The smoother calls it once per pass with all neighbour pairs batched.

Names users type with `--interpolator` (`lapgen video --list-interpolators`):
- `auto` (default): RIFE with the registry's default interpolator weights (built-in entry `rife-v3`, or
  one chosen with `lapgen models use`) when that file is on this machine, else `flow`.
- `rife`: RIFE's IFNet_HDv3 (`rife.py`), the interpolator of the original ControlVideo, with the weights
  of the registry's default interpolator entry; `rife:PATH` takes a `flownet.pkl` file directly (a
  TorchScript `.pt` or torch.export `.pt2` RIFE-style model of your own also works there), and any
  registry name of kind `interpolator` works too. lapgen never downloads weights.
- `flow`: weight-free optical-flow midpoint. OpenCV Farnebäck flow both ways on greyscale, each endpoint
  backward-warped half-way with `cv2.remap`, the two warps averaged. CPU-cheap at 128 px.
- `linear`: the pixel average; fast, but ghosts moving tools.

`resolve_interpolator` also says which interpolator ran and with which weights, for the video's card.
Every interpolator maps `(x, x)` to `x` exactly, so identical frames stay identical through the smoother.
"""

from __future__ import annotations

import inspect
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lapgen.errors import LapgenError

Interpolator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

AUTO = "auto"
_REGISTRY: dict[str, tuple[Callable[..., Interpolator], str]] = {}


@dataclass
class InterpolatorChoice:
    """A resolved interpolator and what a video's card records about it."""

    fn: Interpolator
    name: str  # flow | linear | rife | a registered method | "callable"
    requested: str
    weights: str | None = None  # the weights file
    entry: str | None = None  # the registry entry the weights came from
    sha256: str | None = None
    reason: str = ""

    def card(self) -> dict[str, Any]:
        out = {"requested": self.requested, "used": self.name}
        out.update(
            {
                k: v
                for k, v in (
                    ("weights", self.weights),
                    ("entry", self.entry),
                    ("sha256", self.sha256),
                    ("reason", self.reason),
                )
                if v
            }
        )
        return out


def register_interpolator(name: str, factory: Callable[..., Interpolator], description: str) -> None:
    """Add an interpolator factory under `name` (`factory(**options) -> (a, b) -> midpoint`)."""
    _REGISTRY[name] = (factory, description)


def list_interpolators() -> dict[str, str]:
    """Interpolator names -> one-line descriptions (`auto` first, then the registered methods)."""
    return {
        AUTO: "RIFE when the registry's default interpolator weights are on this machine, else flow; default",
        **{name: desc for name, (_, desc) in sorted(_REGISTRY.items())},
    }


def _rife_choice(
    requested: str, path: Path, entry: str | None = None, reason: str = ""
) -> InterpolatorChoice:
    from lapgen.outputs import file_sha256

    fn = rife_from_file(path) if _is_state_dict_file(path) else ModelMidpoint(path=path)
    return InterpolatorChoice(fn, "rife", requested, str(path), entry, file_sha256(path), reason)


def _default_rife_entry():
    """The registry's default interpolator entry (None when there is none)."""
    from lapgen.registry import default_for, resolve

    name = default_for("interpolator")
    return resolve(name, "interpolator") if name else None


def resolve_interpolator(name: str | Interpolator = AUTO, **options: Any) -> InterpolatorChoice:
    """An interpolator by name (see the module docstring), `NAME:PATH`, a registry entry of kind
    `interpolator`, or a callable (used as is); with what the card records."""
    if callable(name):
        return InterpolatorChoice(name, "callable", getattr(name, "__name__", type(name).__name__))
    requested = str(name)
    if name == AUTO:
        entry = _default_rife_entry()
        if entry is not None and entry.path is not None and entry.path.is_file():
            return _rife_choice(
                requested, entry.path, entry.name, f"auto: RIFE weights of '{entry.name}' found"
            )
        where = f"'{entry.name}' has no weights on this machine" if entry else "no interpolator registered"
        return InterpolatorChoice(
            FlowMidpoint(), "flow", requested, reason=f"auto: {where}, so the weight-free flow interpolator"
        )
    if name not in _REGISTRY and ":" in name:
        name, path = name.split(":", 1)
        factory = _REGISTRY.get(name, (None,))[0]
        if factory is not None and "path" not in inspect.signature(factory).parameters:
            raise LapgenError(f"interpolator {name!r} takes no model file", hint=f"use --interpolator {name}")
        options = {**options, "path": path}
    if name == "rife" and options.get("model") is None:
        if options.get("path") is None:  # the registry's default RIFE weights
            from lapgen.models.loading import interpolator_weights

            entry, path = interpolator_weights(None)
            return _rife_choice(requested, path, entry.name)
        if _is_state_dict_file(Path(options["path"])):  # a flownet.pkl
            return _rife_choice(requested, Path(options["path"]).expanduser().absolute())
    if name not in _REGISTRY:
        from lapgen.registry import list_entries

        entries = {e.name: e for e in list_entries("interpolator")}
        if name in entries:
            from lapgen.models.loading import interpolator_weights

            entry, path = interpolator_weights(name)
            return _rife_choice(requested, path, entry.name)
        raise LapgenError(
            f"unknown interpolator {name!r}",
            hint=f"choose one of: {', '.join([AUTO, *sorted(_REGISTRY), *entries])}",
        )
    fn = _REGISTRY[name][0](**options)
    weights = options.get("path")
    return InterpolatorChoice(fn, name, requested, str(weights) if weights else None)


def get_interpolator(name: str | Interpolator = AUTO, **options: Any) -> Interpolator:
    """The interpolator callable of `resolve_interpolator`."""
    return resolve_interpolator(name, **options).fn


def _is_state_dict_file(path: Path) -> bool:
    """A file `rife_from_file` reads as RIFE weights (anything but TorchScript and torch.export archives)."""
    path = path.expanduser()
    if path.suffix == ".pt2" or not path.is_file():
        return False
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:  # TorchScript archives carry their code
            return not any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())
    return True


def rife_from_file(path: str | Path) -> Interpolator:
    """The RIFE interpolator with the IFNet_HDv3 weights of a `flownet.pkl` (strict layout check)."""
    from lapgen.models.controlvideo.rife import RifeMidpoint, load_ifnet

    return RifeMidpoint(load_ifnet(path))


def load_interpolator(source: Any = None, *, device: Any = "auto") -> Interpolator:
    """The RIFE frame interpolator `(a, b) -> midpoint` of a registry entry (IFNet_HDv3 weights; None: the
    default interpolator). The network starts on `device` and follows the frames it is given (fp16 on
    CUDA, fp32 elsewhere). Nothing is downloaded: without the file, one line says where to get it."""
    from lapgen.device import resolve_device
    from lapgen.models.loading import interpolator_weights

    interpolator = rife_from_file(interpolator_weights(source)[1])
    model = getattr(interpolator, "model", None)
    if hasattr(model, "to"):
        model.to(resolve_device(device))
    return interpolator


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
        raise ValueError(
            f"interpolator inputs must both be (N, 3, H, W); got {tuple(a.shape)}, {tuple(b.shape)}"
        )


def linear_midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixel average `(a + b) / 2` of `(N, 3, H, W)` batches."""
    _check_pair(a, b)
    return (a + b) / 2


class FlowMidpoint:
    """Optical-flow midpoint with OpenCV's Farnebäck method (no weights).

    Farnebäck gives `flow_ab` with `a(p) ≈ b(p + flow_ab(p))`; a point of `a` sits at `p + flow_ab(p)/2`
    half-way, so the midpoint is approximated by backward warping `a` at `q - flow_ab(q)/2` (and `b` at
    `q - flow_ba(q)/2`) and averaging the two warps.
    """

    def __init__(
        self,
        pyr_scale: float = 0.5,
        levels: int = 3,
        winsize: int = 9,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.1,
    ):
        self.params = {
            "pyr_scale": pyr_scale,
            "levels": levels,
            "winsize": winsize,
            "iterations": iterations,
            "poly_n": poly_n,
            "poly_sigma": poly_sigma,
            "flags": 0,
        }

    def _pair(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import cv2

        # a, b: (H, W, 3) float32 in [0, 1]
        h, w = a.shape[:2]
        grey_a = cv2.cvtColor((a * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
        grey_b = cv2.cvtColor((b * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
        flow_ab = cv2.calcOpticalFlowFarneback(grey_a, grey_b, None, **self.params)  # (H, W, 2) px (dx, dy)
        flow_ba = cv2.calcOpticalFlowFarneback(grey_b, grey_a, None, **self.params)
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        warp_a = cv2.remap(
            a,
            xs - 0.5 * flow_ab[..., 0],
            ys - 0.5 * flow_ab[..., 1],
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        warp_b = cv2.remap(
            b,
            xs - 0.5 * flow_ba[..., 0],
            ys - 0.5 * flow_ba[..., 1],
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return (warp_a + warp_b) / 2

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_pair(a, b)
        a_np = a.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        b_np = b.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        out = torch.empty_like(a)
        for n in range(a.shape[0]):
            if torch.equal(a[n], b[n]):  # (x, x) -> x exactly
                out[n] = a[n]
                continue
            mid = self._pair(np.ascontiguousarray(a_np[n]), np.ascontiguousarray(b_np[n]))
            out[n] = torch.from_numpy(mid).permute(2, 0, 1).to(device=a.device, dtype=a.dtype)
        return out


def _takes_time(model: Callable) -> bool:
    """Whether a midpoint model is called `(a, b, t)` rather than `(a, b)`."""
    forward = getattr(model, "forward", model)
    schema = getattr(forward, "schema", None)  # TorchScript methods hide their Python signature
    if schema is not None:
        return len(schema.arguments) - 1 >= 3  # the first argument is self
    try:
        return len(inspect.signature(forward).parameters) >= 3
    except (TypeError, ValueError):
        return True


class ModelMidpoint:
    """Midpoint from a user-supplied RIFE-style model `(a, b[, t]) -> mid` on `(N, 3, H, W)` in [0, 1]."""

    def __init__(
        self,
        model: Callable | None = None,
        path: str | Path | None = None,
        device: str | torch.device | None = None,
    ):
        if model is None and path is None:
            raise LapgenError(
                "the rife interpolator needs a model",
                hint="name a flownet.pkl (or your RIFE-style TorchScript .pt / torch.export .pt2 file) as "
                "--interpolator rife:PATH, or use --interpolator flow; lapgen never downloads RIFE weights",
            )
        self._loaded_device: torch.device | None = None  # a model read from a file follows the frames
        if model is None:
            path = Path(path)
            if not path.is_file():
                raise LapgenError("RIFE model file not found", path=path)
            try:
                if path.suffix == ".pt2":  # torch.export archive
                    model = torch.export.load(str(path)).module()
                else:  # TorchScript
                    model = torch.jit.load(str(path), map_location=device or "cpu").eval()
            except (RuntimeError, ValueError, OSError, zipfile.BadZipFile) as exc:
                raise LapgenError(
                    f"cannot load the RIFE model ({' '.join(str(exc).split())[:160]})",
                    path=path,
                    hint="give a TorchScript (.pt, torch.jit.save) or torch.export (.pt2) file",
                ) from exc
            self._loaded_device = torch.device(device or "cpu")
        self.model = model
        self.takes_time = _takes_time(model)

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_pair(a, b)
        same = (a == b).flatten(1).all(dim=1)  # (N,) pairs that must map to themselves
        if self._loaded_device is not None and self._loaded_device != a.device:
            self.model.to(a.device)  # e.g. frames decoded on the GPU, file loaded on the CPU
            self._loaded_device = a.device
        mid = self.model(a, b, 0.5) if self.takes_time else self.model(a, b)
        mid = mid.to(a.dtype).clamp(0, 1)
        return torch.where(same[:, None, None, None], a, mid)


register_interpolator(
    "flow", FlowMidpoint, "optical-flow midpoint (OpenCV Farnebäck), weight-free; what auto falls back to"
)
register_interpolator("linear", lambda: linear_midpoint, "pixel average of the two neighbours")
register_interpolator(
    "rife",
    ModelMidpoint,
    "RIFE IFNet_HDv3 (ControlVideo's interpolator): the registry's default interpolator weights, or "
    "rife:PATH with a flownet.pkl (or your own TorchScript .pt / torch.export .pt2 model)",
)
