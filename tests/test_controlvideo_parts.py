"""ControlVideo building blocks: attention chunking, pooled norms, smoother, key-frame split, interpolators."""

from __future__ import annotations

import pytest
import torch

from lapgen.errors import LapgenError
from tests.fixtures.video import make_moving_masks

PROMPT = "grasper retract liver"

pytestmark = pytest.mark.usefixtures("video_one_thread")


# ---- attention and norms -------------------------------------------------------------------------


def test_chunked_attention_equals_unchunked():
    from lapgen.models.controlvideo import chunked_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 300, 8, generator=g) for _ in range(3))
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    tiny_budget = 2 * 3 * 300 * 4 * 37  # 37 query rows per chunk, a ragged last chunk
    torch.testing.assert_close(chunked_attention(q, k, v, tiny_budget), full, atol=1e-6, rtol=1e-5)


def test_pooled_group_norm_with_one_frame_is_stock_and_keys_unchanged(controlvideo_pipe):
    from lapgen.models.controlvideo import FrameContext, frame_coupling, poolable_group_norms

    unet = controlvideo_pipe.unet
    keys = list(unet.state_dict())
    norms = poolable_group_norms(unet)
    x = torch.randn(3, norms[0].num_channels, 8, 8, generator=torch.Generator().manual_seed(1))
    stock = norms[0](x)
    with frame_coupling(unet, controlvideo_pipe.controlnet, FrameContext(num_frames=1)):
        assert "forward" in norms[0].__dict__
        assert torch.equal(norms[0](x), stock)
        assert list(unet.state_dict()) == keys
    with frame_coupling(unet, None, FrameContext(num_frames=3)):
        pooled = norms[0](x)
        want = torch.nn.functional.group_norm(
            x.transpose(0, 1)[None], norms[0].num_groups, norms[0].weight, norms[0].bias, norms[0].eps
        )[0].transpose(0, 1)
        torch.testing.assert_close(pooled, want)
    assert "forward" not in norms[0].__dict__
    assert list(unet.state_dict()) == keys


def test_processor_names_match_stable_diffusion_layout():
    """SD 1.5 has 16 UNet self-attention layers and 7 in its ControlNet (catches diffusers renames)."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel, UNet2DConditionModel

    from lapgen.models.controlvideo import self_attention_names

    with init_empty_weights():
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)  # SD 1.5 defaults
        controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    assert len(self_attention_names(unet)) == 16
    assert len(self_attention_names(controlnet)) == 7
    assert len(unet.attn_processors) == 32


def test_processors_installed_only_during_call(controlvideo_pipe):
    from lapgen.models.controlvideo import CrossFrameAttnProcessor, FrameContext, frame_coupling

    unet = controlvideo_pipe.unet
    before = dict(unet.attn_processors)
    with frame_coupling(unet, controlvideo_pipe.controlnet, FrameContext(num_frames=2)):
        now = unet.attn_processors
        assert all(
            isinstance(p, CrossFrameAttnProcessor) == n.endswith("attn1.processor") for n, p in now.items()
        )
        assert not any(
            isinstance(p, CrossFrameAttnProcessor)
            for p in controlvideo_pipe.controlnet.attn_processors.values()
        )
    assert all(unet.attn_processors[n] is p for n, p in before.items())


# ---- smoother ------------------------------------------------------------------------------------


def test_smoother_trigger_indices():
    """ControlVideo's rule by default: fire when `N - i` is 19 or 20; the other two rules on request."""
    from lapgen.models.controlvideo import smoother_step_indices

    assert smoother_step_indices(50) == [30, 31]
    assert smoother_step_indices(100) == [80, 81]
    assert smoother_step_indices(100, [19, 20]) == [80, 81]
    assert smoother_step_indices(20) == [0, 1]
    assert smoother_step_indices(15) == []  # counted from the end, 19 and 20 never fire (as the original)
    assert smoother_step_indices(100, start=0.6) == [60, 61]
    assert smoother_step_indices(10, start=0.5, count=3) == [5, 6, 7]
    assert smoother_step_indices(100, []) == []
    assert smoother_step_indices(100, at=[61, 60]) == [60, 61]
    with pytest.raises(LapgenError):
        smoother_step_indices(10, at=[10])
    with pytest.raises(LapgenError, match=">= 1"):
        smoother_step_indices(10, [0])
    with pytest.raises(LapgenError, match="one way"):
        smoother_step_indices(10, [19], at=[3])


