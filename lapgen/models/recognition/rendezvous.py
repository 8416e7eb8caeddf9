"""Rendezvous (RDV): the action-triplet recognizer of Nwoye et al., "Rendezvous: Attention mechanisms for
the recognition of surgical action triplets in endoscopic videos", Medical Image Analysis 78 (2022).

Re-implemented from the paper and the architecture of CAMMA-public/rendezvous (`pytorch/network.py`) with
the same module names, so the state_dict of the official PyTorch checkpoints
(`rendezvous_l8_cholect50_*.pth`) loads strictly. Shapes below are for the default 256x448 input:

- encoder.basemodel.basemodel: torchvision ResNet-18 (fc included, unused). The reference hooks the outputs
  of `layer1[1].bn2` and `layer4[1].bn2`; torchvision's BasicBlock then adds the residual and applies ReLU
  in place on that very tensor, so the features it uses are the layer1 output (64 ch, H/4) and the layer4
  output (512 ch, H/32 -> 8x14). lapgen takes those outputs directly.
- encoder.wsl: weakly supervised localisation of the 6 tools: CAMs [B,6,h,w], logits = global max pool.
- encoder.cagam: class-activation-guided attention; verb branch (channel attention) and target branch
  (spatial attention), each guided by the tool CAMs, giving 10 verb and 15 target CAMs + GMP logits.
- encoder.bottleneck: low-level features -> 100 triplet feature maps (3x3 conv stride 2, 1x1 conv).
- decoder: `layer_size` x (Projection -> MHMA (self-attention on IVT, cross-attention on I, V, T;
  4 heads of depth d_model) -> FFN), AddNorm = BatchNorm2d or LayerNorm([100, h, w]) (`use_ln`; the
  released cross-validation checkpoints use LayerNorm, so they require 8x14 maps), then GMP + Linear.

`forward(x)` returns `((cam_i, logit_i[B,6]), (cam_v, logit_v[B,10]), (cam_t, logit_t[B,15]),
logit_ivt[B,100])`; scores are the sigmoid of the logits. The backbone is built with `weights=None`;
ImageNet initialisation for training is loaded only on request (`imagenet_backbone=True`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lapgen.errors import LapgenError


@dataclass
class RendezvousConfig:
    """Hyper-parameters of one Rendezvous model; `image_size` is the (height, width) it was trained at."""

    image_size: tuple[int, int] = (256, 448)
    basename: str = "resnet18"
    num_tool: int = 6
    num_verb: int = 10
    num_target: int = 15
    num_triplet: int = 100
    layer_size: int = 8
    num_heads: int = 4
    d_model: int = 128
    hr_output: bool = False
    use_ln: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_size = tuple(int(x) for x in self.image_size)  # type: ignore[assignment]
        if self.basename != "resnet18":
            raise LapgenError(f"Rendezvous backbone {self.basename!r} is not supported",
                              hint="lapgen implements the resnet18 variant used by all released checkpoints")
        if len(self.image_size) != 2 or min(self.image_size) < 32:
            raise LapgenError(f"Rendezvous input size must be (height, width) >= 32 px, got {self.image_size}")

    def feature_size(self) -> tuple[int, int]:
        """(h, w) of the high-level maps: ResNet-18 strides (H/32, or H/8 with `hr_output`)."""

        def down(n: int, k: int, s: int, p: int) -> int:
            return (n + 2 * p - k) // s + 1

        out = []
        for n in self.image_size:
            n = down(down(n, 7, 2, 3), 3, 2, 1)  # conv1, maxpool -> H/4
            n = down(n, 3, 2, 1)  # layer2
            if not self.hr_output:
                n = down(down(n, 3, 2, 1), 3, 2, 1)  # layer3, layer4
            out.append(n)
        return out[0], out[1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "RendezvousConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class BaseModel(nn.Module):
    """ResNet-18 feature extractor returning (high-level [B,512,h,w], low-level [B,64,H/4,W/4])."""

    def __init__(self, hr_output: bool = False, imagenet: bool = False):
        super().__init__()
        from torchvision.models import ResNet18_Weights, resnet18

        self.basemodel = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if imagenet else None)
        if hr_output:  # reference `increase_resolution`: layer3/layer4 first blocks at stride 1
            for layer in (self.basemodel.layer3, self.basemodel.layer4):
                layer[0].conv1.stride = (1, 1)
                layer[0].downsample[0].stride = (1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.basemodel  # avgpool and fc are never used
        low = m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))  # [B,64,H/4,W/4]
        return m.layer4(m.layer3(m.layer2(low))), low  # [B,512,h,w]


class WSL(nn.Module):
    """Weakly supervised localisation: tool CAMs and their global-max-pooled logits."""

    def __init__(self, num_class: int, depth: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(512, depth, kernel_size=3, padding=1)
        self.cam = nn.Conv2d(depth, num_class, kernel_size=1)
        self.elu = nn.ELU()
        self.bn = nn.BatchNorm2d(depth)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.cam(self.elu(self.bn(self.conv1(x))))
        return cam, torch.amax(cam, dim=(2, 3))


class Bottleneck(nn.Module):
    """Unfiltered triplet features from the low-level maps: [B,64,H/4,W/4] -> [B,100,~H/8,~W/8]."""

    def __init__(self, num_class: int):
        super().__init__()
        self.conv1 = nn.Conv2d(64, 256, kernel_size=3, stride=2)
        self.conv2 = nn.Conv2d(256, num_class, kernel_size=1)
        self.elu = nn.ELU()
        self.bn1 = nn.BatchNorm2d(256)
        self.bn2 = nn.BatchNorm2d(num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.elu(self.bn1(self.conv1(x)))
        return self.elu(self.bn2(self.conv2(x)))


class CAGAM(nn.Module):
    """Class-activation-guided attention: verb (channel) and target (spatial) CAMs guided by tool CAMs."""

    def __init__(self, num_tool: int, num_verb: int, num_target: int, in_depth: int = 512):
        super().__init__()
        d = num_tool  # context depth equals the number of tool CAMs so the two can be combined
        for part, n_out in (("verb", num_verb), ("target", num_target)):
            setattr(self, f"{part}_context", nn.Conv2d(in_depth, d, kernel_size=3, padding=1))
            for name in ("query", "tool_query", "key", "tool_key"):
                setattr(self, f"{part}_{name}", nn.Conv2d(d, d, kernel_size=1))
            setattr(self, f"{part}_cmap", nn.Conv2d(d, n_out, kernel_size=1))
        self.elu = nn.ELU()
        for k in range(1, 13):
            setattr(self, f"bn{k}", nn.BatchNorm2d(d))
        self.encoder_cagam_verb_beta = nn.Parameter(torch.randn(1))
        self.encoder_cagam_target_beta = nn.Parameter(torch.randn(1))

    def _branch(self, part: str, raw: torch.Tensor, cam: torch.Tensor, bns: tuple[int, ...]):
        bn = [getattr(self, f"bn{k}") for k in bns]
        x = self.elu(bn[0](getattr(self, f"{part}_context")(raw)))  # [B,d,h,w]
        b, d, h, w = x.shape
        q1 = self.elu(bn[1](getattr(self, f"{part}_query")(x))).flatten(2)  # [B,d,hw]
        k1 = self.elu(bn[2](getattr(self, f"{part}_key")(x))).flatten(2)
        q2 = self.elu(bn[3](getattr(self, f"{part}_tool_query")(cam))).flatten(2)
        k2 = self.elu(bn[4](getattr(self, f"{part}_tool_key")(cam))).flatten(2)
        v = x.flatten(2)
        scale = math.sqrt(w)  # the reference scales by sqrt(map width)
        if part == "verb":  # channel attention [B,d,d]
            att = torch.softmax((k1 @ q1.transpose(1, 2)) * (k2 @ q2.transpose(1, 2)) / scale, dim=1)
            e = (att @ v) * self.encoder_cagam_verb_beta
        else:  # spatial attention [B,hw,hw]
            att = torch.softmax((k1.transpose(1, 2) @ q1) * (k2.transpose(1, 2) @ q2) / scale, dim=1)
            e = (v @ att) * self.encoder_cagam_target_beta
        e = bn[5](e.reshape(b, d, h, w) + x)
        cmap = getattr(self, f"{part}_cmap")(e)
        return cmap, torch.amax(cmap, dim=(2, 3))

    def forward(self, x: torch.Tensor, cam: torch.Tensor):
        verb = self._branch("verb", x, cam, (1, 2, 3, 4, 5, 6))
        return verb, self._branch("target", x, cam, (7, 8, 9, 10, 11, 12))


class Encoder(nn.Module):
    def __init__(self, cfg: RendezvousConfig, imagenet: bool = False):
        super().__init__()
        self.basemodel = BaseModel(cfg.hr_output, imagenet)
        self.wsl = WSL(cfg.num_tool, 64)
        self.cagam = CAGAM(cfg.num_tool, cfg.num_verb, cfg.num_target)
        self.bottleneck = Bottleneck(cfg.num_triplet)

    def forward(self, x: torch.Tensor):
        high, low = self.basemodel(x)
        enc_i = self.wsl(high)
        enc_v, enc_t = self.cagam(high, enc_i[0])
        return enc_i, enc_v, enc_t, self.bottleneck(low)


class Projection(nn.Module):
    """Queries, keys and values of the IVT features (self) and the I, V, T CAMs (cross)."""

    def __init__(self, num_tool=6, num_verb=10, num_target=15, num_triplet=100, out_depth=128):
        super().__init__()
        self.ivt_value = nn.Conv2d(num_triplet, out_depth, kernel_size=1)
        self.i_value = nn.Conv2d(num_tool, out_depth, kernel_size=1)
        self.v_value = nn.Conv2d(num_verb, out_depth, kernel_size=1)
        self.t_value = nn.Conv2d(num_target, out_depth, kernel_size=1)
        self.ivt_query = nn.Linear(num_triplet, out_depth)
        self.dropout = nn.Dropout(p=0.3)
        self.ivt_key = nn.Linear(num_triplet, out_depth)
        self.i_key = nn.Linear(num_tool, out_depth)
        self.v_key = nn.Linear(num_verb, out_depth)
        self.t_key = nn.Linear(num_target, out_depth)
        self.elu = nn.ELU()
        for k, dims in enumerate((1, 1, 2, 1, 2, 1, 2, 1, 2), start=1):  # bn1..bn9: 1d on keys, 2d on values
            setattr(self, f"bn{k}", (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(out_depth))

    def forward(self, cam_i, cam_v, cam_t, X):
        gx = X.mean(dim=(2, 3))  # global average pool [B,100]
        q = self.elu(self.bn1(self.ivt_query(self.dropout(gx))))
        k = self.elu(self.bn2(self.ivt_key(gx)))
        v = self.bn3(self.ivt_value(X))
        k1 = self.elu(self.bn4(self.i_key(cam_i.mean(dim=(2, 3)))))
        v1 = self.elu(self.bn5(self.i_value(cam_i)))
        k2 = self.elu(self.bn6(self.v_key(cam_v.mean(dim=(2, 3)))))
        v2 = self.elu(self.bn7(self.v_value(cam_v)))
        k3 = self.elu(self.bn8(self.t_key(cam_t.mean(dim=(2, 3)))))
        v3 = self.elu(self.bn9(self.t_value(cam_t)))
        size = v1.shape[2:]  # IVT maps are resized (nearest) to the CAM resolution
        v = self.elu(F.interpolate(v, size))
        X = self.elu(F.interpolate(X, size))
        return X, (k1, v1), (k2, v2), (k3, v3), (q, k, v)


def _addnorm(num_class: int, use_ln: bool, fsize: tuple[int, int]) -> nn.Module:
    return nn.LayerNorm([num_class, *fsize]) if use_ln else nn.BatchNorm2d(num_class)


class MHMA(nn.Module):
    """Multi-head mixed attention: head 0 attends to the IVT features, heads 1-3 to the I, V, T CAMs."""

    def __init__(self, depth: int, num_class: int, num_heads: int, use_ln: bool, fsize: tuple[int, int]):
        super().__init__()
        self.concat = nn.Conv2d(depth * num_heads, num_class, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(num_class)
        self.ln = _addnorm(num_class, use_ln, fsize)
        self.elu = nn.ELU()
        self.heads = num_heads

    def forward(self, inputs):
        X, (k1, v1), (k2, v2), (k3, v3), (q, k, v) = inputs
        query = torch.stack([q] * self.heads, dim=1).unsqueeze(-1)  # [B,Head,D,1]
        key = torch.stack([k, k1, k2, k3], dim=1).unsqueeze(-1)  # [B,Head,D,1]
        value = torch.stack([v, v1, v2, v3], dim=1)  # [B,Head,D,h,w]
        b, nh, d, h, w = value.shape
        affinity = key @ query.transpose(-1, -2) / math.sqrt(d)  # [B,Head,D,D]
        attn = torch.softmax(affinity, dim=1) @ value.reshape(b, nh, d, h * w)  # softmax over heads
        mha = self.elu(self.bn(self.concat(attn.reshape(b, nh * d, h, w))))
        return self.ln(mha + X)


class FFN(nn.Module):
    def __init__(self, k: int, num_class: int, use_ln: bool, fsize: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(num_class, num_class, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(num_class, num_class, kernel_size=1)
        self.elu1 = nn.ELU()
        self.elu2 = nn.ELU() if k > 0 else nn.Identity()  # no activation in the last layer
        self.bn1 = nn.BatchNorm2d(num_class)
        self.bn2 = nn.BatchNorm2d(num_class)
        self.ln = _addnorm(num_class, use_ln, fsize)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.elu1(self.bn1(self.conv1(inputs)))
        x = self.elu2(self.bn2(self.conv2(x)))
        return self.ln(x + inputs)


class Classifier(nn.Module):
    def __init__(self, num_class: int = 100):
        super().__init__()
        self.mlp = nn.Linear(num_class, num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.amax(x, dim=(2, 3)))


class Decoder(nn.Module):
    def __init__(self, cfg: RendezvousConfig):
        super().__init__()
        fsize, n, L = cfg.feature_size(), cfg.num_triplet, cfg.layer_size
        self.projection = nn.ModuleList(
            [Projection(cfg.num_tool, cfg.num_verb, cfg.num_target, n, cfg.d_model) for _ in range(L)])
        self.mhma = nn.ModuleList([MHMA(cfg.d_model, n, cfg.num_heads, cfg.use_ln, fsize) for _ in range(L)])
        self.ffnet = nn.ModuleList([FFN(L - i - 1, n, cfg.use_ln, fsize) for i in range(L)])
        self.classifier = Classifier(n)

    def forward(self, enc_i, enc_v, enc_t, enc_ivt):
        X = enc_ivt
        for P, M, FF in zip(self.projection, self.mhma, self.ffnet):
            X = FF(M(P(enc_i[0], enc_v[0], enc_t[0], X)))
        return self.classifier(X)


class Rendezvous(nn.Module):
    """The Rendezvous network; `config` records its hyper-parameters and input size."""

    def __init__(self, config: RendezvousConfig | None = None, *, imagenet_backbone: bool = False):
        super().__init__()
        self.config = config or RendezvousConfig()
        if self.config.num_heads != 4:
            raise LapgenError("Rendezvous mixes exactly 4 attention heads (IVT, I, V, T)")
        self.encoder = Encoder(self.config, imagenet_backbone)
        self.decoder = Decoder(self.config)

    def forward(self, x: torch.Tensor):
        enc_i, enc_v, enc_t, enc_ivt = self.encoder(x)
        if self.config.use_ln and tuple(enc_i[0].shape[2:]) != self.config.feature_size():
            raise LapgenError(f"this LayerNorm Rendezvous needs {self.config.image_size[0]}x"
                              f"{self.config.image_size[1]} input, got {x.shape[2]}x{x.shape[3]}")
        return enc_i, enc_v, enc_t, self.decoder(enc_i, enc_v, enc_t, enc_ivt)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The reference's three optimiser groups: tool (backbone + WSL), verb-target (CAGAM),
        triplet (bottleneck + decoder)."""
        vt = list(self.encoder.cagam.parameters())
        ivt = list(self.encoder.bottleneck.parameters()) + list(self.decoder.parameters())
        taken = {id(p) for p in vt + ivt}
        return {"i": [p for p in self.parameters() if id(p) not in taken], "vt": vt, "ivt": ivt}
