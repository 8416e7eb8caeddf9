"""`lapgen.metrics.triplets` against CAMMA's ivtmetrics itself and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from lapgen.data import vocab
from lapgen.errors import LapgenError
from lapgen.metrics import triplets
from lapgen.metrics.triplets import (
    bootstrap_map, class_map, component_ids, reduce_component, triplet_map, weighted_ap,
)

COMPONENTS = ("ivt", "i", "v", "t", "iv", "it")


@pytest.fixture
def ivtmetrics(monkeypatch):
    """ivtmetrics, with the NumPy aliases removed in NumPy 1.24 shimmed for older releases (test-only)."""
    for alias, real in (("int", int), ("float", float), ("bool", bool), ("object", object)):
        if alias not in np.__dict__:
            monkeypatch.setitem(vars(np), alias, real)
    return pytest.importorskip("ivtmetrics")


def _random_set(seed: int, n_videos: int = 3, frames: int = 120):
    """Labels where every triplet (hence every component class) has positives AND negatives in every
    video; scores are noisy functions of the labels so APs are neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    ys, ss, vids = [], [], []
    for v in range(n_videos):
        y = (rng.random((frames, 100)) < 0.03).astype(int)
        for k in range(100):  # one guaranteed positive per class and video
            y[(k * 7 + v) % frames, k] = 1
        s = np.clip(0.35 * y + rng.random((frames, 100)) * 0.8, 0, 1)
        s = np.round(s, 2)  # ties, as real sigmoid outputs rounded by a model often have
        ys.append(y)
        ss.append(s)
        vids += [f"VID{v:02d}"] * frames
    return np.concatenate(ys), np.concatenate(ss), vids, n_videos, frames


def test_component_maps_equal_ivtmetrics_bank(ivtmetrics):
    bank = ivtmetrics.Recognition(100).bank
    assert np.array_equal(np.asarray(bank), np.asarray(vocab.triplet_maps()))
    assert [len(component_ids(c)) for c in COMPONENTS] == [100, 6, 10, 15, 26, 59]


@pytest.mark.parametrize("component", COMPONENTS)
def test_reduce_component_equals_disentangle(ivtmetrics, component):
    y, s, _, _, _ = _random_set(1, n_videos=1, frames=40)
    d = ivtmetrics.Recognition(100)
    assert np.array_equal(reduce_component(y, component), np.asarray(d.extract(y, component)))
    assert np.allclose(reduce_component(s, component), np.asarray(d.extract(s, component)))


@pytest.mark.parametrize("component", COMPONENTS)
def test_video_wise_equals_ivtmetrics(ivtmetrics, component):
    y, s, vids, n_videos, frames = _random_set(2)
    rec = ivtmetrics.Recognition(100)
    for v in range(n_videos):
        sl = slice(v * frames, (v + 1) * frames)
        rec.update(y[sl], s[sl])
        rec.video_end()
    ref = rec.compute_video_AP(component)
    ours = triplet_map(y, s, video_ids=vids, component=component)
    assert ours["mode"] == "video" and ours["n_videos"] == n_videos
    assert np.allclose(ours["per_class"], ref["AP"], rtol=0, atol=1e-12)
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert 0.2 < ours["mAP"] < 0.95


@pytest.mark.parametrize("component", COMPONENTS)
def test_global_equals_ivtmetrics(ivtmetrics, component):
    y, s, _, n_videos, frames = _random_set(3)
    rec = ivtmetrics.Recognition(100)
    for v in range(n_videos):
        sl = slice(v * frames, (v + 1) * frames)
        rec.update(y[sl], s[sl])
        rec.video_end()
    ref = rec.compute_global_AP(component)
    ours = triplet_map(y, s, component=component)
    assert ours["mode"] == "global"
    assert np.allclose(ours["per_class"], ref["AP"], rtol=0, atol=1e-12)
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)


