"""Cross-frame coupling of stock 2D diffusers models (ControlVideo, Zhang et al. 2023).

The official ControlVideo code (YBYBZhang/ControlVideo) forks the UNet into "3D" classes. lapgen keeps the
stock `UNet2DConditionModel` / `ControlNetModel` with frames folded into the batch axis and changes two
things for the duration of a pipeline call:

1. Fully cross-frame attention (`FullyFrameAttention` in the original): every UNet self-attention (`attn1`)
   gets a `CrossFrameAttnProcessor` whose queries attend over the tokens of all frames of their video.
   Text cross-attention (`attn2`) and the ControlNet keep `AttnProcessor2_0` (per frame).
2. Pooled GroupNorm (the original's hidden coupling: its `ResnetBlock3D` GroupNorms see 5-D tensors, so
   statistics pool over frames): the forward of every `ResnetBlock2D.norm1/norm2` instance and of
   `unet.conv_norm_out` is replaced (the modules and their state-dict keys stay as they are).

Batch layout: a batch of `B·F` rows holds `B` videos of `F` consecutive frames (`[uncond f0..fF-1, cond
f0..fF-1]` with classifier-free guidance). Every reshape is `(B·F, ...) -> (B, F, ...)`, so rows of different
videos (and CFG halves) never mix. The frame count and the key/value frame selection live in a
`FrameContext` the pipeline sets before each model call.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

DEFAULT_ATTENTION_MEMORY = 512 * 2**20  # bytes of attention scores materialised at once (per layer call)


@dataclass
class FrameContext:
    """What the coupled layers need to know about the batch they are called on.

    num_frames: frames per video `F` (the batch holds `B·F` rows, frames contiguous per video).
    kv_frames: positions (within each video) whose keys/values every query reads; None = all frames.
    pool_norm: pool GroupNorm statistics over the frames of a video.
    memory_bytes: budget for materialised attention scores; queries are processed in chunks under it.
    fused_kernels: "auto" forces flash / memory-efficient SDPA kernels on CUDA with fp16/bf16 (never the
        math kernel's full score matrix); if none fits the shapes, a warning and exact query-chunked
        attention. "off" always uses query chunking.
    """

    num_frames: int = 1
    kv_frames: Sequence[int] | None = None
    pool_norm: bool = True
    memory_bytes: int = DEFAULT_ATTENTION_MEMORY
    fused_kernels: str = "auto"


def chunked_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, memory_bytes: int = DEFAULT_ATTENTION_MEMORY
) -> torch.Tensor:
    """Exact SDPA over query chunks: `(B, heads, Lq, d)` x `(B, heads, Lkv, d)` -> `(B, heads, Lq, d)`.

    Softmax is per query row, so chunking the queries against the full keys/values gives the same result
    while bounding the scores to `B·heads·chunk·Lkv` elements.
    """
    b, heads, lq, _ = query.shape
    lkv = key.shape[2]
    row_bytes = b * heads * lkv * max(query.element_size(), 4)
    chunk = max(1, int(memory_bytes // max(row_bytes, 1)))
    if chunk >= lq:
        return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
    out = torch.empty_like(query)
    for start in range(0, lq, chunk):
        out[:, :, start : start + chunk] = F.scaled_dot_product_attention(
            query[:, :, start : start + chunk], key, value, dropout_p=0.0, is_causal=False
        )
    return out


def _fused_kernel_context(query: torch.Tensor, mode: str):
    if mode == "auto" and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])
    return contextlib.nullcontext()


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class CrossFrameAttnProcessor:
    """Self-attention over the tokens of all frames of a video (structure of diffusers' `AttnProcessor2_0`).

    Hidden states `(B·F, N, C)`: queries `(B, heads, F·N, d)` attend to keys/values `(B, heads, F_kv·N, d)`
    built from all frames or from `context.kv_frames`. With `F=1` this is ordinary self-attention.
    """

    def __init__(self, context: FrameContext):
        self.context = context
        self._per_frame = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        ctx = self.context
        if encoder_hidden_states is not None or attention_mask is not None:
            # not a self-attention call (SD never passes these to attn1): behave as the stock processor
            return self._per_frame(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            bf, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(bf, channel, height * width).transpose(1, 2)
        bf, n_tok, _ = hidden_states.shape  # (B·F, N, C)
        frames = ctx.num_frames
        if bf % frames:
            raise ValueError(f"batch of {bf} rows is not a whole number of {frames}-frame videos")
        videos = bf // frames
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)  # (B·F, N, inner)
        if ctx.kv_frames is None:
            kv_states = hidden_states
            frames_kv = frames
        else:
            index = torch.as_tensor(list(ctx.kv_frames), device=hidden_states.device, dtype=torch.long)
            kv_states = hidden_states.view(videos, frames, n_tok, -1).index_select(1, index)
            frames_kv = index.numel()
        key = attn.to_k(kv_states)
        value = attn.to_v(kv_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        # all frames' tokens of one video form one sequence
        query = query.reshape(videos, frames * n_tok, attn.heads, head_dim).transpose(1, 2)
        key = key.reshape(videos, frames_kv * n_tok, attn.heads, head_dim).transpose(1, 2)
        value = value.reshape(videos, frames_kv * n_tok, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out = None
        if ctx.fused_kernels == "auto" and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16):
            try:
                with _fused_kernel_context(query, ctx.fused_kernels):
                    out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
            except RuntimeError as exc:  # no fused kernel for these shapes: exact chunked math instead
                _warn_once(f"fused SDPA kernels unavailable ({exc}); using query-chunked attention")
        if out is None:
            out = chunked_attention(query, key, value, ctx.memory_bytes)
        # (B, heads, F·N, d) -> (B·F, N, inner)
        hidden_states = out.transpose(1, 2).reshape(bf, n_tok, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(bf, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def self_attention_names(model: torch.nn.Module) -> list[str]:
    """Processor names of the self-attention (`attn1`) layers of a UNet/ControlNet."""
    return [name for name in model.attn_processors if name.endswith("attn1.processor")]


def _pooled_group_norm(self: torch.nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """GroupNorm with statistics pooled over the frames of each video: `(B·F, C, H, W)` in and out."""
    ctx: FrameContext = self._lapgen_frame_context
    frames = ctx.num_frames
    if not ctx.pool_norm or frames == 1 or x.ndim != 4:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
    bf, c, h, w = x.shape
    x5 = x.view(bf // frames, frames, c, h, w).transpose(1, 2)  # (B, C, F, H, W) as in ResnetBlock3D
    y = F.group_norm(x5, self.num_groups, self.weight, self.bias, self.eps)
    return y.transpose(1, 2).reshape(bf, c, h, w)


def poolable_group_norms(model: torch.nn.Module) -> list[torch.nn.GroupNorm]:
    """The GroupNorms ControlVideo's inflated blocks pool over frames: resnet norm1/norm2, conv_norm_out."""
    from diffusers.models.resnet import ResnetBlock2D

    norms = []
    for module in model.modules():
        if isinstance(module, ResnetBlock2D):
            norms += [m for m in (module.norm1, module.norm2) if isinstance(m, torch.nn.GroupNorm)]
    out_norm = getattr(model, "conv_norm_out", None)
    if isinstance(out_norm, torch.nn.GroupNorm):
        norms.append(out_norm)
    return norms


@contextlib.contextmanager
def frame_coupling(
    unet: torch.nn.Module,
    controlnet: torch.nn.Module | None,
    context: FrameContext,
    *,
    couple_controlnet: bool = False,
) -> Iterator[FrameContext]:
    """Install cross-frame attention and pooled GroupNorm for the duration of the block, then restore.

    `controlnet` may be one ControlNet, a diffusers `MultiControlNetModel` or None.

    The models are left exactly as found (processors and forwards), so components shared with another
    pipeline behave normally outside a ControlVideo call.
    """
    nets = getattr(controlnet, "nets", None)  # diffusers' MultiControlNetModel holds its ControlNets in .nets
    controlnets = list(nets) if nets is not None else ([controlnet] if controlnet is not None else [])
    models = [(unet, True)] + [(net, couple_controlnet) for net in controlnets]
    saved = []
    patched: list[torch.nn.GroupNorm] = []
    try:
        for model, cross_frame in models:
            old = dict(model.attn_processors)
            saved.append((model, old))
            if cross_frame:
                processor = CrossFrameAttnProcessor(context)
                model.set_attn_processor(
                    {
                        name: processor if name.endswith("attn1.processor") else proc
                        for name, proc in old.items()
                    }
                )
            for norm in poolable_group_norms(model):
                norm._lapgen_frame_context = context
                norm.forward = types.MethodType(_pooled_group_norm, norm)
                patched.append(norm)
        yield context
    finally:
        for norm in patched:
            norm.__dict__.pop("forward", None)
            norm.__dict__.pop("_lapgen_frame_context", None)
        for model, old in saved:
            model.set_attn_processor(old)
