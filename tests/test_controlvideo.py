"""ControlVideo pipeline on tiny random models (CPU): one frame equals diffusers' ControlNet pipeline, identical
masks give identical frames, frames permute with their masks, CFG halves stay apart, frames are coupled (docs/video.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.fixtures.video import make_moving_masks

PROMPT = "grasper retract liver in carlot-triangle-dissection"

pytestmark = pytest.mark.usefixtures("video_one_thread")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _to_tensor(masks):
    return (
        torch.stack([torch.from_numpy(np.array(m.convert("RGB"))).permute(2, 0, 1) for m in masks]).float()
        / 255
    )


def test_single_frame_equals_diffusers_controlnet_pipeline(controlvideo_pipe):
    from diffusers import StableDiffusionControlNetPipeline

    p = controlvideo_pipe
    ref = StableDiffusionControlNetPipeline(
        vae=p.vae,
        text_encoder=p.text_encoder,
        tokenizer=p.tokenizer,
        unet=p.unet,
        controlnet=p.controlnet,
        scheduler=p.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    mask = make_moving_masks(1)[0]
    for neg in (None, "blurry"):
        want = ref(
            PROMPT,
            mask,
            num_inference_steps=4,
            guidance_scale=3.0,
            negative_prompt=neg,
            generator=_gen(3),
            output_type="np",
        ).images
        got = p(
            PROMPT,
            [mask],
            num_inference_steps=4,
            guidance_scale=3.0,
            negative_prompt=neg,
            generator=_gen(3),
            output_type="np",
        ).frames
        assert got.shape == want.shape == (1, 128, 128, 3)
        np.testing.assert_allclose(got, want, atol=1e-5)
    # the ControlNet pipeline still works normally after a ControlVideo call (models restored)
    assert all(type(v).__name__ == "AttnProcessor2_0" for v in p.unet.attn_processors.values())


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_constructed_from_the_objects_of_a_controlnet_pipeline(controlvideo_pipe):
    """Keyword construction with the components a StableDiffusionControlNetPipeline is built from, and
    diffusers' `from_pipe` from such a pipeline, give the same pipeline as `from_components`."""
    from diffusers import StableDiffusionControlNetPipeline

    from lapgen.models.controlvideo import ControlVideoPipeline

    p = controlvideo_pipe
    parts = {
        k: getattr(p, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "controlnet", "scheduler")
    }
    ref = StableDiffusionControlNetPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    direct = ControlVideoPipeline(**parts)
    piped = ControlVideoPipeline.from_pipe(ref)
    masks = make_moving_masks(3, step=15)
    kw = {"num_inference_steps": 2, "output_type": "latent", "smoother_steps": []}
    want = p(PROMPT, masks, generator=_gen(), **kw).frames
    for built in (direct, piped):
        assert set(built.components) == set(parts)
        assert all(built.components[k] is v for k, v in parts.items())
        built.set_progress_bar_config(disable=True)
        assert torch.equal(built(PROMPT, masks, generator=_gen(), **kw).frames, want)


def test_identical_masks_shared_noise_give_identical_frames(controlvideo_pipe):
    mask = make_moving_masks(1)[0]
    one = controlvideo_pipe(
        PROMPT, [mask], num_inference_steps=3, generator=_gen(), output_type="latent"
    ).frames
    many = controlvideo_pipe(
        PROMPT, [mask] * 4, num_inference_steps=3, generator=_gen(), output_type="latent", smoother_steps=[]
    ).frames
    assert many.shape == (4, 4, 16, 16)
    assert torch.equal(many, many[:1].expand_as(many))
    torch.testing.assert_close(many[0], one[0], atol=1e-4, rtol=0)
    # with the smoother (posterior-mean re-encode, interpolator maps (x, x) -> x) they stay identical
    for interp in ("linear", "flow"):
        smooth = controlvideo_pipe(
            PROMPT,
            [mask] * 4,
            num_inference_steps=3,
            generator=_gen(),
            output_type="latent",
            smoother_at=[1, 2],
            interpolator=interp,
        )
        assert smooth.smoothed_steps == [1, 2]
        torch.testing.assert_close(
            smooth.frames, smooth.frames[:1].expand_as(smooth.frames), atol=1e-5, rtol=0
        )
    # ControlVideo's re-encode (a posterior sample per frame) does not keep them identical
    sampled = controlvideo_pipe(
        PROMPT,
        [mask] * 4,
        num_inference_steps=3,
        generator=_gen(),
        output_type="latent",
        smoother_at=[1, 2],
        interpolator="linear",
        smoother_sample_posterior=True,
    ).frames
    assert (sampled - sampled[:1]).abs().max() > 1e-4