@pytest.mark.parametrize("video_wise", [True, False])
def test_ignore_null_equals_ivtmetrics(ivtmetrics, video_wise):
    y, s, vids, n_videos, frames = _random_set(4)
    rec = ivtmetrics.Recognition(100)
    for v in range(n_videos):
        sl = slice(v * frames, (v + 1) * frames)
        rec.update(y[sl], s[sl])
        rec.video_end()
    ref = (rec.compute_video_AP if video_wise else rec.compute_global_AP)("ivt", ignore_null=True)
    ours = triplet_map(y, s, video_ids=vids if video_wise else None, ignore_null=True)
    assert len(ours["per_class"]) == 94 and ours["class_ids"] == list(range(94))
    assert np.allclose(ours["per_class"], ref["AP"], atol=1e-12)
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    # ignore_null only concerns ivt (as in ivtmetrics)
    assert triplet_map(y, s, component="i", ignore_null=True)["per_class"].shape == (6,)


def test_absent_classes_are_nan_and_excluded():
    """Explicit rule: AP of (video, class) exists only if the class has a positive there."""
    from sklearn.metrics import average_precision_score

    y, s, vids, n_videos, frames = _random_set(5)
    y = y.copy()
    y[:, 10] = 0  # triplet 10 absent everywhere
    y[:frames, 20] = 0  # triplet 20 absent from the first video only
    res = triplet_map(y, s, video_ids=vids)
    assert np.isnan(res["per_class"][10]) and res["n_classes_scored"] == 99
    # class 20: mean over the two videos where it occurs, computed directly
    direct = np.mean([average_precision_score(y[v * frames:(v + 1) * frames, 20],
                                              s[v * frames:(v + 1) * frames, 20]) for v in (1, 2)])
    assert res["per_class"][20] == pytest.approx(direct, abs=1e-12)
    # mAP = plain mean of the 99 scored classes (scikit-learn's 0.0 for class 10 would lower it)
    expected = np.mean([res["per_class"][k] for k in range(100) if k != 10])
    assert res["mAP"] == pytest.approx(expected, abs=1e-12)
    glob = triplet_map(y, s)
    assert np.isnan(glob["per_class"][10]) and np.isfinite(glob["per_class"][20])
    # a component whose ids all lose positives: instrument 'clipper' (triplets 77-81, 98)
    y2 = y.copy()
    y2[:, [77, 78, 79, 80, 81, 98]] = 0
    assert np.isnan(triplet_map(y2, s, component="i")["per_class"][4])


def test_no_positive_at_all_gives_nan_map():
    y = np.zeros((5, 100), dtype=int)
    res = triplet_map(y, np.full((5, 100), 0.5))
    assert np.isnan(res["mAP"]) and res["n_classes_scored"] == 0


def test_weighted_ap_equals_sklearn_sample_weight():
    from sklearn.metrics import average_precision_score

    y, s, _, _, _ = _random_set(6, n_videos=1, frames=150)
    y, s = reduce_component(y, "iv"), reduce_component(s, "iv")
    w = np.random.default_rng(0).integers(0, 4, size=y.shape[0]).astype(float)
    ours = weighted_ap(y, s, w)
    for k in range(y.shape[1]):
        if (w * y[:, k]).sum() > 0:
            assert ours[k] == pytest.approx(average_precision_score(y[:, k], s[:, k], sample_weight=w),
                                            abs=1e-12)
        else:
            assert np.isnan(ours[k])
    assert np.allclose(weighted_ap(y, s, np.ones(len(y))), class_map(y, s)["per_class"], atol=1e-12)


@pytest.mark.parametrize("use_videos", [True, False])
def test_bootstrap_interval_contains_estimate(use_videos):
    y, s, vids, _, _ = _random_set(7, n_videos=4, frames=110)
    yr, sr = reduce_component(y, "it"), reduce_component(s, "it")
    point = class_map(yr, sr, video_ids=vids if use_videos else None)["mAP"]
    ci = bootstrap_map(yr, sr, video_ids=vids if use_videos else None, n_boot=60, seed=3)
    assert ci["unit"] == ("video" if use_videos else "frame")
    assert ci["low"] <= point <= ci["high"] and ci["low"] < ci["high"]
    again = bootstrap_map(yr, sr, video_ids=vids if use_videos else None, n_boot=60, seed=3)
    assert again == ci  # seeded
    glob = bootstrap_map(yr, sr, video_ids=vids, mode="global", n_boot=30, seed=1)
    assert glob["unit"] == "video" and glob["low"] <= class_map(yr, sr)["mAP"] <= glob["high"]


