"""`lapgen prepare`: Cholec80 + CholecT50 -> the 128x128 text-image frames dataset (see lapgen.data.frames),
or with `clips=True` the clip dataset of short fixed-length clips (see lapgen.data.clips).

Steps: validate every input first (labels, annotation files, MP4 headers, output location), plan one job
per video, run the jobs in parallel worker processes (each decodes its video once, sequentially, keeping
Cholec80 frames with C-index % 25 == 0, i.e. the frame that carries the annotation), write each PNG
atomically into the staging folder `<out>.partial`, then write `metadata.jsonl`, the card, and rename the
folder into place. An interrupted run leaves only the staging folder; re-running with the same arguments
skips the PNGs already written and ends with the same bytes as an uninterrupted run.

Resize: Pillow's bilinear filter with its support scaled to the reduction (area-aware, i.e. antialiased),
aspect not kept (854x480 -> 128x128 like the paper). The paper uses `cv2.resize(INTER_LINEAR)`, which
samples only the 2x2 nearest source pixels and aliases at a 6.7x reduction.

Clip mode plans its clips with `lapgen.data.clips.plan_clips` and runs the same jobs (one per video, frames
decoded sequentially, each PNG written atomically, resumable), decoding every frame a clip needs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lapgen.data import clips as clips_mod
from lapgen.data import frames as frames_mod
from lapgen.data import prompts, vocab
from lapgen.errors import LapgenError

STATE_FILE = ".prepare-config.json"  # in the staging folder: the arguments a resumed run must match
PAPER_TEST_FRAMES, PAPER_SEED = 10_000, 42


@dataclass
class PrepareConfig:
    """Arguments of `lapgen prepare` (what changes the output; workers/overwrite do not)."""

    out: Path
    cholect50: Path | None = None
    cholec80: Path | None = None
    size: int = 128  # output images are size x size pixels
    split: str = "rdv"  # rdv | challenge | fold1..fold5 | paper | all
    prompt_format: str = prompts.DEFAULT_FORMAT  # paper | paper-calot (--normalize-phase-names)
    paper_test_frames: int = PAPER_TEST_FRAMES  # --split paper only
    seed: int = PAPER_SEED  # --split paper only
    workers: int = 0  # 0 = all cores
    overwrite: bool = False
    clips: bool = False  # write the clip dataset (lapgen.data.clips) instead of the frames dataset
    clip_frames: int = 16  # clip mode: frames per clip
    clip_fps: float = 8.0  # clip mode: frames per second of a clip
    clip_every: float | None = None  # clip mode: seconds from one clip's start to the next (None: back to back)


@dataclass
class Job:
    """One video's work: (frame index, destination relative to the dataset folder) pairs to write; an index
    may have several destinations (overlapping clips)."""

    source: str
    video: str
    src: str  # mp4 path (cholec80) or PNG folder (cholect50)
    frames: list[tuple[int, str]] = field(default_factory=list)
    step: int = vocab.CHOLEC80_FPS  # mp4: decode every step-th frame (every index in `frames` is a multiple)


@dataclass
class PrepareResult:
    out: Path
    records: int
    counts: list[dict]  # rows {source, split, phase, frames}
    warnings: list[str]
    skipped_videos: list[str]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------ planning

def _t50_records(root: Path, fmt: str, warnings: list[str]) -> tuple[list[dict], list[Job]]:
    from lapgen.data.cholect50 import read_cholect50

    records, jobs = [], []
    for vid in read_cholect50(root):
        warnings.extend(vid.warnings)
        job = Job("cholect50", vid.name, str(vid.frames[0].path.parent))
        for f in vid.frames:
            text, fallback = clips_mod.t50_prompt(f, fmt)
            if fallback:  # instruments without a triplet: the paper's prepare_cholect50.py fallback
                warnings.append(f"{vid.name} frame {f.frame}: instruments without a triplet")
            file_name = f"images/{vid.name}/{f.frame:06d}.png"
            records.append({"file_name": file_name, "text": text, "source": "cholect50", "video": vid.name,
                            "frame": f.frame, "split": None, "phase": f.phase,
                            "tools": [vocab.INSTRUMENTS[i] for i in f.instruments], "triplets": f.triplets,
                            "instruments": f.instruments, "verbs": f.verbs, "targets": f.targets})
            job.frames.append((f.frame, file_name))
        jobs.append(job)
    return records, jobs


def _c80_records(root: Path, fmt: str, warnings: list[str], skipped: list[str]) -> tuple[list[dict], list[Job]]:
    from lapgen.data.cholec80 import read_video_annotations, video_files

    files = video_files(root)
    keep = [v for v in sorted(files) if v in vocab.CHOLEC80_ONLY_VIDEOS]
    skipped.extend(files[v].stem for v in sorted(files) if v not in vocab.CHOLEC80_ONLY_VIDEOS)
    if not keep:
        raise LapgenError("none of the Cholec80 videos is Cholec80-only (all are also in CholecT50)",
                          path=root / "videos", hint="lapgen prepare uses only the 35 videos not in CholecT50; "
                          "see docs/prepare.md")
    records, jobs = [], []
    for v in keep:
        vid = read_video_annotations(root, v, files[v])
        warnings.extend(vid.warnings)
        job = Job("cholec80", vid.name, str(vid.mp4))
        for s in vid.samples:
            file_name = f"images/{vid.name}/{s.frame:06d}.png"
            text = prompts.tools_prompt(s.tools, s.phase, fmt)
            records.append({"file_name": file_name, "text": text, "source": "cholec80", "video": vid.name,
                            "frame": s.frame, "split": "train", "phase": s.phase, "tools": s.tools})
            job.frames.append((s.frame, file_name))
        jobs.append(job)
    return records, jobs


def assign_splits(records: list[dict], split: str, *, test_frames: int = PAPER_TEST_FRAMES,
                  seed: int = PAPER_SEED) -> None:
    """Set `split` of the CholecT50 records in place (Cholec80-only videos are always `train`)."""
    import numpy as np

    t50 = [r for r in records if r["source"] == "cholect50"]
    if split == "all":
        for r in t50:
            r["split"] = "train"
    elif split == "paper":  # frame-level: leaks videos across splits (the paper's protocol)
        order = sorted(range(len(t50)), key=lambda i: (t50[i]["video"], t50[i]["frame"]))
        n = min(test_frames, len(order))
        test = set(np.random.default_rng(seed).choice(len(order), size=n, replace=False).tolist())
        for pos, i in enumerate(order):
            t50[i]["split"] = "test" if pos in test else "train"
    else:
        table = vocab.video_split(split)
        where = {v: name for name, ids in table.items() for v in ids}
        for r in t50:
            vid = int(r["video"][3:])
            if vid not in where:
                raise LapgenError(f"video {r['video']} is not in the official CholecT50 split {split!r}",
                                  hint="use --split all or --split paper for non-official videos")
            r["split"] = where[vid]


# ------------------------------------------------------------------------------------------------- workers

_progress_queue = None


def _init_worker(queue) -> None:
    global _progress_queue
    _progress_queue = queue


def _tick(n: int) -> None:
    if _progress_queue is not None and n:
        _progress_queue.put(n)


PNG_COMPRESS_LEVEL = 1  # zlib level: lossless either way; 1 is ~2.5x faster than 6 for ~10% larger files


def save_resized(image, size: int, dest: Path) -> None:
    """Resize a PIL image to size x size RGB (antialiased bilinear) and write it as PNG atomically."""
    from PIL import Image

    if image.mode != "RGB":
        image = image.convert("RGB")
    small = image.resize((size, size), Image.BILINEAR, reducing_gap=None)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        small.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        os.replace(tmp, dest)
    except OSError as exc:  # disk full, quota, permissions: the output's fault, not the input's
        raise LapgenError(f"cannot write the output image ({exc.strerror or exc})", path=dest,
                          hint="free disk space or fix the output folder's permissions, then re-run to resume"
                          ) from exc


def run_job(job: Job, stage: str, size: int, tick=None) -> int:
    """Write the job's PNGs that are missing in `stage`; returns how many were written."""
    from PIL import Image

    tick = tick or _tick
    stage_p = Path(stage)
    todo: dict[int, list[Path]] = {}
    for idx, rel in job.frames:
        if not (stage_p / rel).exists():
            todo.setdefault(idx, []).append(stage_p / rel)
    pending = sum(len(d) for d in todo.values())
    tick(len(job.frames) - pending)
    if not todo:
        return 0
    for folder in {d.parent for dests in todo.values() for d in dests}:
        folder.mkdir(parents=True, exist_ok=True)
    if job.source == "cholect50":
        for idx, dests in todo.items():
            src = Path(job.src) / f"{idx:06d}.png"
            try:
                im = Image.open(src)
                im.load()
            except OSError as exc:
                raise LapgenError(f"cannot read frame ({exc})", path=src,
                                  hint="the PNG is corrupt or truncated; re-download the video's frames") from exc
            with im:
                for dest in dests:
                    save_resized(im, size, dest)
                    tick(1)
        return pending
    from lapgen.data.video import iter_indexed_frames

    last = max(todo)
    written = 0
    for idx, image in iter_indexed_frames(job.src, step=job.step, as_pil=True):
        for dest in todo.get(idx, ()):
            save_resized(image, size, dest)
            written += 1
            tick(1)
        if idx >= last:
            break
    if written < pending:
        missing = min(i for i, dests in todo.items() if not all(d.exists() for d in dests))
        raise LapgenError(f"video ends before annotated frame {missing}; the video is truncated or does not "
                          f"match its annotations", path=job.src, hint="re-download the video")
    return written


