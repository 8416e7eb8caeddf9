"""The steps of `lapgen demo`, each one the library call behind one `lapgen` command: the shared context,
names and helpers, and the data and segmenter steps (`lapgen.demo.generation`: Stages 1-2,
`lapgen.demo.video`: Stage 3, `lapgen.demo.evaluation`: the metrics; `lapgen.demo.plan`: their order).

Every step has the command line a user would type (`commands`, printed before it runs) and `run`, which
calls the same library function with the same settings that command builds (`lapgen.data.prepare.prepare`
for `lapgen prepare`, `lapgen.models.finetune.finetune` for `lapgen finetune`, ...); tests/test_demo.py
runs every printed line through the real CLI and checks that it reaches the same call. Nothing here computes
a result of its own. The two models the demo must build because nothing can be downloaded (the untrained
base's hand-set VAE and the random feature-extractor weights) come from `lapgen.demo.assets` and are
registered like any local weights (`lapgen models add`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lapgen.demo.sizes import DemoSizes

PROMPT = "grasper retract gallbladder in carlot-triangle-dissection"  # a triplet in a phase, spelled as `prepare` wrote it
# Registry names the demo writes (models become the defaults of their kinds, features never do).
NAMES = {
    "base": "demo-base",
    "sd": "demo-sd",
    "controlnet": "demo-controlnet",
    "segmenter": "demo-segmenter",
    "recognizer": "demo-recognizer",
    "controlnet_untrained": "demo-controlnet-untrained",
    "inception": "demo-inception-random",
    "clip": "demo-clip-random",
    "motion": "demo-motion",
}
_RANDOM = "lapgen demo: RANDOM weights (seeded), values comparable only within one demo run"
# Registry descriptions of what the demo registers with `lapgen models add` (printed and passed alike).
DESCRIPTIONS = {
    "base": "lapgen demo: untrained small UNet + tiny-sd text encoder + hand-set box VAE",
    "controlnet_untrained": "lapgen demo: untrained ControlNet of demo-sd (zero outputs), the Stage-2 baseline",
    "inception": f"Inception-v3, {_RANDOM}",
    "clip": f"CLIP ViT-B/32, {_RANDOM}",
}
SETUP = "lapgen demo (random-weight extractors)"  # report label of every generated set: FID/CMMD features
# The four generated sets: folder -> (pipeline, ControlNet, report label, trained?)
SETS = {
    "demo-sd": (NAMES["sd"], None, "demo-sd (trained)", True),
    "demo-base": (NAMES["base"], None, "demo-base (untrained)", False),
    "demo-controlnet": (NAMES["sd"], NAMES["controlnet"], "demo-controlnet (trained)", True),
    # Stage 2 alone: the same trained Stage-1 model with an untrained ControlNet (zero outputs: adds nothing)
    "untrained-controlnet": (
        NAMES["sd"],
        NAMES["controlnet_untrained"],
        "demo-sd + demo-controlnet-untrained",
        False,
    ),
}


@dataclass
class Context:
    out: Path
    seed: int
    sizes: DemoSizes
    device: str = "auto"
    facts: dict[str, Any] = field(default_factory=dict)  # what steps learn (counts, losses), kept in state
    motion: bool = False  # `lapgen demo --motion`: the learned motion prior (AnimateDiff) beside ControlVideo

    def p(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    commands: Callable[[Context], list[str]]
    run: Callable[[Context], dict[str, Any] | None]
    outputs: Callable[[Context], list[Path]]
    when: Callable[[Context], bool] | None = None  # None: always; else the step runs only when it says so

    def active(self, c: Context) -> bool:
        return self.when is None or self.when(c)


def cmd(*args: Any) -> str:
    return shlex.join(str(a) for a in args)


def write_json(path: Path, payload: Any, results: list[dict[str, Any]], **card_fields: Any) -> None:
    """What `lapgen eval ... --out FILE` does with a result (`lapgen.metrics.evaluate.save_result`)."""
    from lapgen.metrics.evaluate import save_result

    save_result(path, payload, results, **card_fields)


# ------------------------------------------------------------------------------------------------ data


def _ids(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def data_cmds(c: Context) -> list[str]:
    s = c.sizes
    return [
        cmd(
            "lapgen",
            "synthetic",
            "--cholect50-videos",
            _ids(s.t50_videos),
            "--cholect50-frames",
            s.t50_frames,
            "--cholec80-videos",
            _ids(s.c80_videos + s.clip_videos),
            "--cholec80-frames",
            s.c80_frames,
            "--cholecseg8k-videos",
            _ids(s.seg8k_videos),
            "--cholecseg8k-clips",
            s.seg8k_clips,
            "--cholecseg8k-frames",
            s.seg8k_frames,
            "--artnet-train",
            _ids(s.artnet_train),
            "--artnet-test",
            _ids(s.artnet_test),
            "--size",
            f"{s.frame_size[0]}x{s.frame_size[1]}",
            "--tool-scale",
            s.tool_scale,
            "--seed",
            c.seed,
            "--out",
            c.p("raw"),
        )
    ]


def data_step(c: Context) -> dict:
    from lapgen.data.synthetic_release import SyntheticConfig, write_synthetic_release

    s = c.sizes
    write_synthetic_release(
        SyntheticConfig(
            out=c.p("raw"),
            cholect50_videos=s.t50_videos,
            cholect50_frames=s.t50_frames,
            cholec80_videos=s.c80_videos + s.clip_videos,
            cholec80_frames=s.c80_frames,
            cholecseg8k_videos=s.seg8k_videos,
            cholecseg8k_clips=s.seg8k_clips,
            cholecseg8k_frames=s.seg8k_frames,
            artnet_train=s.artnet_train,
            artnet_test=s.artnet_test,
            size=s.frame_size,
            tool_scale=s.tool_scale,
            seed=c.seed,
            overwrite=True,
        )
    )
    return {}


def prepare_cmds(c: Context) -> list[str]:
    return [
        cmd(
            "lapgen",
            "prepare",
            "--cholect50",
            c.p("raw", "CholecT50"),
            "--cholec80",
            c.p("raw", "cholec80"),
            "--out",
            c.p("data", "frames"),
        )
    ]


def prepare_step(c: Context) -> dict:
    from lapgen.data.prepare import PrepareConfig, prepare

    r = prepare(
        PrepareConfig(
            out=c.p("data", "frames"),
            cholect50=c.p("raw", "CholecT50"),
            cholec80=c.p("raw", "cholec80"),
            overwrite=True,
        )
    )
    return {"frames": r.records}


# ------------------------------------------------------------------------------------------ segmenter


def convert_cmds(c: Context) -> list[str]:
    return [
        cmd(
            "lapgen",
            "segment",
            "convert",
            "--cholecseg8k",
            c.p("raw", "CholecSeg8k"),
            "--artnet",
            c.p("raw", "ART-Net"),
            "--out",
            c.p("data", "yolo"),
        )
    ]


def convert_step(c: Context) -> dict:
    from lapgen.data.yolo_convert import ConvertConfig, convert

    s = convert(
        ConvertConfig(
            out=c.p("data", "yolo"),
            cholecseg8k=c.p("raw", "CholecSeg8k"),
            artnet=c.p("raw", "ART-Net"),
            overwrite=True,
        )
    )
    return {"yolo_train_images": s["splits"]["train"]["images"]}


def seg_train_cmds(c: Context) -> list[str]:
    s = c.sizes
    return [
        cmd(
            "lapgen",
            "segment",
            "train",
            "--data",
            c.p("data", "yolo"),
            "--base",
            "yolov8n-seg.yaml",
            "--epochs",
            s.seg_epochs,
            "--imgsz",
            s.seg_imgsz,
            "--batch",
            s.seg_batch,
            "--mosaic",
            s.seg_mosaic,
            "--warmup-epochs",
            s.seg_warmup_epochs,
            "--workers",
            0,
            "--no-plots",
            "--seed",
            c.seed,
            "--device",
            c.device,
            "--out",
            c.p("runs", "segmenter"),
            "--name",
            NAMES["segmenter"],
        )
    ]


def seg_train_step(c: Context) -> dict:
    from lapgen.models.segmentation import TrainConfig, train

    s = c.sizes
    r = train(
        TrainConfig(
            data=c.p("data", "yolo"),
            out=c.p("runs", "segmenter"),
            base="yolov8n-seg.yaml",
            epochs=s.seg_epochs,
            imgsz=s.seg_imgsz,
            batch=s.seg_batch,
            device=c.device,
            workers=0,
            seed=c.seed,
            plots=False,
            register_name=NAMES["segmenter"],
            overwrite=True,
            extra={"mosaic": s.seg_mosaic, "warmup_epochs": s.seg_warmup_epochs},
        )
    )
    return {"segmenter_mask_map50": r["metrics"].get("metrics/mAP50(M)")}


def seg_eval_cmds(c: Context) -> list[str]:
    return [
        cmd(
            "lapgen",
            "segment",
            "evaluate",
            "--data",
            c.p("data", "yolo"),
            "--segmenter",
            NAMES["segmenter"],
            "--conf",
            c.sizes.annotate_conf,
            "--device",
            c.device,
        )
    ]


def seg_eval_step(c: Context) -> dict:
    """The segmenter's pixel F1 on the held-out synthetic CholecSeg8k video (ground truth): how far to trust
    every F1 the demo measures with it."""
    from lapgen.models.segmenter_eval import SegmenterEvalConfig, evaluate_segmenter

    r = evaluate_segmenter(
        SegmenterEvalConfig(
            data=c.p("data", "yolo"), segmenter=NAMES["segmenter"], conf=c.sizes.annotate_conf, device=c.device
        )
    )
    seg8k = r["by_source"].get("cholecseg8k", r["overall"])
    return {
        "segmenter_pixel_f1": r["overall"]["micro"],
        "segmenter_pixel_f1_cholecseg8k": seg8k["micro"],
        "segmenter_val_images": r["overall"]["n_images"],
    }


def annotate_cmds(c: Context) -> list[str]:
    return [
        cmd(
            "lapgen",
            "segment",
            "annotate",
            "--data",
            c.p("data", "frames"),
            "--segmenter",
            NAMES["segmenter"],
            "--conf",
            c.sizes.annotate_conf,
            *(["--keep-empty"] if c.sizes.seg_keep_empty else []),
            "--device",
            c.device,
            "--out",
            c.p("data", "controlnet"),
        )
    ]


def annotate_step(c: Context) -> dict:
    from lapgen.models.annotate import MaskConfig, annotate

    s = annotate(
        MaskConfig(
            source=c.p("data", "frames"),
            out=c.p("data", "controlnet"),
            segmenter=NAMES["segmenter"],
            conf=c.sizes.annotate_conf,
            keep_empty=c.sizes.seg_keep_empty,
            device=c.device,
            overwrite=True,
        )
    )
    return {"annotated_frames": s["frames"], "frames_with_tool_mask": s["kept"] - s["empty"]}
