"""Benchmark: `lapgen prepare` vs the ffmpeg command a user would write, on Cholec80-format videos.

Synthetic Cholec80 videos at the real resolution (854x480, 25 fps, H.264 by x264 `veryfast`, several
minutes in total) are turned into 128x128 PNGs at 1 fps by
  (a) lapgen.data.prepare.prepare(...) with --workers W, and
  (b) `ffmpeg -i videoNN.mp4 -vf fps=1,scale=128:128 out_%06d.png`, one process per video, W at a time,
in the same run, alternating, each `--repeats` times; the best time of each is kept. Prints frames per
second of both and `RESULT prepare_vs_ffmpeg ratio=<lapgen fps / ffmpeg fps> goal>=1.0` (or a `SKIP` line
when ffmpeg is not installed).

Usage: python benchmarks/prepare_vs_ffmpeg.py [--videos 4] [--seconds 60] [--workers N] [--workdir DIR]
       [--quick]  (2 videos of 20 s, one repeat: a smoke run)
The synthetic videos are cached in --workdir (default: a temporary folder) so re-runs skip generation.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lapgen.data import synthetic, vocab
from lapgen.data.prepare import PrepareConfig, available_cores, prepare
from lapgen.progress import set_quiet


def make_videos(root: Path, videos: int, seconds: int) -> Path:
    ids = tuple(vocab.CHOLEC80_ONLY_VIDEOS[:videos])
    done = root / f".done-{videos}-{seconds}"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)
        print(f"writing {videos} synthetic 854x480 videos of {seconds} s ...", file=sys.stderr)
        synthetic.write_cholec80(root, videos=ids, num_frames=seconds * vocab.CHOLEC80_FPS, size=(854, 480))
        done.write_text("ok")
    return root


def run_lapgen(c80: Path, out: Path, workers: int, skip: bool = True) -> tuple[float, int]:
    from lapgen.data import video

    video.SKIP_UNREFERENCED = skip  # inherited by the forked workers
    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    result = prepare(PrepareConfig(out=out, cholec80=c80, size=128, workers=workers))
    return time.perf_counter() - t, result.records


def run_ffmpeg(ffmpeg: str, c80: Path, out: Path, workers: int) -> tuple[float, int]:
    if out.exists():
        shutil.rmtree(out)
    mp4s = sorted((c80 / "videos").glob("*.mp4"))

    def one(mp4: Path) -> None:
        dest = out / mp4.stem
        dest.mkdir(parents=True)
        subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(mp4), "-vf", "fps=1,scale=128:128",
                        str(dest / "out_%06d.png")], check=True)

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, mp4s))
    return time.perf_counter() - t, len(list(out.rglob("*.png")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=60, help="length of each video")
    ap.add_argument("--workers", type=int, default=0, help="parallelism of both sides (0 = all cores)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 videos of 20 s, one repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.repeats = 2, 20, 1
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("SKIP prepare_vs_ffmpeg ffmpeg not found on PATH (install it, e.g. `apt-get install ffmpeg`)")
        return 0
    set_quiet(True)
    workers = args.workers or available_cores()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lapgen-bench-"))
    c80 = make_videos(work / "cholec80", args.videos, args.seconds)
    names = ("lapgen", "ffmpeg", "lapgen-no-skip")  # no-skip: decode every frame (isolates the skip's gain)
    best = dict.fromkeys(names, float("inf"))
    frames = {}
    for _ in range(args.repeats):
        for name in names:
            if name == "ffmpeg":
                t, n = run_ffmpeg(ffmpeg, c80, work / "out-ffmpeg", workers)
            else:
                t, n = run_lapgen(c80, work / "out-lapgen", workers, skip=name == "lapgen")
            best[name], frames[name] = min(best[name], t), n
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    total = args.videos * args.seconds
    print(f"{args.videos} videos x {args.seconds} s at 854x480 25 fps ({total * 25} frames decoded), "
          f"workers={workers}, {version}")
    for name in names:
        print(f"{name:15s} {best[name]:7.2f} s  {frames[name]:5d} frames  {frames[name] / best[name]:7.1f} frames/s")
    no_skip = (frames["lapgen-no-skip"] / best["lapgen-no-skip"]) / (frames["ffmpeg"] / best["ffmpeg"])
    print(f"lapgen without skipping unreferenced frames / ffmpeg: {no_skip:.2f}")
    ratio = (frames["lapgen"] / best["lapgen"]) / (frames["ffmpeg"] / best["ffmpeg"])
    print(f"RESULT prepare_vs_ffmpeg ratio={ratio:.2f} goal>=1.0")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
