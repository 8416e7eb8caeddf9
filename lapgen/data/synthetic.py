"""Synthetic Cholec datasets in the exact real on-disk layouts of docs/data-formats.md (tests, demo).

- `write_cholect50`: `videos/VIDxx/NNNNNN.png` (1 fps) + `labels/VIDxx.json` (15-field vectors, full
  categories) + `label_mapping.txt`; covers the edge cases docs/data-formats.md lists.
- `write_cholec80`: `videos/videoNN.mp4` (25 fps H.264 via PyAV), per-frame phase files, every-25 tool files.
- `write_cholecseg8k`: `videoNN/videoNN_XXXXX/frame_N_endo{,_mask,_color_mask,_watershed_mask}.png`.
- `write_artnet`: the ART-Net release layout (positives, `_Tool_Mask`, `_TipPoint`, negatives).

Frames come from `synthetic_render`: tissue texture plus metallic instruments drawn exactly where the
labels say; the masks cover the drawn tools exactly. Everything is deterministic in `seed`; sizes are
(width, height) in pixels (the real datasets are 854x480; pass it for realistic sizes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from lapgen.data import vocab
from lapgen.data.synthetic_render import (
    TOOL_NAMES, _rng, draw_tools, render_frame, solid_color_regions, tool_pose, vignette,
)
from lapgen.data.video import write_mp4

DEFAULT_SIZE = (128, 72)  # (width, height); the real frames are 854x480

# --------------------------------------------------------------------------------------------- CholecT50

# Edge-case frames (docs/data-formats.md, CholecT50) at the start of every video with >= 8 frames:
# T-index -> triplet ids (None = an empty annotation list).
_T50_FIXTURE: dict[int, list[int] | None] = {
    0: [],  # no triplet: one vector, -1 except the phase
    1: [94],  # null triplet: "grasper in <phase>"
    2: [17, 17],  # duplicate instances
    3: [60, 17],  # two triplets in descending JSON order
    4: None,  # an empty list (readers skip it with a warning)
}


def t50_phase(k: int, num_frames: int) -> int:
    """CholecT50 phase id of frame k in a synthetic video: the 7 phases in order, equal lengths."""
    return min(vocab.NUM_PHASES - 1, k * vocab.NUM_PHASES // max(num_frames, 1))


def cholect50_annotations(video: int, num_frames: int, seed: int = 0) -> dict[int, list[list[float]]]:
    """The synthetic label vectors of one video: T-index -> list of 15-field vectors (section 1.2)."""
    rng = _rng(seed, video, 50)
    out: dict[int, list[list[float]]] = {}
    for k in range(num_frames):
        phase = t50_phase(k, num_frames)
        if num_frames >= 8 and k in _T50_FIXTURE:
            ids = _T50_FIXTURE[k]
        else:
            n = int(rng.choice([0, 1, 1, 2, 2, 3]))
            ids, used = [], set()
            for t in rng.permutation(vocab.NUM_TRIPLETS):
                i = vocab.TRIPLET_COMPONENTS[int(t)][0]
                if len(ids) < n and i not in used:  # one triplet per instrument, like most real frames
                    ids.append(int(t))
                    used.add(i)
        if ids is None:
            out[k] = []
        elif not ids:
            out[k] = [[-1] * 14 + [phase]]
        else:
            out[k] = []
            for t in ids:
                i, v, tg = vocab.TRIPLET_COMPONENTS[t]
                out[k].append([t, i, 1.0, -1, -1, -1, -1, v, tg, 1.0, -1, -1, -1, -1, phase])
    return out


def _t50_tools(vectors: list[list[float]]) -> list[str]:
    tools = sorted({int(v[1]) for v in vectors if int(v[1]) >= 0})
    names = [vocab.INSTRUMENTS[i] for i in tools]
    if any(int(v[8]) == vocab.TARGETS.index("specimen_bag") for v in vectors):
        names.append("specimenbag")
    return names


def cholect50_frame(video: int, frame: int, *, num_frames: int = 12, size: tuple[int, int] = DEFAULT_SIZE,
                    seed: int = 0, tool_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb (H, W, 3) uint8, tool mask (H, W) uint8 0/255) of a synthetic CholecT50 frame.

    Same arguments as `write_cholect50` give the same pixels as the written PNG: the ground-truth tool
    mask of every synthetic frame (union of the drawn instruments).
    """
    vectors = cholect50_annotations(video, num_frames, seed)[frame]
    return render_frame(seed, video, float(frame), _t50_tools(vectors), *size, tool_scale=tool_scale)


