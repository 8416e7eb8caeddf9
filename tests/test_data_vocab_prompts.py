"""Vocabulary and paper-exact prompts (data-formats.md sections 1.3-1.5 and 5)."""

from __future__ import annotations

import pytest

from lapgen.data import prompts, vocab
from lapgen.errors import LapgenError

# data-formats.md 1.3, typed independently of vocab.py: (id, "instrument,verb,target") spot checks.
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


# data-formats.md 5.3, every worked example.
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
