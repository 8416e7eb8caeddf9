"""lapgen's RIFE IFNet_HDv3: the published flownet.pkl layout, strict loading, the midpoint, the registry kind.

No RIFE weights can be downloaded here, so the weights are random, in the layout of the published file
(tests/data/rife_ifnet_hdv3_layout.json: the 160 tensors of ControlVideo's checkpoints/flownet.pkl, saved
from a DataParallel model, hence the `module.` prefix).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lapgen.errors import LapgenError

pytestmark = pytest.mark.usefixtures("video_one_thread")

LAYOUT = json.loads((Path(__file__).parent / "data" / "rife_ifnet_hdv3_layout.json").read_text())


def published_state(seed: int = 0, spread: float = 0.05) -> dict[str, torch.Tensor]:
    """Random weights with the published keys (`module.` prefix) and shapes.

    Built from the layout file, not from lapgen's module: what lapgen loads is what the file holds.
    Each tensor is a PyTorch-default-like uniform init plus noise, so flows and masks are not trivial.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in LAYOUT["tensors"].items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 4
        bound = 1 / math.sqrt(fan_in)
        if key.endswith(".1.weight") and len(shape) == 1:  # PReLU slopes (PyTorch init 0.25)
            t = torch.full(shape, 0.25)
        else:
            t = (torch.rand(shape, generator=g) * 2 - 1) * bound
        state[LAYOUT["prefix"] + key] = t + spread * torch.randn(shape, generator=g) * bound
    return state


@pytest.fixture(scope="module")
def flownet(tmp_path_factory) -> Path:
    """A flownet.pkl as published: torch.save of a state dict whose keys start with `module.`."""
    path = tmp_path_factory.mktemp("rife") / "flownet.pkl"
    torch.save(published_state(), path)
    return path