def cholect50_labels_json(video: int, num_frames: int, seed: int = 0) -> dict:
    """The label JSON object of one synthetic CholecT50 video (section 1.2 schema, full categories)."""
    cats = {
        "triplet": {str(k): name for k, name in enumerate(vocab.TRIPLETS)},
        "instrument": {str(k): name for k, name in enumerate(vocab.INSTRUMENTS)},
        "verb": {str(k): name for k, name in enumerate(vocab.VERBS)},
        "target": {str(k): name for k, name in enumerate(vocab.TARGETS)},
        "phase": {str(k): name for k, name in enumerate(vocab.PHASES)},
    }
    ann = cholect50_annotations(video, num_frames, seed)
    return {"video": video, "fps": 1, "num_frames": num_frames, "categories": cats,
            "annotations": {str(k): v for k, v in ann.items()},
            "info": "synthetic CholecT50-format data written by lapgen", "licenses": "synthetic"}


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def write_cholect50(root: str | Path, *, videos: tuple[int, ...] = (1, 103), num_frames: int = 12,
                    size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                    masks_dir: str | Path | None = None, tool_scale: float = 1.0) -> Path:
    """Write a synthetic CholecT50 release under `root` (section 1.1 layout); returns `root`.

    `num_frames` frames per video at 1 fps; `size` = (width, height). With `masks_dir`, the ground-truth
    tool masks are written too, OUTSIDE the dataset, as `masks_dir/VIDxx/NNNNNN.png` (0/255, same size).
    `tool_scale` multiplies the drawn tools' thickness (`synthetic_render.draw_tool`), here and in every writer.
    """
    root = Path(root)
    for video in videos:
        name = vocab.t50_video_name(video)
        for k in range(num_frames):
            rgb, mask = cholect50_frame(video, k, num_frames=num_frames, size=size, seed=seed,
                                        tool_scale=tool_scale)
            _save_png(rgb, root / "videos" / name / f"{k:06d}.png")
            if masks_dir is not None:
                _save_png(mask, Path(masks_dir) / name / f"{k:06d}.png")
        labels = root / "labels" / f"{name}.json"
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_text(json.dumps(cholect50_labels_json(video, num_frames, seed)))
    (root / "label_mapping.txt").write_text(vocab.maps_txt())
    (root / "README.md").write_text("Synthetic CholecT50-format data written by lapgen (not surgical data).\n")
    (root / "LICENSE").write_text("Synthetic data; no restrictions.\n")
    return root


# ---------------------------------------------------------------------------------------------- Cholec80

_C80_PHASE_NAMES = tuple(vocab.CHOLEC80_PHASES)  # Preparation ... GallbladderRetraction (file spelling)


def cholec80_annotations(video: int, num_frames: int, seed: int = 0) -> tuple[list[str], dict[int, list[int]]]:
    """Synthetic Cholec80 labels: (phase name per frame, {C-index 25k: 7 tool flags in column order})."""
    rng = _rng(seed, video, 80)
    weights = rng.uniform(0.5, 1.5, len(_C80_PHASE_NAMES))
    bounds = np.floor(np.cumsum(weights) / weights.sum() * num_frames).astype(int)
    phases = [_C80_PHASE_NAMES[int(np.searchsorted(bounds, c, side="right"))] for c in range(num_frames)]
    tools: dict[int, list[int]] = {}
    for row, c in enumerate(range(0, num_frames, vocab.CHOLEC80_FPS)):
        flags = [int(x) for x in rng.random(7) < (0.55, 0.12, 0.35, 0.1, 0.1, 0.12, 0.0)]
        if phases[c] in ("GallbladderPackaging", "GallbladderRetraction"):
            flags[6] = int(rng.random() < 0.6)
        if row == 0:
            flags = [0] * 7  # no tool: the prompt is the phase alone
        elif row == 1:
            flags = [1, 0, 1, 0, 0, 0, 0]  # grasper and hook
        tools[c] = flags
    return phases, tools


