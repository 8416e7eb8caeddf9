"""How big each stage of `lapgen demo` is: the full demo (minutes on a laptop CPU) and `--quick` (tests).

The numbers were chosen by measuring on a 2-core CPU (docs/quickstart.md gives the times and the table of
experiments that decided the design): large enough that the trained ControlNet visibly draws the tool where
its mask is, small enough for the time budget. Learning rates are far above the paper's 1e-5 because the
tiny models start from random weights.

The design in one paragraph: tools are drawn thicker than by default (`tool_scale`, as wide as graspers
often are in Cholec80 frames); the hand-set box VAE downsamples by 4, not SD's 8 (`vae_levels=3`), so a
128 px frame is a 32x32 latent in which a tool shaft survives; the small UNet has three levels with the
text's cross-attention at the 8x8 one; and the demo's scheduler predicts v (`v_prediction`, as Stable
Diffusion 2 does), with which a model trained for minutes samples clean tissue instead of the colour
blotches an under-trained epsilon model overshoots into.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DemoSizes:
    # synthetic data (lapgen.data.synthetic), frames rendered at `frame_size` (width, height)
    frame_size: tuple[int, int] = (192, 108)
    tool_scale: float = 1.8  # tool thickness x the renderer's default (lapgen.data.synthetic_render)
    t50_videos: tuple[int, ...] = (1, 2, 4, 5, 8, 6, 10)  # RDV split: 1, 2, 4, 5 train; 8 val; 6, 10 test
    t50_frames: int = 40  # per video, 1 fps
    c80_videos: tuple[int, ...] = (3, 7)  # Cholec80-only videos (train split)
    c80_frames: int = 300  # per video at 25 fps (12 s: 12 annotated frames)
    # Cholec80 videos also in CholecT50 (as long as its CholecT50 seconds): the real clips `eval video` compares
    # the demo's videos with (`lapgen masks clips`; the frames dataset uses only Cholec80-only videos)
    clip_videos: tuple[int, ...] = (6,)
    real_clip_seconds: int = 1  # 25 frames per real clip
    real_clips: int = 4
    # CholecSeg8k: several clips per video, a few frames each (consecutive frames at 25 fps barely differ, so
    # the segmenter learns from the number of distinct clips); ART-Net draws tools on the same tissue as
    # the CholecT50/Cholec80 frames the segmenter later annotates
    seg8k_videos: tuple[int, ...] = (1, 12, 17, 48, 52, 55)
    seg8k_clips: int = 3  # per video
    seg8k_frames: int = 4  # per clip
    artnet_train: tuple[int, int] = (60, 8)  # (positives, negatives)
    artnet_test: tuple[int, int] = (12, 2)
    # segment train (YOLOv8n-seg from its yaml: random weights) and annotate
    # From random weights YOLO needs tens of epochs; without mosaic and warm-up, 40 epochs at 128 px on the
    # diverse clips above reach a pixel F1 around 0.77 on the held-out CholecSeg8k video (64 px: about 0.5,
    # its 16x16 mask prototypes are too coarse for a tool shaft).
    seg_epochs: int = 40
    seg_imgsz: int = 128
    seg_batch: int = 8
    seg_mosaic: float = 0.0
    seg_warmup_epochs: float = 0.0
    # the paper drops frames without tools from the ControlNet set; --quick's one-epoch segmenter finds none,
    # so it keeps them (with empty masks) to have a ControlNet set at all
    seg_keep_empty: bool = False
    annotate_conf: float = 0.25
    # the untrained base, finetune (Stage 1) and train-controlnet (Stage 2)
    unet_channels: tuple[int, ...] = (32, 64, 64)  # the base UNet's widths per level (tiny-sd: 4, 8)
    vae_levels: int = 3  # the box VAE downsamples by 2**(levels-1): 4
    prediction_type: str = "v_prediction"  # the base scheduler's training target
    sd_steps: int = 500
    sd_lr: float = 2e-3
    sd_ema: float | None = 0.99  # EMA decay of the Stage-1 weights (None: no EMA)
    cn_steps: int = 300
    cn_lr: float = 2e-3
    cn_ema: float | None = None
    batch_size: int = 8
    # train-recognizer (Rendezvous, for eval map)
    rdv_epochs: int = 1
    rdv_batch: int = 16
    # sample and video
    n_samples: int = 24  # images per generated set
    sample_steps: int = 15
    video_frames: int = 16
    video_steps: int = 15
    video_fps: float = 8.0
    # --motion: prepare --clips (Cholec80 only), train-motion over the Stage-1 UNet, video --method animatediff
    clip_frames: int = 8
    clip_fps: float = 8.0
    motion_steps: int = 200
    motion_lr: float = 1e-3
    motion_ema: float | None = None
    motion_batch: int = 2  # clips per step (each clip_frames frames)
    # eval
    fvd_frames: int = 8  # frames per FVD clip of the --motion comparison (random I3D stand-in)
    real_images: int = 24  # real test frames the fidelity metrics compare with (--real-limit)
    boot: int = 200  # bootstrap replicates of F1 and mAP intervals
    kid_subsets: int = 20

    def as_dict(self) -> dict:
        return asdict(self)


FULL = DemoSizes()

QUICK = DemoSizes(
    frame_size=(128, 72),
    t50_videos=(1, 8, 6),
    t50_frames=12,
    c80_videos=(3,),
    c80_frames=250,
    seg8k_videos=(1, 12),
    seg8k_clips=1,
    seg8k_frames=4,
    artnet_train=(4, 2),
    artnet_test=(2, 1),
    seg_epochs=1,
    seg_imgsz=64,
    seg_keep_empty=True,
    unet_channels=(16, 32, 32),
    sd_steps=30,
    cn_steps=20,
    batch_size=4,
    rdv_epochs=1,
    rdv_batch=8,
    n_samples=8,
    real_images=8,
    sample_steps=4,
    video_frames=4,
    video_steps=4,
    real_clips=2,
    clip_frames=4,
    motion_steps=10,
    motion_batch=1,
    fvd_frames=4,
    boot=20,
    kid_subsets=5,
)
