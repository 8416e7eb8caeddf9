"""Models the demo builds offline because no pretrained weights can be downloaded.

1. `build_box_vae`: an `AutoencoderKL` with SD 1.5's geometry (factor 8, 4 latent channels) whose weights
   are SET BY HAND, not learnt: the encoder averages 8x8 pixel blocks (latent channels 0-2 = the block's
   R, G, B in [-1, 1], channel 3 = 0) and the decoder upsamples them back with a [1 2 1] blur. A random
   VAE (the `tiny-sd` built-in) maps every latent to noise-like textures, so nothing the UNet learns would
   show in its images; with this one a 128 px image is its 16x16 colour layout, blurred. It stands in for
   the pretrained SD 1.5 VAE that Stage 1 and 2 keep frozen in the paper.
2. `materialize_demo_base`: a seeded random UNet in `tiny-sd`'s layout (wider: 16/32 channels) and
   `tiny-sd`'s random text encoder with that VAE, saved as a diffusers folder (the demo's untrained Stage-1
   base, registered as `demo-base`).
3. `write_random_inception` / `write_random_clip`: feature-extractor weights with SEEDED RANDOM values in the
   real architectures (torch-fidelity's Inception-v3, open_clip ViT-B/32). The official weights cannot be
   downloaded here; random Inception needs Kaiming re-initialisation, else its features vanish and FID is
   ~0 for any two sets (docs/metrics.md explains the test networks). Their FID/CMMD values are only comparable within
   one demo run and never with the paper's numbers.

How the hand-set VAE keeps colours through GroupNorm: every GroupNorm (2 groups of 4 channels) sees, per
group, channels whose sum is zero and which include a large constant K (group 0: R, G, K, -(R+G+K);
group 1: B, K, -(B+K), 0). The group mean is then exactly 0 and its standard deviation K/sqrt(2) up to a
relative 1/K, so normalising is a fixed scale; the affine weights undo it and add an offset that keeps
SiLU in its linear range (its value and slope at the offset are divided out after it). Residual blocks
and attention have zero output convolutions (identity).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import AutoencoderKL

_K = 1000.0  # the constant carried through the VAE (see the module docstring)
_LIFT = 12.0  # SiLU operating point: silu(_LIFT + x) = silu(_LIFT) + silu'(_LIFT) x + O(1e-5 x^2), |x| <= 1
_RGB_CHANNELS = (0, 1, 4)  # where R, G, B live among the VAE's 8 working channels
BOX_VAE_SCALING = 4.0  # latents * 4: the colour channels get about unit spread, as SD's scaled latents


def _conv_in(conv, r: int, g: int, b: int) -> None:
    """Input conv: (R, G, B) at input channels r, g, b -> the 8-channel zero-sum layout."""
    w, bias = conv.weight, conv.bias
    w[0, r, 1, 1] = w[1, g, 1, 1] = 1.0
    bias[2] = _K
    w[3, r, 1, 1] = w[3, g, 1, 1] = -1.0
    bias[3] = -_K
    w[4, b, 1, 1] = 1.0
    bias[5] = _K
    w[6, b, 1, 1] = -1.0
    bias[6] = -_K


def _identity_resnet(block) -> None:
    block.conv2.weight.zero_()
    block.conv2.bias.zero_()


def _identity_attention(attn) -> None:
    for module in attn.to_out:
        if hasattr(module, "weight"):
            module.weight.zero_()
            module.bias.zero_()


def _undo_groupnorm(norm) -> None:
    norm.weight.zero_()
    norm.bias.zero_()
    for c in _RGB_CHANNELS:
        norm.weight[c] = _K / 2**0.5
        norm.bias[c] = _LIFT


def _conv_out(conv) -> None:
    """Undo the SiLU operating point: (silu(_LIFT + x) - silu(_LIFT)) / silu'(_LIFT) = x."""
    sig = 1.0 / (1.0 + math.exp(-_LIFT))
    value, slope = _LIFT * sig, sig * (1.0 + _LIFT * (1.0 - sig))
    for i, c in enumerate(_RGB_CHANNELS):
        conv.weight[i, c, 1, 1] = 1.0 / slope
        conv.bias[i] = -value / slope


