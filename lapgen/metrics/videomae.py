"""VideoMAE-v2's encoder, the network of content-debiased FVD (CD-FVD, Ge et al. 2024), as lapgen's own module.

`VideoMAEEncoder` carries the parameter names of VideoMAE-v2's fine-tuned checkpoints
(`vit_g_hybrid_pt_1200e_ssv2_ft.pth`, the file songweige/content-debiased-fvd loads): tubelet embedding (Conv3d
2 x 14 x 14), fixed sine-cosine positions, pre-norm blocks with q/v biases (no key bias), and the mean of the
tokens through `fc_norm` (1408-d for ViT-g/14), i.e. VideoMAE-v2's `forward_features`; the classification head
is not used. Input: frames / 255, bilinearly resized (align_corners=False, no antialias) to 224 x 224, 16
frames, no mean/std, as CD-FVD feeds it (`videomae_input`). `videomae_from_file` reads safetensors or
`torch.load(weights_only=True)` and infers the shape from the tensors; `write_random_videomae` writes a seeded
random encoder (tiny by default) whose shape travels in the safetensors metadata, for tests and demos.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lapgen.errors import LapgenError

VIDEOMAE_META_KEY = "lapgen_videomae"  # safetensors metadata: the encoder's shape as JSON

@dataclass(frozen=True)
class VideoMAEConfig:
    """The shape of a VideoMAE-v2 encoder (defaults: ViT-g/14, CD-FVD's network)."""

    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_hidden: int = 6144  # int(1408 * 48 / 11)
    patch: int = 14
    tubelet: int = 2
    img_size: int = 224
    frames: int = 16
    qkv_bias: bool = True
    eps: float = 1e-6

    @property
    def tokens(self) -> int:
        return (self.frames // self.tubelet) * (self.img_size // self.patch) ** 2


def sinusoid_positions(n: int, dim: int) -> np.ndarray:
    """(n, dim) fixed positions of VideoMAE: angle pos / 10000^(2 (j // 2) / dim), sin on even j, cos on odd."""
    pos = np.arange(n, dtype=np.float64)[:, None]
    j = np.arange(dim)
    table = pos / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return table.astype(np.float32)


def _encoder_classes():
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, dim: int, heads: int, qkv_bias: bool):
            super().__init__()
            self.heads = heads
            self.scale = (dim // heads) ** -0.5
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
            self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            bias = None
            if self.q_bias is not None:  # no key bias (VideoMAE-v2 / BEiT)
                bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            qkv = nn.functional.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, c // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_dim)
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    class Mlp(nn.Module):
        def __init__(self, dim: int, hidden: int):
            super().__init__()
            self.fc1 = nn.Linear(dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, cfg: VideoMAEConfig):
            super().__init__()
            self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)
            self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias)
            self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)
            self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self, cfg: VideoMAEConfig):
            super().__init__()
            kernel = (cfg.tubelet, cfg.patch, cfg.patch)
            self.proj = nn.Conv3d(3, cfg.embed_dim, kernel_size=kernel, stride=kernel)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x).flatten(2).transpose(1, 2)  # (B, tokens, dim)

    class VideoMAEEncoder(nn.Module):
        """VideoMAE-v2's fine-tuning ViT up to its mean-pooled, normalised features (`forward_features`)."""

        def __init__(self, cfg: VideoMAEConfig):
            super().__init__()
            self.config = cfg
            self.patch_embed = PatchEmbed(cfg)
            self.register_buffer("pos_embed", torch.from_numpy(sinusoid_positions(cfg.tokens, cfg.embed_dim))[None],
                                 persistent=False)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
            self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.eps)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """(B, 3, frames, S, S) float in [0, 1] -> (B, embed_dim)."""
            if tuple(x.shape[2:]) != (self.config.frames, self.config.img_size, self.config.img_size):
                raise ValueError(f"VideoMAE input must be (B, 3, {self.config.frames}, {self.config.img_size}, "
                                 f"{self.config.img_size}), got {tuple(x.shape)}")
            x = self.patch_embed(x) + self.pos_embed.to(x.dtype)
            for block in self.blocks:
                x = block(x)
            return self.fc_norm(x.mean(dim=1))

    return VideoMAEEncoder


def build_videomae(cfg: VideoMAEConfig) -> Any:
    return _encoder_classes()(cfg)


