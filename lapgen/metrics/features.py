"""Feature extractors for FID, KID, CLIP-FID and CMMD, with a content-addressed feature cache.

The extractor registry (after torch-fidelity's `registry.py` and open_clip's `pretrained.py`):

| name                 | network                                                      | d    | input | used for   |
|----------------------|--------------------------------------------------------------|------|-------|------------|
| `inception-v3`       | torch-fidelity's FID Inception (TF 2015-12-05 graph), pool3  | 2048 | 299   | FID, KID   |
| `inception-v3-clean` | NVIDIA's TorchScript `inception-2015-12-05.pt` (clean-fid's) | 2048 | 299   | FID, KID   |
| `clip-vit-b-32`      | open_clip `ViT-B-32-quickgelu` + `openai`                    | 512  | 224   | CLIP-FID; CMMD (default) |
| `clip-vit-l-14-336`  | open_clip `ViT-L-14-336-quickgelu` + `openai`                | 768  | 336   | CMMD as the reference |

`inception-v3-clean` is loaded from a local file only (`--weights PATH`, `lapgen models add
inception-v3-clean PATH`, or `$LAPGEN_HOME/weights/inception-2015-12-05.pt`); lapgen never downloads it. Its
body is the archive's `layers` submodule on (x - 128) / 128, exactly as clean-fid's `InceptionV3W` calls it.

Preprocessing protocols (docs/metrics.md, section 2), each with a stable id that enters the cache key:
- Inception `clean` (clean-fid `mode="clean"`, the default): per channel float32 PIL image, BICUBIC to
  299x299, clip to [0, 255] without rounding, (x - 128) / 128, then the network body.
- Inception `torch-fidelity`: torch-fidelity's TF1.x-exact bilinear resize (its
  `interpolate_bilinear_2d_like_tensorflow1x`, align_corners=False) of the uint8 image, then the same body:
  exactly what its `inception-v3-compat` extractor computes.
- CLIP `clip-fid` (clean-fid `img_preprocess_clip`): PIL BICUBIC resize of the shorter side to S, centre
  crop S, uint8, / 255, OpenAI mean/std; features = `encode_image`, not normalised.
- CLIP `cmmd` (google-research `cmmd/io_util.py`): centre-crop the largest square, PIL BICUBIC to SxS,
  / 255, OpenAI mean/std; the CMMD function L2-normalises. For square images both CLIP protocols are the
  same computation, so they share one id and one pass.

Weights: `--weights PATH` (or a registry name) wins; else the checkpoint registry's `feature-extractor`
entry when it has a local file; else the libraries' own cache/download (torch-fidelity release file,
open_clip `openai` tag). The networks are built by `lapgen.metrics.networks` (`clip_from_file`,
`inception_from_file`, `inception_torchscript_from_file`), the same builders as the registry's `load_clip` /
`load_inception`. Features run in strict fp32: TF32 (on by default for cuDNN convolutions) is switched off
during extraction (`strict_fp32`) and the result records it. The cache key is SHA-256 over (ordered relative
path and file SHA-256 of every image, extractor name, weights SHA-256, preprocessing id, device, dtype,
CACHE_VERSION), so changed images, weights or hardware never hit a stale entry.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from lapgen.errors import LapgenError
from lapgen.metrics.extractors import (  # noqa: F401  (re-exported: the extractor registry's public names)
    BACKENDS,
    EXTRACTORS,
    INCEPTION_SIZE,
    ExtractorSpec,
    family_names,
    get_spec,
    list_extractors,
    register_extractor,
)
from lapgen.metrics.images import ImageSet, load_rgb
from lapgen.metrics.precision import device_id, strict_fp32
from lapgen.metrics.weights import RegisteredNetwork, cache_root

CACHE_VERSION = 2  # 2: device and dtype in the key
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INCEPTION_PROTOCOLS = ("clean", "torch-fidelity")
CLIP_PROTOCOLS = ("clip-fid", "cmmd")


def preprocessing_id(spec: ExtractorSpec, protocol: str, size: tuple[int, int]) -> str:
    """Stable id of the preprocessing applied to images of `size` (w, h) under `protocol`."""
    if spec.family == "inception":
        if protocol == "clean":
            return f"inception/clean:pil-bicubic-float-{spec.input_size}/x-128div128/fp32"
        if protocol == "torch-fidelity":
            return f"inception/torch-fidelity:tf1-bilinear-{spec.input_size}/x-128div128/fp32"
        raise LapgenError(f"unknown protocol {protocol!r} for {spec.name}",
                          hint=f"use one of {', '.join(INCEPTION_PROTOCOLS)}")
    if protocol not in CLIP_PROTOCOLS:
        raise LapgenError(f"unknown protocol {protocol!r} for {spec.name}",
                          hint=f"use one of {', '.join(CLIP_PROTOCOLS)}")
    s = spec.input_size
    if size[0] == size[1]:  # resize-then-crop == crop-then-resize for square images
        return f"clip/square:pil-bicubic-{s}/u8/openai-norm/fp32"
    if protocol == "clip-fid":
        return f"clip/clip-fid:pil-bicubic-short-{s}-centercrop/u8/openai-norm/fp32"
    return f"clip/cmmd:centercrop-square-pil-bicubic-{s}/f32/openai-norm/fp32"


# --- preprocessing of one (H, W, 3) uint8 image ---------------------------------------------------------

def clean_resize(img: np.ndarray, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's resize: per channel float32 PIL BICUBIC to size x size, clipped, not rounded; (3, S, S)."""
    from PIL import Image

    chans = [np.asarray(Image.fromarray(img[:, :, c].astype(np.float32), mode="F")
                        .resize((size, size), resample=Image.BICUBIC)).clip(0, 255) for c in range(3)]
    return np.stack(chans, axis=0).astype(np.float32)


