"""The Cholec vocabulary: CholecT50 dictionaries, the 100-triplet table, component maps, Cholec80 names,
and the official CholecT50 video lists and splits.

Sources: CAMMA-public/cholect50 (docs/README-Format.md, dataloader_pth.py, label_mapping.txt),
CAMMA-public/ivtmetrics (ivtmetrics/maps.txt), the paper's data_processing/prepare_cholec80.py.
Ids are 0-based; names are byte-exact dataset strings ("carlot" is the dataset's own spelling of Calot).
"""

from __future__ import annotations

from lapgen.errors import LapgenError

INSTRUMENTS: tuple[str, ...] = ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator")
VERBS: tuple[str, ...] = (
    "grasp", "retract", "dissect", "coagulate", "clip", "cut", "aspirate", "irrigate", "pack", "null_verb",
)
TARGETS: tuple[str, ...] = (
    "gallbladder", "cystic_plate", "cystic_duct", "cystic_artery", "cystic_pedicle", "blood_vessel", "fluid",
    "abdominal_wall_cavity", "liver", "adhesion", "omentum", "peritoneum", "gut", "specimen_bag",
    "null_target",
)
PHASES: tuple[str, ...] = (
    "preparation", "carlot-triangle-dissection", "clipping-and-cutting", "gallbladder-dissection",
    "gallbladder-packaging", "cleaning-and-coagulation", "gallbladder-extraction",
)

