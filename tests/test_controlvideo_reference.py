"""ControlVideo against from-scratch references, with mutants that must fail the same checks.

The tiny test models attend almost uniformly, so a broken cross-frame attention (keys/values from the mean
of the frames, from the first frame only, or rows of two videos mixed) barely changes their output. Here
the query/key weights are scaled until the attention is sharp, the expected result is computed from
scratch (explicit loops over videos and heads, float64), and each test also runs the same check on
deliberately broken variants (parametrised `variant`) to show the check catches them. The same is done
for the interleaved-frame smoother's timing and frame indices at 50 and 100 steps, and for the key/value
frames of the long-video clip passes.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math

import pytest
import torch

from tests.fixtures.video import make_moving_masks

PROMPT = "grasper retract liver"

pytestmark = pytest.mark.usefixtures("video_one_thread")


# ---- a from-scratch cross-frame attention ---------------------------------------------------------


def reference_attention(attn, hidden, frames: int, kv_frames=None, stats: list | None = None):
    """ControlVideo's fully cross-frame self-attention, from its definition.

    hidden `(B·F, N, C)` holds B videos of F consecutive rows. Within each video, the queries of all F·N
    tokens attend to the keys/values of the tokens of `kv_frames` (all frames when None); softmax per head
    over those tokens; heads concatenated; output projection. `stats` collects each query's largest weight.
    """
    h = hidden.double()
    wq, wk, wv = (m.weight.double() for m in (attn.to_q, attn.to_k, attn.to_v))
    bq, bk, bv = (m.bias.double() if m.bias is not None else 0.0 for m in (attn.to_q, attn.to_k, attn.to_v))
    out_lin = attn.to_out[0]
    bf, n, c = h.shape
    heads = attn.heads
    inner = wq.shape[0]
    d = inner // heads
    out = torch.empty(bf, n, inner, dtype=torch.float64)
    for v in range(bf // frames):
        video = h[v * frames : (v + 1) * frames]  # (F, N, C): this video's rows only
        source = video if kv_frames is None else video[list(kv_frames)]
        q = video.reshape(-1, c) @ wq.T + bq  # (F·N, inner)
        k = source.reshape(-1, c) @ wk.T + bk  # (F_kv·N, inner)
        val = source.reshape(-1, c) @ wv.T + bv
        o = torch.empty_like(q)
        for head in range(heads):
            cols = slice(head * d, (head + 1) * d)
            weights = torch.softmax(q[:, cols] @ k[:, cols].T / math.sqrt(d), dim=-1)
            if stats is not None:
                stats.append(weights.max(dim=-1).values.mean().item())
            o[:, cols] = weights @ val[:, cols]
        out[v * frames : (v + 1) * frames] = o.reshape(frames, n, inner)
    result = out @ out_lin.weight.double().T + (out_lin.bias.double() if out_lin.bias is not None else 0.0)
    return result.to(hidden.dtype)


class _FrameMean(torch.nn.Module):
    """A projection whose output is averaged over the frames of each video (the 'mean of frames' bug)."""

    def __init__(self, linear, frames):
        super().__init__()
        self.linear, self.frames = linear, frames

    def forward(self, x):
        y = self.linear(x)
        if y.ndim == 4:  # (B, F_kv, N, C): the selected key/value frames of each video
            return y.mean(1, keepdim=True).expand_as(y)
        shape = y.shape  # (B·F, N, C)
        y = y.reshape(shape[0] // self.frames, self.frames, *shape[1:]).mean(1, keepdim=True)
        return y.expand(-1, self.frames, *shape[1:]).reshape(shape)


@contextlib.contextmanager
def mutated(processor, variant: str, frames: int):
    """Make the real lapgen processor misbehave in one known way for the duration of the block.

    mean_frames: keys/values from the mean of the frames; first_frame: from frame 0 only (Text2Video-Zero's
    rule); mixed_videos: the batch read frame-major, so a "video" holds rows of different videos (CFG
    halves); per_frame: no cross-frame attention at all. "lapgen" leaves it alone.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    from lapgen.models.controlvideo.attention import CrossFrameAttnProcessor

    real_call = CrossFrameAttnProcessor.__call__
    if variant == "mean_frames":

        def call(self, attn, hidden_states, *args, **kwargs):
            saved = attn.to_k, attn.to_v
            attn.to_k = _FrameMean(saved[0], self.context.num_frames)
            attn.to_v = _FrameMean(saved[1], self.context.num_frames)
            try:
                return real_call(self, attn, hidden_states, *args, **kwargs)
            finally:
                attn.to_k, attn.to_v = saved

    elif variant == "first_frame":

        def call(self, attn, hidden_states, *args, **kwargs):
            saved = self.context.kv_frames
            self.context.kv_frames = [0]
            try:
                return real_call(self, attn, hidden_states, *args, **kwargs)
            finally:
                self.context.kv_frames = saved

    elif variant == "mixed_videos":

        def call(self, attn, hidden_states, *args, **kwargs):
            f = self.context.num_frames
            b = hidden_states.shape[0] // f
            order = torch.arange(b * f).reshape(b, f).T.reshape(-1)  # frame-major
            out = real_call(self, attn, hidden_states[order], *args, **kwargs)
            return out[torch.argsort(order)]

    elif variant == "per_frame":
        stock = AttnProcessor2_0()

        def call(self, attn, hidden_states, *args, **kwargs):
            return stock(attn, hidden_states, *args, **kwargs)

    else:
        call = real_call
    CrossFrameAttnProcessor.__call__ = call
    try:
        yield processor
    finally:
        CrossFrameAttnProcessor.__call__ = real_call


