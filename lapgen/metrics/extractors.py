"""The feature-extractor registry: the names `--inception`, `--clip`, `--clip-fid-model` and the checkpoint
registry's `feature-extractor` entries accept, with each network's family, feature size and input side.

After torch-fidelity's `registry.py` and open_clip's `pretrained.py`; the table and the preprocessing of
each family are in `lapgen.metrics.features` and docs/metrics.md. Plain data only: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lapgen.errors import LapgenError

INCEPTION_SIZE = 299  # Inception-v3 input side, pixels

BACKENDS = {"inception": ("torch-fidelity", "torchscript"), "clip": ("open_clip",),
            "video": ("i3d-torchscript", "videomae")}
FAMILIES = tuple(BACKENDS)


@dataclass(frozen=True)
class ExtractorSpec:
    name: str
    family: str  # "inception" | "clip" | "video" (clip-level networks of `lapgen eval video`)
    dim: int  # feature dimension d
    input_size: int  # network input side S, pixels
    open_clip_model: str | None
    description: str
    backend: str = ""  # inception: "torch-fidelity" (default) | "torchscript"; clip: "open_clip";
    # video: "i3d-torchscript" | "videomae"

    @property
    def loader(self) -> str:
        return self.backend or BACKENDS.get(self.family, ("",))[0]


EXTRACTORS: dict[str, ExtractorSpec] = {
    "inception-v3": ExtractorSpec("inception-v3", "inception", 2048, INCEPTION_SIZE, None,
                                  "torch-fidelity FID Inception-v3 (TF graph 2015-12-05), pool3 features"),
    "inception-v3-clean": ExtractorSpec("inception-v3-clean", "inception", 2048, INCEPTION_SIZE, None,
                                        "NVIDIA's TorchScript inception-2015-12-05.pt (clean-fid's network), "
                                        "pool3 features; local file only", backend="torchscript"),
    "clip-vit-b-32": ExtractorSpec("clip-vit-b-32", "clip", 512, 224, "ViT-B-32-quickgelu",
                                   "OpenAI CLIP ViT-B/32 image embeddings (open_clip, quickgelu + openai)"),
    "clip-vit-l-14-336": ExtractorSpec("clip-vit-l-14-336", "clip", 768, 336, "ViT-L-14-336-quickgelu",
                                       "OpenAI CLIP ViT-L/14 @ 336 px (the CMMD reference backbone)"),
    # Video networks (`lapgen eval video`, docs/metrics-video.md): local files only, never downloaded.
    "i3d-kinetics400": ExtractorSpec("i3d-kinetics400", "video", 400, 224, None,
                                     "I3D (Kinetics-400) as the TorchScript i3d_torchscript.pt StyleGAN-V and most "
                                     "FVD papers run; logits before the softmax; FVD", backend="i3d-torchscript"),
    "videomae-v2-g": ExtractorSpec("videomae-v2-g", "video", 1408, 224, None,
                                   "VideoMAE-v2 ViT-g/14 fine-tuned on SSv2 (vit_g_hybrid_pt_1200e_ssv2_ft.pth), "
                                   "mean-pooled encoder features; CD-FVD", backend="videomae"),
}


def register_extractor(spec: ExtractorSpec, *, replace: bool = False) -> ExtractorSpec:
    """Add an extractor to the registry: an open_clip model name (built-in or added with
    `open_clip.add_model_config`) of family "clip", a torch-fidelity Inception ("inception"), or a video
    network ("video": an I3D TorchScript file or a VideoMAE-v2 encoder)."""
    if spec.family not in FAMILIES:
        raise LapgenError(f"unknown extractor family {spec.family!r}", hint=f"use one of {', '.join(FAMILIES)}")
    if spec.family == "clip" and not spec.open_clip_model:
        raise LapgenError(f"clip extractor {spec.name!r} needs an open_clip model name")
    if spec.loader not in BACKENDS[spec.family]:
        raise LapgenError(f"unknown backend {spec.backend!r} for a {spec.family} extractor",
                          hint=f"use one of {', '.join(BACKENDS[spec.family])}")
    if spec.name in EXTRACTORS and not replace:
        raise LapgenError(f"feature extractor {spec.name!r} is already registered")
    EXTRACTORS[spec.name] = spec
    return spec


def get_spec(name: str) -> ExtractorSpec:
    if name not in EXTRACTORS:
        raise LapgenError(f"unknown feature extractor {name!r}", hint=f"choose one of {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name]


def family_names(family: str) -> list[str]:
    """The registered extractors of one family ("inception", "clip" or "video"), in registry order."""
    return [n for n, s in EXTRACTORS.items() if s.family == family]


def list_extractors() -> list[dict[str, Any]]:
    """The registry as plain data (for `lapgen eval extractors`)."""
    return [{"name": s.name, "family": s.family, "dim": s.dim, "input_size": s.input_size, "network": s.loader,
             "open_clip_model": s.open_clip_model, "description": s.description} for s in EXTRACTORS.values()]