def clip_fid_crop(img: np.ndarray, size: int) -> np.ndarray:
    """torchvision Resize(size, BICUBIC) + CenterCrop(size) on the PIL image (clean-fid CLIP); (S, S, 3) u8."""
    from PIL import Image

    h, w = img.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    pil = Image.fromarray(img)
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), resample=Image.BICUBIC)
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    return np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.uint8)


def cmmd_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Reference CMMD: centre-crop the largest square, PIL BICUBIC to size x size; (S, S, 3) uint8."""
    from PIL import Image

    h, w = img.shape[:2]
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    pil = Image.fromarray(img[top:top + side, left:left + side])
    if side != size:
        pil = pil.resize((size, size), resample=Image.BICUBIC)
    return np.asarray(pil, dtype=np.uint8)


def clip_normalize(img_u8: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 -> (3, S, S) float32, / 255 then OpenAI mean/std."""
    x = img_u8.astype(np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(OPENAI_MEAN, np.float32)[:, None, None]
    std = np.asarray(OPENAI_STD, np.float32)[:, None, None]
    return (x - mean) / std


def preprocess(spec: ExtractorSpec, protocol: str, img: np.ndarray) -> np.ndarray:
    """One (H, W, 3) uint8 image -> the network input (3, S, S) (uint8 for torch-fidelity, else float32)."""
    if spec.family == "inception":
        if protocol == "clean":
            return clean_resize(img, spec.input_size)
        return np.ascontiguousarray(img.transpose(2, 0, 1))  # torch-fidelity resizes inside the network
    if protocol == "clip-fid":
        return clip_normalize(clip_fid_crop(img, spec.input_size))
    return clip_normalize(cmmd_crop(img, spec.input_size))


# --- networks ------------------------------------------------------------------------------------------

_INCEPTION_BODY = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                   "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                   "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")


def inception_pool3(net: Any, x: Any) -> Any:
    """torch-fidelity's Inception body on already-resized (B, 3, 299, 299) float pixels in [0, 255].

    The same layer sequence as `FeatureExtractorInceptionV3.forward` after its TF1 resize: scale
    (x - 128) / 128, the convolution/mixed blocks, global average pool -> (B, 2048).
    """
    import torch

    x = (x - 128) / 128
    for layer in _INCEPTION_BODY:
        x = getattr(net, layer)(x)
    return torch.flatten(x, 1)


def torchscript_pool3(net: Any, x: Any) -> Any:
    """clean-fid's `InceptionV3W.forward` body on already-resized (B, 3, 299, 299) pixels in [0, 255]:
    x - 128, / 128, the archive's `layers`, reshaped to (B, 2048)."""
    x1 = x - 128
    x2 = x1 / 128
    return net.layers.forward(x2).reshape(x.shape[0], -1)


class FeatureExtractor(RegisteredNetwork):
    """One registry image extractor with resolved weights; the network is built on first use (cache hits skip it)."""

    FAMILIES = ("inception", "clip")
    WRONG_FAMILY = ("{name} is a video network, not an image feature extractor",
                    "use it with `lapgen eval video` (lapgen.metrics.video_networks)")

    def describe(self) -> dict[str, Any]:
        return {"extractor": self.name, "weights": str(self.weights_path), "weights_sha256": self.weights_sha256,
                "dim": self.spec.dim, "input_size": self.spec.input_size, "network": self.spec.loader,
                "precision": "fp32", "tf32": False, "device": device_id(self.device), "dtype": "float32"}

    def _build(self) -> Any:
        """The network, built by the same builders as the registry's loaders (`lapgen.metrics.networks`)."""
        import torch

        from lapgen.metrics.networks import (
            clip_from_file,
            inception_from_file,
            inception_torchscript_from_file,
        )

        if self.spec.loader == "torchscript":
            model = inception_torchscript_from_file(self.weights_path, label=self.name)
        elif self.spec.family == "inception":
            model = inception_from_file(self.weights_path, label=self.name)
        else:
            model = clip_from_file(self.spec.open_clip_model, self.weights_path, label=self.name)[0]
        model = model.to(torch.device(self.device)).float().eval()
        for param in model.parameters():  # (a TorchScript module has no requires_grad_)
            param.requires_grad_(False)
        return model

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self._build()
        return self._model

    def forward(self, batch: np.ndarray, protocol: str) -> np.ndarray:
        """(B, 3, S, S) preprocessed batch -> (B, D) float32 features."""
        import torch

        x = torch.from_numpy(batch).to(self.device)
        with torch.inference_mode(), strict_fp32():
            if self.spec.family == "inception":
                x = x.float()
                if protocol == "torch-fidelity":  # torch-fidelity's own TF1.x-exact bilinear resize
                    from torch_fidelity.interpolate_compat_tensorflow import (
                        interpolate_bilinear_2d_like_tensorflow1x,
                    )

                    size = (self.spec.input_size, self.spec.input_size)
                    x = interpolate_bilinear_2d_like_tensorflow1x(x, size=size, align_corners=False)
                if self.spec.loader == "torchscript":
                    out = torchscript_pool3(self.model, x)
                else:
                    out = inception_pool3(self.model, x)
            else:
                out = self.model.encode_image(x.float())
        return out.float().cpu().numpy()


# --- feature sets and the cache -------------------------------------------------------------------------

@dataclass
class FeatureResult:
    features: np.ndarray  # (N, D) float32
    key: str  # cache key (hex SHA-256)
    cached: bool  # True when read from the cache
    preprocessing: str
    extractor: dict[str, Any]


def feature_key(images_digest: str, extractor: FeatureExtractor, preprocessing: str) -> str:
    info = extractor.describe()
    payload = {"images": images_digest, "extractor": extractor.name, "weights_sha256": extractor.weights_sha256,
               "preprocessing": preprocessing, "device": info["device"], "dtype": info["dtype"],
               "tf32": info["tf32"], "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def compute_features(image_set: ImageSet, extractor: FeatureExtractor, protocol: str, *, batch_size: int = 50,
                     use_cache: bool = True, workers: int = 2, label: str = "images",
                     chunk: int = 1000) -> FeatureResult:
    """Features of every image of `image_set`, from the cache when the key matches.

    Extraction is resumable: every `chunk` images are saved under `<cache>/features/<key>.partial/`, and a
    re-run after an interruption continues from the last finished chunk. `chunk` is rounded down to a
    multiple of `batch_size`, so the batches are those of one uninterrupted pass (0..B-1, B..2B-1, ...),
    as in clean-fid's DataLoader.
    """
    from lapgen.outputs import atomic_file
    from lapgen.progress import make_progress

    chunk = max(batch_size, chunk // batch_size * batch_size)
    prep = preprocessing_id(extractor.spec, protocol, image_set.size)
    key = feature_key(image_set.digest(), extractor, prep)
    folder = cache_root() / "features"
    final = folder / f"{key}.npy"
    info = extractor.describe()
    if use_cache and final.exists():
        feats = np.load(final)
        if feats.shape == (len(image_set), extractor.spec.dim):
            return FeatureResult(feats, key, True, prep, info)
    partial = folder / f"{key}.partial"
    starts = list(range(0, len(image_set), chunk))
    parts: list[np.ndarray] = []
    with make_progress() as progress, ThreadPoolExecutor(max(1, workers)) as pool:
        task = progress.add_task(f"{extractor.name} features: {label}", total=len(image_set))
        for start in starts:
            part_file = partial / f"{start:08d}.npy"
            if use_cache and part_file.exists():
                parts.append(np.load(part_file))
                progress.advance(task, len(parts[-1]))
                continue
            rows = []
            for b in range(start, min(start + chunk, len(image_set)), batch_size):
                idx = range(b, min(b + batch_size, start + chunk, len(image_set)))
                batch = np.stack(list(pool.map(
                    lambda i: preprocess(extractor.spec, protocol, load_rgb(image_set.path(i))), idx)))
                rows.append(extractor.forward(batch, protocol))
                progress.advance(task, len(idx))
            parts.append(np.concatenate(rows).astype(np.float32))
            if use_cache:
                with atomic_file(part_file) as fh:
                    np.save(fh, parts[-1])
    feats = np.concatenate(parts)
    if use_cache:
        with atomic_file(final) as fh:
            np.save(fh, feats)
        with atomic_file(folder / f"{key}.json", "w") as fh:
            json.dump({"images": image_set.describe(), "preprocessing": prep, "batch_size": batch_size,
                       "version": CACHE_VERSION, **info}, fh, indent=1)
        if partial.exists():
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
    return FeatureResult(feats, key, False, prep, info)