VARIANTS = ["lapgen", "mean_frames", "first_frame", "mixed_videos", "per_frame"]


def _expect(variant: str, check) -> None:
    """The real processor passes `check`; every mutant fails it."""
    if variant == "lapgen":
        check()
    else:
        with pytest.raises(AssertionError):
            check()


# ---- processor level: sharp attention, CFG halves, several frames ---------------------------------


def _sharp_attention(seed: int = 0, dim: int = 32, heads: int = 2, sharpen: float = 6.0):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(seed)
    attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=True).eval()
    with torch.no_grad():
        attn.to_q.weight.mul_(sharpen)
        attn.to_k.weight.mul_(sharpen)
    return attn


@pytest.mark.parametrize("kv", [None, "clip_original", "clip_keys"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_frame_processor_equals_reference_attention(variant, kv):
    """Two videos (the CFG halves) of 5 frames, 16 tokens each, sharp attention: lapgen's processor gives the
    reference result for all-frame keys/values and for the clip passes' selections ([0, -1] as in
    ControlVideo's code, [0, 1] as in its paper)."""
    from lapgen.models.controlvideo import CrossFrameAttnProcessor, FrameContext

    frames, videos = 5, 2
    kv_frames = {None: None, "clip_original": [0, frames - 1], "clip_keys": [0, 1]}[kv]
    attn = _sharp_attention()
    hidden = torch.randn(videos * frames, 16, 32, generator=torch.Generator().manual_seed(1))
    stats: list[float] = []
    want = reference_attention(attn, hidden, frames, kv_frames, stats)
    assert sum(stats) / len(stats) > 0.5  # sharp: a query's largest weight averages above one half
    processor = CrossFrameAttnProcessor(FrameContext(num_frames=frames, kv_frames=kv_frames))
    attn.set_processor(processor)

    def check():
        with mutated(processor, variant, frames), torch.no_grad():
            got = attn(hidden)
        err = (got - want).abs().max().item()
        assert err < 1e-4, f"max deviation from the reference attention {err:.3g}"

    _expect(variant, check)


def test_reference_attention_is_not_a_per_frame_or_uniform_average():
    """The references themselves differ (so the mutants above can be told apart): all frames vs frame 0 vs
    per frame vs the mean of frames differ by far more than the tolerance."""
    attn = _sharp_attention()
    hidden = torch.randn(10, 16, 32, generator=torch.Generator().manual_seed(1))
    full = reference_attention(attn, hidden, 5)
    first = reference_attention(attn, hidden, 5, [0])
    single = reference_attention(attn, hidden, 1)
    assert min((full - first).abs().max(), (full - single).abs().max(), (first - single).abs().max()) > 1e-2


# ---- pipeline level: the guided noise of a several-frame video with CFG ---------------------------


class ReferenceProcessor:
    """A diffusers attention processor computing `reference_attention` for a fixed frame count."""

    def __init__(self, frames: int):
        self.frames = frames

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        assert encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3
        return reference_attention(attn, hidden_states, self.frames)


@pytest.fixture(scope="module")
def sharp_pipe(controlvideo_pipe):
    """The tiny pipeline with a copy of its UNet whose self-attention query/key weights are scaled x8."""
    from lapgen.models.controlvideo import ControlVideoPipeline, self_attention_names

    unet = copy.deepcopy(controlvideo_pipe.unet)
    with torch.no_grad():
        for name in self_attention_names(unet):
            layer = unet.get_submodule(name.rsplit(".processor", 1)[0])
            layer.to_q.weight.mul_(8.0)
            layer.to_k.weight.mul_(8.0)
    parts = {k: getattr(controlvideo_pipe, k) for k in ("vae", "text_encoder", "tokenizer", "controlnet")}
    pipe = ControlVideoPipeline(**parts, unet=unet, scheduler=controlvideo_pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _reference_guided_noise(pipe, latents, t, cond, pos, neg, guidance, frames):
    """Guided noise built by hand: batch [uncond f0..fF-1, cond f0..fF-1], UNet self-attention replaced by
    the reference processor, per-frame GroupNorm (pooling off on both sides)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = pipe.unet
    saved = dict(unet.attn_processors)
    unet.set_attn_processor(
        {
            n: ReferenceProcessor(frames) if n.endswith("attn1.processor") else AttnProcessor2_0()
            for n in saved
        }
    )
    try:
        noise = pipe._model_pass(
            torch.cat([latents] * 2), t, torch.cat([neg, pos]), torch.cat([cond] * 2), 1.0
        )
    finally:
        unet.set_attn_processor(saved)
    uncond, text = noise.chunk(2)
    return uncond + guidance * (text - uncond)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pipeline_guided_noise_equals_reference(sharp_pipe, variant):
    """A 4-frame video with classifier-free guidance (different latents per frame): the pipeline's guided
    noise prediction equals the one computed with the from-scratch attention."""
    from lapgen.models.controlvideo import FrameContext, frame_coupling

    pipe, frames = sharp_pipe, 4
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(frames, 4, 16, 16, generator=g)
    masks = make_moving_masks(frames, step=15)
    cond = pipe.prepare_frames(masks, None, None, "cpu", torch.float32)
    pos, neg = pipe.encode_prompt(PROMPT, "cpu", 1, True, "blurry")
    pos, neg = pos.expand(frames, -1, -1), neg.expand(frames, -1, -1)
    t = torch.tensor(601)
    with torch.no_grad():
        want = _reference_guided_noise(pipe, latents, t, cond, pos, neg, 3.0, frames)
        # how much the attention matters here: the reference with per-frame attention is far away
        per_frame = _reference_guided_noise(pipe, latents, t, cond, pos, neg, 3.0, 1)
    gap = (want - per_frame).abs().max().item()
    assert gap > 1e-3

    def check():
        ctx = FrameContext(num_frames=frames, pool_norm=False)
        with frame_coupling(pipe.unet, pipe.controlnet, ctx) as ctx, torch.no_grad():
            processor = next(p for p in pipe.unet.attn_processors.values() if hasattr(p, "context"))
            with mutated(processor, variant, frames):
                got = pipe._guided_noise(ctx, latents, t, None, None, cond, pos, neg, 3.0, 1.0, False)
        err = (got - want).abs().max().item()
        assert err < 1e-3 * gap, f"deviation {err:.3g} (per-frame attention would be {gap:.3g} away)"

    _expect(variant, check)


# ---- the smoother: when and which frames, against ControlVideo's rule -----------------------------


def reference_smoother_plan(num_steps: int, num_frames: int, smooth_steps=(19, 20)):
    """ControlVideo's smoother, from its rule: at loop index i with `num_steps - i` in smooth_steps; even i
    replaces the odd frames by interp(previous even, next even); odd i replaces the even frames with the
    list [0] + odd frames (+ [F-1] for odd F) as neighbours. Returns {i: {target: (left, right)}}."""
    evens = list(range(0, num_frames, 2))
    odds = list(range(1, num_frames, 2))
    plan = {}
    for i in range(num_steps):
        if num_steps - i not in smooth_steps:
            continue
        if i % 2 == 0:
            plan[i] = {odds[v]: (evens[v], evens[v + 1]) for v in range(len(evens) - 1)}
        else:
            ends = [0, *odds] + ([num_frames - 1] if num_frames % 2 == 1 else [])
            plan[i] = {evens[v]: (ends[v], ends[v + 1]) for v in range(len(ends) - 1)}
    return plan


def observed_smoother_plan(pipe, monkeypatch, num_steps: int, num_frames: int, **call):
    """Run the pipeline with the model calls stubbed out, frames tagged by index in the smoother's pixel
    space and an interpolator that records its neighbours; returns {i: {target: (left, right)}}."""
    from lapgen.models.controlvideo.smoother import InterleavedSmoother

    monkeypatch.setattr(pipe, "_model_pass", lambda latents, *a, **k: torch.zeros_like(latents))
    tags = torch.arange(1, num_frames + 1, dtype=torch.float32)[:, None, None, None].expand(
        num_frames, 3, 2, 2
    )
    monkeypatch.setattr(InterleavedSmoother, "decode", lambda self, latents: tags.clone())
    seen: list[torch.Tensor] = []

    def encode(self, frames, dtype):
        seen.append(frames[:, 0, 0, 0].round().long())
        return torch.zeros(num_frames, 4, 16, 16, dtype=dtype)

    monkeypatch.setattr(InterleavedSmoother, "encode", encode)
    steps: list[int] = []

    def on_step(p, i, t, kwargs):
        if len(seen) > len(steps):
            steps.append(i)
        return kwargs

    pipe(
        PROMPT,
        torch.zeros(num_frames, 3, 128, 128),
        num_inference_steps=num_steps,
        output_type="latent",
        interpolator=lambda a, b: a * 1000 + b,  # neighbours (tags k+1) encoded in the value
        callback_on_step_end=on_step,
        long_video="off",
        **call,
    )
    plan = {}
    for i, values in zip(steps, seen):
        plan[i] = {
            k: (int(v) // 1000 - 1, int(v) % 1000 - 1) for k, v in enumerate(values.tolist()) if v >= 1000
        }
        assert all(values[k] == k + 1 for k in range(num_frames) if k not in plan[i])  # others untouched
    return plan


def _wrong_from_end_as_loop_indices(n, from_end=None, **kw):
    return sorted({int(s) for s in (from_end or (19, 20)) if int(s) < n})


def _wrong_start_fraction(n, from_end=None, **kw):
    first = round(0.6 * n)
    return [first, first + 1]


def _wrong_off_by_one(n, from_end=None, **kw):
    return sorted({n - int(s) - 1 for s in (from_end or (19, 20))})


SMOOTHER_VARIANTS = {
    "lapgen": None,
    "loop_indices": (
        "lapgen.models.controlvideo.pipeline.smoother_step_indices",
        _wrong_from_end_as_loop_indices,
    ),
    "start_fraction": ("lapgen.models.controlvideo.pipeline.smoother_step_indices", _wrong_start_fraction),
    "off_by_one": ("lapgen.models.controlvideo.pipeline.smoother_step_indices", _wrong_off_by_one),
    "parity_swapped": ("lapgen.models.controlvideo.smoother.smoother_parity", lambda i: i % 2),
    "parity_by_trigger_order": None,  # set up in the test (needs a counter)
    "endpoints_kept": None,  # set up in the test
}


@pytest.mark.parametrize("variant", list(SMOOTHER_VARIANTS))
def test_smoother_timing_and_frames_follow_controlvideo(controlvideo_pipe, monkeypatch, variant):
    """At 50 and 100 steps (and 49, where parity by loop index and by trigger order part ways), for an
    even and an odd frame count: the loop indices and the replaced frames with their neighbours are
    ControlVideo's. Each mutant of the rule fails."""
    from lapgen.models.controlvideo import smoother as smoother_module

    if SMOOTHER_VARIANTS[variant] is not None:
        monkeypatch.setattr(*SMOOTHER_VARIANTS[variant])
    elif variant == "parity_by_trigger_order":
        count = {"n": 0}

        def by_order(i):
            count["n"] += 1
            return 1 if count["n"] % 2 == 1 else 0

        monkeypatch.setattr(smoother_module, "smoother_parity", by_order)
    elif variant == "endpoints_kept":
        real = smoother_module.interleave_frames

        def keep_ends(frames, parity, interpolator, endpoints="original"):
            return real(frames, parity, interpolator, "keep")

        monkeypatch.setattr(smoother_module, "interleave_frames", keep_ends)

    def check():
        for steps in (50, 100, 49):
            for frames in (6, 7):
                want = reference_smoother_plan(steps, frames)
                assert list(want) == ([30, 31] if steps == 50 else [80, 81] if steps == 100 else [29, 30])
                got = observed_smoother_plan(controlvideo_pipe, monkeypatch, steps, frames)
                assert got == want, f"{steps} steps, {frames} frames"

    _expect(variant, check)


# ---- long mode: which frames the clip passes read keys/values from --------------------------------


def reference_long_passes(length: int, window: int):
    """ControlVideo's `generate_long_video`: keys every window-1 frames plus the last; one pass over the keys
    (all keys/values), then per clip a pass over [k_i, k_{i+1}] + clip whose keys/values are its positions
    0 and -1."""
    keys = list(range(0, length, window - 1))
    if keys[-1] != length - 1:
        keys.append(length - 1)
    passes = [(keys, None)]
    for a, b in itertools.pairwise(keys):
        clip = list(range(a + 1, b))
        if clip:
            frames = [a, b, *clip]
            passes.append((frames, [0, len(frames) - 1]))
    return passes


@pytest.mark.parametrize("clip_kv", ["original", "keys"])
def test_long_mode_passes_follow_controlvideo_by_default(controlvideo_pipe, monkeypatch, clip_kv):
    """Default clip_kv ("original") gives the passes of ControlVideo's code; "keys" (the paper's reading)
    is an option, and it differs from the code's passes."""
    pipe = controlvideo_pipe
    monkeypatch.setattr(pipe, "_model_pass", lambda latents, *a, **k: torch.zeros_like(latents))
    real = type(pipe)._guided_noise
    calls = []

    def record(self, ctx, latents, t, idx, kv, *rest):
        calls.append((list(idx), None if kv is None else list(kv)))
        return real(self, ctx, latents, t, idx, kv, *rest)

    monkeypatch.setattr(type(pipe), "_guided_noise", record)
    kw = {} if clip_kv == "original" else {"clip_kv": "keys"}
    out = pipe(
        PROMPT,
        torch.zeros(20, 3, 128, 128),
        num_inference_steps=1,
        output_type="latent",
        smoother_steps=[],
        **kw,
    )
    assert out.long_video and "20 frames > 16" in out.long_video_reason
    want = reference_long_passes(20, 4)  # window int(sqrt(20)) = 4
    if clip_kv == "original":
        assert calls == want
    else:
        assert calls != want and [c[0] for c in calls] == [w[0] for w in want]
