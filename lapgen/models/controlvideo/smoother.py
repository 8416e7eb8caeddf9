"""Interleaved-frame smoother (ControlVideo, Zhang et al. 2023, §3.3; YBYBZhang/ControlVideo pipeline).

At a few denoising steps, after the DDIM step produced the predicted clean latent x̂0:
1. decode x̂0 with the VAE to RGB in [0, 1] (in slices),
2. replace one parity class of frames by the interpolation of its two neighbours (inputs read from an
   unmodified copy): at an even loop index the odd frames, at an odd loop index the even frames, as the
   original decides by `i % 2`,
3. re-encode (posterior mean by default, so identical frames stay identical; the original samples the
   posterior with the generator, `sample_posterior=True`) -> smoothed x̂0,
4. recompute the DDIM (η=0) step: `x_{t-1} = sqrt(ᾱ_prev)·x̂0_smoothed + sqrt(1-ᾱ_prev)·ε̂`.

When: the original fires at loop index i when `num_inference_steps - i` is in `smooth_steps`, default
`[19, 20]`: steps counted from the end, so i = 30, 31 of 50 steps and i = 80, 81 of the paper's 100.
lapgen's default is that rule with the same numbers. Also available: a start fraction and a count
(`start=0.6, count=2` gives i = 60, 61 of 100) and explicit loop indices (`at=[60, 61]`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lapgen.errors import LapgenError

ENDPOINT_RULES = ("original", "keep")
REFERENCE_SMOOTHER_STEPS = (19, 20)  # ControlVideo's --smoother_steps default: steps counted from the end


def smoother_step_indices(
    num_inference_steps: int,
    from_end: Sequence[int] | None = None,
    *,
    start: float | None = None,
    count: int = 2,
    at: Sequence[int] | None = None,
) -> list[int]:
    """Loop indices `i` (0-based) at which the smoother fires, by one of three rules:

    - `from_end` (default `(19, 20)`, ControlVideo's rule): i = N - s for every s; an s larger than N never
      fires (as in the original), an s < 1 is an error;
    - `start`: `count` consecutive indices from round(start·N);
    - `at`: explicit loop indices in 0..N-1.
    """
    n = int(num_inference_steps)
    if sum(x is not None for x in (from_end, start, at)) > 1:
        raise LapgenError(
            "give the smoother steps one way: counted from the end, a start fraction or loop indices"
        )
    if at is not None:
        bad = [s for s in at if not 0 <= int(s) < n]
        if bad:
            raise LapgenError(
                f"smoother loop indices {bad} are outside 0..{n - 1}",
                hint="give loop indices of the denoising loop, or none to disable",
            )
        return sorted({int(s) for s in at})
    if start is not None:
        if not 0.0 <= start <= 1.0 or count < 0:
            raise LapgenError(f"smoother start must be in [0, 1] and count >= 0 (got {start}, {count})")
        first = round(start * n)
        return [i for i in range(first, first + count) if i < n]
    steps = REFERENCE_SMOOTHER_STEPS if from_end is None else from_end
    bad = [s for s in steps if int(s) < 1]
    if bad:
        raise LapgenError(
            f"smoother steps {bad} must be >= 1 (they count the steps left, as in ControlVideo: 19,20)",
        )
    return sorted({n - int(s) for s in steps if int(s) <= n})


def smoother_parity(step_index: int) -> int:
    """Which frames a trigger at loop index `step_index` replaces: 1 = odd frames (even i), 0 = even (odd i)."""
    return 1 if step_index % 2 == 0 else 0


def interleave_frames(
    frames: torch.Tensor,
    parity: int,
    interpolator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    endpoints: str = "original",
) -> torch.Tensor:
    """Replace frames of one parity class by the midpoint of their neighbours. `frames`: `(F, 3, H, W)`.

    parity 1 (odd pass): frames 1, 3, ... with two neighbours; a last odd frame (F even) stays.
    parity 0 (even pass): frames 2, 4, ... with two neighbours; with `endpoints="original"` frame 0 also
    becomes interp(f0, f1) and, for F odd, the last frame interp(f[F-2], f[F-1]); `"keep"` leaves them.
    Inputs are always read from the unmodified frames.
    """
    if endpoints not in ENDPOINT_RULES:
        raise LapgenError(
            f"unknown smoother endpoint rule {endpoints!r}", hint=f"use one of {ENDPOINT_RULES}"
        )
    n = frames.shape[0]
    targets = list(range(2 if parity == 0 else 1, n - 1, 2))
    left = [i - 1 for i in targets]
    right = [i + 1 for i in targets]
    if parity == 0 and endpoints == "original" and n >= 2:
        targets, left, right = [0] + targets, [0] + left, [1] + right
        if n % 2 == 1:
            targets, left, right = targets + [n - 1], left + [n - 2], right + [n - 1]
    out = frames.clone()
    if targets:
        mid = interpolator(frames[left], frames[right])
        out[targets] = mid.to(out.dtype)
    return out


def ddim_alpha_prev(scheduler, timestep: int | torch.Tensor) -> torch.Tensor:
    """ᾱ of the step DDIM moves to from `timestep` (the rule of `DDIMScheduler.step`)."""
    t = int(timestep)
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod


def ddim_epsilon(
    scheduler, model_output: torch.Tensor, sample: torch.Tensor, timestep: int | torch.Tensor
) -> torch.Tensor:
    """The noise estimate ε̂ DDIM uses for this step, for the scheduler's prediction type."""
    kind = scheduler.config.prediction_type
    alpha_t = scheduler.alphas_cumprod[int(timestep)].to(sample.device, sample.dtype)
    if kind == "epsilon":
        return model_output
    if kind == "v_prediction":
        return alpha_t**0.5 * model_output + (1 - alpha_t) ** 0.5 * sample
    if kind == "sample":
        return (sample - alpha_t**0.5 * model_output) / (1 - alpha_t) ** 0.5
    raise LapgenError(f"unsupported prediction type {kind!r} for the smoother")


def ddim_recompute(x0: torch.Tensor, epsilon: torch.Tensor, alpha_prev: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (η=0) update from a clean-latent estimate and a noise estimate."""
    alpha_prev = alpha_prev.to(x0.device, x0.dtype)
    return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * epsilon


def require_ddim(scheduler) -> None:
    from diffusers import DDIMScheduler

    if not isinstance(scheduler, DDIMScheduler):
        raise LapgenError(
            f"the interleaved-frame smoother needs a DDIMScheduler, got {type(scheduler).__name__}",
            hint="convert with DDIMScheduler.from_config(pipe.scheduler.config) or disable the "
            "smoother (smoother_steps=[])",
        )
    if scheduler.config.clip_sample or scheduler.config.thresholding:
        raise LapgenError(
            "the smoother assumes DDIM without sample clipping or thresholding",
            hint="use clip_sample=False, thresholding=False (Stable Diffusion's settings)",
        )


class InterleavedSmoother:
    """Pixel-space smoothing of a predicted clean latent video `(F, 4, h, w)` through the VAE."""

    def __init__(
        self,
        vae,
        interpolator: Callable,
        endpoints: str = "original",
        chunk_size: int = 16,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
    ):
        self.vae = vae
        self.interpolator = interpolator
        self.endpoints = endpoints
        self.chunk_size = max(1, int(chunk_size))
        self.sample_posterior = sample_posterior
        self.generator = generator

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """`(F, 4, h, w)` scaled latents -> `(F, 3, H, W)` float32 RGB in [0, 1], in slices."""
        sf = self.vae.config.scaling_factor
        parts = []
        for s in range(0, latents.shape[0], self.chunk_size):
            z = latents[s : s + self.chunk_size].to(self.vae.dtype) / sf
            img = self.vae.decode(z, return_dict=False)[0]
            parts.append((img.float() / 2 + 0.5).clamp(0, 1))
        return torch.cat(parts)

    def encode(self, frames: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`(F, 3, H, W)` in [0, 1] -> scaled latents (posterior mean unless `sample_posterior`)."""
        sf = self.vae.config.scaling_factor
        parts = []
        for s in range(0, frames.shape[0], self.chunk_size):
            x = (frames[s : s + self.chunk_size] * 2 - 1).to(self.vae.dtype)
            dist = self.vae.encode(x).latent_dist
            z = dist.sample(self.generator) if self.sample_posterior else dist.mean
            parts.append(z.to(dtype) * sf)
        return torch.cat(parts)

    def smooth_x0(self, x0: torch.Tensor, step_index: int) -> torch.Tensor:
        """One smoother pass on the predicted clean latents at loop index `step_index` (its parity decides
        which frames are replaced, `smoother_parity`)."""
        frames = self.decode(x0)
        frames = interleave_frames(frames, smoother_parity(step_index), self.interpolator, self.endpoints)
        return self.encode(frames, x0.dtype)