def _noise(pipe, latents, cond, embeds, *, frames, coupled=True, pool=True):
    """UNet+ControlNet noise for a batch (B·frames rows) with/without ControlVideo coupling."""
    from lapgen.models.controlvideo import FrameContext, frame_coupling

    t = torch.tensor(500)
    with torch.no_grad():
        if not coupled:
            return pipe._model_pass(latents, t, embeds, cond, 1.0)
        ctx = FrameContext(num_frames=frames, pool_norm=pool)
        with frame_coupling(pipe.unet, pipe.controlnet, ctx):
            return pipe._model_pass(latents, t, embeds, cond, 1.0)


@pytest.fixture(scope="module")
def batch(controlvideo_pipe):
    """Two CFG halves of a 4-frame video: distinct latents, masks and the two text embeddings."""
    f = 4
    g = _gen(1)
    latents = torch.randn(2 * f, 4, 16, 16, generator=g)
    cond = _to_tensor(make_moving_masks(f, step=15)).repeat(2, 1, 1, 1)
    pos, neg = controlvideo_pipe.encode_prompt(PROMPT, "cpu", 1, True)
    embeds = torch.cat([neg.expand(f, -1, -1), pos.expand(f, -1, -1)])
    return f, latents, cond, embeds


def test_attention_and_norm_pooling_are_permutation_equivariant(controlvideo_pipe, batch):
    f, latents, cond, embeds = batch
    perm = torch.tensor([2, 0, 3, 1])
    rows = torch.cat([perm, perm + f])  # permute frames within each CFG half
    base = _noise(controlvideo_pipe, latents, cond, embeds, frames=f)
    permuted = _noise(controlvideo_pipe, latents[rows], cond[rows], embeds[rows], frames=f)
    torch.testing.assert_close(permuted, base[rows], atol=1e-5, rtol=1e-4)


def test_end_to_end_permutation_with_shared_noise(controlvideo_pipe):
    masks = make_moving_masks(4, step=15)
    order = [3, 1, 0, 2]
    kw = {"num_inference_steps": 3, "output_type": "latent", "smoother_steps": []}
    base = controlvideo_pipe(PROMPT, masks, generator=_gen(), **kw).frames
    perm = controlvideo_pipe(PROMPT, [masks[i] for i in order], generator=_gen(), **kw).frames
    torch.testing.assert_close(perm, base[order], atol=1e-4, rtol=1e-4)


def test_cfg_halves_never_mix(controlvideo_pipe, batch):
    f, latents, cond, embeds = batch
    base = _noise(controlvideo_pipe, latents, cond, embeds, frames=f)
    changed = latents.clone()
    changed[:f] = torch.randn(f, 4, 16, 16, generator=_gen(9)) * 3  # uncond half only
    other_embeds = embeds.clone()
    other_embeds[:f] += 1.0
    out = _noise(controlvideo_pipe, changed, cond, other_embeds, frames=f)
    assert torch.equal(out[f:], base[f:])
    assert not torch.equal(out[:f], base[:f])


def test_frames_are_coupled(controlvideo_pipe, batch):
    f, latents, cond, embeds = batch
    other = cond.clone()
    other[[0, f]] = 1.0 - other[[0, f]]  # change frame 0's mask in both halves
    for coupled, pool in ((True, True), (True, False), (False, False)):
        a = _noise(controlvideo_pipe, latents, cond, embeds, frames=f, coupled=coupled, pool=pool)
        b = _noise(controlvideo_pipe, latents, other, embeds, frames=f, coupled=coupled, pool=pool)
        rest = [1, 2, 3, f + 1, f + 2, f + 3]
        delta = (a[rest] - b[rest]).abs().max().item()
        if coupled:
            assert delta > 1e-7, "other frames ignore frame 0's mask"
        else:
            assert delta == 0.0
        assert (a[[0, f]] - b[[0, f]]).abs().max().item() > 0