def run_jobs(jobs: list[Job], stage: Path, size: int, workers: int, total: int,
             label: str = "prepare frames") -> None:
    """Run `jobs` (in `workers` processes when > 1) with a progress bar of frames done."""
    import multiprocessing as mp

    from rich.progress import ProgressColumn
    from rich.text import Text

    from lapgen.progress import make_progress

    class RateColumn(ProgressColumn):
        def render(self, task):  # frames per second so far
            return Text(f"{task.speed:.1f} frames/s" if task.speed else "-- frames/s")

    progress = make_progress()
    progress.columns = (*progress.columns, RateColumn())
    if workers <= 1 or len(jobs) <= 1:
        with progress:
            task = progress.add_task(label, total=total)
            for job in jobs:
                run_job(job, str(stage), size, tick=lambda n: progress.advance(task, n))
        return
    # fork starts workers in milliseconds (spawn re-imports lapgen in each); the pool is filled before
    # the progress bar's refresh thread starts, so no thread exists when the workers fork.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    queue = ctx.Queue()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(queue,))
    try:
        pending: set[Future] = {pool.submit(run_job, job, str(stage), size) for job in jobs}
        with progress:
            task = progress.add_task(label, total=total)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    progress.advance(task, queue.get())
                for fut in done:
                    fut.result()  # re-raises a worker's LapgenError
            while not queue.empty():
                progress.advance(task, queue.get())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -------------------------------------------------------------------------------------------------- driver