def infer_videomae_config(state: dict[str, Any], meta: dict[str, Any] | None = None) -> VideoMAEConfig:
    """The encoder shape from a state dict (sizes) and, for what sizes cannot say, metadata or ViT-g defaults."""
    meta = dict(meta or {})
    try:
        proj = state["patch_embed.proj.weight"]  # (dim, 3, tubelet, patch, patch)
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    except (KeyError, ValueError) as exc:
        raise LapgenError("not a VideoMAE-v2 encoder state dict (no patch_embed.proj / blocks.N.mlp)",
                          hint="point at vit_g_hybrid_pt_1200e_ssv2_ft.pth (docs/metrics-video.md)") from exc
    dim = int(proj.shape[0])
    default_heads = 16 if dim == 1408 else max(1, dim // 64)
    return VideoMAEConfig(embed_dim=dim, depth=depth, num_heads=int(meta.get("num_heads", default_heads)),
                          mlp_hidden=hidden, patch=int(proj.shape[3]), tubelet=int(proj.shape[2]),
                          img_size=int(meta.get("img_size", 224)), frames=int(meta.get("frames", 16)),
                          qkv_bias="blocks.0.attn.q_bias" in state, eps=float(meta.get("eps", 1e-6)))


def videomae_metadata(path: str | Path) -> dict[str, Any]:
    """The shape lapgen stored in a safetensors file's metadata (empty for other files: ViT-g defaults)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return json.loads((fh.metadata() or {}).get(VIDEOMAE_META_KEY, "{}"))
    except Exception as exc:  # noqa: BLE001 - not a safetensors file after all
        raise LapgenError(f"cannot read safetensors file ({exc.__class__.__name__})", path=path) from exc


def videomae_from_file(path: str | Path, *, label: str = "videomae-v2-g") -> Any:
    """A `VideoMAEEncoder` (CPU, eval) with a local file's weights loaded strictly (the head is dropped)."""
    from lapgen.metrics.networks import safe_state_dict

    path = Path(path)
    if not path.is_file():
        raise LapgenError(f"{label}: weights file does not exist", path=path)
    meta = videomae_metadata(path)
    state = safe_state_dict(path)
    if isinstance(state.get("module"), dict):  # VideoMAE-v2 training checkpoints keep the weights under "module"
        state = state["module"]
    state = {k: v for k, v in state.items() if not k.startswith("head.")}  # the classifier: not a feature
    model = build_videomae(infer_videomae_config(state, meta))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise LapgenError(f"{label}: the weights do not fit a VideoMAE-v2 encoder ({first})", path=path,
                          hint="point at vit_g_hybrid_pt_1200e_ssv2_ft.pth (docs/metrics-video.md)") from exc
    return model.float().eval()


TINY_VIDEOMAE = VideoMAEConfig(embed_dim=32, depth=2, num_heads=2, mlp_hidden=64, patch=8, tubelet=2, img_size=32,
                               frames=16)


def write_random_videomae(path: str | Path, seed: int = 0, config: VideoMAEConfig = TINY_VIDEOMAE) -> Path:
    """A seeded random VideoMAE-v2 encoder (default: a tiny one, 32-d, 32 px) as safetensors, its shape in the
    file's metadata. Linear weights are truncated-normal (std 0.02), as VideoMAE-v2 initialises them; the
    final LayerNorm keeps the features O(1). For tests and demos only: not comparable with CD-FVD values."""
    import torch
    from safetensors.torch import save

    from lapgen.outputs import atomic_file

    torch.manual_seed(seed)
    model = build_videomae(config)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                torch.nn.init.normal_(module.bias, std=0.02)
    for block in model.blocks:  # non-zero q/v biases, so a test sees them used
        torch.nn.init.normal_(block.attn.q_bias, std=0.02)
        torch.nn.init.normal_(block.attn.v_bias, std=0.02)
    meta = {VIDEOMAE_META_KEY: json.dumps(asdict(config))}
    with atomic_file(Path(path)) as fh:
        fh.write(save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=meta))
    return Path(path)


def videomae_input(clips: Any, size: int) -> Any:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, size, size) float: / 255, per-frame bilinear resize (CD-FVD's)."""
    import torch.nn.functional as F

    b, t, h, w, _ = clips.shape
    x = clips.float().div(255.0).permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w)
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.reshape(b, t, 3, size, size).transpose(1, 2).contiguous()
