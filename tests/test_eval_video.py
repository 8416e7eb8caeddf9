"""`lapgen eval video`: FVD / CD-FVD equal an independent computation, the behaviour the metrics must show
(a set against itself, frames shuffled in time, masks shifted), one decode per video, and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lapgen.cli.main import app
from lapgen.metrics.video import MaskPredictor, VideoEvalConfig, evaluate_videos
from tests.fixtures.video_sets import (
    synthetic_video,
    tool_masks_of,
    write_clip_folder,
    write_frames_set,
    write_frames_video,
)

runner = CliRunner()
STUB = MaskPredictor(tool_masks_of, {"name": "threshold-stub"})


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """GEN: 4 frame folders with masks; REAL: 5 `masks clips`-style clips of another look (brighter, faster)."""
    root = tmp_path_factory.mktemp("video-sets")
    gen = write_frames_set(root / "gen", [synthetic_video(16, 64, s) for s in range(4)])
    real_videos = []
    for s in range(5):
        f, m = synthetic_video(16, 64, 50 + s, tool_step=4, pan=2)
        real_videos.append((np.clip(f.astype(int) + 40, 0, 255).astype(np.uint8), m))
    real = root / "real"
    for k, (f, m) in enumerate(real_videos):
        write_clip_folder(real / f"clip_{k:03d}", f, m)
    return {"gen": gen, "real": real, "root": root}


def _cfg(sets, video_networks, **kw):
    base = dict(gen=sets["gen"], real=sets["real"], i3d_weights=str(video_networks["i3d"]),
                videomae_weights=str(video_networks["videomae"]), device="cpu", use_cache=False, n_boot=200)
    base.update(kw)
    return VideoEvalConfig(**base)


# --- an independent computation of FVD and CD-FVD ------------------------------------------------------------

def _frames_of(folder: Path) -> np.ndarray:
    files = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])


def _all_videos(root: Path) -> list[np.ndarray]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    return [_frames_of(p / "frames" if (p / "frames").is_dir() else p) for p in folders]


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The FVD formula as StyleGAN-V writes it (scipy sqrtm of the covariance product)."""
    import scipy.linalg

    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = scipy.linalg.sqrtm(s_a @ s_b, disp=False)
    return float(np.real(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * root)))


def _i3d_reference(path: Path, videos: list[np.ndarray]) -> np.ndarray:
    """StyleGAN-V's call: uint8 (B, 3, T, H, W), rescale/resize/return_features."""
    import torch

    net = torch.jit.load(str(path)).eval()
    with torch.no_grad():
        x = torch.from_numpy(np.stack(videos)).permute(0, 4, 1, 2, 3)
        return net(x, rescale=True, resize=True, return_features=True).numpy()


