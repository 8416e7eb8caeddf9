"""Layout checks shared by the readers of released datasets (Cholec80, CholecT50): the release root and its
subfolders exist, one file per video is found by name, and a requested list of videos is present."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from lapgen.errors import LapgenError


def _listing(subfolders: Sequence[str]) -> str:
    names = [f"{s}/" for s in subfolders]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def per_video_files(root: str | Path, *, dataset: str, subfolders: Sequence[str], folder: str, suffix: str,
                    name_re: re.Pattern[str], expected: str) -> dict[int, Path]:
    """{video id: `root/folder/<name><suffix>`} for the names `name_re` matches (its group 1 is the id).

    `root` and every one of `subfolders` must be folders and at least one file must match; `expected`
    names the files in the error (e.g. `videoNN.mp4 files`)."""
    root = Path(root)
    holding = f"the folder holding {_listing(subfolders)}"
    if not root.is_dir():
        raise LapgenError(f"{dataset} folder not found", path=root, hint=f"pass {holding}")
    for sub in subfolders:
        if not (root / sub).is_dir():
            raise LapgenError(f"{dataset} folder has no {sub}/ subfolder", path=root,
                              hint=f"pass the release root ({holding})")
    files = {}
    for p in (root / folder).glob(f"*{suffix}"):
        m = name_re.match(p.stem)
        if m:
            files[int(m.group(1))] = p
    if not files:
        raise LapgenError(f"no {expected} in {folder}/", path=root / folder,
                          hint=f"pass the {dataset} release root")
    return files


def select_videos(found: Sequence[int], videos: Sequence[int] | None, *, what: str, path: Path,
                  name: Callable[[int], str]) -> list[int]:
    """The sorted video ids to read: all of `found`, or the requested `videos` (each must be found)."""
    ids = sorted(found)
    if videos is None:
        return ids
    unknown = sorted(set(videos) - set(ids))
    if unknown:
        raise LapgenError(f"no {what} for video(s) {', '.join(map(name, unknown))}", path=path,
                          hint="found: " + ", ".join(map(name, ids)))
    return sorted(set(videos))