def test_bad_input_errors():
    y = np.zeros((4, 100), dtype=int)
    with pytest.raises(LapgenError, match="different shapes"):
        triplet_map(y, np.zeros((4, 99)))
    with pytest.raises(LapgenError, match="expected 100 classes"):
        triplet_map(np.zeros((4, 6)), np.zeros((4, 6)))
    with pytest.raises(LapgenError, match="binary"):
        triplet_map(y + 2, np.zeros((4, 100)))
    with pytest.raises(LapgenError, match="unknown triplet component"):
        triplet_map(y, np.zeros((4, 100)), component="vt")
    with pytest.raises(LapgenError, match="video_ids"):
        triplet_map(y, np.zeros((4, 100)), video_ids=["a"])
    with pytest.raises(LapgenError, match="NaN"):
        triplet_map(y, np.full((4, 100), np.nan))
    assert triplets.COMPONENTS == COMPONENTS


def _github_recognition(ivtmetrics):
    """ivtmetrics as on GitHub (CAMMA-public/ivtmetrics master, commit a89cf65): the PyPI 0.1.5 code with
    GitHub's `resolve_nan`, `classwise[classwise == -0.0] = np.nan`, i.e. every AP of 0 becomes NaN (with
    current scikit-learn only classes without a positive score 0). The rest of `recognition.py` differs
    between the two only in refactoring and accumulator dtypes (float32/int32 on GitHub; `np.append` of
    the float64 scores gives float64 either way), so this subclass is the GitHub computation."""

    class GitHubRecognition(ivtmetrics.Recognition):
        def resolve_nan(self, classwise):
            classwise = np.array(classwise, dtype=np.float64)
            classwise[classwise == -0.0] = np.nan
            return classwise

    return GitHubRecognition


def _with_absent_classes(seed: int):
    """3 videos; triplet 10 absent everywhere, 20 absent from video 0, 30-33 only in video 2, and the
    instrument 'clipper' (triplets 77-81 and 98) absent from video 1: every component has absent classes."""
    y, s, vids, n_videos, frames = _random_set(seed)
    y = y.copy()
    y[:, 10] = 0
    y[:frames, 20] = 0
    y[:2 * frames, 30:34] = 0
    y[frames:2 * frames, [77, 78, 79, 80, 81, 98]] = 0
    return y, s, vids, n_videos, frames


def _reference(rec_class, y, s, n_videos, frames, video_wise, component, ignore_null):
    import warnings

    rec = rec_class(100)
    for v in range(n_videos):
        sl = slice(v * frames, (v + 1) * frames)
        rec.update(y[sl], s[sl])
        rec.video_end()
    with warnings.catch_warnings():  # scikit-learn warns for classes without positives
        warnings.simplefilter("ignore")
        return (rec.compute_video_AP if video_wise else rec.compute_global_AP)(component, ignore_null=ignore_null)


@pytest.mark.parametrize("video_wise", [True, False])
@pytest.mark.parametrize("component", COMPONENTS)
def test_absent_classes_ignore_equals_ivtmetrics_github(ivtmetrics, component, video_wise):
    y, s, vids, n_videos, frames = _with_absent_classes(9)
    for ignore_null in ((False, True) if component == "ivt" else (False,)):
        ref = _reference(_github_recognition(ivtmetrics), y, s, n_videos, frames, video_wise, component, ignore_null)
        ours = triplet_map(y, s, video_ids=vids if video_wise else None, component=component,
                           ignore_null=ignore_null)
        assert ours["absent_classes"] == "ignore"
        np.testing.assert_allclose(ours["per_class"], ref["AP"], rtol=0, atol=1e-12)  # NaN where ref is NaN
        assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    if component == "ivt":
        assert ours["n_classes_absent"] == 1 and np.isnan(ours["per_class"][10])


