"""clean-fid's own chain: NVIDIA's TorchScript Inception (`inception-v3-clean`) and clean-fid 0.1.35's arithmetic.

The network is a TorchScript module of the same interface built in the test (`torchscript_inception`); clean-fid
runs that very file through its own `InceptionV3W`, folder reading, `clean` resize, `frechet_distance` and
`kernel_distance`, and lapgen must give the same numbers bit for bit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.errors import LapgenError
from lapgen.metrics.features import FeatureExtractor, compute_features
from lapgen.metrics.fid import frechet_distance, frechet_distance_cleanfid
from lapgen.metrics.images import open_image_set
from lapgen.metrics.kid import kid, kid_cleanfid
from tests.fixtures.metrics import make_image_set

runner = CliRunner()
BATCH = 32  # clean-fid's compute_fid / compute_kid default batch size


@pytest.fixture(scope="module")
def unequal_sets(tmp_path_factory):
    """24 generated vs 20 real: KID subsets of m = 20 then draw real subsets from the 24 (not permutations)."""
    root = tmp_path_factory.mktemp("cleanfid-sets")
    return make_image_set(root / "gen", 24, shift=0.15, seed=2), make_image_set(root / "real", 20, seed=1)


def _clean_fid_model(weights):
    from cleanfid.inception_torchscript import InceptionV3W

    return InceptionV3W(str(weights.parent), download=False)  # clean-fid's own wrapper around the file


def _features(folder, weights, batch_size=BATCH):
    ext = FeatureExtractor("inception-v3-clean", weights=weights)
    return compute_features(open_image_set(folder), ext, "clean", batch_size=batch_size, use_cache=False)


def test_torchscript_features_equal_clean_fid_chain(torchscript_inception, unequal_sets):
    from cleanfid import fid as cf

    gen, _ = unequal_sets
    ours = _features(gen, torchscript_inception)
    theirs = cf.get_folder_features(str(gen), model=_clean_fid_model(torchscript_inception), num_workers=0,
                                    batch_size=BATCH, device=torch.device("cpu"), mode="clean", verbose=False)
    assert ours.features.dtype == theirs.dtype == np.float32 and ours.features.shape == (24, 2048)
    np.testing.assert_array_equal(ours.features, theirs)
    assert ours.extractor["network"] == "torchscript" and ours.features.std() > 1e-3  # features are not vacuous


def test_kid_equals_clean_fid_compute_kid_bit_for_bit(torchscript_inception, unequal_sets, monkeypatch):
    """`lapgen eval kid --inception inception-v3-clean` (protocol clean, the default) equals clean-fid's
    `compute_kid(real, gen)` as the paper called it, after seeding clean-fid's global RNG with --kid-seed."""
    import cleanfid.fid as cf

    gen, real = unequal_sets
    model = _clean_fid_model(torchscript_inception)
    monkeypatch.setattr(cf, "build_feature_extractor", lambda mode, device, use_dataparallel=True: model)
    np.random.seed(2020)
    theirs = cf.compute_kid(str(real), str(gen), mode="clean", num_workers=0, batch_size=BATCH,
                            device=torch.device("cpu"), verbose=False, use_dataparallel=False)
    args = ["eval", "kid", str(gen), str(real), "--inception", "inception-v3-clean", "--weights",
            str(torchscript_inception), "--batch-size", str(BATCH), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ours = json.loads(result.stdout)
    assert ours["value"] == theirs and theirs > 0
    assert ours["params"]["implementation"] == "clean-fid" and ours["params"]["subset_size"] == 20
    assert (ours["extractor"], ours["network"], ours["protocol"]) == ("inception-v3-clean", "torchscript", "clean")
    assert ours["weights_sha256"] == __import__("hashlib").sha256(torchscript_inception.read_bytes()).hexdigest()
    assert (ours["precision"], ours["tf32"], ours["device"]) == ("fp32", False, "cpu")
    # torch-fidelity's estimator (float64) on the same features: a different computation, close value
    other = json.loads(runner.invoke(app, args + ["--kid-estimator", "torch-fidelity"]).stdout)
    assert other["params"]["implementation"] == "torch-fidelity"
    assert other["value"] != theirs and other["value"] == pytest.approx(theirs, rel=1e-3)


def test_fid_arithmetic_equals_clean_fid_bit_for_bit():
    """`frechet_distance_cleanfid(gen, real)` is clean-fid's `fid_from_feats(real, gen)` (the paper's order)
    operation for operation on float32 features, with N > d and with N < d (singular covariances)."""
    from cleanfid.fid import fid_from_feats

    rng = np.random.default_rng(0)
    for n_gen, n_real, d in ((300, 260, 40), (30, 24, 64)):
        gen = (rng.normal(size=(n_gen, d)) + 0.3).astype(np.float32)
        real = rng.normal(size=(n_real, d)).astype(np.float32)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = fid_from_feats(real, gen)
        assert frechet_distance_cleanfid(gen, real) == theirs
        assert frechet_distance(gen, real, method="clean-fid") == theirs
        if n_gen > d:  # lapgen's float64 routes agree to round-off
            assert frechet_distance(gen, real, method="eig") == pytest.approx(theirs, rel=1e-6)


def test_kid_arithmetic_equals_clean_fid_kernel_distance():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(1)
    gen = (rng.normal(size=(90, 16)) + 0.2).astype(np.float32)
    real = rng.normal(size=(70, 16)).astype(np.float32)
    np.random.seed(7)
    theirs = kernel_distance(real, gen, num_subsets=20, max_subset_size=30)
    mean, std = kid_cleanfid(gen, real, subsets=20, subset_size=30, seed=7)
    assert mean == theirs and std > 0
    assert kid(gen, real, subsets=20, subset_size=30, seed=7, estimator="clean-fid") == (mean, std)
    with pytest.raises(LapgenError, match="unknown KID estimator"):
        kid(gen, real, estimator="tf")


@pytest.mark.slow
def test_fid_equals_clean_fid_compute_fid_bit_for_bit(torchscript_inception, unequal_sets):
    """End to end through `lapgen eval fid` and clean-fid's `compute_fid(real, gen, custom_feat_extractor=...)`
    (slow: two 2048 x 2048 scipy `sqrtm`, one on each side)."""
    from cleanfid import fid as cf

    gen, real = unequal_sets
    theirs = cf.compute_fid(str(real), str(gen), mode="clean", custom_feat_extractor=_clean_fid_model(
        torchscript_inception), num_workers=0, batch_size=BATCH, device=torch.device("cpu"), verbose=False)
    result = runner.invoke(app, ["eval", "fid", str(gen), str(real), "--inception", "inception-v3-clean",
                                 "--weights", str(torchscript_inception), "--batch-size", str(BATCH), "--json"])
    assert result.exit_code == 0, result.output
    ours = json.loads(result.stdout)
    assert ours["value"] == theirs and ours["params"]["method"] == "clean-fid"


def test_batches_follow_one_uninterrupted_pass(torchscript_inception, unequal_sets, monkeypatch):
    """Resumable chunks never split a batch: with chunk 50 and batch 32 the network sees 32-image batches
    starting at 0, 32, 64, ... as clean-fid's DataLoader gives them (batch composition can change GPU output)."""
    from lapgen.metrics import features as F

    seen = []
    original = F.FeatureExtractor.forward

    def spy(self, batch, protocol):
        seen.append(len(batch))
        return original(self, batch, protocol)

    monkeypatch.setattr(F.FeatureExtractor, "forward", spy)
    gen, _ = unequal_sets
    both = make_image_set(gen.parent / "fifty", 50, seed=5)
    ext = FeatureExtractor("inception-v3-clean", weights=torchscript_inception)
    chunked = compute_features(open_image_set(both), ext, "clean", batch_size=BATCH, chunk=50, use_cache=False)
    assert seen == [32, 18]
    whole = compute_features(open_image_set(both), ext, "clean", batch_size=BATCH, chunk=1000, use_cache=False)
    np.testing.assert_array_equal(chunked.features, whole.features)


def test_weights_never_downloaded_and_errors_name_the_inception_extractors(torchscript_inception, tmp_path,
                                                                          monkeypatch):
    import shutil

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(LapgenError) as err:
        FeatureExtractor("inception-v3-clean")
    line = err.value.one_line()
    assert "never downloads" in line and "inception-2015-12-05.pt" in line
    assert "inception-v3 (no local weights)" in line and "inception-v3-clean (no local weights)" in line
    assert "clip-vit" not in line  # only extractors of the same family
    # the released name under $LAPGEN_HOME/weights is the built-in entry's file; its SHA-256 is recorded
    target = tmp_path / "home" / "weights" / "inception-2015-12-05.pt"
    target.parent.mkdir(parents=True)
    shutil.copyfile(torchscript_inception, target)
    ext = FeatureExtractor("inception-v3-clean")
    assert ext.weights_path == target and len(ext.weights_sha256) == 64
    assert ext.describe()["network"] == "torchscript"
    from lapgen.models.loading import load_inception

    assert hasattr(load_inception("inception-v3-clean", device="cpu"), "layers")
    # a CLIP extractor without weights lists the CLIP extractors
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LapgenError) as err:
        FeatureExtractor("clip-vit-l-14-336")
    assert "clip-vit-b-32 (" in err.value.one_line() and "inception" not in err.value.one_line().split(";")[-1]


def test_wrong_files_are_one_line_errors(torchscript_inception, inception_weights, tmp_path):
    import torch.jit

    not_script = FeatureExtractor("inception-v3-clean", weights=inception_weights)  # a plain state dict
    with pytest.raises(LapgenError, match="not a TorchScript archive"):
        _ = not_script.model

    class NoLayers(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / "other.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(NoLayers()).save(str(path))
    with pytest.raises(LapgenError, match="no `layers` submodule"):
        _ = FeatureExtractor("inception-v3-clean", weights=path).model
