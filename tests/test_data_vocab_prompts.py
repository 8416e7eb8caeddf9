"""Vocabulary and paper-exact prompts (CholecT50's dictionaries and splits, CAMMA-public/cholect50; the paper's
prompt code, buma13/dgm4miccai24_laparoscopicvideos; docs/data-formats.md)."""

from __future__ import annotations

import pytest

from lapgen.data import prompts, vocab
from lapgen.errors import LapgenError

# CholecT50's triplet dictionary, typed independently of vocab.py: (id, "instrument,verb,target") spot checks.
_SPOT = {0: "grasper,dissect,cystic_plate", 17: "grasper,retract,gallbladder", 46: "hook,coagulate,blood_vessel",
         60: "hook,dissect,gallbladder", 82: "irrigator,aspirate,fluid", 93: "irrigator,retract,omentum",
         94: "grasper,null_verb,null_target", 99: "irrigator,null_verb,null_target"}


@pytest.mark.parametrize("tid", range(100))
def test_every_triplet_prompt(tid):
    instrument, verb, target = vocab.TRIPLETS[tid].split(",")
    for phase_id, phase in enumerate(vocab.PHASES):
        expected = f"{instrument} in {phase}" if verb == "null_verb" else f"{instrument} {verb} {target} in {phase}"
        assert prompts.triplet_prompt([tid], phase_id) == expected
        assert prompts.triplet_prompt([tid, tid], phase) == expected  # duplicates collapse
    assert ("null_verb" in vocab.TRIPLETS[tid]) == (tid >= 94) == ("null_target" in vocab.TRIPLETS[tid])
    assert prompts.unknown_words(prompts.triplet_prompt([tid], 1)) == []


def test_triplet_table_and_maps():
    assert len(vocab.TRIPLETS) == 100 and len(set(vocab.TRIPLETS)) == 100
    for tid, name in _SPOT.items():
        assert vocab.TRIPLETS[tid] == name
    rows = vocab.triplet_maps()
    assert rows[0] == (0, 0, 2, 1, 2, 1) and rows[99] == (99, 5, 9, 14, 59, 89)
    for ivt, i, v, t, iv, it in rows:
        assert vocab.TRIPLETS[ivt] == f"{vocab.INSTRUMENTS[i]},{vocab.VERBS[v]},{vocab.TARGETS[t]}"
        assert iv == i * 10 + v and it == i * 15 + t
    assert len(vocab.IV_IDS) == 26 and len(vocab.IT_IDS) == 59
    assert vocab.maps_txt().splitlines()[0] == "# IVT, I, V, T, IV, IT"
    assert len(vocab.INSTRUMENTS) == 6 and len(vocab.VERBS) == 10 and len(vocab.TARGETS) == 15
    assert vocab.PHASES[1] == "carlot-triangle-dissection"


# Worked examples of the paper's prompt template (its data_processing code), every one.
_T50_EXAMPLES = [
    ([17], 1, "grasper retract gallbladder in carlot-triangle-dissection"),
    ([17, 17], 1, "grasper retract gallbladder in carlot-triangle-dissection"),
    ([94], 0, "grasper in preparation"),
    ([60, 94], 3, "hook dissect gallbladder and grasper in gallbladder-dissection"),
    ([7, 96], 1, "grasper grasp gallbladder and hook in carlot-triangle-dissection"),
    ([19, 82], 5, "grasper retract liver and irrigator aspirate fluid in cleaning-and-coagulation"),
    ([82, 19], 5, "grasper retract liver and irrigator aspirate fluid in cleaning-and-coagulation"),
    ([12], 6, "grasper grasp specimen_bag in gallbladder-extraction"),
    ([], 0, "preparation"),
    ([-1], 0, "preparation"),
]


@pytest.mark.parametrize("ids, phase, text", _T50_EXAMPLES)
def test_worked_examples_cholect50(ids, phase, text):
    assert prompts.triplet_prompt(ids, phase) == text


@pytest.mark.parametrize("flags, phase, text", [
    ([1, 0, 1, 0, 0, 0, 0], "CalotTriangleDissection", "grasper and hook in carlot-triangle-dissection"),
    ([1, 0, 0, 0, 0, 0, 1], "GallbladderPackaging", "grasper and specimenbag in gallbladder-packaging"),
    ([0] * 7, "GallbladderRetraction", "gallbladder-extraction"),
])
def test_worked_examples_cholec80(flags, phase, text):
    assert prompts.cholec80_prompt(flags, phase) == text