@pytest.mark.parametrize("video_wise", [True, False])
@pytest.mark.parametrize("component", COMPONENTS)
def test_absent_classes_zero_equals_ivtmetrics_0_1_5(ivtmetrics, component, video_wise):
    """ivtmetrics 0.1.5 (PyPI) with the installed scikit-learn scores absent classes 0; so does "zero"."""
    import sklearn

    assert tuple(int(x) for x in sklearn.__version__.split(".")[:2]) >= (1, 3)  # AP +0.0 without positives
    y, s, vids, n_videos, frames = _with_absent_classes(10)
    for ignore_null in ((False, True) if component == "ivt" else (False,)):
        ref = _reference(ivtmetrics.Recognition, y, s, n_videos, frames, video_wise, component, ignore_null)
        ours = triplet_map(y, s, video_ids=vids if video_wise else None, component=component,
                           ignore_null=ignore_null, absent_classes="zero")
        assert np.isfinite(ref["AP"]).all()  # the PyPI release really keeps the zeros
        np.testing.assert_allclose(ours["per_class"], ref["AP"], rtol=0, atol=1e-12)
        assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    ignore = triplet_map(y, s, video_ids=vids if video_wise else None, component=component)
    yc = reduce_component(y, component)
    units = [yc[v * frames:(v + 1) * frames] for v in range(n_videos)] if video_wise else [yc]
    if any((u.sum(axis=0) == 0).any() for u in units):  # some class lacks positives where it is scored
        assert ours["mAP"] < ignore["mAP"]
    else:  # every class has a positive in every scored unit: the conventions agree
        assert ours["mAP"] == ignore["mAP"]


def test_absent_classes_in_the_bootstrap_and_bad_values():
    y, s, vids, _, _ = _with_absent_classes(11)
    yr, sr = reduce_component(y, "ivt"), reduce_component(s, "ivt")
    for video_ids in (vids, None):
        for convention in ("ignore", "zero"):
            point = class_map(yr, sr, video_ids=video_ids, absent_classes=convention)["mAP"]
            ci = bootstrap_map(yr, sr, video_ids=video_ids, n_boot=40, seed=2, absent_classes=convention)
            assert ci["low"] <= point <= ci["high"]
    zero = bootstrap_map(yr, sr, video_ids=vids, n_boot=40, seed=2, absent_classes="zero")
    ignore = bootstrap_map(yr, sr, video_ids=vids, n_boot=40, seed=2)  # same replicates, absent classes skipped
    assert zero["low"] < ignore["low"] and zero["high"] < ignore["high"]
    with pytest.raises(LapgenError, match="absent-class convention"):
        triplet_map(y, s, absent_classes="nan")


def test_absent_class_difference_to_ivtmetrics_is_only_that_class(ivtmetrics):
    """ivtmetrics 0.1.5 keeps scikit-learn's AP for a class without positives (0.0 in recent releases)
    and averages it in; lapgen excludes it. Every other class agrees."""
    y, s, _, _, _ = _random_set(8, n_videos=1, frames=150)
    y = y.copy()
    y[:, 10] = 0
    rec = ivtmetrics.Recognition(100)
    rec.update(y, s)
    rec.video_end()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = rec.compute_global_AP("ivt")
    ours = triplet_map(y, s)
    keep = [k for k in range(100) if k != 10]
    assert np.allclose(ours["per_class"][keep], ref["AP"][keep], atol=1e-12)
    assert np.isnan(ours["per_class"][10])
    if ref["AP"][10] == 0.0:  # recent scikit-learn (1.9) returns 0.0 with a warning
        assert ref["mAP"] == pytest.approx(np.nansum(ours["per_class"]) / 100, abs=1e-12)
        assert ref["mAP"] < ours["mAP"]
