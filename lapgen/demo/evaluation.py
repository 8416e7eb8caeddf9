"""The evaluation steps of `lapgen demo`: feature weights, `eval fidelity / f1 / map`, `eval report`, and the
registry defaults. Like `lapgen.demo.steps`, each calls the library function behind its command."""

from __future__ import annotations

from pathlib import Path

from lapgen.demo.steps import DESCRIPTIONS, NAMES, SETS, SETUP, Context, cmd, write_json


def features_cmds(c: Context) -> list[str]:
    w = c.p("weights")
    return [
        f"(library) lapgen.demo.assets.write_random_inception / write_random_clip -> {w}",
        *(
            cmd("lapgen", "models", "add", NAMES[key], w / name, "--kind", "feature-extractor",
                "--description", DESCRIPTIONS[key])
            for key, name in (("inception", inception_file(c)), ("clip", clip_file(c)))
        ),
    ]


def inception_file(c: Context) -> str:
    return f"inception-v3-random-seed{c.seed}.pth"


def clip_file(c: Context) -> str:
    return f"clip-vit-b-32-random-seed{c.seed}.safetensors"


def features_step(c: Context) -> dict:
    from lapgen.demo.assets import write_random_clip, write_random_inception
    from lapgen.registry import add_entry

    w = c.p("weights")
    w.mkdir(parents=True, exist_ok=True)
    inception = write_random_inception(w / inception_file(c), seed=c.seed)
    clip = write_random_clip(w / clip_file(c), seed=c.seed)
    add_entry(NAMES["inception"], str(inception), kind="feature-extractor", description=DESCRIPTIONS["inception"])
    add_entry(NAMES["clip"], str(clip), kind="feature-extractor", description=DESCRIPTIONS["clip"])
    return {}


def eval_tail(c: Context, model: str, setup: str, out_name: str) -> list:
    """The options every demo `lapgen eval` command ends with: the report labels, device and JSON output."""
    return ["--model", model, "--setup", setup, "--device", c.device, "--out", c.p("eval", out_name),
            "--overwrite"]


def fidelity_cmds(c: Context) -> list[str]:
    return [
        cmd(
            "lapgen",
            "eval",
            "fidelity",
            c.p("samples", folder),
            c.p("data", "frames"),
            "--real-split",
            "test",
            "--real-limit",
            c.sizes.real_images,
            "--weights",
            NAMES["inception"],
            "--clip-fid-weights",
            NAMES["clip"],
            "--cmmd-weights",
            NAMES["clip"],
            "--kid-subsets",
            c.sizes.kid_subsets,
            *eval_tail(c, SETS[folder][2], SETUP, f"fidelity-{folder}.json"),
        )
        for folder in SETS
    ]


def fidelity_step(c: Context) -> dict:
    from lapgen.metrics.evaluate import SCHEMA, FidelityConfig, evaluate_fidelity

    for folder, (_model, _cn, label, _trained) in SETS.items():
        results = evaluate_fidelity(
            FidelityConfig(
                gen=[c.p("samples", folder)],
                real=c.p("data", "frames"),
                real_split="test",
                real_limit=c.sizes.real_images,
                inception_weights=NAMES["inception"],
                clip_fid_weights=NAMES["clip"],
                cmmd_weights=NAMES["clip"],
                kid_subsets=c.sizes.kid_subsets,
                device=c.device,
                labels={"model": label, "setup": SETUP},
            )
        )
        write_json(c.p("eval", f"fidelity-{folder}.json"), {"schema": SCHEMA, "results": results}, results)
    return {}


CN_SETS = [f for f, v in SETS.items() if v[1]]
T2I_SETS = [f for f, v in SETS.items() if not v[1]]


VIDEO_LABEL = "demo video (Stage 3)"  # report label of the video's frames (F1 against the authored masks)


def f1_jobs(c: Context) -> list[tuple[Path, str, str]]:
    """(generated set, report label, output name) of each `eval f1` run: the two ControlNet sets, then the
    video's frames (`lapgen video --save-frames` pairs every frame with its authored mask)."""
    jobs = [(c.p("samples", f), SETS[f][2], f"f1-{f}.json") for f in CN_SETS]
    jobs.append((c.p("video", "clip_frames"), VIDEO_LABEL, "f1-video.json"))
    return jobs