def test_validation_prompts_of_the_paper():
    """The validation prompts of the paper's run_stablediffusion_training.sh come out of the builders."""
    assert prompts.triplet_prompt([], 1) == "carlot-triangle-dissection"
    assert prompts.triplet_prompt([7], 1) == "grasper grasp gallbladder in carlot-triangle-dissection"
    assert prompts.triplet_prompt([96, 7], 1) == "grasper grasp gallbladder and hook in carlot-triangle-dissection"
    assert prompts.cholec80_prompt([1, 0, 1, 0, 0, 0, 0], "CalotTriangleDissection") == \
        "grasper and hook in carlot-triangle-dissection"
    assert prompts.triplet_prompt([60, 17], 3) == \
        "grasper retract gallbladder and hook dissect gallbladder in gallbladder-dissection"


def test_instrument_fallback_and_calot_format():
    assert prompts.instrument_prompt([2, 0], 1) == "grasper and hook in carlot-triangle-dissection"
    assert prompts.triplet_prompt([17], 1, "paper-calot") == "grasper retract gallbladder in calot-triangle-dissection"
    assert prompts.cholec80_prompt([0] * 7, "CalotTriangleDissection", "paper-calot") == "calot-triangle-dissection"
    assert prompts.triplet_prompt([17], 2, "paper-calot") == "grasper retract gallbladder in clipping-and-cutting"


def test_prompt_errors():
    with pytest.raises(LapgenError, match="out of range"):
        prompts.triplet_prompt([100], 0)
    with pytest.raises(LapgenError, match="phase id 7"):
        prompts.triplet_prompt([1], 7)
    with pytest.raises(LapgenError, match="unknown Cholec80 phase"):
        prompts.cholec80_prompt([0] * 7, "CalotTriangle")
    with pytest.raises(LapgenError, match="unknown prompt format"):
        prompts.triplet_prompt([1], 0, "nope")
    assert prompts.unknown_words("grasper retract kidney in preparation") == ["kidney"]


def test_official_splits():
    all50 = set(vocab.CHOLECT50_VIDEOS)
    assert len(all50) == 50
    assert set(vocab.SHARED_VIDEOS) | set(vocab.CHOLEC80_ONLY_VIDEOS) == set(range(1, 81))
    assert not set(vocab.SHARED_VIDEOS) & set(vocab.CHOLEC80_ONLY_VIDEOS)
    for table, sizes in ((vocab.RDV_SPLIT, (35, 5, 10)), (vocab.CHALLENGE_SPLIT, (40, 5, 5))):
        parts = [set(table[k]) for k in ("train", "val", "test")]
        assert tuple(map(len, parts)) == sizes
        assert set.union(*parts) == all50 and sum(map(len, parts)) == 50
    folds = [set(f) for f in vocab.CROSSVAL_FOLDS]
    assert set.union(*folds) == all50
    assert vocab.crossval_split(1)["val"] == (1, 56, 4, 13, 92)
    assert vocab.crossval_split(5)["val"] == (75, 22, 49, 12, 110)
    assert vocab.crossval_split(1, t45=True)["val"] == (74, 1, 56, 4, 13)
    assert vocab.crossval_split(5, t45=True)["val"] == (65, 75, 22, 49, 12)
    assert vocab.crossval_split(2, t45=True, val="figure")["val"] == (31, 57, 36, 18)
    assert vocab.crossval_split(5, val="figure")["val"] == (79, 2, 51, 6, 25)
    for k in range(1, 6):
        s = vocab.crossval_split(k)
        assert set(s["train"]) | set(s["val"]) | set(s["test"]) == all50 and len(s["train"]) == 35
    with pytest.raises(LapgenError):
        vocab.video_split("fold6")