# Triplet id -> "instrument,verb,target" (CholecT50 label_mapping; 94-99 = instrument, no labelled action).
TRIPLETS: tuple[str, ...] = (
    "grasper,dissect,cystic_plate",  # 0
    "grasper,dissect,gallbladder",  # 1
    "grasper,dissect,omentum",  # 2
    "grasper,grasp,cystic_artery",  # 3
    "grasper,grasp,cystic_duct",  # 4
    "grasper,grasp,cystic_pedicle",  # 5
    "grasper,grasp,cystic_plate",  # 6
    "grasper,grasp,gallbladder",  # 7
    "grasper,grasp,gut",  # 8
    "grasper,grasp,liver",  # 9
    "grasper,grasp,omentum",  # 10
    "grasper,grasp,peritoneum",  # 11
    "grasper,grasp,specimen_bag",  # 12
    "grasper,pack,gallbladder",  # 13
    "grasper,retract,cystic_duct",  # 14
    "grasper,retract,cystic_pedicle",  # 15
    "grasper,retract,cystic_plate",  # 16
    "grasper,retract,gallbladder",  # 17
    "grasper,retract,gut",  # 18
    "grasper,retract,liver",  # 19
    "grasper,retract,omentum",  # 20
    "grasper,retract,peritoneum",  # 21
    "bipolar,coagulate,abdominal_wall_cavity",  # 22
    "bipolar,coagulate,blood_vessel",  # 23
    "bipolar,coagulate,cystic_artery",  # 24
    "bipolar,coagulate,cystic_duct",  # 25
    "bipolar,coagulate,cystic_pedicle",  # 26
    "bipolar,coagulate,cystic_plate",  # 27
    "bipolar,coagulate,gallbladder",  # 28
    "bipolar,coagulate,liver",  # 29
    "bipolar,coagulate,omentum",  # 30
    "bipolar,coagulate,peritoneum",  # 31
    "bipolar,dissect,adhesion",  # 32
    "bipolar,dissect,cystic_artery",  # 33
    "bipolar,dissect,cystic_duct",  # 34
    "bipolar,dissect,cystic_plate",  # 35
    "bipolar,dissect,gallbladder",  # 36
    "bipolar,dissect,omentum",  # 37
    "bipolar,grasp,cystic_plate",  # 38
    "bipolar,grasp,liver",  # 39
    "bipolar,grasp,specimen_bag",  # 40
    "bipolar,retract,cystic_duct",  # 41
    "bipolar,retract,cystic_pedicle",  # 42
    "bipolar,retract,gallbladder",  # 43
    "bipolar,retract,liver",  # 44
    "bipolar,retract,omentum",  # 45
    "hook,coagulate,blood_vessel",  # 46
    "hook,coagulate,cystic_artery",  # 47
    "hook,coagulate,cystic_duct",  # 48
    "hook,coagulate,cystic_pedicle",  # 49
    "hook,coagulate,cystic_plate",  # 50
    "hook,coagulate,gallbladder",  # 51
    "hook,coagulate,liver",  # 52
    "hook,coagulate,omentum",  # 53
    "hook,cut,blood_vessel",  # 54
    "hook,cut,peritoneum",  # 55
    "hook,dissect,blood_vessel",  # 56
    "hook,dissect,cystic_artery",  # 57
    "hook,dissect,cystic_duct",  # 58
    "hook,dissect,cystic_plate",  # 59
    "hook,dissect,gallbladder",  # 60
    "hook,dissect,omentum",  # 61
    "hook,dissect,peritoneum",  # 62
    "hook,retract,gallbladder",  # 63
    "hook,retract,liver",  # 64
    "scissors,coagulate,omentum",  # 65
    "scissors,cut,adhesion",  # 66
    "scissors,cut,blood_vessel",  # 67
    "scissors,cut,cystic_artery",  # 68
    "scissors,cut,cystic_duct",  # 69
    "scissors,cut,cystic_plate",  # 70
    "scissors,cut,liver",  # 71
    "scissors,cut,omentum",  # 72
    "scissors,cut,peritoneum",  # 73
    "scissors,dissect,cystic_plate",  # 74
    "scissors,dissect,gallbladder",  # 75
    "scissors,dissect,omentum",  # 76
    "clipper,clip,blood_vessel",  # 77
    "clipper,clip,cystic_artery",  # 78
    "clipper,clip,cystic_duct",  # 79
    "clipper,clip,cystic_pedicle",  # 80
    "clipper,clip,cystic_plate",  # 81
    "irrigator,aspirate,fluid",  # 82
    "irrigator,dissect,cystic_duct",  # 83
    "irrigator,dissect,cystic_pedicle",  # 84
    "irrigator,dissect,cystic_plate",  # 85
    "irrigator,dissect,gallbladder",  # 86
    "irrigator,dissect,omentum",  # 87
    "irrigator,irrigate,abdominal_wall_cavity",  # 88
    "irrigator,irrigate,cystic_pedicle",  # 89
    "irrigator,irrigate,liver",  # 90
    "irrigator,retract,gallbladder",  # 91
    "irrigator,retract,liver",  # 92
    "irrigator,retract,omentum",  # 93
    "grasper,null_verb,null_target",  # 94
    "bipolar,null_verb,null_target",  # 95
    "hook,null_verb,null_target",  # 96
    "scissors,null_verb,null_target",  # 97
    "clipper,null_verb,null_target",  # 98
    "irrigator,null_verb,null_target",  # 99
)

NULL_TRIPLETS: tuple[int, ...] = tuple(range(94, 100))
NULL_VERB = VERBS.index("null_verb")
NULL_TARGET = TARGETS.index("null_target")

NUM_INSTRUMENTS, NUM_VERBS, NUM_TARGETS, NUM_TRIPLETS, NUM_PHASES = (
    len(INSTRUMENTS), len(VERBS), len(TARGETS), len(TRIPLETS), len(PHASES),
)


def _components() -> tuple[tuple[int, int, int], ...]:
    out = []
    for name in TRIPLETS:
        i, v, t = name.split(",")
        out.append((INSTRUMENTS.index(i), VERBS.index(v), TARGETS.index(t)))
    return tuple(out)


# Triplet id -> (instrument id, verb id, target id), derived from the names.
TRIPLET_COMPONENTS: tuple[tuple[int, int, int], ...] = _components()


def triplet_maps() -> list[tuple[int, int, int, int, int, int]]:
    """Rows (IVT, I, V, T, IV, IT) as in ivtmetrics' maps.txt: IV = I*10 + V, IT = I*15 + T."""
    return [(k, i, v, t, i * NUM_VERBS + v, i * NUM_TARGETS + t)
            for k, (i, v, t) in enumerate(TRIPLET_COMPONENTS)]