def f1_cmds(c: Context) -> list[str]:
    return [
        cmd(
            "lapgen",
            "eval",
            "f1",
            images,
            "--segmenter",
            NAMES["segmenter"],
            "--conf",
            c.sizes.annotate_conf,
            "--boot",
            c.sizes.boot,
            "--seed",
            c.seed,
            *eval_tail(c, label, SETUP, name),
        )
        for images, label, name in f1_jobs(c)
    ]


def f1_step(c: Context) -> dict:
    from lapgen.models.mask_f1 import F1Config, evaluate_mask_f1

    facts: dict = {}
    for images, label, name in f1_jobs(c):
        result = evaluate_mask_f1(
            F1Config(
                gen=images,
                segmenter=NAMES["segmenter"],
                conf=c.sizes.annotate_conf,
                n_boot=c.sizes.boot,
                seed=c.seed,
                device=c.device,
                labels={"model": label, "setup": SETUP},
            )
        )
        write_json(c.p("eval", name), result, [result])
        if name == "f1-video.json":  # the video follows its masks: the mean of the per-frame F1
            facts.update(video_mask_f1=result["macro"], video_mask_f1_pooled=result["value"])
    return facts


def _map_jobs(c: Context) -> list[tuple[Path, str | None, str, dict[str, str], str]]:
    """(images, split, mode, labels, output name) of each `eval map` run: the text-to-image sets, then the
    real test frames (global mode, the reference row)."""
    jobs = [(c.p("samples", f), None, "auto", {"model": SETS[f][2], "setup": SETUP}, f"map-{f}.json")
            for f in T2I_SETS]
    jobs.append((c.p("data", "frames"), "test", "global", {"model": "real test frames", "setup": "real"},
                 "map-real.json"))
    return jobs


def map_cmds(c: Context) -> list[str]:
    lines = []
    for images, split, mode, labels, name in _map_jobs(c):
        where = ["--split", split, "--mode", mode] if split else []
        lines.append(cmd("lapgen", "eval", "map", images, *where, "--recognizer", NAMES["recognizer"],
                         "--boot", c.sizes.boot, "--seed", c.seed,
                         *eval_tail(c, labels["model"], labels["setup"], name)))
    return lines


def map_step(c: Context) -> dict:
    from lapgen.models.recognition.evaluate import MapEvalConfig, evaluate_map

    for images, split, mode, labels, name in _map_jobs(c):
        result = evaluate_map(
            MapEvalConfig(
                images=str(images),
                recognizer=NAMES["recognizer"],
                split=split,
                mode=mode,
                n_boot=c.sizes.boot,
                seed=c.seed,
                device=c.device,
                labels=labels,
            )
        )
        write_json(
            c.p("eval", name),
            result,
            [result],
            metric="map",
            key=result["key"],
            value=result["value"],
            recognizer=result["recognizer"]["name"],
        )
    return {}


def report_cmds(c: Context) -> list[str]:
    return [cmd("lapgen", "eval", "report", c.p("eval"), "--out", c.p("report.md"), "--overwrite")]


def report_step(c: Context) -> dict:
    from lapgen.metrics.report import build_report, write_report

    write_report(build_report([c.p("eval")]), c.p("report.md"), overwrite=True)
    return {}


def _defaults(c: Context) -> list[tuple[str, str, str]]:
    """(name key, registry kind, run folder) of each model the demo makes a registry default."""
    out = [("sd", "pipeline", "sd"), ("controlnet", "controlnet", "controlnet"), ("segmenter", "segmenter", "segmenter"),
           ("recognizer", "recognizer", "recognizer")]
    return out + ([("motion", "motion-adapter", "motion")] if c.motion else [])


def defaults_cmds(c: Context) -> list[str]:
    return [cmd("lapgen", "models", "use", NAMES[k]) for k, _kind, _folder in _defaults(c)]


def defaults_step(c: Context) -> dict:
    """Re-register the trained folders (a resumed demo may meet an edited registry) and make them defaults."""
    from lapgen.registry import register_artifact, set_default

    for key, kind, folder in _defaults(c):
        register_artifact(NAMES[key], kind, c.p("runs", folder), make_default=False)
        if c.facts.get("set_defaults", True):
            set_default(NAMES[key], origin="set by lapgen demo")
    return {}
