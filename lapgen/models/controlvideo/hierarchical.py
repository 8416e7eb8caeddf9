"""Hierarchical sampler for long videos (ControlVideo, Zhang et al. 2023, §3.4, `generate_long_video`).

At every denoising step (all frames at the same t):
(a) the key frames (every (w-1)-th index from 0, plus the last frame) are denoised jointly with fully
    cross-frame attention over all keys;
(b) each clip of frames strictly between two consecutive keys k_i < k_{i+1} is denoised in a pass over
    `[k_i, k_{i+1}] + clip`, whose queries attend only to selected frames; the key-frame outputs of the
    pass are dropped. lapgen's default `clip_kv="original"` reads keys/values from positions [0, -1] of the
    pass (k_i and the last clip frame), as the official code does; `"keys"` reads them from k_i and
    k_{i+1}, as the ControlVideo paper describes;
(c) the pipeline then takes one scheduler step over all frames.

Every pass reads the step's input latents, never already-stepped ones. Peak memory is set by the largest
pass, max(#keys, w) frames, so it does not grow with the square of the video length.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lapgen.errors import LapgenError

CLIP_KV_MODES = ("original", "keys")
LONG_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class KeyFramePlan:
    """Key frames and the clips between them. `clips[j]` lies strictly between `bounds[j]`."""

    length: int
    window: int
    keys: tuple[int, ...]
    clips: tuple[tuple[int, ...], ...]
    bounds: tuple[tuple[int, int], ...]


def default_window(length: int) -> int:
    """The original `inference.py` default: `int(sqrt(L))`, at least 3."""
    return max(3, int(math.sqrt(length)))


def split_key_frames(length: int, window: int) -> KeyFramePlan:
    """Keys every `window-1` frames from 0 plus `length-1`; clips are the frames between keys.

    L=250, w=15 -> 19 keys (0, 14, ..., 238, 249) and 18 clips of at most 13 frames.
    """
    if length < 1:
        raise LapgenError("a video needs at least one frame")
    if window < 3:
        raise LapgenError(f"window size must be at least 3 (got {window})")
    keys = list(range(0, length, window - 1))
    if keys[-1] != length - 1:
        keys.append(length - 1)
    clips, bounds = [], []
    for a, b in itertools.pairwise(keys):
        if b - a > 1:
            clips.append(tuple(range(a + 1, b)))
            bounds.append((a, b))
    return KeyFramePlan(length, window, tuple(keys), tuple(clips), tuple(bounds))


def long_mode_decision(mode: str, length: int, window: int, max_full_frames: int = 16) -> tuple[bool, str]:
    """Whether to sample hierarchically, and why (for the video's card).

    "on" (ControlVideo's `--is_long_video`): hierarchical when L > window. "auto" (lapgen's default, the
    rule of ControlVideo's own web demo): hierarchical when L > max_full_frames and L > window; full
    attention over all frames costs O(L²) memory (at 250 frames x 128 px about 130 GB of scores without
    fused kernels). "off": always full.
    """
    if mode not in LONG_MODES:
        raise LapgenError(f"unknown long-video mode {mode!r}", hint=f"use one of {LONG_MODES}")
    if mode == "off":
        return False, "long=off: full cross-frame attention over all frames"
    if length <= window:
        return False, f"{length} frames <= window {window}: one pass with full attention (no clips to split)"
    if mode == "on":
        return True, f"long=on: hierarchical (key frames every {window - 1}, clips between them)"
    if length > max_full_frames:
        return True, (
            f"long=auto: {length} frames > {max_full_frames} (max full-attention frames): hierarchical, "
            "since full attention memory grows with the square of the length"
        )
    return False, f"long=auto: {length} frames <= {max_full_frames}: full cross-frame attention"


def use_long_mode(mode: str, length: int, window: int, max_full_frames: int = 16) -> bool:
    """Whether to sample hierarchically: "on" when L > window, "auto" when also L > max_full_frames."""
    return long_mode_decision(mode, length, window, max_full_frames)[0]


PassFn = Callable[[Sequence[int], Sequence[int] | None], torch.Tensor]


def hierarchical_noise_prediction(
    predict: PassFn,
    plan: KeyFramePlan,
    clip_kv: str = "original",
    out: torch.Tensor | None = None,
    clips_per_pass: int = 1,
) -> torch.Tensor:
    """Noise prediction for all frames of one step from key and clip passes.

    predict(frame_indices, kv_positions) -> `(len(frame_indices), C, h, w)` guided noise for those frames,
    with kv_positions the positions within the pass whose keys/values the queries read (None = all).
    With `clips_per_pass > 1`, up to that many consecutive clips of equal length go through one call as
    separate videos: frame_indices is then a list of index lists and the result is video-major
    `(videos·L, C, h, w)` (same numbers, fewer and larger calls: memory traded for speed).
    """
    if clip_kv not in CLIP_KV_MODES:
        raise LapgenError(f"unknown clip_kv mode {clip_kv!r}", hint=f"use one of {CLIP_KV_MODES}")
    key_noise = predict(list(plan.keys), None)
    if out is None:
        out = torch.empty((plan.length, *key_noise.shape[1:]), dtype=key_noise.dtype, device=key_noise.device)
    out[list(plan.keys)] = key_noise
    passes = [[a, b, *clip] for (a, b), clip in zip(plan.bounds, plan.clips)]
    groups: list[list[list[int]]] = []
    for frames in passes:
        if groups and len(groups[-1]) < clips_per_pass and len(groups[-1][0]) == len(frames):
            groups[-1].append(frames)
        else:
            groups.append([frames])
    for group in groups:
        n = len(group[0])
        kv = [0, 1] if clip_kv == "keys" else [0, n - 1]
        noise = predict(group[0] if len(group) == 1 else group, kv)
        for v, frames in enumerate(group):
            out[frames[2:]] = noise[v * n + 2 : (v + 1) * n]
    return out
