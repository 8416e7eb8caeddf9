"""Interpolator names: flow midpoint of a moving square, linear average, (x, x) -> x, user RIFE-style models.

lapgen's own RIFE network and its weights are tested in test_controlvideo_rife.py."""

from __future__ import annotations

import pytest
import torch

from lapgen.errors import LapgenError


def _square(x0: int, size: int = 64, box: int = 16) -> torch.Tensor:
    img = torch.full((3, size, size), 0.1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    # a smooth blob (textured enough for Farnebäck) centred at (x0 + box/2, size/2)
    d2 = (xx - (x0 + box / 2)) ** 2 + (yy - size / 2) ** 2
    img += 0.8 * torch.exp(-d2 / (2 * (box / 3) ** 2))
    return img.clamp(0, 1)


def _centre_x(img: torch.Tensor) -> float:
    w = (img[0] - 0.1).clamp(min=0)
    xs = torch.arange(img.shape[-1], dtype=torch.float32)
    return float((w.sum(0) * xs).sum() / w.sum())


def test_registry_lists_and_rejects():
    from lapgen.models.controlvideo import get_interpolator, list_interpolators

    assert list(list_interpolators())[:4] == ["auto", "flow", "linear", "rife"]
    with pytest.raises(LapgenError, match="unknown interpolator"):
        get_interpolator("bicubic-magic")
    fn = lambda a, b: a
    assert get_interpolator(fn) is fn


def test_flow_midpoint_moves_half_way_and_linear_ghosts():
    from lapgen.models.controlvideo import get_interpolator

    a, b = _square(16)[None], _square(24)[None]
    flow = get_interpolator("flow")(a, b)[0]
    linear = get_interpolator("linear")(a, b)[0]
    assert abs(_centre_x(flow) - (_centre_x(a[0]) + _centre_x(b[0])) / 2) < 1.0
    # the flow midpoint keeps the blob's peak; the average halves it (ghosting)
    assert flow.max() > linear.max() + 0.1
    torch.testing.assert_close(linear, (a[0] + b[0]) / 2)


def test_identical_pairs_map_to_themselves():
    from lapgen.models.controlvideo import get_interpolator

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name in ("flow", "linear"):
        assert torch.equal(get_interpolator(name)(x, x.clone()), x)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_rife_slot_takes_a_user_model(tmp_path):
    from lapgen.models.controlvideo import get_interpolator

    with pytest.raises(LapgenError, match="no weights on this machine"):  # nothing registered in tests
        get_interpolator("rife")
    with pytest.raises(LapgenError, match="not found"):
        get_interpolator("rife", path=tmp_path / "missing.pt")

    class Mid(torch.nn.Module):
        def forward(self, a, b, t: float):
            return a * (1 - t) + b * t

    torch.jit.script(Mid()).save(str(tmp_path / "rife.pt"))
    interp = get_interpolator("rife", path=tmp_path / "rife.pt")
    a, b = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    torch.testing.assert_close(interp(a, b), torch.full((1, 3, 8, 8), 0.5))
    assert torch.equal(get_interpolator("rife", model=lambda a, b: a * 0)(b, b), b)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_model_file_by_name_colon_path(tmp_path):
    """`rife:PATH` is how a model file reaches the interpolator by name (the CLI's --interpolator)."""
    from lapgen.models.controlvideo import get_interpolator

    class Blend(torch.nn.Module):
        def forward(self, a, b):
            return 0.25 * a + 0.75 * b

    torch.jit.script(Blend()).save(str(tmp_path / "blend.pt"))
    a = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    b = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(get_interpolator(f"rife:{tmp_path / 'blend.pt'}")(a, b), 0.25 * a + 0.75 * b)
    torch.export.save(torch.export.export(Blend(), (a, b)), str(tmp_path / "blend.pt2"))
    torch.testing.assert_close(get_interpolator(f"rife:{tmp_path / 'blend.pt2'}")(a, b), 0.25 * a + 0.75 * b)
    with pytest.raises(LapgenError, match="RIFE model file not found"):
        get_interpolator(f"rife:{tmp_path / 'missing.pt'}")
    (tmp_path / "junk.pt").write_bytes(b"neither TorchScript nor a state dict")
    with pytest.raises(LapgenError, match="cannot read RIFE weights") as err:
        get_interpolator(f"rife:{tmp_path / 'junk.pt'}")
    assert "\n" not in str(err.value)
    (tmp_path / "junk.pt2").write_bytes(b"not a torch.export archive")
    with pytest.raises(LapgenError, match="cannot load the RIFE model") as err:
        get_interpolator(f"rife:{tmp_path / 'junk.pt2'}")
    assert "\n" not in str(err.value)
    with pytest.raises(LapgenError, match="'flow' takes no model file"):
        get_interpolator(f"flow:{tmp_path / 'blend.pt'}")
    with pytest.raises(LapgenError, match="unknown interpolator 'film'"):
        get_interpolator(f"film:{tmp_path / 'blend.pt'}")
