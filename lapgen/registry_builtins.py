"""The built-in entries of the checkpoint registry (`lapgen.registry`), as plain data.

Each entry: kind, source (where the weights come from), a one-line description, and loader options:
- `files`: weight file names looked for in `$LAPGEN_HOME/weights/` (and torch's hub cache with
  `search_torch_hub`), so dropping an official file there makes the entry present offline;
- `hub_files`: `{repo: [file, ...]}` whose presence in the Hugging Face cache counts as present;
- `arch`/`pretrained` (open_clip), `yaml` (ultralytics config used when there are no weights), `url`.
Sources with the `tiny:` scheme are built from configs by `lapgen.models.tiny` (always offline).
"""

from __future__ import annotations

from typing import Any

RDV_URL = "https://s3.unistra.fr/camma_public/github/rendezvous/"  # Rendezvous README, Model Zoo
# the flownet.pkl ControlVideo's code loads (its README: "the weights of RIFE"); never downloaded by lapgen
RIFE_URL = "https://github.com/YBYBZhang/ControlVideo/tree/main/checkpoints"
# FVD's I3D as StyleGAN-V's `src/metrics/frechet_video_distance.py` fetches it, and CD-FVD's VideoMAE-v2 ViT-g as
# songweige/content-debiased-fvd fetches it: documented for the user, never downloaded by lapgen
I3D_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
VIDEOMAE_URL = ("https://huggingface.co/OpenGVLab/InternVideoMAE_models/resolve/main/mae-g/"
                "vit_g_hybrid_pt_1200e_ssv2_ft.pth")
_OPEN_CLIP_HUB_FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]