def maps_txt() -> str:
    """The component map in the `maps.txt` / `label_mapping.txt` CSV form (`#`-headed)."""
    lines = ["# IVT, I, V, T, IV, IT"]
    lines += [",".join(str(x) for x in row) for row in triplet_maps()]
    return "\n".join(lines) + "\n"


# The IV and IT ids that occur, ascending (component metrics use these columns; column k != id k).
IV_IDS: tuple[int, ...] = tuple(sorted({row[4] for row in triplet_maps()}))
IT_IDS: tuple[int, ...] = tuple(sorted({row[5] for row in triplet_maps()}))


def triplet_id(instrument: str, verb: str, target: str) -> int:
    """The id of a valid triplet; LapgenError if the combination is not one of the 100."""
    name = f"{instrument},{verb},{target}"
    try:
        return TRIPLETS.index(name)
    except ValueError:
        raise LapgenError(f"'{instrument} {verb} {target}' is not one of the 100 CholecT50 triplets",
                          hint="see `lapgen.data.vocab.TRIPLETS` for the valid combinations") from None


def valid_verbs(instrument: str) -> list[str]:
    """Verbs that form at least one valid triplet with `instrument` (vocabulary order)."""
    i = INSTRUMENTS.index(instrument)
    found = {v for (ii, v, _t) in TRIPLET_COMPONENTS if ii == i}
    return [VERBS[v] for v in sorted(found)]


def valid_targets(instrument: str, verb: str) -> list[str]:
    """Targets that form a valid triplet with `instrument` and `verb` (vocabulary order)."""
    i, v = INSTRUMENTS.index(instrument), VERBS.index(verb)
    found = {t for (ii, vv, t) in TRIPLET_COMPONENTS if ii == i and vv == v}
    return [TARGETS[t] for t in sorted(found)]


# ---------------------------------------------------------------------------------------------- Cholec80

# Tool-annotation columns, in file order (after `Frame`), and their prompt words (lower-cased names).
CHOLEC80_TOOLS: tuple[str, ...] = (
    "Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag",
)
CHOLEC80_TOOL_WORDS: tuple[str, ...] = tuple(t.lower() for t in CHOLEC80_TOOLS)

# Cholec80 phase names -> CholecT50 phase strings (map by name: numeric orders differ between projects).
CHOLEC80_PHASES: dict[str, str] = {
    "Preparation": "preparation",
    "CalotTriangleDissection": "carlot-triangle-dissection",
    "ClippingCutting": "clipping-and-cutting",
    "GallbladderDissection": "gallbladder-dissection",
    "GallbladderPackaging": "gallbladder-packaging",
    "CleaningCoagulation": "cleaning-and-coagulation",
    "GallbladderRetraction": "gallbladder-extraction",
}

CHOLEC80_FPS = 25
CHOLECT50_FPS = 1

# ------------------------------------------------------------------------------------------- video lists

CHOLECT50_VIDEOS: tuple[int, ...] = (
    1, 2, 4, 5, 6, 8, 10, 12, 13, 14, 15, 18, 22, 23, 25, 26, 27, 29, 31, 32, 35, 36, 40, 42, 43, 47, 48,
    49, 50, 51, 52, 56, 57, 60, 62, 65, 66, 68, 70, 73, 74, 75, 78, 79, 80, 92, 96, 103, 110, 111,
)
CHOLECT50_ONLY_VIDEOS: tuple[int, ...] = (92, 96, 103, 110, 111)
SHARED_VIDEOS: tuple[int, ...] = tuple(v for v in CHOLECT50_VIDEOS if v not in CHOLECT50_ONLY_VIDEOS)
CHOLEC80_ONLY_VIDEOS: tuple[int, ...] = (
    3, 7, 9, 11, 16, 17, 19, 20, 21, 24, 28, 30, 33, 34, 37, 38, 39, 41, 44, 45, 46, 53, 54, 55, 58, 59,
    61, 63, 64, 67, 69, 71, 72, 76, 77,
)

