"""Reader of the CholecT50 release (`CAMMA-public/cholect50, docs/README-Format.md`): `videos/VIDxx/NNNNNN.png` + `labels/VIDxx.json`.

Validates what it reads and fails with one line naming the file: missing folders, invalid JSON, a wrong
schema, ids outside the vocabulary, phases that disagree inside a frame, annotated frames without a PNG.
Binarising follows the reader rules of section 1.2: fields 0 (triplet), 1 (instrument), 7 (verb),
8 (target) and 14 (phase), `-1` skipped, keys iterated as `sorted(int(k))`, empty lists skipped with a
warning; score and box fields are never read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lapgen.data import vocab
from lapgen.data.release import per_video_files, select_videos
from lapgen.errors import LapgenError

_VIDEO_RE = re.compile(r"^VID(\d+)$")
# (field index, name, number of classes) of the id fields lapgen reads.
_FIELDS = ((0, "triplet", vocab.NUM_TRIPLETS), (1, "instrument", vocab.NUM_INSTRUMENTS),
           (7, "verb", vocab.NUM_VERBS), (8, "target", vocab.NUM_TARGETS))
_VOCAB = {"triplet": vocab.TRIPLETS, "instrument": vocab.INSTRUMENTS, "verb": vocab.VERBS,
          "target": vocab.TARGETS, "phase": vocab.PHASES}


@dataclass
class T50Frame:
    """One annotated CholecT50 frame (T-index `frame`, 1 fps); id lists are sorted and unique."""

    video: int
    frame: int
    path: Path
    phase: int
    triplets: list[int]
    instruments: list[int]
    verbs: list[int]
    targets: list[int]


@dataclass
class T50Video:
    video: int
    labels_path: Path
    frames: list[T50Frame]
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return vocab.t50_video_name(self.video)


def find_videos(root: str | Path) -> list[int]:
    """Video ids with a label file under `root/labels`, ascending; checks the release layout."""
    return sorted(label_files(root))


def label_files(root: str | Path) -> dict[int, Path]:
    """{video id: labels/VIDxx.json} of the release at `root`; checks the layout."""
    return per_video_files(root, dataset="CholecT50", subfolders=("videos", "labels"), folder="labels",
                           suffix=".json", name_re=_VIDEO_RE, expected="VIDxx.json label files")


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise LapgenError("label file not found", path=path, hint="check the CholecT50 folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LapgenError(f"invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})", path=path,
                          hint="the label file is corrupt; re-download it") from exc
    except UnicodeDecodeError as exc:
        raise LapgenError("label file is not UTF-8 text", path=path, hint="re-download it") from exc
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), dict):
        raise LapgenError("label file has no `annotations` object", path=path,
                          hint="expected the CholecT50 label JSON (docs/data-formats.md, 'CholecT50')")
    return data


def _check_categories(data: dict, path: Path, warnings: list[str]) -> None:
    cats = data.get("categories")
    if cats is None:
        return
    if not isinstance(cats, dict):
        raise LapgenError("`categories` is not an object", path=path, hint="expected the CholecT50 label JSON")
    for kind, names in _VOCAB.items():
        table = cats.get(kind)
        if not isinstance(table, dict):
            continue
        for key, name in table.items():
            try:
                k = int(key)
            except (TypeError, ValueError):
                raise LapgenError(f"categories.{kind} has a non-integer id {key!r}", path=path,
                                  hint="expected string ids such as \"0\"") from None
            if not 0 <= k < len(names):
                raise LapgenError(f"unknown {kind} id {k} in categories (valid 0..{len(names) - 1})", path=path,
                                  hint="this is not a CholecT50 label file")
            if name != names[k]:
                warnings.append(f"{path.name}: categories.{kind}[{k}] is {name!r}, lapgen uses {names[k]!r}")


def read_labels(path: str | Path, *, frames_dir: str | Path | None = None) -> T50Video:
    """Parse and validate one `labels/VIDxx.json`; `frames_dir` (the video's PNG folder) is checked too."""
    path = Path(path)
    m = _VIDEO_RE.match(path.stem)
    if not m:
        raise LapgenError("label file name is not VIDxx.json", path=path, hint="keep the release's file names")
    video = int(m.group(1))
    data = _load_json(path)
    warnings: list[str] = []
    _check_categories(data, path, warnings)
    ann = data["annotations"]
    try:
        keys = sorted((int(k), k) for k in ann)
    except ValueError:
        raise LapgenError("annotation keys must be frame numbers", path=path,
                          hint="expected string T-indices \"0\", \"1\", ...") from None
    frames = []
    for k, key in keys:
        vectors = ann[key]
        where = f"frame {k}"
        if not isinstance(vectors, list):
            raise LapgenError(f"{where}: annotations must be a list of vectors", path=path, hint="re-download it")
        if not vectors:
            warnings.append(f"{path.name}: frame {k} has an empty annotation list (skipped)")
            continue
        sets: dict[str, set[int]] = {name: set() for _i, name, _n in _FIELDS}
        phases = set()
        for vec in vectors:
            if not isinstance(vec, list) or len(vec) < 15:
                raise LapgenError(f"{where}: every vector needs 15 fields, got {vec!r:.60}", path=path,
                                  hint="expected CholecT50 15-field vectors (docs/data-formats.md, 'CholecT50')")
            try:
                ids = [int(vec[i]) for i, _name, _n in _FIELDS] + [int(vec[14])]
            except (TypeError, ValueError):
                raise LapgenError(f"{where}: id fields must be numbers, got {vec!r:.60}", path=path,
                                  hint="re-download the label file") from None
            for (_i, name, n), value in zip(_FIELDS, ids):
                if value == -1:
                    continue
                if not 0 <= value < n:
                    raise LapgenError(f"{where}: unknown {name} id {value} (valid 0..{n - 1}, -1 = none)",
                                      path=path, hint="this is not a CholecT50 label file, or it is corrupt")
                sets[name].add(value)
            phases.add(ids[-1])
        if len(phases) != 1:
            raise LapgenError(f"{where}: vectors disagree on the phase ({sorted(phases)})", path=path,
                              hint="field 14 must be identical in every vector of a frame")
        phase = phases.pop()
        if not 0 <= phase < vocab.NUM_PHASES:
            raise LapgenError(f"{where}: unknown phase id {phase} (valid 0..{vocab.NUM_PHASES - 1})", path=path,
                              hint="field 14 must be a CholecT50 phase id")
        img = (Path(frames_dir) if frames_dir else path.parent.parent / "videos" / path.stem) / f"{k:06d}.png"
        frames.append(T50Frame(video=video, frame=k, path=img, phase=phase,
                               triplets=sorted(sets["triplet"]), instruments=sorted(sets["instrument"]),
                               verbs=sorted(sets["verb"]), targets=sorted(sets["target"])))
    if not frames:
        raise LapgenError("label file annotates no frame", path=path, hint="re-download it")
    n = data.get("num_frames")
    if isinstance(n, int) and n != len(keys):
        warnings.append(f"{path.name}: num_frames is {n} but {len(keys)} frames are annotated")
    if frames_dir is not None:
        _check_frames(Path(frames_dir), frames, path)
    return T50Video(video=video, labels_path=path, frames=frames, warnings=warnings)


def _check_frames(frames_dir: Path, frames: list[T50Frame], labels: Path) -> None:
    if not frames_dir.is_dir():
        raise LapgenError(f"frame folder for {labels.name} not found", path=frames_dir,
                          hint="every labels/VIDxx.json needs videos/VIDxx/ with its PNG frames")
    present = {p.name for p in frames_dir.iterdir()}
    missing = [f.frame for f in frames if f.path.name not in present]
    if missing:
        raise LapgenError(f"{len(missing)} annotated frame(s) have no PNG (first: {missing[0]:06d}.png); the "
                          f"labels do not match the video", path=frames_dir,
                          hint=f"re-download the video's frames or its label file {labels.name}")


def read_cholect50(root: str | Path, videos: list[int] | None = None) -> list[T50Video]:
    """Read and validate the CholecT50 release at `root` (all videos, or the given ids)."""
    root = Path(root)
    files = label_files(root)
    ids = select_videos(list(files), videos, what="labels", path=root / "labels", name=vocab.t50_video_name)
    return [read_labels(files[v], frames_dir=root / "videos" / files[v].stem) for v in ids]