# CholecT50's dictionary and official splits copied as text, independently of vocab.py: the whole table, not spot checks.
_TRIPLET_TABLE = """
grasper,dissect,cystic_plate grasper,dissect,gallbladder grasper,dissect,omentum
grasper,grasp,cystic_artery grasper,grasp,cystic_duct grasper,grasp,cystic_pedicle
grasper,grasp,cystic_plate grasper,grasp,gallbladder grasper,grasp,gut grasper,grasp,liver
grasper,grasp,omentum grasper,grasp,peritoneum grasper,grasp,specimen_bag
grasper,pack,gallbladder grasper,retract,cystic_duct grasper,retract,cystic_pedicle
grasper,retract,cystic_plate grasper,retract,gallbladder grasper,retract,gut
grasper,retract,liver grasper,retract,omentum grasper,retract,peritoneum
bipolar,coagulate,abdominal_wall_cavity bipolar,coagulate,blood_vessel
bipolar,coagulate,cystic_artery bipolar,coagulate,cystic_duct bipolar,coagulate,cystic_pedicle
bipolar,coagulate,cystic_plate bipolar,coagulate,gallbladder bipolar,coagulate,liver
bipolar,coagulate,omentum bipolar,coagulate,peritoneum bipolar,dissect,adhesion
bipolar,dissect,cystic_artery bipolar,dissect,cystic_duct bipolar,dissect,cystic_plate
bipolar,dissect,gallbladder bipolar,dissect,omentum bipolar,grasp,cystic_plate
bipolar,grasp,liver bipolar,grasp,specimen_bag bipolar,retract,cystic_duct
bipolar,retract,cystic_pedicle bipolar,retract,gallbladder bipolar,retract,liver
bipolar,retract,omentum hook,coagulate,blood_vessel hook,coagulate,cystic_artery
hook,coagulate,cystic_duct hook,coagulate,cystic_pedicle hook,coagulate,cystic_plate
hook,coagulate,gallbladder hook,coagulate,liver hook,coagulate,omentum hook,cut,blood_vessel
hook,cut,peritoneum hook,dissect,blood_vessel hook,dissect,cystic_artery
hook,dissect,cystic_duct hook,dissect,cystic_plate hook,dissect,gallbladder
hook,dissect,omentum hook,dissect,peritoneum hook,retract,gallbladder hook,retract,liver
scissors,coagulate,omentum scissors,cut,adhesion scissors,cut,blood_vessel
scissors,cut,cystic_artery scissors,cut,cystic_duct scissors,cut,cystic_plate
scissors,cut,liver scissors,cut,omentum scissors,cut,peritoneum scissors,dissect,cystic_plate
scissors,dissect,gallbladder scissors,dissect,omentum clipper,clip,blood_vessel
clipper,clip,cystic_artery clipper,clip,cystic_duct clipper,clip,cystic_pedicle
clipper,clip,cystic_plate irrigator,aspirate,fluid irrigator,dissect,cystic_duct
irrigator,dissect,cystic_pedicle irrigator,dissect,cystic_plate irrigator,dissect,gallbladder
irrigator,dissect,omentum irrigator,irrigate,abdominal_wall_cavity
irrigator,irrigate,cystic_pedicle irrigator,irrigate,liver irrigator,retract,gallbladder
irrigator,retract,liver irrigator,retract,omentum grasper,null_verb,null_target
bipolar,null_verb,null_target hook,null_verb,null_target scissors,null_verb,null_target
clipper,null_verb,null_target irrigator,null_verb,null_target
""".split()
_VOCAB_TABLE = {
    "instrument": "grasper bipolar hook scissors clipper irrigator",
    "verb": "grasp retract dissect coagulate clip cut aspirate irrigate pack null_verb",
    "target": "gallbladder cystic_plate cystic_duct cystic_artery cystic_pedicle blood_vessel fluid "
              "abdominal_wall_cavity liver adhesion omentum peritoneum gut specimen_bag null_target",
    "phase": "preparation carlot-triangle-dissection clipping-and-cutting gallbladder-dissection "
             "gallbladder-packaging cleaning-and-coagulation gallbladder-extraction",
}
_SPLITS = {
    "rdv": {"train": "1 2 4 5 13 15 18 22 23 25 26 27 31 35 36 40 43 47 48 49 52 56 57 60 62 65 66 68 70 75 "
                     "79 92 96 103 110", "val": "8 12 29 50 78", "test": "6 10 14 32 42 51 73 74 80 111"},
    "challenge": {"val": "5 18 36 65 74", "test": "92 96 103 110 111"},
}
_FOLDS = ["79 2 51 6 25 14 66 23 50 111", "80 32 5 15 40 47 26 48 70 96", "31 57 36 18 52 68 10 8 73 103",
          "42 29 60 27 65 75 22 49 12 110", "78 43 62 35 74 1 56 4 13 92"]
_CHOLEC80_ONLY = ("3 7 9 11 16 17 19 20 21 24 28 30 33 34 37 38 39 41 44 45 46 53 54 55 58 59 61 63 64 67 69 "
                  "71 72 76 77")


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split())


def test_tables_equal_the_published_ones():
    assert len(_TRIPLET_TABLE) == 100 and list(vocab.TRIPLETS) == _TRIPLET_TABLE
    assert list(vocab.INSTRUMENTS) == _VOCAB_TABLE["instrument"].split()
    assert list(vocab.VERBS) == _VOCAB_TABLE["verb"].split()
    assert list(vocab.TARGETS) == _VOCAB_TABLE["target"].split()
    assert list(vocab.PHASES) == _VOCAB_TABLE["phase"].split()
    for part in ("train", "val", "test"):
        assert vocab.RDV_SPLIT[part] == _ids(_SPLITS["rdv"][part])
    for part in ("val", "test"):
        assert vocab.CHALLENGE_SPLIT[part] == _ids(_SPLITS["challenge"][part])
    assert [tuple(f) for f in vocab.CROSSVAL_FOLDS] == [_ids(f) for f in _FOLDS]  # order in a fold matters
    assert vocab.CHOLEC80_ONLY_VIDEOS == _ids(_CHOLEC80_ONLY)
