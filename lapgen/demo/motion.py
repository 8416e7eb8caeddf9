"""The steps `lapgen demo --motion` adds: a clip dataset from the synthetic Cholec80 videos (`lapgen prepare
--clips`), a tiny AnimateDiff motion module trained on it over the Stage-1 model (`lapgen train-motion`), and
the demo's mask sequence generated again with it (`lapgen video --method animatediff`), beside the ControlVideo
video. Like `lapgen.demo.steps`, each step calls the library function behind its printed command.
"""

from __future__ import annotations

from pathlib import Path

from lapgen.demo import generation as gen
from lapgen.demo.steps import NAMES, PROMPT, Context, cmd


def clips_cmds(c: Context) -> list[str]:
    s = c.sizes
    return [cmd("lapgen", "prepare", "--clips", "--clip-frames", s.clip_frames, "--clip-fps", s.clip_fps,
                "--cholec80", c.p("raw", "cholec80"), "--out", c.p("data", "clips"))]


def clips_step(c: Context) -> dict:
    from lapgen.data.prepare import PrepareConfig, prepare

    s = c.sizes
    r = prepare(PrepareConfig(out=c.p("data", "clips"), cholec80=c.p("raw", "cholec80"), clips=True,
                              clip_frames=s.clip_frames, clip_fps=s.clip_fps, overwrite=True))
    return {"clips": r.records}


def train_cmds(c: Context) -> list[str]:
    return gen.training_cmds(c, "train-motion")


def train_step(c: Context) -> dict:
    from lapgen.models.motion import train_motion

    return {"motion_loss": gen.training_run(c, "train-motion", train_motion)}


def video_cmds(c: Context) -> list[str]:
    s = c.sizes
    return [
        cmd("lapgen", "video", "--method", "animatediff", "--motion-adapter", NAMES["motion"], "--prompt", PROMPT,
            "--masks", c.p("video", "masks"), "--model", NAMES["sd"], "--controlnet", NAMES["controlnet"],
            "--steps", s.video_steps, "--fps", s.video_fps, "--seed", c.seed, "--side-by-side", "--gif",
            "--save-frames", "--device", c.device, "--out", c.p("video", "animatediff.mp4")),
        f"(library) lapgen.demo.video.write_strip -> {c.p('video', 'strip_animatediff.png')}",
    ]


def video_step(c: Context) -> dict:
    from lapgen.demo.video import make_video

    make_video(c, "animatediff", "strip_animatediff.png", method="animatediff", motion_adapter=NAMES["motion"])
    return {}


def video_outputs(c: Context) -> list[Path]:
    return [c.p("video", n) for n in ("animatediff.mp4", "animatediff_side_by_side.mp4", "animatediff.gif",
                                      "strip_animatediff.png")]
