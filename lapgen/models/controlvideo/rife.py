"""RIFE's IFNet_HDv3 frame interpolator, the one ControlVideo's smoother runs (Huang et al., ECCV 2022).

ControlVideo (YBYBZhang/ControlVideo, `models/RIFE/`) interpolates with the HD v3 flow network of RIFE
(megvii-research/ECCV2022-RIFE, hzwer/Practical-RIFE) and its published `flownet.pkl`: a plain `torch.save`
of the state dict of the `DataParallel`-wrapped network, so every key starts with `module.`. This module is
lapgen's own implementation of that network, written from the published algorithm, with the parameter
names and shapes of the published file, so the file loads strictly.

The midpoint (what `IFNet.inference(img0, img1)` returns, t = 0.5):
- three flow blocks run at 1/4, 1/2 and 1/1 of the frame size. Each sees both frames warped by the flow so
  far, the fusion mask and the flow, and predicts a flow update (4 channels: frame 0 -> middle, frame 1 ->
  middle, x then y, in pixels) and a mask update. Each block runs twice, once with the frames swapped
  (and the flow halves swapped, the mask negated); the two answers are averaged, which makes the network
  symmetric in its two inputs;
- backward warping with `grid_sample` (bilinear, border padding, align_corners=True);
- the midpoint is `w0·sigmoid(mask) + w1·(1 - sigmoid(mask))` of the two warped frames. There is no
  context or refinement network, and the fourth block (`block_tea`, the distillation teacher of training)
  is stored in the file but never run.

Frames are `(N, 3, H, W)` float in [0, 1]. Sizes that are not a multiple of 16 are zero-padded at the
right and bottom, then cropped back (the network halves the size four times at the 1/4 level).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lapgen.errors import LapgenError

BLOCK_WIDTH = 90  # feature channels of every flow block in the published HD v3 model
SCALES = (4, 2, 1)  # downscaling of the three flow blocks (IFNet.inference with scale=1.0)
PAD_MULTIPLE = 16


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution + per-channel PReLU (keys `<i>.0.weight`, `<i>.0.bias`, `<i>.1.weight`)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.PReLU(cout))


def _upsampling_head(width: int, out_channels: int) -> nn.Sequential:
    """Two stride-2 transposed convolutions (x4 in size) with a PReLU between them."""
    return nn.Sequential(
        nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
        nn.PReLU(width // 2),
        nn.ConvTranspose2d(width // 2, out_channels, 4, 2, 1),
    )


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1:
        return x
    return F.interpolate(
        x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )


class FlowBlock(nn.Module):
    """One IFBlock: at 1/scale of the frame, predict a flow update (4 ch) and a mask update (1 ch)."""

    def __init__(self, in_channels: int, width: int = BLOCK_WIDTH):
        super().__init__()
        self.conv0 = nn.Sequential(_conv(in_channels, width // 2, 2), _conv(width // 2, width, 2))
        for k in range(4):  # four residual pairs of convolutions
            self.add_module(f"convblock{k}", nn.Sequential(_conv(width, width), _conv(width, width)))
        self.conv1 = _upsampling_head(width, 4)
        self.conv2 = _upsampling_head(width, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = _resize(x, 1.0 / scale)
        flow = _resize(flow, 1.0 / scale) / scale  # flow in pixels of the smaller grid
        feat = self.conv0(torch.cat((x, flow), 1))
        for k in range(4):
            feat = feat + getattr(self, f"convblock{k}")(feat)
        flow_update = _resize(self.conv1(feat), scale) * scale
        mask_update = _resize(self.conv2(feat), scale)
        return flow_update, mask_update


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at `p + flow(p)` (flow in pixels, x then y); bilinear, border, align_corners=True."""
    n, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device).view(1, 1, w).expand(n, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device).view(1, h, 1).expand(n, h, w)
    # pixels -> normalised units of align_corners=True (the corner pixels sit at -1 and 1)
    gx = xs + flow[:, 0].float() / ((w - 1.0) / 2.0)
    gy = ys + flow[:, 1].float() / ((h - 1.0) / 2.0)
    grid = torch.stack((gx, gy), dim=-1).to(image.dtype)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _swap_halves(flow: torch.Tensor) -> torch.Tensor:
    """(flow of frame 0, flow of frame 1) -> (flow of frame 1, flow of frame 0)."""
    return torch.cat((flow[:, 2:4], flow[:, 0:2]), 1)


