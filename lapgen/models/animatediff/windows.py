"""FreeNoise for videos longer than a motion module's context (Qiu et al. 2024, "FreeNoise: Tuning-Free
Longer Video Diffusion via Noise Rescheduling"; diffusers' `AnimateDiffFreeNoiseMixin`).

Two parts, both here as plain functions:

- Noise rescheduling: only the first `context` frames get fresh noise; every later group of `stride`
  frames reuses, shuffled, the noise of the `stride` frames one context earlier (diffusers' `shuffle_context`
  noise type), so any window sees correlated noise and the long video stays coherent.
- Window fusion: the frames are covered by windows of `context` frames every `stride` frames (the last
  window ends at the last frame); what each window computes is weighted by a pyramid over its frames and the
  overlaps are averaged. lapgen fuses the model's noise prediction (each window runs the whole motion UNet
  and ControlNet: peak memory of one window, as Gen-L-Video's temporal co-denoising and AnimateDiff-Evolved's
  context windows do) or, with `fusion="attention"`, diffusers' FreeNoise blocks fuse inside every motion
  module as the FreeNoise paper does (every frame's activations at once: memory grows with the frames).
"""

from __future__ import annotations

import torch


def context_windows(num_frames: int, context: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of the windows covering `num_frames` frames: every `stride` frames, `context` long, and a
    last window ending at the last frame when the stride does not land there (diffusers' FreeNoise schedule)."""
    if num_frames <= context:
        return [(0, num_frames)]
    windows = [(s, s + context) for s in range(0, num_frames - context + 1, stride)]
    if windows[-1][1] != num_frames:
        windows.append((num_frames - context, num_frames))
    return windows


def pyramid_weights(length: int) -> torch.Tensor:
    """FreeNoise's pyramid: 1, 2, ..., 2, 1 over a window's frames (highest in the middle), float32 (length,)."""
    half = (length + 1) // 2
    rise = list(range(1, half + 1))
    return torch.tensor(rise + rise[: length - half][::-1], dtype=torch.float32)


def reschedule_noise(noise: torch.Tensor, context: int, stride: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """FreeNoise's noise rescheduling of `noise` (B, C, F, h, w): a copy in which only the first `context`
    frames keep their own noise.

    Frames [i, i + stride) for i = context, context + stride, ... take the noise of frames
    [i - context, i - context + stride) in an order drawn with `generator` (`torch.randperm`, in diffusers'
    order: drawing `noise` and then rescheduling with one generator gives diffusers' `shuffle_context` noise).
    """
    num_frames = noise.shape[2]
    out = noise.clone()
    for i in range(context, num_frames, stride):
        start = i - context
        end = min(num_frames, start + stride)
        order = torch.arange(start, end)[torch.randperm(end - start, generator=generator)]
        take = min(num_frames, i + (end - start)) - i
        out[:, :, i:i + take] = out[:, :, order[:take]]
    return out
