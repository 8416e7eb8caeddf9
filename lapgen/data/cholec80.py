"""Reader of the Cholec80 release (Twinanda et al. 2017, CAMMA; docs/data-formats.md): `videos/videoNN.mp4` (25 fps),
`phase_annotations/videoNN-phase.txt` (one row per frame) and `tool_annotations/videoNN-tool.txt` (one row
every 25 frames).

Files are split on any whitespace (`\\r\\n` accepted), rows are looked up by their `Frame` value (never
by position), tool columns by header name (never including `Frame`), and phases are mapped to CholecT50
phases by name. Annotations that reach past the video's last frame are an error; a phase file that ends
more than a second before the video does is a warning (its tail has no labels, so it is not used).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lapgen.data import vocab
from lapgen.data.release import per_video_files, select_videos
from lapgen.errors import LapgenError

_VIDEO_RE = re.compile(r"^video(\d+)$")


@dataclass
class C80Sample:
    """One annotated 1 fps sample: C-index `frame` (= 25 * T-index), tools present, Cholec80 phase name."""

    frame: int
    tools: list[str]  # lower-cased column names in column order (grasper ... specimenbag)
    phase_name: str

    @property
    def phase(self) -> int:
        """CholecT50 phase id."""
        return vocab.PHASES.index(vocab.CHOLEC80_PHASES[self.phase_name])


@dataclass
class C80Video:
    video: int
    mp4: Path
    num_frames: int  # frames in the video (container count)
    fps: float
    samples: list[C80Sample]
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return vocab.c80_video_name(self.video)


def _rows(path: Path, kind: str) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise LapgenError(f"{kind} annotation file not found", path=path,
                          hint=f"every video needs its {kind} file in the Cholec80 release layout")
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError as exc:
        raise LapgenError(f"{kind} annotation file is not text", path=path, hint="re-download it") from exc
    if not lines or not lines[0] or lines[0][0] != "Frame":
        raise LapgenError(f"{kind} annotation file has no `Frame ...` header line", path=path,
                          hint="expected the tab-separated Cholec80 format (docs/data-formats.md, 'Cholec80')")
    return lines[0], lines[1:]


def _frame(value: str, path: Path, n: int) -> int:
    try:
        frame = int(value)
    except ValueError:
        raise LapgenError(f"row {n}: frame {value!r} is not an integer", path=path, hint="re-download it") from None
    if frame < 0:
        raise LapgenError(f"row {n}: negative frame {frame}", path=path, hint="re-download it")
    return frame


def read_phase_file(path: str | Path) -> dict[int, str]:
    """{C-index: Cholec80 phase name}; unknown phase names are an error."""
    path = Path(path)
    header, rows = _rows(path, "phase")
    out: dict[int, str] = {}
    for n, row in enumerate(rows, start=2):
        if len(row) != 2:
            raise LapgenError(f"row {n}: expected `Frame Phase`, got {' '.join(row)!r}", path=path,
                              hint="re-download the phase file")
        if row[1] not in vocab.CHOLEC80_PHASES:
            raise LapgenError(f"row {n}: unknown phase {row[1]!r}", path=path,
                              hint="valid: " + ", ".join(vocab.CHOLEC80_PHASES))
        out[_frame(row[0], path, n)] = row[1]
    if not out:
        raise LapgenError("phase file has no rows", path=path, hint="re-download it")
    return out


def read_tool_file(path: str | Path) -> dict[int, list[str]]:
    """{C-index: present tools as lower-cased names, in column order}; columns are found by header name."""
    path = Path(path)
    header, rows = _rows(path, "tool")
    columns = header[1:]
    missing = [t for t in vocab.CHOLEC80_TOOLS if t not in columns]
    if missing:
        raise LapgenError(f"tool file header lacks column(s) {', '.join(missing)}", path=path,
                          hint="expected Frame " + " ".join(vocab.CHOLEC80_TOOLS))
    index = [columns.index(t) + 1 for t in vocab.CHOLEC80_TOOLS]
    out: dict[int, list[str]] = {}
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise LapgenError(f"row {n}: expected {len(header)} columns, got {len(row)}", path=path,
                              hint="re-download the tool file")
        if any(row[i] not in ("0", "1") for i in index):
            raise LapgenError(f"row {n}: tool flags must be 0 or 1, got {' '.join(row[1:])!r}", path=path,
                              hint="re-download the tool file")
        out[_frame(row[0], path, n)] = [w for w, i in zip(vocab.CHOLEC80_TOOL_WORDS, index) if row[i] == "1"]
    if not out:
        raise LapgenError("tool file has no rows", path=path, hint="re-download it")
    return out


def video_files(root: str | Path) -> dict[int, Path]:
    """{video id: videos/videoNN.mp4} of the release at `root`; checks the layout."""
    return per_video_files(root, dataset="Cholec80", folder="videos", suffix=".mp4", name_re=_VIDEO_RE,
                           subfolders=("videos", "phase_annotations", "tool_annotations"),
                           expected="videoNN.mp4 files")


def read_video_annotations(root: str | Path, video: int, mp4: Path | None = None) -> C80Video:
    """Validate one video: its MP4 opens, its annotations parse and fit inside the video."""
    from lapgen.data.video import probe

    root = Path(root)
    mp4 = mp4 or root / "videos" / f"{vocab.c80_video_name(video)}.mp4"
    stem = mp4.stem
    phases = read_phase_file(root / "phase_annotations" / f"{stem}-phase.txt")
    tools = read_tool_file(root / "tool_annotations" / f"{stem}-tool.txt")
    info = probe(mp4)
    if info.frames <= 0:
        raise LapgenError("video has no frames", path=mp4, hint="re-download or re-encode it")
    warnings = []
    if abs(info.fps - vocab.CHOLEC80_FPS) > 0.5:
        warnings.append(f"{mp4.name}: {info.fps:g} fps, Cholec80 videos are {vocab.CHOLEC80_FPS} fps")
    last = max(max(phases), max(tools))
    if last >= info.frames:
        raise LapgenError(f"annotations reach frame {last} but the video has {info.frames} frames; the "
                          f"annotations do not match the video", path=mp4,
                          hint="re-download the video or its annotation files")
    if max(phases) < info.frames - 1 - vocab.CHOLEC80_FPS:  # more than a second of video without phase rows
        warnings.append(f"{stem}-phase.txt ends at frame {max(phases)} but the video has {info.frames} "
                        "frames (is it this video's file?); frames past the annotations are not used")
    samples = []
    for c in sorted(tools):
        if c % vocab.CHOLEC80_FPS:  # tool rows are every 25 frames; anything else cannot align with T-index
            warnings.append(f"{stem}-tool.txt: row for frame {c} is not a multiple of {vocab.CHOLEC80_FPS} (skipped)")
            continue
        if c not in phases:
            raise LapgenError(f"no phase for frame {c}", path=root / "phase_annotations" / f"{stem}-phase.txt",
                              hint="the phase file needs one row per frame")
        samples.append(C80Sample(frame=c, tools=tools[c], phase_name=phases[c]))
    return C80Video(video=video, mp4=mp4, num_frames=info.frames, fps=info.fps, samples=samples, warnings=warnings)


def read_cholec80(root: str | Path, videos: list[int] | None = None) -> list[C80Video]:
    """Read and validate the Cholec80 release at `root` (all videos, or the given ids)."""
    files = video_files(root)
    ids = select_videos(list(files), videos, what="mp4", path=Path(root) / "videos", name=vocab.c80_video_name)
    return [read_video_annotations(root, v, files[v]) for v in ids]