def build_box_vae(levels: int = 4) -> AutoencoderKL:
    """The hand-set box-average / blur-upsample VAE in the tiny-sd VAE architecture (no randomness).

    `levels` sets the downsampling factor 2**(levels-1): 4 levels = 8x as in SD 1.5 (tiny-sd), 3 = 4x.
    """
    import torch
    from diffusers import AutoencoderKL

    from lapgen.models.tiny import TINY_VAE_CONFIG

    if levels < 1:
        raise ValueError(f"levels must be >= 1 (got {levels})")
    config = {**TINY_VAE_CONFIG, "scaling_factor": BOX_VAE_SCALING}
    config["block_out_channels"] = (config["block_out_channels"][0],) * levels
    config["down_block_types"] = ("DownEncoderBlock2D",) * levels
    config["up_block_types"] = ("UpDecoderBlock2D",) * levels
    vae = AutoencoderKL(**config)
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = blur[:, None] * blur[None, :] / 16  # (3, 3), sums to 1
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        enc, dec = vae.encoder, vae.decoder
        _conv_in(enc.conv_in, 0, 1, 2)
        for block in enc.down_blocks:
            for r in block.resnets:
                _identity_resnet(r)
            if block.downsamplers:  # pad (0,1,0,1), 3x3 stride 2: average the 2x2 top-left taps
                w = block.downsamplers[0].conv.weight
                for c in range(w.shape[0]):
                    w[c, c, :2, :2] = 0.25
        for r in enc.mid_block.resnets:
            _identity_resnet(r)
        for a in enc.mid_block.attentions:
            _identity_attention(a)
        _undo_groupnorm(enc.conv_norm_out)
        _conv_out(enc.conv_out)
        enc.conv_out.bias[4:] = -30.0  # log-variance: posterior std 3e-7, so sampling is deterministic
        vae.quant_conv.weight[:, :, 0, 0] = torch.eye(vae.quant_conv.weight.shape[0])
        vae.post_quant_conv.weight[:, :, 0, 0] = torch.eye(vae.post_quant_conv.weight.shape[0])
        _conv_in(dec.conv_in, 0, 1, 2)
        for r in dec.mid_block.resnets:
            _identity_resnet(r)
        for a in dec.mid_block.attentions:
            _identity_attention(a)
        for block in dec.up_blocks:
            for r in block.resnets:
                _identity_resnet(r)
            if block.upsamplers:  # nearest x2, then this 3x3 blur per channel
                w = block.upsamplers[0].conv.weight
                for c in range(w.shape[0]):
                    w[c, c] = blur
        _undo_groupnorm(dec.conv_norm_out)
        _conv_out(dec.conv_out)
    return vae.eval()


def demo_unet_config(channels: tuple[int, ...], latent_size: int, attention_levels: int = 1) -> dict:
    """A `UNet2DConditionModel` config in tiny-sd's layout with `channels` per level.

    Cross-attention (the text) sits in the deepest `attention_levels` levels, plain ResNet blocks above.
    """
    from lapgen.models.tiny import TINY_UNET_CONFIG

    n = len(channels)
    attn = [i >= n - attention_levels for i in range(n)]
    return {
        **TINY_UNET_CONFIG,
        "block_out_channels": tuple(channels),
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        "sample_size": latent_size,
        "norm_num_groups": 4 if min(channels) % 4 == 0 else 1,
    }


