"""`lapgen video --method animatediff`: `AnimateDiffMaskPipeline` against diffusers' own AnimateDiff pipelines
(plain, and FreeNoise), the FreeNoise windows and noise, and the command end to end (one frame per mask, the
usual outputs, FreeNoise beyond the adapter's context, resume, one-line errors). Tiny models, CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lapgen.cli.main import app
from tests.fixtures.video import make_moving_masks, wake_zero_convs

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("video_one_thread")
PROMPT = "grasper retract gallbladder in carlot-triangle-dissection"


def _masks(n: int, size: int = 64) -> torch.Tensor:
    """(n, 3, size, size) in {0, 1}: a box moving right."""
    out = torch.zeros(n, 3, size, size)
    for k in range(n):
        out[k, :, size // 6: size // 2, 2 + 3 * k: 22 + 3 * k] = 1
    return out


@pytest.fixture(scope="module")
def parts(tiny_sd_pipeline):
    """Tiny components: the SD parts, a ControlNet whose masks matter, an adapter whose temporal layers do."""
    from diffusers import DDIMScheduler

    from lapgen.models.motion import motion_unet
    from lapgen.models.tiny import build_tiny_controlnet

    sd = tiny_sd_pipeline
    controlnet = build_tiny_controlnet(sd.unet, seed=0)
    wake_zero_convs(controlnet)
    return {"sd": sd, "controlnet": controlnet, "scheduler": DDIMScheduler.from_config(sd.scheduler.config),
            "motion_unet": motion_unet}


def _pipes(parts, adapter):
    from diffusers import AnimateDiffControlNetPipeline

    from lapgen.models.animatediff import AnimateDiffMaskPipeline

    sd = parts["sd"]
    components = dict(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer,
                      unet=parts["motion_unet"](sd.unet, adapter), motion_adapter=adapter,
                      controlnet=parts["controlnet"], scheduler=parts["scheduler"])
    mine, theirs = AnimateDiffMaskPipeline(**components), AnimateDiffControlNetPipeline(**components)
    for p in (mine, theirs):
        p.set_progress_bar_config(disable=True)
    return mine, theirs


@pytest.fixture(scope="module")
def awake_adapter(tiny_adapter_dir):
    from diffusers import MotionAdapter

    return MotionAdapter.from_pretrained(tiny_adapter_dir)


def test_the_pipeline_computes_what_diffusers_computes(parts, awake_adapter):
    mine, theirs = _pipes(parts, awake_adapter)
    masks = _masks(6)
    latents = torch.randn(1, 4, 6, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = mine(PROMPT, masks, num_inference_steps=3, guidance_scale=3.0, latents=latents.clone()).frames
    reference = theirs(PROMPT, num_frames=6, height=64, width=64, conditioning_frames=list(masks),
                       num_inference_steps=3, guidance_scale=3.0, latents=latents.clone(),
                       output_type="np").frames[0]
    assert ours.shape == (6, 64, 64, 3)
    np.testing.assert_array_equal(ours, reference)
    halves = mine(PROMPT, masks, num_inference_steps=3, guidance_scale=3.0, latents=latents.clone(),
                  sequential_cfg=True).frames
    np.testing.assert_allclose(halves, reference, atol=1e-5)
    # the temporal layers matter: the same frames one by one give another video
    alone = np.concatenate([mine(PROMPT, masks[k:k + 1], num_inference_steps=3, guidance_scale=3.0,
                                 latents=latents[:, :, k:k + 1].clone()).frames for k in range(6)])
    assert np.abs(alone - reference).max() > 1e-3


def test_attention_fusion_is_diffusers_freenoise(parts, awake_adapter):
    mine, theirs = _pipes(parts, awake_adapter)
    masks = _masks(10)
    latents = torch.randn(1, 4, 10, 8, 8, generator=torch.Generator().manual_seed(2))
    ours = mine(PROMPT, masks, num_inference_steps=2, guidance_scale=3.0, latents=latents.clone(), context_frames=4,
                context_stride=2, fusion="attention").frames
    theirs.enable_free_noise(context_length=4, context_stride=2)
    try:
        reference = theirs(PROMPT, num_frames=10, height=64, width=64, conditioning_frames=list(masks),
                           num_inference_steps=2, guidance_scale=3.0, latents=latents.clone(),
                           output_type="np").frames[0]
    finally:
        theirs.disable_free_noise()
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert type(mine.unet.down_blocks[0].motion_modules[0].transformer_blocks[0]).__name__ == "BasicTransformerBlock"


def test_noise_rescheduling_is_freenoise(parts, awake_adapter):
    from lapgen.models.animatediff import reschedule_noise

    _, theirs = _pipes(parts, awake_adapter)
    g = torch.Generator().manual_seed(5)
    ours = reschedule_noise(torch.randn(1, 4, 11, 8, 8, generator=g), 4, 2, g)
    theirs.enable_free_noise(context_length=4, context_stride=2)
    try:
        reference = theirs._prepare_latents_free_noise(1, 4, 11, 64, 64, torch.float32, torch.device("cpu"),
                                                       torch.Generator().manual_seed(5))
    finally:
        theirs.disable_free_noise()
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    # every frame's noise is one of the first context's, so any window sees correlated noise
    firsts = [ours[0, :, k] for k in range(4)]
    assert all(any(torch.equal(ours[0, :, k], f) for f in firsts) for k in range(4, 11))


def test_windows_and_weights():
    from lapgen.models.animatediff import context_windows, pyramid_weights

    assert context_windows(24, 16, 4) == [(0, 16), (4, 20), (8, 24)]
    assert context_windows(25, 16, 4) == [(0, 16), (4, 20), (8, 24), (9, 25)]
    assert context_windows(10, 16, 4) == [(0, 10)]
    assert pyramid_weights(4).tolist() == [1, 2, 2, 1] and pyramid_weights(5).tolist() == [1, 2, 3, 2, 1]


@pytest.mark.parametrize("fusion", ["prediction", "attention"])
def test_windows_are_exact_when_frames_do_not_interact(parts, tiny_sd_pipeline, fusion):
    """With a new (identity) adapter every frame is denoised on its own, so fusing windows must give exactly the
    video of one full pass: the weights are normalised and every frame is covered."""
    from lapgen.models.motion import new_adapter

    mine, _ = _pipes(parts, new_adapter(dict(tiny_sd_pipeline.unet.config), 32))
    masks = _masks(11)
    latents = torch.randn(1, 4, 11, 8, 8, generator=torch.Generator().manual_seed(3))
    full = mine(PROMPT, masks, num_inference_steps=2, guidance_scale=3.0, latents=latents.clone()).frames
    fused = mine(PROMPT, masks, num_inference_steps=2, guidance_scale=3.0, latents=latents.clone(),
                 context_frames=4, context_stride=3, fusion=fusion)
    assert fused.windows == [(0, 4), (3, 7), (6, 10), (7, 11)]
    np.testing.assert_allclose(fused.frames, full, atol=1e-5)


# ------------------------------------------------------------------------------------------ the command

@pytest.fixture(scope="module")
def mask_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ad-masks")
    for i, m in enumerate(make_moving_masks(10, size=64, step=3, box=20)):
        m.save(folder / f"{i:06d}.png")
    return folder


def _args(out, masks, tiny_sd_dir, tiny_controlnet_dir, adapter, *extra) -> list[str]:
    return [str(a) for a in ["video", "--method", "animatediff", "--prompt", PROMPT, "--masks", masks, "--out", out,
                             "--model", tiny_sd_dir, "--controlnet", tiny_controlnet_dir, "--motion-adapter",
                             adapter, "--resolution", 64, "--steps", 2, "--device", "cpu", *extra]]


def test_one_frame_per_mask_and_the_usual_outputs(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir,
                                                   tiny_adapter_dir):
    from lapgen.cards import read_card
    from lapgen.data.video import probe

    out = tmp_path / "ad.mp4"
    res = runner.invoke(app, _args(out, mask_dir, tiny_sd_dir, tiny_controlnet_dir, tiny_adapter_dir, "--frames", 7,
                                   "--fps", 8, "--gif", "--save-frames", "--side-by-side", "--json"))
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["frames"] == 7 and payload["method"] == "animatediff" and payload["free_noise"]["used"] is False
    assert probe(out, count=True).frames == 7
    assert len(list((tmp_path / "ad_frames").glob("*.png"))) == 7 and (tmp_path / "ad.gif").is_file()
    assert probe(tmp_path / "ad_side_by_side.mp4").size == (128, 64)
    card = read_card(out)
    assert card["result"]["method"] == "animatediff" and card["result"]["frames"] == 7
    assert card["models"]["motion_adapter"]["name"] == str(tiny_adapter_dir)
    assert "7 frames <= context 16" in card["result"]["free_noise"]["reason"]
    assert not (tmp_path / "ad.mp4.partial").exists()


def test_freenoise_beyond_the_adapters_context(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir,
                                               short_adapter_dir):
    """An adapter with a 4-frame positional embedding: 10 masks need FreeNoise (auto), and are refused without."""
    from lapgen.cards import read_card

    out = tmp_path / "long.mp4"
    res = runner.invoke(app, _args(out, mask_dir, tiny_sd_dir, tiny_controlnet_dir, short_adapter_dir))
    assert res.exit_code == 0, res.output
    fn = read_card(out)["result"]["free_noise"]
    assert fn["used"] is True and fn["context"] == 4 and fn["windows"] == 3 and read_card(out)["result"]["frames"] == 10
    assert "FreeNoise: 10 frames > context 4" in res.stderr

    def error(*extra) -> str:
        r = runner.invoke(app, _args(tmp_path / "x.mp4", mask_dir, tiny_sd_dir, tiny_controlnet_dir,
                                     short_adapter_dir, *extra))
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lapgen: error: "), r.stderr
        assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.mp4.partial").exists()
        return lines[0]

    assert "10 frames exceed the 4 frames motion adapter" in error("--free-noise", "off")
    assert "--context 8 exceeds the 4 frames" in error("--context", "8")
    assert "--smoother-steps applies to --method controlvideo only" in error("--smoother-steps", "none")
    assert "unknown --free-noise-fusion 'pixels'" in error("--free-noise-fusion", "pixels")


def test_bad_adapters_and_options_are_one_line(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir):
    from lapgen.models.motion import new_adapter

    wide = tmp_path / "wide"
    new_adapter({"block_out_channels": (8, 16), "layers_per_block": 2, "norm_num_groups": 1}, 32).save_pretrained(wide)
    for extra, needle in (([wide], "does not fit the base pipeline"),
                          ([tiny_controlnet_dir], "is a ControlNet, not a motion adapter"),
                          (["animatediff-v1-5-2"], "HF_HUB_OFFLINE")):
        r = runner.invoke(app, _args(tmp_path / "x.mp4", mask_dir, tiny_sd_dir, tiny_controlnet_dir, *extra))
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], r.stderr
    r = runner.invoke(app, ["video", "--prompt", PROMPT, "--masks", str(mask_dir), "--out", str(tmp_path / "c.mp4"),
                            "--context", "8", "--model", str(tiny_sd_dir), "--controlnet", str(tiny_controlnet_dir)])
    assert r.exit_code == 2 and "--context applies to --method animatediff only" in r.stderr
    # no adapter trained yet: the built-in default is the public hub adapter, offline here; the error is the
    # only line (the default is named only once it is usable)
    r = runner.invoke(app, ["video", "--method", "animatediff", "--prompt", PROMPT, "--masks", str(mask_dir),
                            "--out", str(tmp_path / "d.mp4"), "--model", str(tiny_sd_dir), "--controlnet",
                            str(tiny_controlnet_dir), "--resolution", "64"], env={"LAPGEN_HOME": str(tmp_path / "h")})
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "'animatediff-v1-5-2'" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert not list(tmp_path.glob("*.mp4*"))


def test_interrupted_run_resumes_to_the_same_video(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir,
                                                   short_adapter_dir):
    from PIL import Image

    from lapgen.models.video_generation import VideoConfig, generate_video

    def config(out):  # FreeNoise windows, so the resumed latents are the rescheduled ones
        return VideoConfig(prompt=PROMPT, masks=str(mask_dir), out=str(out), steps=6, resolution=64,
                           model=str(tiny_sd_dir), controlnet=str(tiny_controlnet_dir),
                           motion_adapter=str(short_adapter_dir), method="animatediff", save_frames=True,
                           device="cpu", checkpoint_every=2)

    ref = generate_video(config(tmp_path / "ref.mp4"))
    assert ref.resumed_from_step == 0 and ref.free_noise["used"]

    def stop(i, total):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_video(config(tmp_path / "run.mp4"), on_step=stop)
    assert not (tmp_path / "run.mp4").exists() and (tmp_path / "run.mp4.partial").exists()
    again = generate_video(config(tmp_path / "run.mp4"))
    assert again.resumed_from_step == 2 and again.frames == 10
    pairs = list(zip(sorted((tmp_path / "ref_frames").glob("*.png")), sorted((tmp_path / "run_frames").glob("*.png"))))
    assert len(pairs) == 10
    for a, b in pairs:
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_a_loaded_pipeline_is_reused(tmp_path, mask_dir, tiny_sd_dir, tiny_controlnet_dir, tiny_adapter_dir):
    """Library use (the studio): `load_animatediff` once, `generate_video(..., pipe=)` per video."""
    from lapgen.errors import LapgenError
    from lapgen.models.animatediff_video import load_animatediff
    from lapgen.models.video_generation import VideoConfig, generate_video

    pipe = load_animatediff(str(tiny_sd_dir), str(tiny_controlnet_dir), str(tiny_adapter_dir), "cpu")[0]
    config = VideoConfig(prompt=PROMPT, masks=str(mask_dir), out=str(tmp_path / "a.mp4"), frames=3, steps=1,
                         resolution=64, method="animatediff", device="cpu")
    assert generate_video(config, pipe=pipe).frames == 3
    with pytest.raises(LapgenError, match="not a ControlVideo pipeline"):
        generate_video(VideoConfig(prompt=PROMPT, masks=str(mask_dir), out=str(tmp_path / "b.mp4"), frames=3,
                                   steps=1, resolution=64, device="cpu"), pipe=pipe)
