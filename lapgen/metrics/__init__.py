"""lapgen's evaluation metrics: pure functions on feature arrays and masks.

The chain is files -> features (`lapgen.metrics.features`, cached) -> statistics -> one of these pure numpy
functions. Importing this package does not import torch: the feature extractors live in
`lapgen.metrics.features` and are imported only when features are computed.

- `frechet_distance(feats_a, feats_b)`: FID / CLIP-FID (docs/metrics.md, section 1)
- `kid(feats_a, feats_b, subsets=, subset_size=, seed=)`: KID, torch-fidelity's or clean-fid's estimator
- `cmmd(emb_a, emb_b)`: CMMD, the reference biased estimator x1000, summed over tiles
- `mask_f1(pred, target)`: pixel micro/macro F1 of tool masks (docs/metrics.md, section 4)
- `triplet_map(...)`: ivtmetrics-style action-triplet mAP (docs/metrics-map.md; `lapgen.metrics.triplets`)
"""

from __future__ import annotations

from typing import Any

from lapgen.metrics.cmmd import cmmd, cmmd_unbiased
from lapgen.metrics.fid import frechet_distance, frechet_distance_from_stats, gaussian_stats
from lapgen.metrics.kid import kid
from lapgen.metrics.masks import mask_f1

__all__ = [
    "cmmd",
    "cmmd_unbiased",
    "frechet_distance",
    "frechet_distance_from_stats",
    "gaussian_stats",
    "kid",
    "mask_f1",
    "triplet_map",
]


def __getattr__(name: str) -> Any:
    # triplet_map lives in the action-recognition engineer's module; imported on first use only.
    if name == "triplet_map":
        from lapgen.metrics.triplets import triplet_map

        return triplet_map
    raise AttributeError(f"module 'lapgen.metrics' has no attribute {name!r}")
