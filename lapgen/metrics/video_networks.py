"""The clip-level networks of `lapgen eval video`: I3D for FVD and VideoMAE-v2 for content-debiased FVD.

- **I3D** (FVD, Unterthiner et al. 2018): the TorchScript `i3d_torchscript.pt` that StyleGAN-V
  (universome/stylegan-v, `src/metrics/frechet_video_distance.py`) and most FVD papers since run. It is called
  as StyleGAN-V calls it: uint8 clips `(B, 3, T, H, W)` and `rescale=True, resize=True, return_features=True`,
  so the network itself scales to [-1, 1], resizes to 224 x 224 and returns the 400 Kinetics logits before the
  softmax. `load_i3d` reads only a TorchScript archive (no Python pickle), never downloads it.
- **VideoMAE-v2 ViT-g/14** (CD-FVD, Ge et al. 2024): lapgen's own encoder in `lapgen.metrics.videomae`.

Random-weight builders for tests and demos (the official files cannot be downloaded here), seeded:
`write_random_i3d(path, seed)` writes a small TorchScript network with I3D's call interface, and
`lapgen.metrics.videomae.write_random_videomae(path, seed)` a small VideoMAE-v2 encoder as safetensors whose
metadata holds its shape.
Both load by path or registry name like the real files (`lapgen models add NAME PATH --kind
feature-extractor`); their values compare only with each other, never with published numbers.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.metrics.weights import RegisteredNetwork
from lapgen.metrics.videomae import videomae_from_file, videomae_input, videomae_metadata

# --- I3D (TorchScript) -------------------------------------------------------------------------------------

def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:  # torch.save files are zip archives too; TorchScript ones carry code/
        return any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())


def load_i3d(path: str | Path, *, label: str = "i3d-kinetics400") -> Any:
    """The I3D TorchScript network (CPU, eval) from a local file; a one-line error for anything else."""
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise LapgenError(f"{label}: weights file does not exist", path=path)
    if not is_torchscript(path):
        raise LapgenError(f"{label}: not a TorchScript archive", path=path,
                          hint="point at StyleGAN-V's i3d_torchscript.pt (docs/metrics-video.md)")
    try:
        with warnings.catch_warnings():  # torch >= 2.10 flags torch.jit as deprecated; the file format is fixed
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - a corrupt archive: one line naming the file
        raise LapgenError(f"{label}: cannot load the TorchScript archive ({exc.__class__.__name__})", path=path,
                          hint="re-download i3d_torchscript.pt (docs/metrics-video.md)") from exc


def i3d_features(net: Any, clips: Any) -> Any:
    """(B, T, H, W, 3) uint8 clips -> (B, D) features, exactly as StyleGAN-V calls the I3D detector."""
    x = clips.permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, T, H, W) uint8
    return net(x, rescale=True, resize=True, return_features=True)


def _random_i3d_class():
    import torch
    import torch.nn.functional as F

    class RandomI3D(torch.nn.Module):
        """Two 3-D convolutions and a linear layer behind I3D's call interface (not I3D's architecture)."""

        def __init__(self, dim: int, size: int, width: int):
            super().__init__()
            self.size = size
            self.conv1 = torch.nn.Conv3d(3, width, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2))
            self.conv2 = torch.nn.Conv3d(width, 2 * width, 3, stride=2, padding=1)
            self.logits = torch.nn.Linear(2 * width, dim)

        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            x = x.float()
            if rescale:  # [0, 255] -> [-1, 1]
                x = x * (2.0 / 255.0) - 1.0
            if resize:  # (B, 3, T, size, size)
                x = F.interpolate(x, size=(x.shape[2], self.size, self.size), mode="trilinear", align_corners=False)
            h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            logits = self.logits(h.mean(dim=(2, 3, 4)))  # (B, dim)
            return logits if return_features else torch.softmax(logits, dim=1)

    return RandomI3D


def write_random_i3d(path: str | Path, seed: int = 0, *, dim: int = 400, size: int = 224, width: int = 8) -> Path:
    """A seeded random TorchScript network with the call interface of `i3d_torchscript.pt`.

    `forward(x, rescale, resize, return_features)`: uint8 or float (B, 3, T, H, W); `rescale` maps [0, 255] to
    [-1, 1], `resize` resizes frames to `size` (trilinear), features are `dim` logits. Convolutions are
    Kaiming-normal so the features are O(1). For tests and demos only: not I3D, not comparable with FVD values.
    """
    import warnings

    import torch

    from lapgen.outputs import atomic_file

    torch.manual_seed(seed)
    net = _random_i3d_class()(dim, size, width).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    path = Path(path)
    with warnings.catch_warnings(), atomic_file(path) as fh:  # torch >= 2.10 flags torch.jit as deprecated
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(net), fh)
    return path


# --- one extractor object for the evaluation -----------------------------------------------------------------

class VideoFeatureExtractor(RegisteredNetwork):
    """A registered video network with resolved weights; built on first use (a cache hit never loads it)."""

    FAMILIES = ("video",)
    WRONG_FAMILY = ("{name} is not a video network", "use i3d-kinetics400 or videomae-v2-g")

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch

            label = f"{self.name} ({self.weights_path.name})"
            if self.spec.loader == "videomae":
                model = videomae_from_file(self.weights_path, label=label)
            else:
                model = load_i3d(self.weights_path, label=label)
            model = model.to(torch.device(self.device)).float().eval()
            for param in model.parameters():
                param.requires_grad_(False)
            self._model = model
        return self._model

    @property
    def clip_frames(self) -> int | None:
        """Frames per clip the network needs (VideoMAE: its positions), or None (I3D takes any length)."""
        if self.spec.loader != "videomae":
            return None
        return int(videomae_metadata(self.weights_path).get("frames", 16))

    @property
    def input_size(self) -> int | None:
        """The side lapgen resizes frames to (VideoMAE); None for I3D, which resizes inside the network (to
        224 x 224 in the official file)."""
        if self.spec.loader == "videomae":
            return int(videomae_metadata(self.weights_path).get("img_size", 224))
        return None

    def preprocessing(self) -> str:
        if self.spec.loader == "videomae":
            return f"videomae/div255-bilinear-{self.input_size}-align_corners=False/no-norm/fp32"
        return "i3d/uint8-BCTHW/rescale=True,resize=True(inside the network; 224 in the official file)/fp32"

    def describe(self) -> dict[str, Any]:
        from lapgen.metrics.precision import device_id

        return {"extractor": self.name, "network": self.spec.loader, "weights": str(self.weights_path),
                "weights_sha256": self.weights_sha256, "preprocessing": self.preprocessing(),
                "precision": "fp32", "tf32": False, "device": device_id(self.device)}

    def forward(self, clips: np.ndarray) -> np.ndarray:
        """(B, T, H, W, 3) uint8 clips -> (B, D) float32 features."""
        import torch

        from lapgen.metrics.precision import strict_fp32

        x = torch.from_numpy(np.ascontiguousarray(clips)).to(self.device)
        with torch.inference_mode(), strict_fp32():
            if self.spec.loader == "videomae":
                out = self.model(videomae_input(x, self.input_size))
            else:
                out = i3d_features(self.model, x)
        return out.float().cpu().numpy()


def cut_clips(n_frames: int, length: int, *, stride: int = 1, policy: str = "all") -> list[list[int]]:
    """Frame indices of the clips FVD takes from a video of `n_frames` frames.

    A clip is `length` frames, every `stride`-th (a clip spans (length - 1) * stride + 1 frames). `first`: the
    first clip only (StyleGAN-V's generated videos); `all`: consecutive non-overlapping clips from frame 0, a
    shorter remainder dropped. A video shorter than one clip gives none.
    """
    if length < 1 or stride < 1:
        raise LapgenError("--fvd-frames and --fvd-stride must be at least 1")
    if policy not in ("first", "all"):
        raise LapgenError(f"unknown --fvd-clips {policy!r}", hint="use first or all")
    span = (length - 1) * stride + 1
    starts = range(0, n_frames - span + 1, span) if policy == "all" else range(0, 1 if n_frames >= span else 0)
    return [[s + i * stride for i in range(length)] for s in starts]