def _tagged(n):
    return torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 3, 2, 2).clone()


def _record(a, b):
    return a * 1000 + b  # encodes which neighbours were used


@pytest.mark.parametrize("n", [6, 7])
def test_interleave_parity_and_endpoints(n):
    from lapgen.models.controlvideo import interleave_frames

    frames = _tagged(n)
    odd = interleave_frames(frames, 1, _record)[:, 0, 0, 0].tolist()
    for i in range(n):
        if i % 2 == 1 and i < n - 1:
            assert odd[i] == (i - 1) * 1000 + (i + 1)
        else:
            assert odd[i] == i  # untouched: evens, and a last odd frame (n even)
    even = interleave_frames(frames, 0, _record)[:, 0, 0, 0].tolist()
    assert even[0] == 0 * 1000 + 1
    for i in range(1, n):
        if i % 2 == 0 and i < n - 1:
            assert even[i] == (i - 1) * 1000 + (i + 1)
        elif i == n - 1 and n % 2 == 1:
            assert even[i] == (n - 2) * 1000 + (n - 1)
        else:
            assert even[i] == i
    keep = interleave_frames(frames, 0, _record, endpoints="keep")[:, 0, 0, 0].tolist()
    assert keep[0] == 0 and keep[-1] == n - 1
    assert torch.equal(frames, _tagged(n))  # inputs untouched


def test_ddim_recompute_equals_scheduler_step():
    from diffusers import DDIMScheduler

    from lapgen.models.controlvideo.smoother import ddim_alpha_prev, ddim_epsilon, ddim_recompute

    for pred in ("epsilon", "v_prediction"):
        s = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type=pred,
        )
        s.set_timesteps(10)
        g = torch.Generator().manual_seed(0)
        for t in s.timesteps:  # includes the last step (final_alpha_cumprod)
            x, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
            step = s.step(out, t, x)
            again = ddim_recompute(
                step.pred_original_sample, ddim_epsilon(s, out, x, t), ddim_alpha_prev(s, t)
            )
            torch.testing.assert_close(again, step.prev_sample, atol=1e-5, rtol=1e-5)


def test_smoother_changes_latents_only_at_its_steps(controlvideo_pipe, monkeypatch):
    from lapgen.models.controlvideo.smoother import InterleavedSmoother

    masks = make_moving_masks(5)
    seen = {}

    def record(key):
        def cb(pipe, i, t, kwargs):
            seen.setdefault(key, []).append(kwargs["latents"].clone())
            return kwargs

        return cb

    kw = {"num_inference_steps": 6, "output_type": "latent", "interpolator": "linear"}
    controlvideo_pipe(
        PROMPT,
        masks,
        generator=torch.Generator().manual_seed(0),
        smoother_steps=[],
        callback_on_step_end=record("off"),
        **kw,
    )
    out = controlvideo_pipe(
        PROMPT,
        masks,
        generator=torch.Generator().manual_seed(0),
        smoother_at=[3, 4],
        callback_on_step_end=record("on"),
        **kw,
    )
    assert out.smoothed_steps == [3, 4]
    for i in range(3):
        assert torch.equal(seen["on"][i], seen["off"][i])
    assert not torch.equal(seen["on"][3], seen["off"][3])

    # with the VAE round trip bypassed, the recomputed step is the scheduler's own step
    calls = []

    def identity(self, x0, step_index):
        calls.append(step_index)
        return x0

    monkeypatch.setattr(InterleavedSmoother, "smooth_x0", identity)
    off = seen.pop("off")
    controlvideo_pipe(
        PROMPT,
        masks,
        generator=torch.Generator().manual_seed(0),
        smoother_at=[3, 4],
        callback_on_step_end=record("noop"),
        **kw,
    )
    assert calls == [3, 4]
    for a, b in zip(seen["noop"], off):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_smoother_refuses_non_ddim(controlvideo_pipe):
    from diffusers import EulerDiscreteScheduler

    from lapgen.models.controlvideo.smoother import require_ddim

    with pytest.raises(LapgenError, match="DDIMScheduler"):
        require_ddim(EulerDiscreteScheduler.from_config(controlvideo_pipe.scheduler.config))
    require_ddim(controlvideo_pipe.scheduler)