RDV_SPLIT: dict[str, tuple[int, ...]] = {
    "train": (1, 2, 4, 5, 13, 15, 18, 22, 23, 25, 26, 27, 31, 35, 36, 40, 43, 47, 48, 49, 52, 56, 57, 60,
              62, 65, 66, 68, 70, 75, 79, 92, 96, 103, 110),
    "val": (8, 12, 29, 50, 78),
    "test": (6, 10, 14, 32, 42, 51, 73, 74, 80, 111),
}
_CHALLENGE_VAL = (5, 18, 36, 65, 74)
_CHALLENGE_TEST = (92, 96, 103, 110, 111)
CHALLENGE_SPLIT: dict[str, tuple[int, ...]] = {
    "train": tuple(v for v in CHOLECT50_VIDEOS if v not in _CHALLENGE_VAL + _CHALLENGE_TEST),
    "val": _CHALLENGE_VAL,
    "test": _CHALLENGE_TEST,
}
CROSSVAL_FOLDS: tuple[tuple[int, ...], ...] = (
    (79, 2, 51, 6, 25, 14, 66, 23, 50, 111),
    (80, 32, 5, 15, 40, 47, 26, 48, 70, 96),
    (31, 57, 36, 18, 52, 68, 10, 8, 73, 103),
    (42, 29, 60, 27, 65, 75, 22, 49, 12, 110),
    (78, 43, 62, 35, 74, 1, 56, 4, 13, 92),
)


def crossval_split(fold: int, *, val: str = "loader", t45: bool = False) -> dict[str, tuple[int, ...]]:
    """The official cross-validation split for `fold` (1-5).

    `val="loader"` (default; matches published checkpoints): test on fold k, join the other folds in
    order and take the last 5 joined videos as val (5 for T45 too: the loaders slice `[-5:]`, giving
    74 1 56 4 13 for T45 fold 1; CAMMA-public/cholect50 `dataloader_pth.py`). `val="figure"`: val is the first 5 (T45: 4)
    videos of fold k+1 (fold 5 wraps to fold 1), as in the official figure. `t45=True` drops each fold's
    last id (the five non-Cholec80 videos).
    """
    if fold not in range(1, 6):
        raise LapgenError(f"cross-validation fold must be 1..5, got {fold}")
    if val not in ("loader", "figure"):
        raise LapgenError(f"validation rule must be 'loader' or 'figure', got {val!r}")
    folds = [f[:-1] if t45 else f for f in CROSSVAL_FOLDS]
    n_val = 4 if (t45 and val == "figure") else 5  # the official figure shows Val 4|5; the loaders take 5
    test = folds[fold - 1]
    rest = [v for k, f in enumerate(folds) if k != fold - 1 for v in f]
    if val == "loader":
        val_ids = tuple(rest[-n_val:])
    else:
        val_ids = tuple(folds[fold % 5][:n_val])
    train = tuple(v for v in rest if v not in val_ids)
    return {"train": train, "val": val_ids, "test": tuple(test)}


SPLIT_NAMES: tuple[str, ...] = ("rdv", "challenge", "fold1", "fold2", "fold3", "fold4", "fold5", "paper", "all")


def video_split(name: str) -> dict[str, tuple[int, ...]] | None:
    """Video-level split by name (`rdv`, `challenge`, `fold1`..`fold5`); None for `paper`/`all` (no video split)."""
    if name == "rdv":
        return dict(RDV_SPLIT)
    if name == "challenge":
        return dict(CHALLENGE_SPLIT)
    if name.startswith("fold") and name[4:].isdigit():
        return crossval_split(int(name[4:]))
    if name in ("paper", "all"):
        return None
    raise LapgenError(f"unknown split {name!r}", hint="valid: " + ", ".join(SPLIT_NAMES))


def t50_video_name(video: int) -> str:
    """CholecT50 folder name: `VID01`, `VID103`."""
    return f"VID{video:02d}"


def c80_video_name(video: int) -> str:
    """Cholec80 file stem: `video01`."""
    return f"video{video:02d}"