def blob(cx: float, cy: float = 32.0, size: int = 64, sigma: float = 5.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    img = 0.1 + 0.8 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return img.expand(3, size, size)[None].clone().float()


def centroid_x(img: torch.Tensor) -> float:
    w = (img[0, 0] - 0.1).clamp(min=0)
    return float((w.sum(0) * torch.arange(img.shape[-1]).float()).sum() / w.sum())


# ---- layout and loading ---------------------------------------------------------------------------


def test_module_has_the_published_layout():
    from lapgen.models.controlvideo.rife import IFNetHDv3

    mine = {k: list(v.shape) for k, v in IFNetHDv3().state_dict().items()}
    assert mine == LAYOUT["tensors"]
    assert len(mine) == LAYOUT["num_tensors"] == 160
    assert sum(math.prod(s) for s in mine.values()) == LAYOUT["num_parameters"] == 3_038_015


@pytest.mark.parametrize("zipped", [True, False])
def test_published_file_loads_strictly(tmp_path, zipped):
    """Both torch.save formats (zip since PyTorch 1.6, and the legacy one older RIFE files use)."""
    from lapgen.models.controlvideo.rife import load_ifnet

    state = published_state(seed=1)
    path = tmp_path / "flownet.pkl"
    torch.save(state, path, _use_new_zipfile_serialization=zipped)
    model = load_ifnet(path)
    loaded = model.state_dict()
    assert set(loaded) == {k[len("module.") :] for k in state}
    assert all(torch.equal(loaded[k[len("module.") :]], v) for k, v in state.items())
    assert not model.training


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_wrong_files_are_one_line_errors(tmp_path):
    from lapgen.models.controlvideo.rife import load_ifnet

    good = published_state()
    cases = {
        "missing": {k: v for k, v in good.items() if "block2.conv2" not in k},
        "unexpected": {**good, "module.contextnet.conv.weight": torch.zeros(1)},
        # the first HD v3 release had a single transposed convolution as flow head
        "shape": {**good, "module.block0.conv1.0.weight": torch.zeros(90, 4, 4, 4)},
    }
    for name, state in cases.items():
        path = tmp_path / f"{name}.pkl"
        torch.save(state, path)
        with pytest.raises(LapgenError, match="not a RIFE IFNet_HDv3 flownet.pkl") as err:
            load_ifnet(path)
        line = _one_line(err)
        assert str(path) in line
        assert {
            "missing": "missing block2.conv2",
            "unexpected": "unexpected contextnet.conv.weight",
            "shape": "block0.conv1.0.weight [90, 4, 4, 4] (expected [90, 45, 4, 4])",
        }[name] in line

    import argparse

    # a pickle that holds a Python object (as whole-model checkpoints do): refused by weights_only=True
    torch.save({"model": argparse.Namespace(weights=1)}, tmp_path / "object.pkl")
    with pytest.raises(LapgenError, match="weights_only") as err:
        load_ifnet(tmp_path / "object.pkl")
    _one_line(err)
    with pytest.raises(LapgenError, match="not found"):
        load_ifnet(tmp_path / "absent.pkl")


# ---- the midpoint ---------------------------------------------------------------------------------


def _sample(img: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of img (N, C, H, W) at pixel (x + fx, y + fy), coordinates clamped to the border."""
    n, c, h, w = img.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    px = (xs + fx.double()).clamp(0, w - 1)
    py = (ys + fy.double()).clamp(0, h - 1)
    x0, y0 = px.floor().long().clamp(max=w - 2), py.floor().long().clamp(max=h - 2)
    ax, ay = (px - x0)[:, None], (py - y0)[:, None]
    flat = img.double().reshape(n, c, h * w)

    def at(yi, xi):
        return flat.gather(2, (yi * w + xi).reshape(n, 1, h * w).expand(n, c, h * w)).reshape(n, c, h, w)

    top = at(y0, x0) * (1 - ax) + at(y0, x0 + 1) * ax
    bottom = at(y0 + 1, x0) * (1 - ax) + at(y0 + 1, x0 + 1) * ax
    return (top * (1 - ay) + bottom * ay).float()


def reference_midpoint(sd: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RIFE HD v3 midpoint written from the algorithm with functional ops and explicit bilinear sampling."""

    def conv(h, key, stride=1):
        h = F.conv2d(h, sd[f"{key}.0.weight"], sd[f"{key}.0.bias"], stride=stride, padding=1)
        return F.prelu(h, sd[f"{key}.1.weight"])

    def head(h, key):
        h = F.conv_transpose2d(h, sd[f"{key}.0.weight"], sd[f"{key}.0.bias"], stride=2, padding=1)
        h = F.prelu(h, sd[f"{key}.1.weight"])
        return F.conv_transpose2d(h, sd[f"{key}.2.weight"], sd[f"{key}.2.bias"], stride=2, padding=1)

    def resize(h, factor):
        return (
            h if factor == 1 else F.interpolate(h, scale_factor=factor, mode="bilinear", align_corners=False)
        )

    def block(name, x, flow, s):
        h = torch.cat([resize(x, 1 / s), resize(flow, 1 / s) / s], 1)
        h = conv(conv(h, f"{name}.conv0.0", 2), f"{name}.conv0.1", 2)
        for k in range(4):
            h = h + conv(conv(h, f"{name}.convblock{k}.0"), f"{name}.convblock{k}.1")
        return resize(head(h, f"{name}.conv1"), s) * s, resize(head(h, f"{name}.conv2"), s)

    n, _, hgt, wid = a.shape
    flow, mask = torch.zeros(n, 4, hgt, wid), torch.zeros(n, 1, hgt, wid)
    wa, wb = a, b
    for name, s in (("block0", 4), ("block1", 2), ("block2", 1)):
        f0, m0 = block(name, torch.cat([wa, wb, mask], 1), flow, s)
        f1, m1 = block(name, torch.cat([wb, wa, -mask], 1), torch.cat([flow[:, 2:], flow[:, :2]], 1), s)
        flow = flow + (f0 + torch.cat([f1[:, 2:], f1[:, :2]], 1)) / 2
        mask = mask + (m0 - m1) / 2
        wa = _sample(a, flow[:, 0], flow[:, 1])
        wb = _sample(b, flow[:, 2], flow[:, 3])
    weight = torch.sigmoid(mask)
    return wa * weight + wb * (1 - weight)


def test_midpoint_equals_an_independent_computation(flownet):
    from lapgen.models.controlvideo.rife import load_ifnet

    model = load_ifnet(flownet)
    sd = {k[len("module.") :]: v for k, v in torch.load(flownet, weights_only=True).items()}
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 3, 64, 96, generator=g), torch.rand(2, 3, 64, 96, generator=g)
    with torch.no_grad():
        got = model.inference(a, b)
        want = reference_midpoint(sd, a, b)
    assert got.shape == (2, 3, 64, 96)
    assert (got - (a + b) / 2).abs().max() > 0.05  # the flows matter: not a plain average
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_midpoint_is_symmetric_in_its_two_frames(flownet):
    """RIFE runs every block on (a, b) and on (b, a) and averages: swapping the inputs changes nothing."""
    from lapgen.models.controlvideo.rife import load_ifnet

    model = load_ifnet(flownet)
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model.inference(a, b), model.inference(b, a), atol=1e-5, rtol=1e-5)