def _videomae_reference(path: Path, videos: list[np.ndarray]) -> np.ndarray:
    """VideoMAE-v2's forward_features written out with functional ops from the saved tensors."""
    import torch
    import torch.nn.functional as F
    from safetensors import safe_open
    from safetensors.torch import load_file

    sd = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["lapgen_videomae"])
    dim, heads, size = meta["embed_dim"], meta["num_heads"], meta["img_size"]
    x = torch.from_numpy(np.stack(videos)).float() / 255  # (B, T, H, W, 3)
    b, t = x.shape[:2]
    x = F.interpolate(x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, *x.shape[2:4]), size=(size, size),
                      mode="bilinear", align_corners=False).reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4)
    w = sd["patch_embed.proj.weight"]
    tokens = F.conv3d(x, w, sd["patch_embed.proj.bias"], stride=tuple(w.shape[2:])).flatten(2).transpose(1, 2)
    n = tokens.shape[1]
    table = [[p / math.pow(10000, 2 * (j // 2) / dim) for j in range(dim)] for p in range(n)]
    pos = torch.tensor([[math.sin(v) if j % 2 == 0 else math.cos(v) for j, v in enumerate(row)] for row in table])
    h = tokens + pos.float()
    for i in range(meta["depth"]):
        p = f"blocks.{i}."
        y = F.layer_norm(h, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(dim), sd[p + "attn.v_bias"]])
        q, k, v = (y @ sd[p + "attn.qkv.weight"].T + bias).split(dim, dim=-1)
        q, k, v = (z.reshape(b, n, heads, dim // heads) for z in (q, k, v))
        att = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dim // heads)
        mixed = torch.einsum("bhqk,bkhd->bqhd", att.softmax(-1), v).reshape(b, n, dim)
        h = h + mixed @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        y = F.layer_norm(h, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.gelu(y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        h = h + y @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return F.layer_norm(h.mean(1), (dim,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps=1e-6).numpy()


def test_fvd_and_cd_fvd_equal_an_independent_computation(sets, video_networks):
    r = evaluate_videos(_cfg(sets, video_networks, metrics=("fvd", "cd_fvd")))
    gen, real = _all_videos(sets["gen"]), _all_videos(sets["real"])
    fvd = _frechet(_i3d_reference(video_networks["i3d"], gen), _i3d_reference(video_networks["i3d"], real))
    cd = _frechet(_videomae_reference(video_networks["videomae"], gen),
                  _videomae_reference(video_networks["videomae"], real))
    assert fvd > 0.01 and cd > 0.01  # the two sets differ: not a vacuous match
    assert r["metrics"]["fvd"] == pytest.approx(fvd, rel=1e-6)
    assert r["metrics"]["cd_fvd"] == pytest.approx(cd, rel=1e-6)
    d = r["details"]["fvd"]
    assert (d["n_gen"], d["n_real"], d["dim"]) == (4, 5, 400)
    assert d["protocol"]["frames_per_clip"] == 16 and d["protocol"]["resolution"] == [64, 64]
    assert len(d["weights_sha256"]) == 64 and r["details"]["cd_fvd"]["dim"] == 32


def test_a_set_against_itself_gives_fvd_about_zero(sets, video_networks):
    r = evaluate_videos(_cfg(sets, video_networks, real=sets["gen"], metrics=("fvd", "cd_fvd", "warp_error")))
    assert abs(r["metrics"]["fvd"]) < 1e-6 and abs(r["metrics"]["cd_fvd"]) < 1e-6
    assert r["details"]["warp_error"]["real"] == r["metrics"]["warp_error"]


def test_shuffled_frames_give_worse_warp_error_and_frame_consistency(tmp_path, tiny_clip, sets):
    rng = np.random.default_rng(0)
    videos = [synthetic_video(16, 64, s) for s in range(3)]
    order = write_frames_set(tmp_path / "order", videos)
    shuffled = write_frames_set(tmp_path / "shuffled", [(f[rng.permutation(16)], None) for f, _ in videos])
    name, weights = tiny_clip
    r = evaluate_videos(VideoEvalConfig(gen=shuffled, real=order, metrics=("warp_error", "frame_consistency"),
                                        clip=name, clip_weights=str(weights), device="cpu", use_cache=False,
                                        n_boot=0))
    warp, cons = r["details"]["warp_error"], r["details"]["frame_consistency"]
    assert warp["value"] > 2 * warp["real"] > 0  # shuffled (GEN) against in order (REAL, the floor)
    assert cons["value"] < cons["real"] <= 1.0
    assert warp["n_gen"] == warp["n_real"] == 3 * 15


def test_masks_shifted_by_a_quarter_frame_lower_mask_f1(tmp_path, sets, video_networks):
    videos = [synthetic_video(16, 64, s) for s in range(3)]
    true = write_frames_set(tmp_path / "true", videos)
    shifted = write_frames_set(tmp_path / "shifted", [(f, np.roll(m, 64 // 4, axis=2)) for f, m in videos])
    kw = dict(real=sets["real"], metrics=("mask_f1", "mask_iou"), device="cpu", use_cache=False, n_boot=200)
    good = evaluate_videos(VideoEvalConfig(gen=true, **kw), predictor=STUB)
    bad = evaluate_videos(VideoEvalConfig(gen=shifted, **kw), predictor=STUB)
    assert good["metrics"]["mask_f1"] == pytest.approx(1.0) and good["metrics"]["mask_iou"] == pytest.approx(1.0)
    assert bad["metrics"]["mask_f1"] < 0.9 * good["metrics"]["mask_f1"]
    assert bad["metrics"]["mask_iou"] < bad["metrics"]["mask_f1"]  # IoU = F1 / (2 - F1) per frame
    d = bad["details"]["mask_f1"]
    assert d["worst_frame"]["value"] <= d["value"] and d["n_videos"] == 3 and d["n_frames"] == 48
    assert d["ci"]["unit"] == "video" and d["ci"]["low"] - 1e-12 <= d["value"] <= d["ci"]["high"] + 1e-12
    assert good["details"]["mask_f1"]["real"] == pytest.approx(1.0)  # REAL records masks: the stub's ceiling


def test_each_video_is_decoded_once_and_pieces_are_cached(sets, video_networks, tiny_clip, monkeypatch, tmp_path):
    import lapgen.metrics.video_sets as vs

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))  # an empty cache

    calls: list[str] = []
    real_decode = vs.decode
    monkeypatch.setattr(vs, "decode", lambda item: calls.append(item.name) or real_decode(item))
    name, weights = tiny_clip
    cfg = _cfg(sets, video_networks, clip=name, clip_weights=str(weights), use_cache=True)
    first = evaluate_videos(cfg, predictor=STUB)
    assert set(first["metrics"]) == {"mask_f1", "mask_iou", "warp_error", "frame_consistency", "fvd", "cd_fvd"}
    assert sorted(calls) == sorted([f"video_{k:03d}" for k in range(4)] + [f"clip_{k:03d}" for k in range(5)])
    calls.clear()
    again = evaluate_videos(cfg, predictor=STUB)  # every piece from the cache: nothing decoded
    assert calls == [] and again["metrics"] == first["metrics"]


def test_an_interrupted_evaluation_resumes_from_the_cache(sets, video_networks, monkeypatch, tmp_path):
    import lapgen.metrics.video_sets as vs

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))  # an empty cache

    real_decode, seen = vs.decode, []

    def failing(item):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(item.name)
        return real_decode(item)

    monkeypatch.setattr(vs, "decode", failing)
    cfg = _cfg(sets, video_networks, metrics=("warp_error", "fvd"), use_cache=True, seed=7)
    with pytest.raises(KeyboardInterrupt):
        evaluate_videos(cfg)
    monkeypatch.setattr(vs, "decode", lambda item: seen.append(item.name) or real_decode(item))
    done = evaluate_videos(cfg)
    assert len(seen) == 9 and len(set(seen)) == 9  # the two finished videos were not decoded again
    fresh = evaluate_videos(_cfg(sets, video_networks, metrics=("warp_error", "fvd"), use_cache=False, seed=7))
    assert done["metrics"] == fresh["metrics"]


# --- the command ---------------------------------------------------------------------------------------------

def _stub_segmenter(monkeypatch):
    from lapgen.models import segmentation as seg

    monkeypatch.setattr(seg, "resolve_segmenter", lambda s: ("stub.pt", {"name": s or "stub", "random_init": False}))
    monkeypatch.setattr(seg, "load_yolo", lambda target: "stub-model")
    monkeypatch.setattr(seg, "model_imgsz", lambda model: 64)
    monkeypatch.setattr(seg, "predict_union_masks",
                        lambda model, images, **kw: [(tool_masks_of(np.stack(images))[i], 1) for i in range(len(images))])


def test_cli_json_out_and_skipped_metric(sets, video_networks, tmp_path, monkeypatch):
    _stub_segmenter(monkeypatch)
    out = tmp_path / "video.json"
    res = runner.invoke(app, ["eval", "video", str(sets["gen"]), str(sets["real"]), "--segmenter", "my-yolo",
                              "--i3d-weights", str(video_networks["i3d"]), "--device", "cpu", "--no-cache",
                              "--boot", "100", "--setup", "video", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    assert printed == json.loads(out.read_text())
    assert set(printed["metrics"]) == {"mask_f1", "mask_iou", "warp_error", "fvd"}  # no CLIP, no VideoMAE here
    assert set(printed["skipped"]) == {"frame_consistency", "cd_fvd"}
    assert "videomae-v2-g" in printed["skipped"]["cd_fvd"] and "--videomae-weights" in printed["skipped"]["cd_fvd"]
    assert printed["metrics"]["mask_f1"] == pytest.approx(1.0) and printed["details"]["mask_f1"]["segmenter"][
        "name"] == "my-yolo"
    assert printed["setup"] == "video" and printed["n_gen"] == 4 and printed["n_real"] == 5
    assert (tmp_path / "video.json.lapgen.yaml").exists()


def _one_line_error(argv):
    res = runner.invoke(app, argv)
    assert res.exit_code == 2, res.output
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("lapgen: error:"), res.stderr
    return lines[0]


def test_named_metric_without_weights_exits_2(sets, tmp_path):
    out = tmp_path / "r.json"
    line = _one_line_error(["eval", "video", str(sets["gen"]), str(sets["real"]), "--metrics", "warp_error,fvd",
                            "--device", "cpu", "--out", str(out)])
    assert "fvd" in line and "i3d-kinetics400" in line and not out.exists()


@pytest.mark.parametrize("case", ["unreadable", "sizes", "mask-count", "empty"])
def test_bad_sets_exit_2_with_one_line_and_no_result(case, tmp_path, sets):
    gen = tmp_path / "gen"
    f, m = synthetic_video(4, 64, 0)
    if case == "unreadable":
        write_frames_set(gen, [(f, m)])
        (gen / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(200)))
        expect = "broken.mp4"
    elif case == "sizes":
        small, small_masks = synthetic_video(4, 32, 1)
        write_frames_set(gen, [(f, m), (small, small_masks)])
        expect = "mixes frame sizes"
    elif case == "mask-count":
        write_frames_set(gen, [(f, m)])
        write_frames_video(gen / "video_001", f, m)
        (gen / "video_001" / "masks" / "000003.png").unlink()
        (gen / "video_001" / "metadata.jsonl").unlink()
        expect = "4 frames but 3 masks"
    else:
        gen.mkdir()
        expect = "holds no videos"
    out = tmp_path / "r.json"
    line = _one_line_error(["eval", "video", str(gen), str(sets["real"]), "--metrics", "warp_error",
                            "--device", "cpu", "--no-cache", "--out", str(out)])
    assert expect in line and not out.exists()


def test_mp4_sets_and_masks_from_a_lapgen_video_card(tmp_path):
    from lapgen.data.video import write_mp4
    from lapgen.metrics.video_sets import decode, open_video_set, read_masks

    f, m = synthetic_video(6, 64, 3)
    folder = tmp_path / "mp4s"
    write_mp4(f, folder / "a.mp4", fps=8)
    write_mp4(f, folder / "a_side_by_side.mp4", fps=8)  # a preview lapgen writes beside: skipped
    write_frames_video(folder / "b_frames", f, m)
    write_mp4(f, folder / "b.mp4", fps=8)  # the same video as b_frames/: read once, losslessly
    vs = open_video_set(folder)
    assert [i.name for i in vs.items] == ["a.mp4", "b_frames"] and len(vs.notes) == 2
    decoded = decode(vs.items[0])
    assert decoded.shape == (6, 64, 64, 3) and np.abs(decoded.astype(int) - f).mean() < 4  # H.264 at crf 18
    assert not vs.items[0].has_masks and (read_masks(vs.items[1]) == m).all()


def test_report_has_a_video_table_with_published_reference_rows(sets, video_networks, tmp_path, monkeypatch):
    _stub_segmenter(monkeypatch)
    results = tmp_path / "eval"
    res = runner.invoke(app, ["eval", "video", str(sets["gen"]), str(sets["real"]), "--segmenter", "my-yolo",
                              "--i3d-weights", str(video_networks["i3d"]), "--metrics", "mask_f1,warp_error,fvd",
                              "--device", "cpu", "--no-cache", "--boot", "0", "--model", "demo video",
                              "--out", str(results / "video.json")])
    assert res.exit_code == 0, res.output
    saved = json.loads((results / "video.json").read_text())
    res = runner.invoke(app, ["eval", "report", str(results), "--out", str(tmp_path / "report.md"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    row = report["video"]["rows"][0]
    assert row["model"] == "demo video" and row["values"]["fvd"] == saved["metrics"]["fvd"]
    assert row["real_values"]["warp_error"] == saved["details"]["warp_error"]["real"]
    works = {p["work"].split()[0]: p for p in report["video"]["published"]}
    assert works["Endora"]["fvd"] == 460.7 and works["Endora"]["dataset"] == "Colonoscopic"
    assert (works["FEAT"]["fvd"], works["FEAT"]["cd_fvd"]) == (351.1, 397.0) and works["SAW"]["cd_fvd"] == 199.0
    md = (tmp_path / "report.md").read_text()
    assert "## Video metrics" in md and "not comparable" in md and "547" in md
    line = next(x for x in md.splitlines() if x.startswith("| demo video |"))
    assert f"{saved['metrics']['fvd']:.4g}" in line and f"({saved['details']['warp_error']['real']:.4g})" in line


def test_random_video_networks_register_by_path_and_load_by_name(sets, video_networks, tmp_path, monkeypatch):
    """`lapgen models add NAME FILE --kind feature-extractor`, then the name wherever a weights file goes."""
    import torch

    from lapgen.models.loading import load_video_extractor
    from lapgen.outputs import file_sha256

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    for name, key in (("demo-i3d-random", "i3d"), ("demo-videomae-random", "videomae")):
        res = runner.invoke(app, ["models", "add", name, str(video_networks[key]), "--kind", "feature-extractor"])
        assert res.exit_code == 0, res.output
    r = evaluate_videos(_cfg(sets, video_networks, i3d_weights="demo-i3d-random",
                             videomae_weights="demo-videomae-random", metrics=("fvd", "cd_fvd")))
    by_path = evaluate_videos(_cfg(sets, video_networks, metrics=("fvd", "cd_fvd")))
    assert r["metrics"] == by_path["metrics"]
    assert r["details"]["fvd"]["weights_sha256"] == file_sha256(video_networks["i3d"])
    assert r["details"]["cd_fvd"]["weights_sha256"] == file_sha256(video_networks["videomae"])
    clip = torch.from_numpy(synthetic_video(16, 64, 0)[0][None])
    i3d = load_video_extractor("demo-i3d-random", device="cpu")
    direct = torch.jit.load(str(video_networks["i3d"]))
    x = clip.permute(0, 4, 1, 2, 3)
    assert torch.equal(i3d(x, rescale=True, resize=True, return_features=True),
                       direct(x, rescale=True, resize=True, return_features=True))
    assert load_video_extractor("demo-videomae-random", device="cpu").config.embed_dim == 32
    with pytest.raises(Exception, match="is not a video network"):
        load_video_extractor("clip-vit-b-32", device="cpu")