class IFNetHDv3(nn.Module):
    """RIFE's HD v3 flow network (parameter layout of the published `flownet.pkl`, without `module.`)."""

    def __init__(self, width: int = BLOCK_WIDTH):
        super().__init__()
        # input: two frames (3 + 3), the mask (1) and the flow (4)
        self.block0 = FlowBlock(3 + 3 + 1 + 4, width)
        self.block1 = FlowBlock(3 + 3 + 1 + 4, width)
        self.block2 = FlowBlock(3 + 3 + 1 + 4, width)
        # training-time teacher (also sees the ground-truth middle frame); in the file, never run here
        self.block_tea = FlowBlock(3 + 3 + 1 + 3 + 4, width)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        return self.inference(img0, img1)

    def inference(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        """The midpoint of `img0` and `img1` (`(N, 3, H, W)`, H and W multiples of 16)."""
        n, _, h, w = img0.shape
        flow = img0.new_zeros(n, 4, h, w)
        mask = img0.new_zeros(n, 1, h, w)
        warped0, warped1 = img0, img1
        for block, scale in zip((self.block0, self.block1, self.block2), SCALES):
            f_a, m_a = block(torch.cat((warped0, warped1, mask), 1), flow, scale)
            f_b, m_b = block(torch.cat((warped1, warped0, -mask), 1), _swap_halves(flow), scale)
            flow = flow + (f_a + _swap_halves(f_b)) / 2
            mask = mask + (m_a - m_b) / 2
            warped0 = backward_warp(img0, flow[:, 0:2])
            warped1 = backward_warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


# ---- loading --------------------------------------------------------------------------------------


def strip_module_prefix(state: dict) -> dict:
    """Drop the `module.` prefix `torch.nn.DataParallel` puts on every key (RIFE's `flownet.pkl`)."""
    prefix = "module."
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _names(keys, limit: int = 3) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_layout(state: dict, expected: dict[str, torch.Size], path: Path | str) -> None:
    """Strict key and shape check of a (prefix-stripped) state dict; one line naming what differs."""
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    wrong = [
        f"{k} {list(state[k].shape)} (expected {list(expected[k])})"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k])
    ]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected {_names(unexpected)}")
    if wrong:
        parts.append(
            f"other shapes: {', '.join(wrong[:2])}"
            + (f" ... ({len(wrong)} in all)" if len(wrong) > 2 else "")
        )
    raise LapgenError(
        "not a RIFE IFNet_HDv3 flownet.pkl (" + "; ".join(parts) + ")",
        path=path,
        hint="give the flownet.pkl ControlVideo uses (YBYBZhang/ControlVideo, checkpoints/flownet.pkl)",
    )


def load_ifnet(path: str | Path) -> IFNetHDv3:
    """An `IFNetHDv3` (fp32, CPU, eval) with the weights of a published `flownet.pkl`.

    The file is read with `torch.load(weights_only=True)` (tensors only, no Python objects), the
    `module.` prefix is stripped, and every key and shape must match the published layout.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LapgenError(
            "RIFE weights file not found",
            path=path,
            hint="give the path of a flownet.pkl (RIFE IFNet_HDv3), e.g. --interpolator rife:/models/flownet.pkl",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle with Python objects, truncated file, not a torch file
        first = " ".join(str(exc).split())[:120]
        raise LapgenError(
            f"cannot read RIFE weights with torch.load(weights_only=True) ({exc.__class__.__name__}: {first})",
            path=path,
            hint="give RIFE's flownet.pkl (a plain state dict of tensors)",
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LapgenError("RIFE weights file does not hold a state dict of tensors", path=path)
    state = strip_module_prefix(state)
    model = IFNetHDv3()
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_layout(state, expected, path)
    model.load_state_dict(state, strict=True)
    return model.eval()


# ---- the smoother's interpolator ------------------------------------------------------------------


class RifeMidpoint:
    """The smoother's `(a, b) -> midpoint` with an `IFNetHDv3`, batched over pairs.

    device/dtype follow the frames: on CUDA the network runs in fp16 (as ControlVideo runs it), elsewhere
    in fp32 (`dtype` overrides). `exact_identity`: a pair of identical frames returns that frame exactly
    (lapgen's guarantee that identical frames stay identical through the smoother; a trained IFNet returns
    a nearly identical frame, the reference code uses that).
    """

    def __init__(
        self,
        model: IFNetHDv3,
        dtype: torch.dtype | None = None,
        batch_size: int = 16,
        exact_identity: bool = True,
    ):
        self.model = model.eval().requires_grad_(False)
        self.dtype = dtype
        self.batch_size = max(1, int(batch_size))
        self.exact_identity = exact_identity

    def _place(self, device: torch.device) -> torch.dtype:
        dtype = self.dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        param = next(self.model.parameters())
        if param.device != device or param.dtype != dtype:
            self.model.to(device=device, dtype=dtype)
        return dtype

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"RIFE inputs must both be (N, 3, H, W); got {tuple(a.shape)}, {tuple(b.shape)}")
        dtype = self._place(a.device)
        h, w = a.shape[-2:]
        pad = (0, -w % PAD_MULTIPLE, 0, -h % PAD_MULTIPLE)
        out = torch.empty_like(a)
        for s in range(0, a.shape[0], self.batch_size):
            x0 = F.pad(a[s : s + self.batch_size].to(dtype), pad)
            x1 = F.pad(b[s : s + self.batch_size].to(dtype), pad)
            out[s : s + self.batch_size] = self.model.inference(x0, x1)[..., :h, :w].to(a.dtype)
        out = out.clamp(0, 1)
        if self.exact_identity:
            same = (a == b).flatten(1).all(dim=1)
            out = torch.where(same[:, None, None, None], a, out)
        return out
