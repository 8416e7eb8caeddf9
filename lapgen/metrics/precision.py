"""Honest fp32 for feature extraction and scoring: TF32 switched off, and the hardware named in cache keys.

On NVIDIA GPUs since Ampere, PyTorch runs fp32 cuDNN convolutions in TF32 by default (10-bit mantissa), so
an "fp32" Inception or Rendezvous on a GPU is not fp32 unless this is switched off. `strict_fp32()` does
that for one block and restores the user's settings after; results then record `"tf32": false` truthfully.
Only torch is imported, inside the functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# TF32 switches: torch >= 2.9 has per-backend `fp32_precision` ("ieee" | "tf32"); older torch the allow_tf32
# flags. cuDNN convolutions default to TF32 on Ampere and later, which changes fp32 features.
_PRECISION_ATTRS = (("cuda", "matmul"), ("cudnn", "conv"), ("mkldnn", "matmul"), ("mkldnn", "conv"))


@contextmanager
def strict_fp32() -> Iterator[dict[str, Any]]:
    """Run a block with TF32 (and any reduced fp32 precision) switched off; restores the settings after.

    Yields what is in effect inside: {"tf32": False, "fp32_precision": "ieee"}.
    """
    import torch

    backends = torch.backends
    saved: list[tuple[Any, str, Any]] = []
    try:
        if hasattr(backends.cudnn, "conv") and hasattr(backends.cudnn.conv, "fp32_precision"):
            for parent, child in _PRECISION_ATTRS:
                obj = getattr(getattr(backends, parent, None), child, None)
                if obj is not None and hasattr(obj, "fp32_precision"):
                    saved.append((obj, "fp32_precision", obj.fp32_precision))
                    obj.fp32_precision = "ieee"
        else:  # pragma: no cover - torch < 2.9
            for obj in (backends.cuda.matmul, backends.cudnn):
                saved.append((obj, "allow_tf32", obj.allow_tf32))
                obj.allow_tf32 = False
        yield {"tf32": False, "fp32_precision": "ieee"}
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def device_id(device: str) -> str:
    """The hardware part of the feature-cache key: "cpu", or "cuda:<GPU name>" (the index is not kept:
    cuda:0 on one machine is not cuda:0 on another; the model is)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{torch.cuda.get_device_name(index)}"
    return dev.type