def cholec80_frame(video: int, c_index: int, *, num_frames: int = 110, size: tuple[int, int] = DEFAULT_SIZE,
                   seed: int = 0, tool_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, tool mask) of synthetic Cholec80 frame `c_index` before encoding (the MP4 is lossy)."""
    _phases, tools = cholec80_annotations(video, num_frames, seed)
    flags = tools[c_index - c_index % vocab.CHOLEC80_FPS]
    names = [w for w, f in zip(vocab.CHOLEC80_TOOL_WORDS, flags) if f]  # renderer tool names
    return render_frame(seed, video, c_index / vocab.CHOLEC80_FPS, names, *size, tool_scale=tool_scale)


def write_cholec80(root: str | Path, *, videos: tuple[int, ...] = (3, 1), num_frames: int = 110,
                   size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0, crf: int = 18,
                   preset: str = "veryfast", tool_scale: float = 1.0) -> Path:
    """Write a synthetic Cholec80 release under `root` (section 2 layout); returns `root`.

    Default videos: 03 (Cholec80 only) and 01 (also in CholecT50). `num_frames` frames per video at
    25 fps (110 = 4.4 s: tool rows at 0, 25, 50, 75, 100). Width and height must be even (H.264).
    """
    root = Path(root)
    for video in videos:
        name = vocab.c80_video_name(video)
        phases, tools = cholec80_annotations(video, num_frames, seed)
        frames = (cholec80_frame(video, c, num_frames=num_frames, size=size, seed=seed, tool_scale=tool_scale)[0]
                  for c in range(num_frames))
        write_mp4(frames, root / "videos" / f"{name}.mp4", fps=vocab.CHOLEC80_FPS, crf=crf, preset=preset)
        (root / "phase_annotations").mkdir(parents=True, exist_ok=True)
        lines = ["Frame\tPhase"] + [f"{c}\t{p}" for c, p in enumerate(phases)]
        (root / "phase_annotations" / f"{name}-phase.txt").write_text("\n".join(lines) + "\n")
        (root / "tool_annotations").mkdir(parents=True, exist_ok=True)
        lines = ["Frame\t" + "\t".join(vocab.CHOLEC80_TOOLS)]
        lines += [f"{c}\t" + "\t".join(str(f) for f in flags) for c, flags in tools.items()]
        (root / "tool_annotations" / f"{name}-tool.txt").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------------------- CholecSeg8k

# CholecSeg8k's class table (docs/data-formats.md): id -> (name, watershed value, annotation colour RGB).
CHOLECSEG8K_CLASSES: dict[int, tuple[str, int, tuple[int, int, int]]] = {
    0: ("Black Background", 50, (127, 127, 127)), 1: ("Abdominal Wall", 11, (210, 140, 140)),
    2: ("Liver", 21, (255, 114, 114)), 3: ("Gastrointestinal Tract", 13, (231, 70, 156)),
    4: ("Fat", 12, (186, 183, 75)), 5: ("Grasper", 31, (170, 255, 0)),
    6: ("Connective Tissue", 23, (255, 85, 0)), 7: ("Blood", 24, (255, 0, 0)),
    8: ("Cystic Duct", 25, (255, 255, 0)), 9: ("L-hook Electrocautery", 32, (169, 255, 184)),
    10: ("Gallbladder", 22, (255, 160, 165)), 11: ("Hepatic Vein", 33, (0, 50, 128)),
    12: ("Liver Ligament", 5, (111, 74, 0)),
}
SEG8K_BORDER, SEG8K_UNANNOTATED = 255, 0  # watershed values of the image border / unannotated pixels
# Tissue classes drawn as background regions, with a plausible rendering colour (not the annotation colour).
_SEG_TISSUE = {1: (200, 150, 140), 2: (120, 35, 30), 3: (190, 120, 130), 4: (214, 175, 100),
               6: (205, 150, 130), 10: (120, 130, 70)}


def cholecseg8k_frame(video: int, frame: int, *, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                      tools: tuple[str, ...] = ("grasper", "hook"),
                      tool_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(endo rgb (H, W, 3) uint8, watershed codes (H, W) uint8) of a synthetic CholecSeg8k frame."""
    w, h = size
    classes = list(_SEG_TISSUE)
    region = solid_color_regions(seed, video, w, h, len(classes))  # (H, W) index into classes
    codes = np.array([CHOLECSEG8K_CLASSES[c][1] for c in classes], np.uint8)[region]
    shade = 0.8 + 0.35 * np.asarray(Image.fromarray(
        (_rng(seed, video, 9).random((max(2, h // 6), max(2, w // 6))) * 255).astype(np.uint8)).resize(
        (w, h), Image.BICUBIC), np.float32)[..., None] / 255
    rgb = np.clip(np.array([_SEG_TISSUE[c] for c in classes], np.float32)[region] * shade, 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    per_tool = draw_tools(img, seed, video, frame / vocab.CHOLEC80_FPS, list(tools), tool_scale)
    for name, value in (("grasper", 31), ("hook", 32)):
        if name in per_tool:
            codes[per_tool[name] > 0] = value
    rgb = vignette(np.asarray(img))
    b = max(1, w // 64)  # image border band, pixels
    rgb[:b], rgb[-b:], rgb[:, :b], rgb[:, -b:] = 0, 0, 0, 0
    codes[:b], codes[-b:], codes[:, :b], codes[:, -b:] = SEG8K_BORDER, SEG8K_BORDER, SEG8K_BORDER, SEG8K_BORDER
    uh, uw = max(2, h // 10), max(2, w // 10)  # an unannotated patch near the bottom-right corner
    patch = np.zeros((h, w), bool)
    patch[h - b - uh:h - b, w - b - uw:w - b] = True
    codes[patch & ~np.isin(codes, (31, 32))] = SEG8K_UNANNOTATED
    return rgb, codes


def write_cholecseg8k(root: str | Path, *, videos: tuple[int, ...] = (1,), clips_per_video: int = 1,
                      frames_per_clip: int = 80, size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0,
                      tool_scale: float = 1.0) -> Path:
    """Write a synthetic CholecSeg8k release under `root` (section 3 layout); returns `root`.

    Clip c of a video starts at C-index 80 * (1 + 2c); each frame gets `_endo`, `_endo_mask`,
    `_endo_color_mask` (annotation colours, white border and unannotated pixels) and
    `_endo_watershed_mask` (grey codes; the first frame of every clip is RGBA with alpha 255).
    Tools: grasper (31) and L-hook (32).
    """
    root = Path(root)
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = 255  # border (255) and unannotated (0) -> white
    for _cid, (_name, value, colour) in CHOLECSEG8K_CLASSES.items():
        lut[value] = colour
    for video in videos:
        for c in range(clips_per_video):
            start = 80 * (1 + 2 * c)
            clip = root / f"video{video:02d}" / f"video{video:02d}_{start:05d}"
            for n in range(start, start + frames_per_clip):
                rgb, codes = cholecseg8k_frame(video, n, size=size, seed=seed, tool_scale=tool_scale)
                _save_png(rgb, clip / f"frame_{n}_endo.png")
                ws = np.repeat(codes[..., None], 3, axis=2)
                if n == start:
                    ws = np.concatenate([ws, np.full_like(ws[..., :1], 255)], axis=2)
                _save_png(ws, clip / f"frame_{n}_endo_watershed_mask.png")
                _save_png(lut[codes], clip / f"frame_{n}_endo_color_mask.png")
                _save_png(np.repeat(codes[..., None], 3, axis=2) // 2, clip / f"frame_{n}_endo_mask.png")
    return root


# ----------------------------------------------------------------------------------------------- ART-Net

def artnet_sample(index: int, positive: bool, *, size: tuple[int, int] = DEFAULT_SIZE,
                  seed: int = 0, tool_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, tool mask 0/255, tip-point map uint8) of synthetic ART-Net image `index`."""
    rng = _rng(seed, index, 3)
    key = 5000 + index  # a texture of its own per image
    tools = []
    if positive:
        tools = [str(t) for t in rng.choice(vocab.INSTRUMENTS, size=int(rng.integers(1, 3)), replace=False)]
    t = float(rng.uniform(0, 60))
    rgb, per_tool = render_frame(seed, key, t, tools, *size, tool_masks=True, tool_scale=tool_scale)
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    tip_map = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for name, m in per_tool.items():
        mask |= m
        tx, ty = tool_pose(seed, key, TOOL_NAMES.index(name), t, w, h).tip
        sigma = max(1.0, w / 64)
        tip_map = np.maximum(tip_map, np.exp(-((xx - tx) ** 2 + (yy - ty) ** 2) / (2 * sigma**2)))
    return rgb, mask, (tip_map * 255).astype(np.uint8)


def write_artnet(root: str | Path, *, train: tuple[int, int] = (4, 4), test: tuple[int, int] = (2, 2),
                 size: tuple[int, int] = DEFAULT_SIZE, mask_size: tuple[int, int] | None = None,
                 seed: int = 0, tool_scale: float = 1.0) -> Path:
    """Write a synthetic ART-Net release under `root` (section 4 layout); returns `root`.

    `train` / `test` = (positives, negatives). Positives `Train/Train_Positive/Train_Pos_001.png` get
    `Train/Train_Positive_Tool_Mask/Train_Pos_001_Tool_Mask.png` (greyscale 0/255, resized NEAREST to
    `mask_size` when given) and a `_TipPoint` Gaussian map; negatives `Train/Train_Negative/Train_Neg_001.png`.
    """
    root = Path(root)
    index = 0
    for split, (n_pos, n_neg) in (("Train", train), ("Test", test)):
        for k in range(1, n_pos + 1):
            rgb, mask, tip = artnet_sample(index, True, size=size, seed=seed, tool_scale=tool_scale)
            index += 1
            stem = f"{split}_Pos_{k:03d}"
            _save_png(rgb, root / split / f"{split}_Positive" / f"{stem}.png")
            m = Image.fromarray(mask)
            if mask_size is not None:
                m = m.resize(mask_size, Image.NEAREST)
            (root / split / f"{split}_Positive_Tool_Mask").mkdir(parents=True, exist_ok=True)
            m.save(root / split / f"{split}_Positive_Tool_Mask" / f"{stem}_Tool_Mask.png")
            _save_png(tip, root / split / f"{split}_Positive_TipPoint" / f"{stem}_TipPoint.png")
        for k in range(1, n_neg + 1):
            rgb, _mask, _tip = artnet_sample(index, False, size=size, seed=seed, tool_scale=tool_scale)
            index += 1
            _save_png(rgb, root / split / f"{split}_Negative" / f"{split}_Neg_{k:03d}.png")
    return root


# --------------------------------------------------------------------------------------------- CholecT45

def write_cholect45(root: str | Path, *, videos: tuple[int, ...] = (1, 2), num_frames: int = 6,
                    size: tuple[int, int] = DEFAULT_SIZE, seed: int = 0) -> Path:
    """Write a synthetic CholecT45 release (the text format of docs/data-formats.md, CholecT45); returns `root`.

    Same frames and triplets as `write_cholect50` for the same arguments (empty-list frames get no
    triplet); no phase labels. The last video has a single frame, so its label files have one row.
    """
    from lapgen.data import cholect45

    root = Path(root)
    cholect45.write_dicts(root)
    for n_video, video in enumerate(videos):
        n = 1 if n_video == len(videos) - 1 and len(videos) > 1 else num_frames
        ann = cholect50_annotations(video, num_frames, seed)
        frames = []
        for k in range(n):
            rgb, _mask = cholect50_frame(video, k, num_frames=num_frames, size=size, seed=seed)
            frames.append((k, rgb, sorted({int(v[0]) for v in ann[k] if int(v[0]) >= 0})))
        cholect45.write_video(root, vocab.t50_video_name(video), frames)
    return root
