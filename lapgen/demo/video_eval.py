"""The video-evaluation steps of `lapgen demo`: real clips cut from the synthetic Cholec80 video that CholecT50
also annotates (`lapgen masks clips`, the demo segmenter's masks), and `lapgen eval video` of the demo's
videos against them. The report's video table then shows the generated video's mask adherence and warp error
beside the real clips' (the floor of warp error, the ceiling of the segmenter's agreement with masks).

`--motion` adds the comparison of Stage 3's two methods on the same real clips (`lapgen sample-video`, once
with ControlVideo and once with AnimateDiff, then `eval video` of each set with FVD over a random-weight I3D
stand-in). Like `lapgen.demo.steps`, each step calls the library function behind its printed command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lapgen.demo.steps import NAMES, SETUP, Context, cmd, write_json

VIDEO_METRICS = "mask_f1,mask_iou,warp_error,frame_consistency"  # without FVD: one generated video
SET_METRICS = VIDEO_METRICS + ",fvd"  # the --motion comparison: a set per method, FVD with the random I3D
I3D_NAME = "demo-i3d-random"
I3D_DESCRIPTION = "lapgen demo: RANDOM weights (seeded), an I3D-interface stand-in; FVD comparable only within one run"


def real_clips_cmds(c: Context) -> list[str]:
    s = c.sizes
    return [cmd("lapgen", "masks", "clips", "--cholec80", c.p("raw", "cholec80"), "--cholect50",
                c.p("raw", "CholecT50"), "--segmenter", NAMES["segmenter"], "--conf", s.annotate_conf,
                "--seconds", s.real_clip_seconds, "--n", s.real_clips, "--seed", c.seed, "--size", 128,
                "--device", c.device, "--out", c.p("video", "real-clips"), "--overwrite")]


def real_clips_step(c: Context) -> dict:
    from lapgen.models.mask_sequences import extract_clips, make_segment_fn

    s = c.sizes
    segment, info = make_segment_fn(NAMES["segmenter"], device=c.device, conf=s.annotate_conf)
    result = extract_clips(c.p("raw", "cholec80"), c.p("raw", "CholecT50"), c.p("video", "real-clips"), segment,
                           seconds=s.real_clip_seconds, n=s.real_clips, seed=c.seed, size=128,
                           segmenter_info=info, overwrite=True)
    return {"real_clips": result["clips"]}


def set_dir(c: Context, method: str) -> Path:
    return c.p("video", f"set-{method}")


def comparison_cmds(c: Context) -> list[str]:
    s = c.sizes
    return [cmd("lapgen", "sample-video", "--clips", c.p("video", "real-clips"), "--model", NAMES["sd"],
                "--controlnet", NAMES["controlnet"], "--method", method,
                *(["--motion-adapter", NAMES["motion"]] if method == "animatediff" else []),
                "--frames", s.video_frames, "--steps", s.video_steps, "--seed", c.seed, "--device", c.device,
                "--out", set_dir(c, method), "--overwrite")
            for method in ("controlvideo", "animatediff")]


def comparison_step(c: Context) -> dict:
    from lapgen.models.sample_video import VideoSetConfig, sample_videos

    s = c.sizes
    for method in ("controlvideo", "animatediff"):
        video: dict[str, Any] = {"method": method, "motion_adapter": NAMES["motion"]} if method == "animatediff" else {}
        sample_videos(VideoSetConfig(clips=str(c.p("video", "real-clips")), out=str(set_dir(c, method)),
                                     model=NAMES["sd"], controlnet=NAMES["controlnet"], seed=c.seed,
                                     frames=s.video_frames, steps=s.video_steps, device=c.device, overwrite=True,
                                     video=video))
    return {}


def video_jobs(c: Context) -> list[tuple[Path, str, str, str]]:
    """(generated videos, report label, metrics, output name) of each `eval video` run against the real clips."""
    jobs = [(c.p("video", "clip_frames"), "demo video (ControlVideo)", VIDEO_METRICS, "video-controlvideo.json")]
    if c.motion:
        jobs.append((c.p("video", "animatediff_frames"), "demo video (AnimateDiff)", VIDEO_METRICS,
                     "video-animatediff.json"))
        jobs += [(set_dir(c, m), f"real-clip set ({label})", SET_METRICS, f"video-set-{m}.json")
                 for m, label in (("controlvideo", "ControlVideo"), ("animatediff", "AnimateDiff"))]
    return jobs


def _i3d_args(c: Context, metrics: str) -> list[str]:
    return ["--i3d-weights", I3D_NAME, "--fvd-frames", c.sizes.fvd_frames] if "fvd" in metrics else []


def eval_video_cmds(c: Context) -> list[str]:
    cmds = []
    if c.motion:
        cmds += [f"(library) lapgen.metrics.video_networks.write_random_i3d -> {c.p('weights', i3d_file(c))}",
                 cmd("lapgen", "models", "add", I3D_NAME, c.p("weights", i3d_file(c)), "--kind", "feature-extractor",
                     "--description", I3D_DESCRIPTION)]
    cmds += [cmd("lapgen", "eval", "video", gen, c.p("video", "real-clips"), "--metrics", metrics, "--segmenter",
                 NAMES["segmenter"], "--conf", c.sizes.annotate_conf, "--clip-weights", NAMES["clip"],
                 *_i3d_args(c, metrics), "--boot", c.sizes.boot, "--seed", c.seed, "--model", label, "--setup",
                 SETUP, "--device", c.device, "--out", c.p("eval", name), "--overwrite")
             for gen, label, metrics, name in video_jobs(c)]
    return cmds


def i3d_file(c: Context) -> str:
    return f"i3d-random-seed{c.seed}.pt"


def eval_video_step(c: Context) -> dict:
    from lapgen.metrics.video import VideoEvalConfig
    from lapgen.models.video_eval import evaluate_videos

    if c.motion:
        from lapgen.metrics.video_networks import write_random_i3d
        from lapgen.registry import add_entry

        c.p("weights").mkdir(parents=True, exist_ok=True)
        write_random_i3d(c.p("weights", i3d_file(c)), seed=c.seed)
        add_entry(I3D_NAME, str(c.p("weights", i3d_file(c))), kind="feature-extractor", description=I3D_DESCRIPTION)
    facts: dict[str, Any] = {}
    for gen, label, metrics, name in video_jobs(c):
        fvd = {"i3d_weights": I3D_NAME, "fvd_frames": c.sizes.fvd_frames} if "fvd" in metrics else {}
        result = evaluate_videos(VideoEvalConfig(
            gen=gen, real=c.p("video", "real-clips"), metrics=tuple(metrics.split(",")), segmenter=NAMES["segmenter"],
            conf=c.sizes.annotate_conf, clip_weights=NAMES["clip"], n_boot=c.sizes.boot, seed=c.seed,
            device=c.device, labels={"model": label, "setup": SETUP}, **fvd))
        write_json(c.p("eval", name), result, [], metric="video", metrics=result["metrics"])
        real = {m: (result.get("details", {}).get(m) or {}).get("real") for m in result["metrics"]}
        facts.setdefault("eval_video", {})[label] = {"gen": result["metrics"], "real": real}
    return facts


def eval_video_outputs(c: Context) -> list[Path]:
    return [c.p("eval", name) for *_rest, name in video_jobs(c)]
