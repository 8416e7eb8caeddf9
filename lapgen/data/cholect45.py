"""CholecT45 text format (`CAMMA-public/cholect45, README.md`; docs/data-formats.md): reader and writer.

    CholecT45/data/VIDxx/000000.png ...     1 fps frames (T-index, 6 digits)
    CholecT45/triplet/VIDxx.txt             T-index,b0..b99   (comma-separated 0/1, no header)
    CholecT45/instrument/VIDxx.txt          T-index,b0..b5
    CholecT45/verb/VIDxx.txt                T-index,b0..b9
    CholecT45/target/VIDxx.txt              T-index,b0..b14
    CholecT45/dict/{triplet,instrument,verb,target}.txt   `id:name` lines; dict/maps.txt `#`-headed CSV

No phase labels. Loaded with `ndmin=2` so a one-row file stays 2-D (the official loaders' `np.loadtxt`
with `dtype=np.int` fails on NumPy >= 1.24 and flattens one-row files). The writer is what the RDV
evaluation uses to store generated images as a fake video (the paper's `VID997`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lapgen.data import vocab
from lapgen.errors import LapgenError

LABEL_KINDS = {"triplet": vocab.NUM_TRIPLETS, "instrument": vocab.NUM_INSTRUMENTS, "verb": vocab.NUM_VERBS,
               "target": vocab.NUM_TARGETS}
_NAMES = {"triplet": vocab.TRIPLETS, "instrument": vocab.INSTRUMENTS, "verb": vocab.VERBS, "target": vocab.TARGETS}


@dataclass
class T45Frame:
    video: str
    frame: int
    path: Path
    triplets: list[int]
    instruments: list[int]
    verbs: list[int]
    targets: list[int]


def read_dict(path: str | Path) -> dict[int, str]:
    """`id:name` lines (split on the first `:`, whitespace stripped; `#` lines are comments)."""
    path = Path(path)
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, name = line.partition(":")
        if not sep or not key.strip().isdigit():
            raise LapgenError(f"line {n}: expected `id:name`, got {line!r}", path=path, hint="re-download dict/")
        out[int(key)] = name.strip()
    return out


def read_label_file(path: str | Path, kind: str) -> np.ndarray:
    """(N, 1 + classes) int array: column 0 = T-index, then 0/1 flags; validated."""
    path = Path(path)
    n_cls = LABEL_KINDS[kind]
    if not path.is_file():
        raise LapgenError(f"{kind} label file not found", path=path, hint="check the CholecT45 folder")
    try:
        arr = np.loadtxt(path, dtype=int, delimiter=",", ndmin=2)
    except ValueError as exc:
        raise LapgenError(f"not a comma-separated integer table ({exc})", path=path, hint="re-download it") from exc
    if arr.shape[1] != 1 + n_cls:
        raise LapgenError(f"expected {1 + n_cls} columns (index + {n_cls} {kind} flags), got {arr.shape[1]}",
                          path=path, hint="re-download it")
    if not np.isin(arr[:, 1:], (0, 1)).all():
        raise LapgenError("flags must be 0 or 1", path=path, hint="re-download it")
    return arr


def read_video(root: str | Path, video: str) -> list[T45Frame]:
    """All frames of one video (`VIDxx`) with their labels; the four label files must agree on frames."""
    root = Path(root)
    tables = {kind: read_label_file(root / kind / f"{video}.txt", kind) for kind in LABEL_KINDS}
    index = tables["triplet"][:, 0]
    for kind, arr in tables.items():
        if not np.array_equal(arr[:, 0], index):
            raise LapgenError(f"{kind}/{video}.txt lists other frames than triplet/{video}.txt",
                              path=root / kind / f"{video}.txt", hint="re-download the label files")
    frames = []
    for row, k in enumerate(index.tolist()):
        img = root / "data" / video / f"{k:06d}.png"
        if not img.is_file():
            raise LapgenError(f"frame {k} has labels but no PNG", path=img, hint="re-download the video's frames")
        ids = {kind: np.flatnonzero(arr[row, 1:]).tolist() for kind, arr in tables.items()}
        frames.append(T45Frame(video, k, img, ids["triplet"], ids["instrument"], ids["verb"], ids["target"]))
    return frames


def read_cholect45(root: str | Path, videos: list[str] | None = None) -> dict[str, list[T45Frame]]:
    """{`VIDxx`: frames} for the release at `root` (all videos with a triplet file, or the given names)."""
    root = Path(root)
    if not (root / "triplet").is_dir():
        raise LapgenError("CholecT45 folder has no triplet/ subfolder", path=root,
                          hint="pass the release root (data/, triplet/, instrument/, verb/, target/, dict/)")
    found = sorted(p.stem for p in (root / "triplet").glob("*.txt") if re.match(r"^VID\d+$", p.stem))
    names = videos if videos is not None else found
    missing = sorted(set(names) - set(found))
    if missing:
        raise LapgenError(f"no labels for {', '.join(missing)}", path=root / "triplet", hint="found: " + ", ".join(found))
    return {v: read_video(root, v) for v in names}


def write_dicts(root: str | Path) -> None:
    """dict/{triplet,instrument,verb,target}.txt (`id:name`) and dict/maps.txt (`#`-headed CSV)."""
    d = Path(root) / "dict"
    d.mkdir(parents=True, exist_ok=True)
    for kind, names in _NAMES.items():
        (d / f"{kind}.txt").write_text("".join(f"{k}:{name}\n" for k, name in enumerate(names)))
    (d / "maps.txt").write_text(vocab.maps_txt())


def write_video(root: str | Path, video: str, frames: list[tuple[int, np.ndarray | Path, list[int]]]) -> None:
    """Write one video: `frames` = (T-index, RGB array (H, W, 3) or PNG path, triplet ids). The
    instrument/verb/target files are derived from the triplets (the component maps of CholecT50's
    `label_mapping.txt`)."""
    from PIL import Image

    root = Path(root)
    (root / "data" / video).mkdir(parents=True, exist_ok=True)
    rows = {kind: [] for kind in LABEL_KINDS}
    for k, image, triplets in frames:
        dest = root / "data" / video / f"{k:06d}.png"
        if isinstance(image, (str, Path)):
            dest.write_bytes(Path(image).read_bytes())
        else:
            Image.fromarray(np.asarray(image, np.uint8)).save(dest)
        flags = {kind: [0] * n for kind, n in LABEL_KINDS.items()}
        for t in triplets:
            i, v, tg = vocab.TRIPLET_COMPONENTS[t]
            for kind, idx in (("triplet", t), ("instrument", i), ("verb", v), ("target", tg)):
                flags[kind][idx] = 1
        for kind in LABEL_KINDS:
            rows[kind].append(",".join(map(str, [k, *flags[kind]])))
    for kind in LABEL_KINDS:
        (root / kind).mkdir(parents=True, exist_ok=True)
        (root / kind / f"{video}.txt").write_text("\n".join(rows[kind]) + "\n")