def test_known_flow_moves_the_frames_by_that_many_pixels():
    """Flow heads that output a constant (dx, dy) at every level: the flows of the three levels (x4, x2, x1
    in pixels) add up to 7·(dx, dy), and each frame is sampled at p + flow (backward warping)."""
    from lapgen.models.controlvideo.rife import IFNetHDv3

    model = IFNetHDv3()
    dx, dy = 3.0, -2.0
    with torch.no_grad():
        for block in (model.block0, model.block1, model.block2):
            last = block.conv1[2]
            last.weight.zero_()
            last.bias.copy_(torch.tensor([dx, dy, dx, dy]) / 7)
            block.conv2[2].weight.zero_()
            block.conv2[2].bias.zero_()
    a, b = blob(20, 30), blob(44, 36)
    with torch.no_grad():
        got = model.inference(a, b)
    rows = (torch.arange(64) + int(dy)).clamp(0, 63)
    cols = (torch.arange(64) + int(dx)).clamp(0, 63)
    want = ((a + b) / 2)[:, :, rows][:, :, :, cols]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_translated_blob_midpoint_lies_between_and_identical_frames_stay(flownet):
    """Random weights cannot estimate motion, so this checks the plumbing a trained file relies on: the
    output of a blob moved from x=24 to x=40 sits between the two positions; identical frames come back
    exactly (lapgen's guarantee; the raw network with random weights would warp them)."""
    from lapgen.models.controlvideo.rife import RifeMidpoint, load_ifnet

    interp = RifeMidpoint(load_ifnet(flownet))
    a, b = blob(24), blob(40)
    mid = interp(a, b)
    assert 24 + 2 < centroid_x(mid) < 40 - 2
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(interp(x, x.clone()), x)
    raw = RifeMidpoint(load_ifnet(flownet), exact_identity=False)(x, x.clone())
    assert (raw - x).abs().max() > 1e-3  # so the guarantee above is not vacuous


def test_sizes_that_are_not_multiples_of_16_are_padded():
    from lapgen.models.controlvideo.rife import IFNetHDv3, RifeMidpoint

    torch.manual_seed(0)
    interp = RifeMidpoint(IFNetHDv3())
    a, b = torch.rand(3, 3, 72, 40), torch.rand(3, 3, 72, 40)
    out = interp(a, b)
    assert out.shape == a.shape and out.dtype == a.dtype and 0 <= out.min() and out.max() <= 1
    # batching over pairs does not change the result
    torch.testing.assert_close(RifeMidpoint(interp.model, batch_size=1)(a, b), out, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_fp16_on_cuda(flownet):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from lapgen.models.controlvideo.rife import RifeMidpoint, load_ifnet

    interp = RifeMidpoint(load_ifnet(flownet))
    a, b = blob(24).cuda(), blob(40).cuda()
    out = interp(a, b)
    assert next(interp.model.parameters()).dtype == torch.float16 and out.dtype == torch.float32
    ref = RifeMidpoint(load_ifnet(flownet))(a.cpu(), b.cpu())
    torch.testing.assert_close(out.cpu(), ref, atol=2e-2, rtol=0)


# ---- names, registry, card -------------------------------------------------------------------------


def test_rife_by_path_name_and_registry(flownet, tmp_path, monkeypatch):
    from lapgen import registry
    from lapgen.models.controlvideo import resolve_interpolator
    from lapgen.models.controlvideo.rife import RifeMidpoint
    from lapgen.outputs import file_sha256

    monkeypatch.setenv("LAPGEN_HOME", str(tmp_path / "home"))
    entry = registry.resolve("rife-v3")
    assert entry.kind == "interpolator" and not entry.present()
    assert registry.default_for("interpolator") == "rife-v3"
    # no weights: auto falls back to flow and says why; rife alone says where to get the file
    auto = resolve_interpolator("auto")
    assert auto.name == "flow" and "no weights" in auto.reason
    with pytest.raises(LapgenError, match="never downloads") as err:
        resolve_interpolator("rife")
    assert "github.com/YBYBZhang/ControlVideo" in _one_line(err)
    # rife:PATH
    by_path = resolve_interpolator(f"rife:{flownet}")
    assert isinstance(by_path.fn, RifeMidpoint)
    assert isinstance(resolve_interpolator("rife", path=flownet).fn, RifeMidpoint)  # the library's spelling
    assert by_path.card() == {
        "requested": f"rife:{flownet}",
        "used": "rife",
        "weights": str(flownet),
        "sha256": file_sha256(flownet),
    }
    # the file dropped under its official name makes the built-in entry present; then auto is RIFE
    (tmp_path / "home" / "weights").mkdir(parents=True)
    (tmp_path / "home" / "weights" / "flownet.pkl").write_bytes(flownet.read_bytes())
    assert registry.resolve("rife-v3").present()
    auto = resolve_interpolator("auto")
    assert auto.name == "rife" and auto.entry == "rife-v3" and isinstance(auto.fn, RifeMidpoint)
    # a user entry of kind interpolator, by name (kind guessed from the file name)
    registry.add_entry("my-rife", str(flownet))
    assert registry.resolve("my-rife").kind == "interpolator"
    assert resolve_interpolator("my-rife").entry == "my-rife"