def test_pipeline_frames_coupled_end_to_end(controlvideo_pipe):
    masks = make_moving_masks(4, step=15)
    other = list(masks)
    other[0] = make_moving_masks(1, step=0, box=80)[0]
    kw = {"num_inference_steps": 2, "output_type": "latent", "smoother_steps": []}
    a = controlvideo_pipe(PROMPT, masks, generator=_gen(), **kw).frames
    b = controlvideo_pipe(PROMPT, other, generator=_gen(), **kw).frames
    assert (a[1:] - b[1:]).abs().max() > 0


def test_hierarchical_with_short_video_equals_full_mode(controlvideo_pipe):
    masks = make_moving_masks(6)
    kw = {"num_inference_steps": 2, "output_type": "latent", "smoother_steps": [], "generator": None}
    full = controlvideo_pipe(
        PROMPT, masks, long_video="off", latents=torch.randn(1, 4, 16, 16, generator=_gen()), **kw
    )
    hier = controlvideo_pipe(
        PROMPT,
        masks,
        long_video="on",
        window_size=8,
        latents=torch.randn(1, 4, 16, 16, generator=_gen()),
        **kw,
    )
    assert not hier.long_video and not full.long_video
    assert torch.equal(full.frames, hier.frames)


def test_long_video_runs_hierarchically(controlvideo_pipe):
    masks = make_moving_masks(11, step=4)
    out = controlvideo_pipe(
        PROMPT,
        masks,
        num_inference_steps=2,
        output_type="np",
        generator=_gen(),
        long_video="auto",
        max_full_frames=4,
        window_size=4,
        interpolator="linear",
        smoother_at=[1],
    )
    assert out.long_video and out.frames.shape == (11, 128, 128, 3)
    assert np.isfinite(out.frames).all()
    # long mode differs from full mode (clips attend to key frames only)
    full = controlvideo_pipe(
        PROMPT,
        masks,
        num_inference_steps=2,
        output_type="np",
        generator=_gen(),
        long_video="off",
        interpolator="linear",
        smoother_at=[1],
    )
    assert np.abs(full.frames - out.frames).max() > 0


def test_save_and_load_round_trip(controlvideo_pipe, tmp_path):
    from lapgen.models.controlvideo import ControlVideoPipeline

    controlvideo_pipe.save_pretrained(tmp_path / "cv")
    loaded = ControlVideoPipeline.from_pretrained(tmp_path / "cv")
    loaded.set_progress_bar_config(disable=True)
    assert set(loaded.components) == {"vae", "text_encoder", "tokenizer", "unet", "controlnet", "scheduler"}
    masks = make_moving_masks(3)
    kw = {"num_inference_steps": 2, "output_type": "latent", "smoother_steps": []}
    torch.testing.assert_close(
        loaded(PROMPT, masks, generator=_gen(), **kw).frames,
        controlvideo_pipe(PROMPT, masks, generator=_gen(), **kw).frames,
    )


def test_output_types_and_inputs(controlvideo_pipe):
    masks = make_moving_masks(3)
    kw = {"num_inference_steps": 1, "smoother_steps": []}
    pil = controlvideo_pipe(PROMPT, masks, generator=_gen(), **kw).frames
    assert len(pil) == 3 and pil[0].size == (128, 128)
    np_out = controlvideo_pipe(PROMPT, _to_tensor(masks), output_type="np", generator=_gen(), **kw).frames
    assert np_out.shape == (3, 128, 128, 3) and 0 <= np_out.min() and np_out.max() <= 1
    np.testing.assert_allclose(np.asarray(pil[1], dtype=np.float32) / 255, np_out[1], atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError):
        controlvideo_pipe(PROMPT, _to_tensor(masks) * 2, **kw)
    iid = controlvideo_pipe(
        PROMPT, [masks[0]] * 3, output_type="latent", same_frame_noise=False, generator=_gen(), **kw
    ).frames
    assert not torch.equal(iid[0], iid[1])


