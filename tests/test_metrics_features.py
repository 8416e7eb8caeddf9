"""Feature extraction: preprocessing vs the reference libraries, torch-fidelity end to end, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lapgen.errors import LapgenError
from lapgen.metrics import frechet_distance, kid
from lapgen.metrics.features import (
    FeatureExtractor,
    clean_resize,
    clip_fid_crop,
    cmmd_crop,
    compute_features,
    inception_pool3,
    preprocessing_id,
)
from lapgen.metrics.images import open_image_set
from tests.fixtures.metrics import make_image_set, write_random_inception


def _img(w, h, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_clean_resize_equals_clean_fid():
    from cleanfid.resize import build_resizer

    img = _img(64, 48)
    ref = build_resizer("clean")(img)  # (299, 299, 3) float32, clean-fid's own resizer
    ours = clean_resize(img)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref.transpose(2, 0, 1))


@pytest.mark.parametrize("size", [(64, 64), (80, 48), (48, 80)])
def test_clip_crops_equal_torchvision_and_reference(size):
    from torchvision import transforms

    img = _img(*size, seed=1)
    tv = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(32)])
    np.testing.assert_array_equal(clip_fid_crop(img, 32), np.asarray(tv(Image.fromarray(img))))
    w, h = size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    ref = Image.fromarray(img).crop((left, top, left + side, top + side)).resize((32, 32), Image.BICUBIC)
    np.testing.assert_array_equal(cmmd_crop(img, 32), np.asarray(ref))
    if w == h:
        np.testing.assert_array_equal(clip_fid_crop(img, 32), cmmd_crop(img, 32))


def test_preprocessing_ids_share_clip_pass_only_for_square_sets():
    from lapgen.metrics.features import get_spec

    spec = get_spec("clip-vit-b-32")
    assert preprocessing_id(spec, "clip-fid", (128, 128)) == preprocessing_id(spec, "cmmd", (128, 128))
    assert preprocessing_id(spec, "clip-fid", (160, 128)) != preprocessing_id(spec, "cmmd", (160, 128))
    inc = get_spec("inception-v3")
    assert preprocessing_id(inc, "clean", (128, 128)) != preprocessing_id(inc, "torch-fidelity", (128, 128))


def _tf_input_size(monkeypatch, size):
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    monkeypatch.setattr(tf_inception.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", size)


def _check_inception_body(name, weights, size, monkeypatch):
    _tf_input_size(monkeypatch, size)
    ext = FeatureExtractor(name, weights=weights)
    x = np.stack([_img(64, 64, s).transpose(2, 0, 1) for s in range(2)])
    with torch.inference_mode():
        ref = ext.model(torch.from_numpy(x))[0].numpy()  # torch-fidelity's own forward (uint8 in)
    ours = ext.forward(x, "torch-fidelity")
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert np.abs(ref).mean() > 1e-2  # re-initialised weights: features do not vanish


def test_inception_body_equals_torch_fidelity_forward(small_inception, monkeypatch):
    _check_inception_body(*small_inception, 75, monkeypatch)


@pytest.mark.slow
def test_inception_body_equals_torch_fidelity_forward_full_size(inception_weights, monkeypatch):
    _check_inception_body("inception-v3", inception_weights, 299, monkeypatch)


def _check_fid_kid_vs_torch_fidelity(name, weights, size, image_sets, monkeypatch):
    import torch_fidelity

    _tf_input_size(monkeypatch, size)
    ext = FeatureExtractor(name, weights=weights)
    gen = compute_features(open_image_set(image_sets["gen"]), ext, "torch-fidelity", use_cache=False).features
    real = compute_features(open_image_set(image_sets["real"]), ext, "torch-fidelity", use_cache=False).features
    ref = torch_fidelity.calculate_metrics(
        input1=str(image_sets["gen"]), input2=str(image_sets["real"]), fid=True, kid=True, cuda=False,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
        kid_subset_size=8, kid_subsets=20, cache=False, verbose=False, save_cpu_ram=True)
    fid = frechet_distance(gen, real)
    assert fid > 0.1  # clearly different sets give a clearly non-zero FID with these weights
    assert fid == pytest.approx(ref["frechet_inception_distance"], rel=1e-5)
    mean, std = kid(gen, real, subsets=20, subset_size=8, dtype=np.float32, method="subset")
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-5)
    mean64, _ = kid(gen, real, subsets=20, subset_size=8)
    assert mean64 == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)


def test_fid_kid_equal_torch_fidelity_calculate_metrics(small_inception, image_sets, monkeypatch):
    _check_fid_kid_vs_torch_fidelity(*small_inception, 75, image_sets, monkeypatch)


@pytest.mark.slow
def test_fid_kid_equal_torch_fidelity_calculate_metrics_full_size(inception_weights, image_sets, monkeypatch):
    _check_fid_kid_vs_torch_fidelity("inception-v3", inception_weights, 299, image_sets, monkeypatch)


def test_clean_protocol_features_from_clean_fid_resize(small_inception, image_sets):
    from cleanfid.resize import make_resizer

    ext = FeatureExtractor(*small_inception[:1], weights=small_inception[1])
    s = open_image_set(image_sets["gen"])
    ours = compute_features(s, ext, "clean", use_cache=False).features
    resize = make_resizer("PIL", False, "bicubic", (75, 75))  # clean-fid's "clean" resizer at 75 px
    batch = np.stack([resize(np.asarray(Image.open(s.path(i)).convert("RGB"))).transpose(2, 0, 1)
                      for i in range(len(s))])
    with torch.inference_mode():
        ref = inception_pool3(ext.model, torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    tf = compute_features(s, ext, "torch-fidelity", use_cache=False).features
    assert not np.allclose(ours, tf, rtol=1e-3)  # the two resize protocols give different features


def test_cache_hits_and_invalidation(inception_weights, tiny_clip, tmp_path):
    name, clip_weights = tiny_clip
    folder = make_image_set(tmp_path / "set", 6, seed=5)
    ext = FeatureExtractor(name, weights=clip_weights)
    first = compute_features(open_image_set(folder), ext, "cmmd")
    again = compute_features(open_image_set(folder), ext, "cmmd")
    assert not first.cached and again.cached and again.key == first.key
    np.testing.assert_array_equal(first.features, again.features)
    # a changed image changes the key
    make_image_set(tmp_path / "other", 1, seed=99)
    (tmp_path / "other" / "0000.png").replace(folder / "0003.png")
    changed = compute_features(open_image_set(folder), ext, "cmmd")
    assert not changed.cached and changed.key != first.key
    assert not np.array_equal(changed.features[3], first.features[3])
    np.testing.assert_array_equal(changed.features[:3], first.features[:3])
    # other weights (random weights never share the real weights' entries) change the key
    from tests.fixtures.metrics import write_random_clip

    other = write_random_clip(tmp_path / "other-clip.safetensors", "lapgen-test-tiny-clip", seed=1)
    ext2 = FeatureExtractor(name, weights=other)
    assert ext2.weights_sha256 != ext.weights_sha256
    res2 = compute_features(open_image_set(folder), ext2, "cmmd")
    assert not res2.cached and res2.key != changed.key


def test_cache_key_names_device_and_dtype(tiny_clip, tmp_path, monkeypatch):
    """Features from another device (a GPU: cuDNN kernels, batch-dependent results) never share a CPU entry."""
    from lapgen.metrics import features as F

    name, clip_weights = tiny_clip
    folder = make_image_set(tmp_path / "set", 3, seed=7)
    ext = FeatureExtractor(name, weights=clip_weights)
    on_cpu = compute_features(open_image_set(folder), ext, "cmmd")
    assert on_cpu.extractor["device"] == "cpu" and on_cpu.extractor["dtype"] == "float32"
    monkeypatch.setattr(F, "device_id", lambda device: "cuda:NVIDIA A100-SXM4-80GB")
    digest = open_image_set(folder).digest()
    prep = preprocessing_id(ext.spec, "cmmd", (64, 64))
    assert F.feature_key(digest, ext, prep) != on_cpu.key
    monkeypatch.setattr(F, "device_id", lambda device: "cpu")
    assert F.feature_key(digest, ext, prep) == on_cpu.key


def test_extraction_runs_without_tf32_and_restores_the_settings(small_inception, image_sets, monkeypatch):
    """TF32 (cuDNN convolutions default to it) is off while the network runs and the user's settings come
    back afterwards; the result records it."""
    from lapgen.metrics import features as F

    seen = []
    body = F.inception_pool3

    def spy(net, x):
        seen.append((torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision))
        return body(net, x)

    monkeypatch.setattr(F, "inception_pool3", spy)
    before = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    name, weights = small_inception
    result = compute_features(open_image_set(image_sets["gen"]), FeatureExtractor(name, weights=weights), "clean",
                              use_cache=False)
    assert seen and all(s == ("ieee", "ieee") for s in seen) and before[0] == "tf32"
    assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == before
    assert (result.extractor["precision"], result.extractor["tf32"]) == ("fp32", False)


def test_strict_fp32_restores_after_an_error():
    from lapgen.metrics.precision import strict_fp32

    before = torch.backends.cudnn.conv.fp32_precision
    with pytest.raises(RuntimeError), strict_fp32() as state:
        assert state == {"tf32": False, "fp32_precision": "ieee"}
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        raise RuntimeError("boom")
    assert torch.backends.cudnn.conv.fp32_precision == before


def test_extraction_resumes_after_interruption(tiny_clip, tmp_path, monkeypatch):
    name, clip_weights = tiny_clip
    folder = make_image_set(tmp_path / "set", 7, seed=6)
    ext = FeatureExtractor(name, weights=clip_weights)
    reference = compute_features(open_image_set(folder), ext, "clip-fid", use_cache=False, chunk=3).features
    calls = {"n": 0}
    real_forward = ext.forward

    def flaky(batch, protocol):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_forward(batch, protocol)

    monkeypatch.setattr(ext, "forward", flaky)
    with pytest.raises(KeyboardInterrupt):
        compute_features(open_image_set(folder), ext, "clip-fid", chunk=3, batch_size=3)
    calls["n"] = 10  # no more failures; count the batches of the resumed run
    result = compute_features(open_image_set(folder), ext, "clip-fid", chunk=3, batch_size=3)
    assert calls["n"] == 12  # chunk 1 came from the partial file, chunks 2 and 3 were computed
    np.testing.assert_allclose(result.features, reference, rtol=1e-6, atol=1e-6)


def test_weights_errors_are_one_line(inception_weights, tiny_clip, tmp_path):
    with pytest.raises(LapgenError, match="does not exist"):
        FeatureExtractor("inception-v3", weights=tmp_path / "missing.pth")
    with pytest.raises(LapgenError, match="unknown feature extractor"):
        FeatureExtractor("resnet-50", weights=inception_weights)
    bad = FeatureExtractor("inception-v3", weights=tiny_clip[1])
    with pytest.raises(LapgenError, match="cannot load inception-v3 weights"):
        _ = bad.model


def test_registry_entry_with_local_file_is_used(inception_weights, monkeypatch):
    from lapgen import registry

    registry.add_entry("my-inception", str(inception_weights), kind="feature-extractor")
    ext = FeatureExtractor("inception-v3", weights="my-inception")
    assert ext.weights_path.resolve() == inception_weights.resolve()
    random = write_random_inception(inception_weights.with_name("other.pth"), seed=3)
    assert FeatureExtractor("inception-v3", weights=random).weights_sha256 != ext.weights_sha256


def _check_clip_features(name, weights, model_name, size, folder):
    import open_clip
    from torchvision import transforms as T

    s = open_image_set(folder)
    ours = compute_features(s, FeatureExtractor(name, weights=weights), "clip-fid", use_cache=False).features
    # independent: clean-fid's CLIP transform on PIL images and open_clip's own checkpoint loading
    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor(),
                    T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])
    model = open_clip.create_model(model_name, pretrained=str(weights)).eval()
    with torch.inference_mode():
        ref = model.encode_image(torch.stack([tf(Image.open(s.path(i)).convert("RGB")) for i in range(len(s))]))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_clip_features_equal_open_clip_with_clean_fid_transform(tiny_clip, image_sets):
    _check_clip_features(*tiny_clip, "lapgen-test-tiny-clip", 64, image_sets["gen"])


@pytest.mark.slow
def test_clip_vit_b_32_features_full_size(clip_b32_weights, image_sets):
    _check_clip_features("clip-vit-b-32", clip_b32_weights, "ViT-B-32-quickgelu", 224, image_sets["gen"])


def test_image_sets_from_folders_and_datasets(tmp_path):
    import json

    plain = make_image_set(tmp_path / "plain", 3, seed=1)
    (plain / "notes.txt").write_text("x")
    make_image_set(plain / "sub", 2, seed=2)  # not listed: plain folders are not recursive
    assert open_image_set(plain).files == ["0000.png", "0001.png", "0002.png"]
    ds = make_image_set(tmp_path / "ds", 8, seed=3, metadata=True)
    rows = [json.loads(x) for x in (ds / "metadata.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        r["split"] = "train" if i % 2 else "test"
    rows.reverse()  # metadata order differs from name order
    (ds / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = open_image_set(ds, split="train")
    assert s.files == sorted(r["file_name"] for r in rows if r["split"] == "train")
    assert [r["file_name"] for r in s.records] == s.files
    sample = open_image_set(ds, limit=3, sample_seed=42)
    chosen = np.random.RandomState(42).choice(8, 3, replace=False)
    assert sample.files == sorted(rows[i]["file_name"] for i in chosen)
    assert sample.selection == {"limit": 3, "sample_seed": 42}
    (ds / "images" / rows[0]["file_name"].split("/")[-1]).unlink()
    with pytest.raises(LapgenError, match="missing"):
        open_image_set(ds)
    with pytest.raises(LapgenError, match="cannot sample 20"):
        open_image_set(plain, limit=20)


def test_openai_torchscript_weights_load(tiny_clip, image_sets, tmp_path):
    from tests.fixtures.metrics import write_openai_torchscript

    name, weights = tiny_clip
    archive = write_openai_torchscript(tmp_path / "ViT-tiny.pt", weights)
    s = open_image_set(image_sets["gen"])
    ts = compute_features(s, FeatureExtractor(name, weights=archive), "cmmd", use_cache=False).features
    sd = compute_features(s, FeatureExtractor(name, weights=weights), "cmmd", use_cache=False).features
    assert ts.shape == sd.shape == (10, 32)
    # the archive holds the same tensors under the same names: loaded into the same architecture, same features
    np.testing.assert_array_equal(ts, sd)


def test_extractors_and_registry_loaders_build_the_same_networks(tiny_clip, inception_weights, tmp_path,
                                                                 monkeypatch, caplog):
    """One builder serves both: a FeatureExtractor's network equals what `lapgen.models.loading` loads for
    a registry entry with the same weights file (and open_clip's "initialized randomly" warning, wrong
    once the weights are loaded, is not shown)."""
    import logging

    from lapgen import registry
    from lapgen.models import loading

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    name, weights = tiny_clip
    registry.add_entry("my-tiny-clip", str(weights), kind="feature-extractor")
    with caplog.at_level(logging.WARNING):
        ours = FeatureExtractor(name, weights=weights).model
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]
    theirs, _ = loading.load_clip("my-tiny-clip", device="cpu", arch="lapgen-test-tiny-clip")
    theirs.requires_grad_(False)  # as the extractor: PyTorch's attention takes its fused path only then
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(ours.encode_image(x), theirs.encode_image(x), rtol=0, atol=0)
    registry.add_entry("my-inception", str(inception_weights), kind="feature-extractor")
    ours = FeatureExtractor("inception-v3", weights=inception_weights).model
    theirs = loading.load_inception("my-inception", device="cpu")
    assert type(ours) is type(theirs)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lapgen_clip_extractor_through_torch_fidelity(tiny_clip, image_sets):
    """torch-fidelity's own FID and KID on lapgen's registered CLIP extractor equal lapgen's numbers."""
    import torch_fidelity

    from lapgen.metrics.torch_fidelity_bridge import register_with_torch_fidelity

    name, weights = tiny_clip
    tf_name = register_with_torch_fidelity(name, "clip-fid")
    ref = torch_fidelity.calculate_metrics(
        input1=str(image_sets["gen"]), input2=str(image_sets["real"]), fid=True, kid=True, cuda=False,
        feature_extractor=tf_name, feature_extractor_weights_path=str(weights), kid_subset_size=8,
        kid_subsets=10, cache=False, verbose=False, save_cpu_ram=True)
    ext = FeatureExtractor(name, weights=weights)
    gen, real = (compute_features(open_image_set(image_sets[k]), ext, "clip-fid", use_cache=False).features
                 for k in ("gen", "real"))
    assert frechet_distance(gen, real) == pytest.approx(ref["frechet_inception_distance"], rel=1e-5)
    mean, std = kid(gen, real, subsets=10, subset_size=8, dtype=np.float32, method="subset")
    assert (mean, std) == pytest.approx((ref["kernel_inception_distance_mean"],
                                         ref["kernel_inception_distance_std"]), rel=1e-5)


