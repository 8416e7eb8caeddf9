"""`lapgen demo`: the whole mission on synthetic data with tiny models, on a CPU, in minutes.

`run_demo(DemoConfig(out=...))` writes synthetic Cholec80 / CholecT50 / CholecSeg8k / ART-Net data, then
runs `prepare`, `segment convert/train/annotate`, `finetune`, `train-controlnet`, `eval train-recognizer`,
`sample` (trained and untrained), `masks animate`, `video`, `eval fidelity/f1/map` and `eval report`
through the library functions those commands call (`lapgen.demo.steps`), and compares the trained models
with the untrained base (`lapgen.demo.summary`).

Resuming: `<out>/demo-state.json` records the settings and every finished step. Re-running with the same
settings skips the finished steps whose outputs still exist; the first step that runs again (interrupted,
or its output deleted) and every step after it run (an interrupted step resumes where its command
resumes). Other settings are refused unless `force`, which starts over in a fresh folder.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lapgen.demo.plan import STEPS
from lapgen.demo.sizes import FULL, QUICK, DemoSizes
from lapgen.demo.steps import NAMES, Context, Step
from lapgen.errors import LapgenError

STATE_FILE = "demo-state.json"
STATE_VERSION = 1


@dataclass
class DemoConfig:
    out: Path = Path("lapgen-demo")
    seed: int = 0
    quick: bool = False
    force: bool = False  # start over: delete a previous demo in `out` first
    device: str = "auto"
    set_defaults: bool = True  # make the demo's models the registry defaults (for `lapgen studio`)
    motion: bool = False  # also train a motion module and make AnimateDiff videos (`lapgen demo --motion`)
    sizes: DemoSizes | None = None  # None: FULL or QUICK

    def resolved_sizes(self) -> DemoSizes:
        return self.sizes or (QUICK if self.quick else FULL)

    def settings(self) -> dict[str, Any]:
        """What makes two demo runs the same (device and defaults do not change results)."""
        return {
            "seed": self.seed,
            "quick": self.quick,
            "motion": self.motion,
            "sizes": json.loads(json.dumps(self.resolved_sizes().as_dict())),
        }


@dataclass
class DemoResult:
    out: Path
    video: Path
    side_by_side: Path
    gif: Path
    strip: Path  # mask | frame pairs of the video, every other frame (a picture for docs)
    report: Path
    summary: dict[str, Any]
    timings: dict[str, float]  # seconds per step run now (skipped steps: absent)
    skipped: list[str] = field(default_factory=list)
    animatediff: Path | None = None  # --motion: the AnimateDiff video of the same masks
    animatediff_strip: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _read_state(out: Path) -> dict[str, Any] | None:
    path = out / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LapgenError(
            "demo state file is unreadable",
            path=path,
            hint="pass --force to start over, or choose another --out",
        ) from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise LapgenError(
            "demo state file is from another lapgen version",
            path=path,
            hint="pass --force to start over, or choose another --out",
        )
    return state


def _write_state(out: Path, state: dict[str, Any]) -> None:
    from lapgen.outputs import atomic_file

    with atomic_file(out / STATE_FILE, "w") as fh:
        fh.write(json.dumps(state, indent=1, default=str) + "\n")


def open_output(config: DemoConfig) -> tuple[dict[str, Any], bool]:
    """Check `out` (one-line errors before any work) -> (state, resumed). Never deletes a non-demo folder."""
    from lapgen.outputs import check_writable_parent

    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise LapgenError("--out exists and is not a folder", path=out, hint="choose another --out")
    check_writable_parent(out / STATE_FILE if out.is_dir() else out)
    state = _read_state(out) if out.is_dir() else None
    if out.is_dir() and state is None and any(out.iterdir()):
        raise LapgenError(
            "--out is a non-empty folder that holds no lapgen demo",
            path=out,
            hint="choose a new or empty folder (the demo never deletes other files)",
        )
    if state is not None and config.force:
        shutil.rmtree(out)
        state = None
    if state is not None and state.get("settings") != config.settings():
        old = state.get("settings", {})
        raise LapgenError(
            f"--out holds a demo run with other settings (seed {old.get('seed')}, quick {old.get('quick')}, "
            f"motion {old.get('motion', False)})",
            path=out,
            hint="pass the same --seed/--quick/--motion to resume, --force to start over, or another --out",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LapgenError(
            f"cannot create the demo folder ({exc.strerror})",
            path=out,
            hint="choose another --out or fix the folder's permissions",
        ) from exc
    resumed = state is not None
    if state is None:
        state = {"version": STATE_VERSION, "settings": config.settings(), "done": {}, "facts": {}}
        _write_state(out, state)
    return state, resumed


StepCallback = Callable[[int, int, Step, list[str], str], None]  # (index, total, step, commands, event)


def run_demo(config: DemoConfig, *, on_event: StepCallback | None = None) -> DemoResult:
    """Run (or resume) the demo. `on_event(i, n, step, commands, event)` with event start|skip|done."""
    from lapgen.demo.summary import compare

    if config.seed < 0:
        raise LapgenError(f"--seed must be >= 0 (got {config.seed})")
    state, _resumed = open_output(config)
    out = Path(config.out)
    ctx = Context(
        out=out.absolute(),
        seed=config.seed,
        sizes=config.resolved_sizes(),
        device=config.device,
        facts=dict(state.get("facts", {})),
        motion=config.motion,
    )
    ctx.facts["set_defaults"] = config.set_defaults
    ctx.facts["quick"] = config.quick
    timings: dict[str, float] = {}
    skipped: list[str] = []
    started = time.perf_counter()
    rerun = False  # once a step runs again, every later step does too (its inputs may have changed)
    steps = [step for step in STEPS if step.active(ctx)]
    for i, step in enumerate(steps, start=1):
        commands = step.commands(ctx)
        done = step.name in state["done"] and all(p.exists() for p in step.outputs(ctx))
        if done and not rerun and step.name != "registry":
            skipped.append(step.name)
            if on_event:
                on_event(i, len(steps), step, commands, "skip")
            continue
        if on_event:
            on_event(i, len(steps), step, commands, "start")
        rerun = True
        state["done"].pop(step.name, None)
        t0 = time.perf_counter()
        facts = step.run(ctx) or {}
        timings[step.name] = time.perf_counter() - t0
        ctx.facts.update(facts)
        state["done"][step.name] = {"seconds": round(timings[step.name], 2)}
        state["facts"] = {k: v for k, v in ctx.facts.items() if k not in ("set_defaults", "quick")}
        _write_state(out, state)
        if on_event:
            on_event(i, len(steps), step, commands, "done")
    facts = {k: v for k, v in ctx.facts.items() if k != "set_defaults"}
    summary = compare(json.loads((out / "report.json").read_text()), facts)
    state["summary"] = summary
    _write_state(out, state)
    video = out / "video" / "clip.mp4"
    return DemoResult(
        out=out,
        video=video,
        side_by_side=out / "video" / "clip_side_by_side.mp4",
        gif=out / "video" / "clip.gif",
        strip=out / "video" / "strip.png",
        report=out / "report.md",
        summary=summary,
        timings=timings,
        skipped=skipped,
        facts=state["facts"],
        seconds=time.perf_counter() - started,
        animatediff=out / "video" / "animatediff.mp4" if config.motion else None,
        animatediff_strip=out / "video" / "strip_animatediff.png" if config.motion else None,
    )


__all__ = ["FULL", "NAMES", "QUICK", "STEPS", "DemoConfig", "DemoResult", "open_output", "run_demo"]
