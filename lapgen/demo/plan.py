"""The ordered steps of `lapgen demo` (what each writes decides whether a resumed run skips it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lapgen.demo import evaluation as ev
from lapgen.demo import generation as gen
from lapgen.demo import motion as mo
from lapgen.demo import steps as st
from lapgen.demo import video as vid
from lapgen.demo import video_eval as ve
from lapgen.demo.steps import SETS, Context, Step


def _motion(c: Context) -> bool:
    return c.motion


def _files(*parts: str) -> Callable[[Context], list[Path]]:
    return lambda c: [c.p(*parts)]


STEPS: tuple[Step, ...] = (
    Step(
        "data",
        "write synthetic Cholec80, CholecT50, CholecSeg8k and ART-Net",
        st.data_cmds,
        st.data_step,
        lambda c: [c.p("raw", d) for d in ("CholecT50", "cholec80", "CholecSeg8k", "ART-Net")],
    ),
    Step(
        "prepare",
        "prepare the 128 px text-image frames dataset",
        st.prepare_cmds,
        st.prepare_step,
        _files("data", "frames"),
    ),
    Step(
        "segment-convert",
        "convert CholecSeg8k + ART-Net to a YOLO dataset",
        st.convert_cmds,
        st.convert_step,
        _files("data", "yolo"),
    ),
    Step(
        "segment-train",
        "train the YOLOv8n-seg tool segmenter",
        st.seg_train_cmds,
        st.seg_train_step,
        _files("runs", "segmenter"),
    ),
    Step(
        "segment-evaluate",
        "score the segmenter against the held-out CholecSeg8k masks (pixel F1)",
        st.seg_eval_cmds,
        st.seg_eval_step,
        lambda c: [],
    ),
    Step(
        "segment-annotate",
        "annotate the frames with tool masks",
        st.annotate_cmds,
        st.annotate_step,
        _files("data", "controlnet"),
    ),
    Step(
        "base",
        "build the untrained base (small UNet, tiny-sd text encoder, hand-set 4x box VAE)",
        gen.base_cmds,
        gen.base_step,
        _files("models", "demo-base"),
    ),
    Step(
        "finetune",
        "Stage 1: fine-tune the text-to-image model",
        gen.finetune_cmds,
        gen.finetune_step,
        _files("runs", "sd"),
    ),
    Step(
        "train-controlnet",
        "Stage 2: train the ControlNet on tool masks",
        gen.controlnet_cmds,
        gen.controlnet_step,
        _files("runs", "controlnet"),
    ),
    Step(
        "controlnet-untrained",
        "the untrained ControlNet (Stage 2 at step 0, the baseline)",
        gen.untrained_cn_cmds,
        gen.untrained_cn_step,
        _files("models", "demo-controlnet-untrained"),
    ),
    Step(
        "train-recognizer",
        "train the Rendezvous action recognizer (for mAP)",
        gen.recognizer_cmds,
        gen.recognizer_step,
        _files("runs", "recognizer"),
    ),
    Step(
        "sample",
        "generate evaluation sets: trained and untrained",
        gen.sample_cmds,
        gen.sample_step,
        lambda c: [c.p("samples", f) for f in SETS],
    ),
    Step(
        "masks-animate",
        "author a moving grasper mask sequence",
        vid.masks_cmds,
        vid.masks_step,
        _files("video", "masks"),
    ),
    Step(
        "video",
        "Stage 3: generate the video (ControlVideo)",
        vid.video_cmds,
        vid.video_step,
        vid.video_outputs,
    ),
    Step(
        "prepare-clips",
        "--motion: prepare the clip dataset from the Cholec80 videos",
        mo.clips_cmds,
        mo.clips_step,
        _files("data", "clips"),
        when=_motion,
    ),
    Step(
        "train-motion",
        "--motion: train the AnimateDiff motion module over the Stage-1 model",
        mo.train_cmds,
        mo.train_step,
        _files("runs", "motion"),
        when=_motion,
    ),
    Step(
        "video-animatediff",
        "--motion: the same masks with the learned motion prior (AnimateDiff)",
        mo.video_cmds,
        mo.video_step,
        mo.video_outputs,
        when=_motion,
    ),
    Step(
        "masks-clips",
        "cut real clips (frames, segmenter masks, prompt) from the Cholec80 video CholecT50 annotates",
        ve.real_clips_cmds,
        ve.real_clips_step,
        _files("video", "real-clips"),
    ),
    Step(
        "sample-video",
        "--motion: a video per real clip with each method (ControlVideo, AnimateDiff)",
        ve.comparison_cmds,
        ve.comparison_step,
        lambda c: [ve.set_dir(c, m) for m in ("controlvideo", "animatediff")],
        when=_motion,
    ),
    Step(
        "eval-features",
        "write and register the demo's random-weight feature extractors",
        ev.features_cmds,
        ev.features_step,
        lambda c: [c.p("weights", ev.inception_file(c)), c.p("weights", ev.clip_file(c))],
    ),
    Step(
        "eval-fidelity",
        "FID, KID, CLIP-FID, CMMD against the real test frames",
        ev.fidelity_cmds,
        ev.fidelity_step,
        lambda c: [c.p("eval", f"fidelity-{f}.json") for f in SETS],
    ),
    Step(
        "eval-f1",
        "tool-mask F1 of the ControlNet sets and of the video's frames",
        ev.f1_cmds,
        ev.f1_step,
        lambda c: [c.p("eval", name) for _images, _label, name in ev.f1_jobs(c)],
    ),
    Step(
        "eval-map",
        "action-triplet mAP (Rendezvous)",
        ev.map_cmds,
        ev.map_step,
        lambda c: [c.p("eval", f"map-{f}.json") for f in ev.T2I_SETS] + [c.p("eval", "map-real.json")],
    ),
    Step(
        "eval-video",
        "video metrics (mask adherence, warp error, frame consistency) against the real clips",
        ve.eval_video_cmds,
        ve.eval_video_step,
        ve.eval_video_outputs,
    ),
    Step("eval-report", "the Table-1 style report", ev.report_cmds, ev.report_step, _files("report.md")),
    Step(
        "registry",
        "make the demo's models the registry defaults",
        ev.defaults_cmds,
        ev.defaults_step,
        lambda c: [],
    ),
)