BUILTINS: dict[str, dict[str, Any]] = {
    "sd15": {
        "kind": "pipeline", "source": "hf:stable-diffusion-v1-5/stable-diffusion-v1-5",
        "description": "Stable Diffusion v1.5 (maintained mirror of runwayml/stable-diffusion-v1-5); "
                       "the paper's base model",
    },
    "tiny-sd": {
        "kind": "pipeline", "source": "tiny:sd", "options": {"seed": 0},
        "description": "tiny randomly initialised SD-1.5-shaped pipeline built from configs (seeded); "
                       "for tests (the demo builds a wider, learnable variant, demo-base)",
    },
    "tiny-controlnet": {
        "kind": "controlnet", "source": "tiny:controlnet", "options": {"seed": 0},
        "description": "tiny ControlNet made from tiny-sd's UNet (ControlNetModel.from_unet, seeded)",
    },
    "animatediff-v1-5-2": {
        "kind": "motion-adapter", "source": "hf:guoyww/animatediff-motion-adapter-v1-5-2",
        "description": "AnimateDiff motion module v1-5-2 for Stable Diffusion 1.5 (Guo et al. 2024; trained on "
                       "WebVid-10M, 16-frame clips): a start for `lapgen train-motion --adapter-init`",
    },
    "clip-vit-b-32": {
        "kind": "feature-extractor", "source": "open_clip:ViT-B-32-quickgelu/openai",
        "description": "CLIP ViT-B/32 (open_clip, OpenAI weights); the paper's CLIP-FID model and "
                       "lapgen's default CMMD model",
        "options": {"loader": "open_clip", "arch": "ViT-B-32-quickgelu", "pretrained": "openai",
                    "files": ["ViT-B-32.pt"],
                    "hub_files": {"timm/vit_base_patch32_clip_224.openai": _OPEN_CLIP_HUB_FILES}},
    },
    "clip-vit-l-14-336": {
        "kind": "feature-extractor", "source": "open_clip:ViT-L-14-336-quickgelu/openai",
        "description": "CLIP ViT-L/14 at 336 px (open_clip, OpenAI weights); the CMMD paper's model",
        "options": {"loader": "open_clip", "arch": "ViT-L-14-336-quickgelu", "pretrained": "openai",
                    "files": ["ViT-L-14-336px.pt"],
                    "hub_files": {"timm/vit_large_patch14_clip_336.openai": _OPEN_CLIP_HUB_FILES}},
    },
    "inception-v3": {
        "kind": "feature-extractor", "source": "torch-fidelity:inception-v3-compat",
        "description": "torch-fidelity's FID InceptionV3 (TensorFlow 2015-12-05 weights); FID and KID",
        "options": {"loader": "torch-fidelity", "files": ["weights-inception-2015-12-05-6726825d.pth"],
                    "search_torch_hub": True},
    },
    "inception-v3-clean": {
        "kind": "feature-extractor", "source": "nvidia:inception-2015-12-05.pt",
        "description": "NVIDIA's TorchScript Inception-v3 (TensorFlow 2015-12-05 graph), the network clean-fid "
                       "runs; FID and KID as the paper computed them. Local file only, never downloaded",
        "options": {"loader": "torchscript", "files": ["inception-2015-12-05.pt"],
                    "sha256": "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4",
                    "url": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                           "inception-2015-12-05.pt"},
    },
    "i3d-kinetics400": {
        "kind": "feature-extractor", "source": "stylegan-v:i3d_torchscript.pt",
        "description": "I3D (Kinetics-400) as the TorchScript file StyleGAN-V and most FVD papers use; FVD in "
                       "`lapgen eval video`. Local file only, never downloaded",
        "options": {"loader": "i3d-torchscript", "files": ["i3d_torchscript.pt"], "url": I3D_URL},
    },
    "videomae-v2-g": {
        "kind": "feature-extractor", "source": "videomae-v2:vit_g_hybrid_pt_1200e_ssv2_ft.pth",
        "description": "VideoMAE-v2 ViT-g/14 fine-tuned on SSv2, the network of content-debiased FVD (CD-FVD) in "
                       "`lapgen eval video`. Local file only, never downloaded",
        "options": {"loader": "videomae", "url": VIDEOMAE_URL,
                    "files": ["vit_g_hybrid_pt_1200e_ssv2_ft.pth", "vit_g_hybrid_pt_1200e_ssv2_ft.safetensors"]},
    },
    "yolov8n-seg": {
        "kind": "segmenter", "source": "ultralytics:yolov8n-seg.pt",
        "description": "YOLOv8n-seg (ultralytics); built from yolov8n-seg.yaml with random weights when no "
                       "weights file is at hand",
        "options": {"loader": "ultralytics", "files": ["yolov8n-seg.pt"], "yaml": "yolov8n-seg.yaml"},
    },
    "rdv-cholect50": {
        "kind": "recognizer", "source": "camma:rendezvous_l8_cholect50_crossval_k1_layernorm_lowres.pth",
        "description": "Rendezvous action-triplet recognizer, official CholecT50 checkpoints "
                       "(rendezvous_l8_cholect50_*.pth, by file name)",
        "options": {"loader": "rendezvous", "url": RDV_URL,
                    "files": [f"rendezvous_l8_cholect50_crossval_k{k}_layernorm_lowres.pth"
                              for k in range(1, 6)]
                    + ["rendezvous_l8_cholect50_challenge_k0_batchnorm_lowres.pth"]},
    },
    "rife-v3": {
        "kind": "interpolator", "source": "rife:flownet.pkl",
        "description": "RIFE IFNet_HDv3 frame interpolator of ControlVideo's smoother; flownet.pkl from "
                       "YBYBZhang/ControlVideo (checkpoints/), never downloaded: `lapgen models add rife-v3 PATH`",
        "options": {"loader": "rife", "url": RIFE_URL, "files": ["flownet.pkl"]},
    },
}

# The model a command uses when it gets none and nothing was trained or chosen with `lapgen models use`.
BUILTIN_DEFAULTS: dict[str, str | None] = {
    "pipeline": "sd15",
    "controlnet": None,
    "motion-adapter": "animatediff-v1-5-2",  # until `lapgen train-motion --name` trains one
    "segmenter": "yolov8n-seg",
    "feature-extractor": "inception-v3",
    "recognizer": "rdv-cholect50",
    "interpolator": "rife-v3",  # `--interpolator auto` falls back to flow while it has no weights
}