def materialize_demo_base(path: Path, seed: int, unet_channels: tuple[int, ...] = (32, 64, 64),
                          vae_levels: int = 3, resolution: int = 128,
                          prediction_type: str = "v_prediction") -> Path:
    """The demo's untrained Stage-1 base, saved as a diffusers folder + card.

    `tiny-sd`'s text encoder and tokenizer (seeded), its DDIM scheduler predicting `prediction_type`
    (`v_prediction` as in Stable Diffusion 2, or SD 1.5's `epsilon`), a random UNet of `tiny-sd`'s layout
    with `unet_channels` per level, and the box VAE with `vae_levels` levels (3: factor 4, so a 128 px frame
    is a 32x32 latent in which a tool shaft a few pixels wide survives; SD's factor 8 blurs it away).
    """
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from lapgen.cards import make_card, write_card
    from lapgen.models.tiny import build_tiny_sd_pipeline
    from lapgen.outputs import finalize_output_dir, prepare_output_dir

    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    stage = prepare_output_dir(path, overwrite=False, resume=False)
    pipe = build_tiny_sd_pipeline(seed)
    factor = 2 ** (vae_levels - 1)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**demo_unet_config(tuple(unet_channels), resolution // factor))
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    pipe.register_modules(unet=unet, vae=build_box_vae(vae_levels), scheduler=scheduler)
    pipe.save_pretrained(stage, safe_serialization=True)
    write_card(
        stage,
        make_card(
            "pipeline",
            name="demo-base",
            parent="tiny-sd",
            seed=seed,
            resolution=resolution,
            unet_channels=list(unet_channels),
            unet_parameters=sum(p.numel() for p in unet.parameters()),
            vae_factor=factor,
            prediction_type=prediction_type,
            description=f"untrained demo base: a random tiny-sd-layout UNet and tiny-sd's random text encoder "
            f"(seeded) with a hand-set {factor}x box-average VAE (lapgen.demo.assets.build_box_vae)",
        ),
    )
    return finalize_output_dir(path)


def materialize_untrained_controlnet(path: Path, pipeline: Path, seed: int) -> Path:
    """Step 0 of Stage 2: `ControlNetModel.from_unet` of `pipeline`'s UNet, as `train-controlnet` starts.

    Its zero-initialised output convolutions add nothing, so images made with it are the Stage-1 model's:
    the baseline a trained ControlNet is compared with. Saved as a diffusers folder + card.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from lapgen.cards import make_card, write_card
    from lapgen.models.controlnet import controlnet_from_unet
    from lapgen.outputs import finalize_output_dir, prepare_output_dir

    path = Path(path)
    if (path / "config.json").is_file():
        return path
    stage = prepare_output_dir(path, overwrite=False, resume=False)
    unet = UNet2DConditionModel.from_pretrained(Path(pipeline) / "unet")
    vae = AutoencoderKL.from_pretrained(Path(pipeline) / "vae")
    torch.manual_seed(seed)
    controlnet_from_unet(unet, vae).save_pretrained(stage, safe_serialization=True)
    write_card(
        stage,
        make_card(
            "controlnet",
            name="demo-controlnet-untrained",
            parent=str(pipeline),
            seed=seed,
            description="untrained ControlNet (from_unet, zero outputs): the Stage-2 baseline",
        ),
    )
    return finalize_output_dir(path)


def write_random_inception(path: Path, seed: int) -> Path:
    """torch-fidelity's Inception-v3 with seeded Kaiming-normal convolutions, as a plain state_dict."""
    from unittest import mock

    import torch
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    from lapgen.outputs import atomic_file

    torch.manual_seed(seed)
    # Build without the release weights: the URL loader returns nothing and loading is skipped.
    with (
        mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None),
    ):
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    with atomic_file(path) as fh:
        torch.save(net.state_dict(), fh)
    return path


def write_random_clip(path: Path, seed: int, arch: str = "ViT-B-32-quickgelu") -> Path:
    """open_clip `arch` with its own seeded random initialisation, saved with safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save

    from lapgen.outputs import atomic_file

    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None)
    with atomic_file(path) as fh:
        fh.write(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    return path