def _validate_config(cfg: PrepareConfig) -> None:
    if cfg.cholect50 is None and cfg.cholec80 is None:
        raise LapgenError("nothing to prepare", hint="pass --cholect50 PATH and/or --cholec80 PATH")
    if not 8 <= cfg.size <= 4096:
        raise LapgenError(f"--size must be in 8..4096, got {cfg.size}")
    if cfg.split not in vocab.SPLIT_NAMES:
        raise LapgenError(f"unknown split {cfg.split!r}", hint="valid: " + ", ".join(vocab.SPLIT_NAMES))
    prompts.check_format(cfg.prompt_format)
    if cfg.workers < 0:
        raise LapgenError(f"--workers must be >= 0 (0 = all cores), got {cfg.workers}")
    if cfg.clips:
        clips_mod.ClipTiming(cfg.clip_frames, cfg.clip_fps, cfg.clip_every).check()
    else:
        changed = [flag for flag, value, default in (("--clip-frames", cfg.clip_frames, 16),
                                                     ("--clip-fps", cfg.clip_fps, 8.0),
                                                     ("--clip-every", cfg.clip_every, None)) if value != default]
        if changed:
            raise LapgenError(f"{changed[0]} applies to clip mode only", hint="add --clips, or drop it")
    if Path(cfg.out).exists() and not cfg.overwrite:
        raise LapgenError("output already exists", path=cfg.out, hint="pass --overwrite or choose another --out")