# ---- hierarchical --------------------------------------------------------------------------------


def test_key_frame_split_250_frames():
    from lapgen.models.controlvideo import default_window, split_key_frames

    assert default_window(250) == 15
    plan = split_key_frames(250, 15)
    assert len(plan.keys) == 19 and len(plan.clips) == 18
    assert plan.keys[:3] == (0, 14, 28) and plan.keys[-2:] == (238, 249)
    assert max(len(c) for c in plan.clips) == 13
    every = sorted(list(plan.keys) + [f for c in plan.clips for f in c])
    assert every == list(range(250))
    for (a, b), clip in zip(plan.bounds, plan.clips):
        assert clip == tuple(range(a + 1, b))


def test_mode_switch():
    from lapgen.models.controlvideo import long_mode_decision, use_long_mode

    assert not use_long_mode("auto", 16, 4)
    assert use_long_mode("auto", 17, 4)
    assert not use_long_mode("on", 8, 8)  # L <= window: the full path
    assert use_long_mode("on", 9, 8)
    assert not use_long_mode("off", 250, 15)
    with pytest.raises(LapgenError):
        use_long_mode("sometimes", 5, 3)
    on, why = long_mode_decision("auto", 250, 15)
    assert on and "250 frames > 16" in why
    off, why = long_mode_decision("on", 8, 8)
    assert not off and "window 8" in why


@pytest.mark.parametrize("mode,kv", [("keys", lambda n: [0, 1]), ("original", lambda n: [0, n - 1])])
def test_hierarchical_passes(mode, kv):
    from lapgen.models.controlvideo import split_key_frames
    from lapgen.models.controlvideo.hierarchical import hierarchical_noise_prediction

    plan = split_key_frames(10, 4)  # keys 0, 3, 6, 9
    calls = []

    def predict(idx, kv_pos):
        calls.append((list(idx), kv_pos))
        return torch.tensor(idx, dtype=torch.float32)[:, None] * 10 + len(calls)

    out = hierarchical_noise_prediction(predict, plan, mode)
    assert calls[0] == ([0, 3, 6, 9], None)
    assert calls[1] == ([0, 3, 1, 2], kv(4))
    assert calls[3] == ([6, 9, 7, 8], kv(4))
    assert out[:, 0].tolist() == [1, 12, 22, 31, 43, 53, 61, 74, 84, 91]  # each frame from its own pass


def test_stacked_clip_groups():
    from lapgen.models.controlvideo import split_key_frames
    from lapgen.models.controlvideo.hierarchical import hierarchical_noise_prediction

    plan = split_key_frames(11, 4)  # keys 0, 3, 6, 9, 10; clips (1, 2), (4, 5), (7, 8)
    calls = []

    def predict(idx, kv):
        calls.append(idx)
        flat = [i for v in idx for i in v] if isinstance(idx[0], list) else idx
        return torch.tensor(flat, dtype=torch.float32)[:, None]

    out = hierarchical_noise_prediction(predict, plan, "keys", clips_per_pass=2)
    assert calls[1] == [[0, 3, 1, 2], [3, 6, 4, 5]] and calls[2] == [6, 9, 7, 8]
    assert out[:, 0].tolist() == list(range(11))  # every frame's own prediction lands in its slot
