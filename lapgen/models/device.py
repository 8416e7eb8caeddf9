"""Kept so `from lapgen.models.device import ...` goes on working: device and dtype choice now live in
`lapgen.device`, below the metrics, which need them too."""

from lapgen.device import DTYPE_NAMES, dtype_name, mixed_precision_for, resolve_device, resolve_dtype

__all__ = ["DTYPE_NAMES", "dtype_name", "mixed_precision_for", "resolve_device", "resolve_dtype"]
