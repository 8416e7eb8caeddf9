"""How big each stage of `lapgen demo` is: the full demo (minutes on a laptop CPU) and `--quick` (tests).

The numbers were chosen by measuring on a 2-core CPU (docs/quickstart.md gives the times): large enough that
the trained models beat the untrained base in the demo's own report, small enough for the time budget.
Learning rates are far above the paper's 1e-5 because the tiny models start from random weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DemoSizes:
    # synthetic data (lapgen.data.synthetic), frames rendered at `frame_size` (width, height)
    frame_size: tuple[int, int] = (192, 108)
    t50_videos: tuple[int, ...] = (1, 2, 4, 5, 8, 6, 10)  # RDV split: 1, 2, 4, 5 train; 8 val; 6, 10 test
    t50_frames: int = 40  # per video, 1 fps
    c80_videos: tuple[int, ...] = (3, 7)  # Cholec80-only videos (train split)
    c80_frames: int = 300  # per video at 25 fps (12 s: 12 annotated frames)
    seg8k_videos: tuple[int, ...] = (1, 12, 17, 48)
    seg8k_frames: int = 20  # per clip
    artnet_train: tuple[int, int] = (24, 6)  # (positives, negatives)
    artnet_test: tuple[int, int] = (6, 2)
    # segment train (YOLOv8n-seg from its yaml: random weights) and annotate
    # From random weights YOLO needs tens of epochs; without mosaic and warm-up 40 epochs at 64 px reach a
    # mask mAP50 around 0.35 on the synthetic validation set in under 2 CPU minutes (fewer find nothing).
    seg_epochs: int = 40
    seg_imgsz: int = 64
    seg_batch: int = 8
    seg_mosaic: float = 0.0
    seg_warmup_epochs: float = 0.0
    # the paper drops frames without tools from the ControlNet set; --quick's one-epoch segmenter finds none,
    # so it keeps them (with empty masks) to have a ControlNet set at all
    seg_keep_empty: bool = False
    annotate_conf: float = 0.25
    # finetune (Stage 1) and train-controlnet (Stage 2)
    unet_channels: tuple[int, int] = (16, 32)  # the base UNet's widths (tiny-sd: 4, 8)
    sd_steps: int = 400
    sd_lr: float = 2e-3
    cn_steps: int = 200
    cn_lr: float = 2e-3
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
    # eval
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
    seg8k_frames=4,
    artnet_train=(4, 2),
    artnet_test=(2, 1),
    seg_epochs=1,
    seg_imgsz=64,
    seg_keep_empty=True,
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
    boot=20,
    kid_subsets=5,
)
