"""Device and dtype choice shared by every command (`--device auto|cpu|cuda[:N]`, `--dtype fp32|fp16|bf16`).

Rules: `auto` picks CUDA when available, else CPU. fp16 is a GPU format: asked for on CPU it becomes fp32
with a notice (CPU half-precision kernels are slow or missing; diffusers' own examples do the same).
bf16 runs on CPU (`torch.autocast("cpu")` supports it) and on GPUs that support it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from lapgen.errors import LapgenError
from lapgen.progress import notice

if TYPE_CHECKING:  # pragma: no cover
    import torch

DTYPE_NAMES = ("auto", "fp32", "fp16", "bf16")
_ALIASES = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "no": "fp32", "32": "fp32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16", "16": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "auto": "auto",
}


def resolve_device(device: "str | torch.device | None" = "auto") -> "torch.device":
    """`auto`/None -> cuda if available else cpu; `cuda`/`cuda:N` must exist (one-line error otherwise)."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LapgenError(f"--device {device} asked for, but no CUDA device is available",
                              hint="use --device cpu or auto, or install a CUDA build of torch")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise LapgenError(f"invalid device '{device}'", hint="use auto, cpu, cuda or cuda:N") from exc
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LapgenError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible",
                              hint="pick an index below that, or set CUDA_VISIBLE_DEVICES")
        return dev
    if name == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    raise LapgenError(f"invalid device '{device}'", hint="use auto, cpu, cuda or cuda:N")


def dtype_name(dtype: "str | torch.dtype | None") -> str:
    """Normalise a dtype spelling to one of `auto`, `fp32`, `fp16`, `bf16`."""
    import torch

    if dtype is None:
        return "auto"
    if isinstance(dtype, torch.dtype):
        table = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
        if dtype not in table:
            raise LapgenError(f"unsupported dtype {dtype}", hint="use fp32, fp16 or bf16")
        return table[dtype]
    key = str(dtype).strip().lower()
    if key not in _ALIASES:
        raise LapgenError(f"unknown dtype '{dtype}'", hint="use auto, fp32, fp16 or bf16")
    return _ALIASES[key]


def resolve_dtype(dtype: "str | torch.dtype | None", device: "torch.device | str | None" = "auto",
                  *, quiet: bool = False) -> "torch.dtype":
    """The torch dtype to run in on `device`. `auto`: fp16 on CUDA, fp32 elsewhere; fp16 on CPU -> fp32."""
    import torch

    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    name = dtype_name(dtype)
    if name == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    if name == "fp16" and dev.type == "cpu":
        if not quiet:
            notice("fp16 is not supported on CPU; running in fp32")
        return torch.float32
    if name == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LapgenError("bf16 is not supported on this GPU", hint="use --dtype fp16 or fp32")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def mixed_precision_for(dtype: "str | torch.dtype | None",
                        device: "torch.device | str | None" = "auto") -> str:
    """accelerate's `mixed_precision` value (`no`, `fp16`, `bf16`) for a requested dtype on `device`."""
    import torch

    resolved = resolve_dtype(dtype, device)
    return {torch.float32: "no", torch.float16: "fp16", torch.bfloat16: "bf16"}[resolved]


@contextmanager
def keep_torch_threads() -> Iterator[int]:
    """Restore torch's CPU thread count after the block (yields the count on entry).

    ultralytics' `select_device` (run by every YOLO train, predict and val on CPU) sets
    `torch.set_num_threads(cpu_count - 1)` for the whole process and leaves it: on a 2-core machine every
    later torch computation in the same process (the demo's diffusion training, the studio) would run on
    one core.
    """
    import torch

    threads = torch.get_num_threads()
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)