@pytest.mark.slow
def test_lapgen_inception_clean_through_torch_fidelity(inception_weights, image_sets):
    import torch_fidelity

    from lapgen.metrics.torch_fidelity_bridge import register_with_torch_fidelity

    tf_name = register_with_torch_fidelity("inception-v3", "clean")
    ref = torch_fidelity.calculate_metrics(
        input1=str(image_sets["gen"]), input2=str(image_sets["real"]), fid=True, cuda=False, verbose=False,
        feature_extractor=tf_name, feature_extractor_weights_path=str(inception_weights), cache=False,
        save_cpu_ram=True)
    ext = FeatureExtractor("inception-v3", weights=inception_weights)
    gen, real = (compute_features(open_image_set(image_sets[k]), ext, "clean", use_cache=False).features
                 for k in ("gen", "real"))
    assert frechet_distance(gen, real) == pytest.approx(ref["frechet_inception_distance"], rel=1e-5)


@pytest.mark.parametrize("name", ["inception-v3", "inception-v3-clean", "clip-vit-b-32", "clip-vit-l-14-336"])
def test_builtin_extractor_specs_match_their_networks_and_registry_entries(name):
    """Each built-in extractor's dimension and input size are those of the network it names (open_clip's
    config, torch-fidelity's Inception), and its registry entry names the same architecture, so
    `--clip clip-vit-l-14-336` builds the CMMD reference's ViT-L/14 @ 336 (768-d) from a local file."""
    import open_clip
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    from lapgen import registry
    from lapgen.metrics.features import get_spec

    spec = get_spec(name)
    entry = registry.resolve(name, kind="feature-extractor")
    if spec.family == "inception":
        assert (spec.dim, spec.input_size) == (2048, tfi.FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE)
        assert entry.options["loader"] == spec.loader
        return
    cfg = open_clip.get_model_config(spec.open_clip_model)
    assert (spec.dim, spec.input_size) == (cfg["embed_dim"], cfg["vision_cfg"]["image_size"])
    assert cfg["quick_gelu"]  # OpenAI's weights were trained with QuickGELU
    assert entry.options["arch"] == spec.open_clip_model and entry.options["pretrained"] == "openai"


