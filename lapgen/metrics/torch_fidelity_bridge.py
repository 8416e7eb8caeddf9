"""lapgen's extractors as torch-fidelity feature extractors (torch-fidelity 0.4.0 `register_feature_extractor`).

`register_with_torch_fidelity("inception-v3", "clean")` registers `lapgen-inception-v3-clean`, so
`torch_fidelity.calculate_metrics(..., feature_extractor="lapgen-inception-v3-clean",
feature_extractor_weights_path=W)` computes torch-fidelity's own FID/KID/PRC on lapgen's features: the
clean-fid resize in front of the FID Inception, or a CLIP model with clean-fid's (`clip-fid`) or the CMMD
reference's (`cmmd`) preprocessing. torch-fidelity hands the extractor uint8 (B, 3, H, W) batches; the
extractor preprocesses each image exactly as `lapgen.metrics.features.preprocess` and returns one
feature layer named `features`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lapgen.metrics.features import FeatureExtractor, get_spec, preprocess, preprocessing_id

FEATURE_LAYER = "features"


def torch_fidelity_name(name: str, protocol: str) -> str:
    return f"lapgen-{name}-{protocol}"


def register_with_torch_fidelity(name: str, protocol: str, *, weights: str | None = None) -> str:
    """Register (once) lapgen extractor `name` under `protocol` with torch-fidelity; returns its name there."""
    import torch
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    spec = get_spec(name)
    preprocessing_id(spec, protocol, (1, 1))  # validates the protocol for this extractor
    tf_name = torch_fidelity_name(name, protocol)
    if tf_name in FEATURE_EXTRACTORS_REGISTRY:
        return tf_name

    class LapgenFeatureExtractor(FeatureExtractorBase):
        def __init__(self, extractor_name: str, features_list: list[str], feature_extractor_weights_path: Any = None,
                     **kwargs: Any):
            super().__init__(extractor_name, features_list)
            self.lapgen = FeatureExtractor(spec.name, weights=feature_extractor_weights_path or weights)
            self.net = self.lapgen.model  # a submodule, so torch-fidelity's .cuda() moves it

        def forward(self, x: Any) -> tuple[Any, ...]:
            images = x.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3) uint8
            batch = np.stack([preprocess(spec, protocol, img) for img in images])
            self.lapgen.device = str(x.device)
            return (torch.from_numpy(self.lapgen.forward(batch, protocol)).to(x.device),)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return (FEATURE_LAYER,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return FEATURE_LAYER

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> Any:
            return (torch.rand([1, 3, 4, 4]) * 255).to(torch.uint8)

    register_feature_extractor(tf_name, LapgenFeatureExtractor)
    return tf_name