def test_query_chunked_attention_in_the_pipeline_is_exact(controlvideo_pipe):
    masks = make_moving_masks(4, step=15)
    kw = {"num_inference_steps": 2, "output_type": "latent", "smoother_steps": []}
    full = controlvideo_pipe(PROMPT, masks, generator=_gen(), **kw).frames
    chunked = controlvideo_pipe(PROMPT, masks, generator=_gen(), attention_memory_bytes=4096, **kw).frames
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)


def test_250_frames_run_in_passes_of_bounded_size(controlvideo_pipe, monkeypatch):
    """Long mode never feeds the models more than max(#keys, window) frames (x2 for guidance)."""
    seen = []

    def fake_pass(latents, t, embeds, cond, scale):  # record the batch, skip the model
        seen.append(latents.shape[0])
        return torch.zeros_like(latents)

    monkeypatch.setattr(controlvideo_pipe, "_model_pass", fake_pass)
    frames = torch.zeros(250, 3, 128, 128)
    out = controlvideo_pipe(PROMPT, frames, num_inference_steps=1, output_type="latent", smoother_steps=[])
    assert out.long_video and out.frames.shape == (250, 4, 16, 16)
    assert max(seen) == 2 * 19  # the key-frame pass: 19 keys, both guidance halves
    assert len(seen) == 1 + 18 and min(seen) == 2 * (2 + 10)  # 18 clip passes, the shortest has 10 frames


def test_sequential_guidance_halves_equal_the_joint_batch(controlvideo_pipe):
    masks = make_moving_masks(3, step=15)
    kw = {"num_inference_steps": 2, "output_type": "latent", "smoother_steps": []}
    joint = controlvideo_pipe(PROMPT, masks, generator=_gen(), **kw).frames
    split = controlvideo_pipe(PROMPT, masks, generator=_gen(), sequential_cfg=True, **kw).frames
    torch.testing.assert_close(split, joint, atol=1e-5, rtol=1e-5)


def test_clip_kv_modes_differ_in_long_mode(controlvideo_pipe):
    masks = make_moving_masks(9, step=8)
    kw = {
        "num_inference_steps": 2,
        "output_type": "latent",
        "smoother_steps": [],
        "long_video": "on",
        "window_size": 4,
    }
    keys = controlvideo_pipe(PROMPT, masks, generator=_gen(), clip_kv="keys", **kw).frames
    original = controlvideo_pipe(PROMPT, masks, generator=_gen(), clip_kv="original", **kw).frames
    plan_keys = [0, 3, 6, 8]
    torch.testing.assert_close(keys[plan_keys], original[plan_keys])  # key frames: same pass in both modes
    assert (keys[[1, 2, 4, 5, 7]] - original[[1, 2, 4, 5, 7]]).abs().max() > 0


@pytest.mark.gpu
def test_long_video_fp16_on_cuda_with_fused_attention(controlvideo_pipe):
    """On a GPU: half precision with flash / memory-efficient SDPA forced inside the cross-frame processor."""
    import copy

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pipe = copy.deepcopy(controlvideo_pipe).to("cuda", torch.float16)
    out = pipe(
        PROMPT,
        make_moving_masks(20, step=4),
        num_inference_steps=3,
        output_type="np",
        generator=torch.Generator("cuda").manual_seed(0),
        interpolator="linear",
        smoother_at=[1],
    )
    assert out.long_video and out.frames.shape == (20, 128, 128, 3) and np.isfinite(out.frames).all()


def test_stacked_clip_passes_equal_one_clip_per_pass(controlvideo_pipe):
    masks = make_moving_masks(13, step=6)  # window 4: keys 0, 3, 6, 9, 12; four clips of 2 frames
    kw = {
        "num_inference_steps": 2,
        "output_type": "latent",
        "smoother_steps": [],
        "long_video": "on",
        "window_size": 4,
    }
    one = controlvideo_pipe(PROMPT, masks, generator=_gen(), **kw).frames
    stacked = controlvideo_pipe(PROMPT, masks, generator=_gen(), clips_per_pass=3, **kw).frames
    torch.testing.assert_close(stacked, one, atol=1e-5, rtol=1e-5)