def _check_clean_protocol_vs_clean_fid(name, weights, size, image_sets):
    """`lapgen eval fid/kid` (clean protocol) against clean-fid's own chain with the same network: its folder
    reading and `clean` resize, its Fréchet distance and its KID. clean-fid draws KID subsets from the global
    NumPy RNG, but with subsets of the whole sets (m = N) every draw is a permutation, so the value is fixed."""
    import json

    from cleanfid import fid as cf
    from cleanfid.resize import make_resizer
    from typer.testing import CliRunner

    from lapgen.cli.main import app
    from lapgen.models.loading import inception_from_file

    net = inception_from_file(weights)
    resize = make_resizer("PIL", False, "bicubic", (size, size))  # clean-fid's "clean" resizer

    def body(x):  # the Inception after clean-fid's resize: (x - 128) / 128 inside, pool3 out
        return inception_pool3(net, x)

    feats = [cf.get_folder_features(str(image_sets[k]), model=body, num_workers=0, batch_size=8,
                                    device=torch.device("cpu"), mode="clean", custom_fn_resize=resize,
                                    verbose=False) for k in ("gen", "real")]
    ref_fid = cf.frechet_distance(feats[0].mean(0), np.cov(feats[0], rowvar=False), feats[1].mean(0),
                                  np.cov(feats[1], rowvar=False))
    ref_kid = cf.kernel_distance(*(f.astype(np.float64) for f in feats), num_subsets=3)  # lapgen: float64
    runner = CliRunner()
    out = {}
    for metric in ("fid", "kid"):
        res = runner.invoke(app, ["eval", metric, str(image_sets["gen"]), str(image_sets["real"]), "--inception",
                                  name, "--weights", str(weights), "--json"])  # kid reads fid's cached features
        assert res.exit_code == 0, res.output
        out[metric] = json.loads(res.stdout)
    assert out["fid"]["protocol"] == "clean" and out["kid"]["params"]["subset_size"] == 10
    assert ref_fid > 0.1 and out["fid"]["value"] == pytest.approx(ref_fid, rel=1e-5)
    assert out["kid"]["value"] == pytest.approx(ref_kid, rel=1e-5)


def test_clean_protocol_fid_kid_equal_clean_fid(small_inception, image_sets):
    _check_clean_protocol_vs_clean_fid(*small_inception, 75, image_sets)


@pytest.mark.slow
def test_clean_protocol_fid_kid_equal_clean_fid_full_size(inception_weights, image_sets):
    _check_clean_protocol_vs_clean_fid("inception-v3", inception_weights, 299, image_sets)