def _fingerprint(cfg: PrepareConfig) -> dict:
    d = {k: (str(Path(v).resolve()) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    for k in ("workers", "overwrite", "out"):
        d.pop(k)
    if not cfg.clips:  # the frames dataset's fingerprint as before clip mode existed (resumes stay valid)
        for k in ("clips", "clip_frames", "clip_fps", "clip_every"):
            d.pop(k)
    return d


def summary_rows(records: list[dict], unit: str = "frames") -> list[dict]:
    """Frames (or clips, with `unit="clips"`) by (source, split, phase name), sorted."""
    c = Counter((r["source"], r["split"], r["phase"]) for r in records)
    return [{"source": s, "split": sp, "phase": vocab.PHASES[p], unit: n}
            for (s, sp, p), n in sorted(c.items(), key=lambda kv: (kv[0][0], frames_mod.SPLITS.index(kv[0][1]),
                                                                   kv[0][2]))]


def prepare(cfg: PrepareConfig) -> PrepareResult:
    """Build the frames dataset (or with `cfg.clips` the clip dataset) described by `cfg` at `cfg.out`."""
    from lapgen.cards import make_card, write_card
    from lapgen.outputs import file_sha256, finalize_output_dir

    cfg.out = Path(cfg.out)
    _validate_config(cfg)
    if cfg.clips:
        return _prepare_clips(cfg)
    warnings: list[str] = []
    skipped: list[str] = []
    records: list[dict] = []
    jobs: list[Job] = []
    inputs: dict = {}
    if cfg.cholect50 is not None:
        r, j = _t50_records(Path(cfg.cholect50), cfg.prompt_format, warnings)
        records += r
        jobs += j
        inputs["cholect50"] = {"path": str(Path(cfg.cholect50).resolve()),
                               "labels_sha256": {Path(p.src).name: file_sha256(Path(cfg.cholect50) / "labels" /
                                                 f"{Path(p.src).name}.json") for p in j}}
    if cfg.cholec80 is not None:
        r, j = _c80_records(Path(cfg.cholec80), cfg.prompt_format, warnings, skipped)
        records += r
        jobs += j
        inputs["cholec80"] = {"path": str(Path(cfg.cholec80).resolve()), "videos": [p.video for p in j],
                              "skipped_shared_videos": skipped}
    assign_splits(records, cfg.split, test_frames=cfg.paper_test_frames, seed=cfg.seed)

    stage = _staging(cfg)
    workers = cfg.workers or available_cores()
    jobs.sort(key=lambda j: -len(j.frames))  # longest first: better load balance
    run_jobs(jobs, stage, cfg.size, min(workers, len(jobs)), total=len(records))

    frames_mod.write_records(stage, records)
    rows = summary_rows(records)
    card = make_card(
        frames_mod.CARD_KIND, config={k: v for k, v in asdict(cfg).items() if k not in ("overwrite",)},
        inputs=inputs, size=[cfg.size, cfg.size], prompt_format=cfg.prompt_format, split=cfg.split,
        resize="Pillow bilinear, antialiased (support scaled to the reduction); aspect not kept",
        records=len(records), counts=rows, warnings=warnings[:200], num_warnings=len(warnings),
    )
    write_card(stage, card)
    finalize_output_dir(cfg.out)
    (cfg.out / STATE_FILE).unlink(missing_ok=True)
    return PrepareResult(out=cfg.out, records=len(records), counts=rows, warnings=warnings, skipped_videos=skipped)


def _staging(cfg: PrepareConfig) -> Path:
    """The staging folder `<out>.partial`, kept from an interrupted run with the same arguments (resume)."""
    from lapgen.outputs import prepare_output_dir
    from lapgen.progress import notice

    stage = prepare_output_dir(cfg.out, overwrite=cfg.overwrite, resume=True)
    state = stage / STATE_FILE
    fingerprint = _fingerprint(cfg)
    if state.exists() and json.loads(state.read_text()) != fingerprint:
        notice(f"{stage} holds an interrupted run with other arguments; starting over")
        shutil.rmtree(stage)
        stage.mkdir(parents=True)
    elif not state.exists() and any(stage.iterdir()):
        shutil.rmtree(stage)
        stage.mkdir(parents=True)
    state.write_text(json.dumps(fingerprint, sort_keys=True))
    for tmp in stage.rglob(".*.tmp"):  # PNGs a killed run was writing (never renamed into place)
        tmp.unlink()
    return stage


def _prepare_clips(cfg: PrepareConfig) -> PrepareResult:
    """Clip mode of `prepare`: plan the clips, decode and write their frames (resumable), then the metadata."""
    from lapgen.cards import make_card, write_card
    from lapgen.outputs import finalize_output_dir

    timing = clips_mod.ClipTiming(cfg.clip_frames, cfg.clip_fps, cfg.clip_every)
    plan = clips_mod.plan_clips(cholect50=cfg.cholect50, cholec80=cfg.cholec80, timing=timing,
                                fmt=cfg.prompt_format, split=cfg.split)
    jobs = [Job(source, video, src, frames, step) for source, video, src, frames, step in plan.jobs]
    stage = _staging(cfg)
    workers = cfg.workers or available_cores()
    jobs.sort(key=lambda j: -len(j.frames))
    total = sum(len(j.frames) for j in jobs)
    run_jobs(jobs, stage, cfg.size, min(workers, len(jobs)), total=total, label="prepare clips")
    clips_mod.write_clips(stage, plan.records)
    rows = summary_rows(plan.records, unit="clips")
    card = make_card(
        clips_mod.CARD_KIND, config={k: v for k, v in asdict(cfg).items() if k not in ("overwrite",)},
        inputs=plan.inputs, size=[cfg.size, cfg.size], prompt_format=cfg.prompt_format, split=cfg.split,
        clip_frames=cfg.clip_frames, clip_fps=cfg.clip_fps, clip_every=cfg.clip_every,
        resize="Pillow bilinear, antialiased (support scaled to the reduction); aspect not kept",
        records=len(plan.records), frames=total, counts=rows, warnings=plan.warnings[:200],
        num_warnings=len(plan.warnings), skipped_videos=plan.skipped_videos,
    )
    write_card(stage, card)
    finalize_output_dir(cfg.out)
    (cfg.out / STATE_FILE).unlink(missing_ok=True)
    return PrepareResult(out=cfg.out, records=len(plan.records), counts=rows, warnings=plan.warnings,
                         skipped_videos=plan.skipped_videos)