# ---- several ControlNets -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_controlnets(controlvideo_pipe):
    """The fixture's ControlNet and a second one (other seed), both with awake zero convolutions."""
    from lapgen.models.tiny import build_tiny_controlnet
    from tests.fixtures.video import wake_zero_convs

    second = build_tiny_controlnet(controlvideo_pipe.unet, seed=1)
    wake_zero_convs(second, seed=6)
    return [controlvideo_pipe.controlnet, second]


def _multi_pipe(pipe, nets):
    from lapgen.models.controlvideo import ControlVideoPipeline

    parts = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    multi = ControlVideoPipeline(**parts, controlnet=nets)
    multi.set_progress_bar_config(disable=True)
    return multi


def test_two_controlnets_single_frame_equal_diffusers_multicontrolnet(controlvideo_pipe, two_controlnets):
    """One frame, smoother off: the same video as diffusers' StableDiffusionControlNetPipeline with a list
    of ControlNets and per-net conditioning scales (its MultiControlNetModel)."""
    from diffusers import MultiControlNetModel, StableDiffusionControlNetPipeline

    p = controlvideo_pipe
    multi = _multi_pipe(p, two_controlnets)
    assert isinstance(multi.controlnet, MultiControlNetModel) and multi.num_controlnets == 2
    ref = StableDiffusionControlNetPipeline(
        vae=p.vae,
        text_encoder=p.text_encoder,
        tokenizer=p.tokenizer,
        unet=p.unet,
        controlnet=two_controlnets,
        scheduler=p.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    tool, other = make_moving_masks(1)[0], make_moving_masks(1, step=0, box=80)[0]
    kw = {"num_inference_steps": 3, "guidance_scale": 3.0, "output_type": "np"}
    want = ref(
        PROMPT, [tool, other], controlnet_conditioning_scale=[1.0, 0.4], generator=_gen(2), **kw
    ).images
    got = multi(PROMPT, [[tool], [other]], controlnet_conditioning_scale=[1.0, 0.4], generator=_gen(2), **kw)
    np.testing.assert_allclose(got.frames, want, atol=1e-5)


def test_per_net_scales_select_the_nets(controlvideo_pipe, two_controlnets):
    """A 4-frame video with scales (s, 0) is the video of the first net alone at s, (0, s) the second's;
    both at once differ from either."""
    multi = _multi_pipe(controlvideo_pipe, two_controlnets)
    masks_a, masks_b = make_moving_masks(4, step=15), make_moving_masks(4, step=5, box=60)
    kw = {"num_inference_steps": 2, "output_type": "latent", "smoother_steps": []}

    def single(net, masks, scale):
        return _multi_pipe(controlvideo_pipe, [net])(
            PROMPT, [masks], controlnet_conditioning_scale=[scale], generator=_gen(), **kw
        ).frames

    first = multi(
        PROMPT, [masks_a, masks_b], controlnet_conditioning_scale=[0.7, 0.0], generator=_gen(), **kw
    )
    second = multi(
        PROMPT, [masks_a, masks_b], controlnet_conditioning_scale=[0.0, 0.7], generator=_gen(), **kw
    )
    both = multi(PROMPT, [masks_a, masks_b], controlnet_conditioning_scale=0.7, generator=_gen(), **kw)
    plain = controlvideo_pipe(
        PROMPT, masks_a, controlnet_conditioning_scale=0.7, generator=_gen(), **kw
    ).frames
    torch.testing.assert_close(first.frames, single(two_controlnets[0], masks_a, 0.7), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first.frames, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second.frames, single(two_controlnets[1], masks_b, 0.7), atol=1e-5, rtol=1e-5)
    assert (both.frames - first.frames).abs().max() > 1e-4 and (
        both.frames - second.frames
    ).abs().max() > 1e-4
    with pytest.raises(ValueError, match="a list of 2 control sequences"):
        multi(PROMPT, masks_a, **kw)
    with pytest.raises(ValueError, match="different numbers of frames"):
        multi(PROMPT, [masks_a, masks_b[:3]], **kw)
    with pytest.raises(ValueError, match="1 or 2 conditioning scales"):
        multi(PROMPT, [masks_a, masks_b], controlnet_conditioning_scale=[1.0, 1.0, 1.0], **kw)
