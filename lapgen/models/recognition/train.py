"""Training Rendezvous on a prepared CholecT50 frames dataset (`lapgen eval train-recognizer`).

Recipe of CAMMA-public/rendezvous (`pytorch/run.py`), at the input size the user chooses (the paper
retrained RDV at 128x128 to score 128 px images):
- losses: BCEWithLogits on tool, verb and target logits with the reference's constant class weights
  (`pos_weight`), plain BCEWithLogits on the 100 triplet logits; total = sum of the four;
- three SGD groups (tool = backbone + WSL, verb-target = CAGAM, triplet = bottleneck + decoder), weight
  decay 1e-5, each with its own warm-up: lr starts at `lr`, rises linearly to `lr / power` over
  `warmups` epochs (9, 18, 58), then decays by `decay_rate` (0.99) per epoch;
- validation every epoch on the val split: video-wise triplet mAP (ivtmetrics semantics); the best
  epoch's weights are kept (the reference's `weight_mgt`).

Long runs are resumable: the staging folder `<out>.partial` holds `last.pt` (model, optimiser and
schedule state after each finished epoch); re-running the same command continues from there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lapgen.errors import LapgenError
from lapgen.models.recognition.checkpoint import read_state_dict, save_rendezvous
from lapgen.models.recognition.data import (
    RecognitionDataset, preprocess_id, read_metadata, select_split, train_transform, eval_transform,
)
from lapgen.models.recognition.rendezvous import Rendezvous, RendezvousConfig

# CAMMA-public/rendezvous run.py: "constant weights from average of the random sampling of the dataset"
# (the values the reference actually trains with; they override the per-split tables above them).
TOOL_WEIGHT = (0.93487068, 0.94234964, 0.93487068, 1.18448115, 1.02368339, 0.97974447)
VERB_WEIGHT = (0.60002400, 0.60002400, 0.60002400, 0.61682467, 0.67082683, 0.80163207, 0.70562823, 2.11208448,
               2.69230769, 0.60062402)
TARGET_WEIGHT = (0.49752894, 0.52041527, 0.49752894, 0.51394739, 2.71899565, 1.75577963, 0.58509403, 1.25228034,
                 0.49752894, 2.42993134, 0.49802647, 0.87266576, 1.36074165, 0.50150917, 0.49802647)
STATE_NAME = "last.pt"


@dataclass
class TrainRecognizerConfig:
    data: str
    out: str
    name: str
    image_size: tuple[int, int] = (128, 128)
    epochs: int = 100
    batch_size: int = 32
    lr: tuple[float, float, float] = (0.01, 0.01, 0.01)  # tool, verb-target, triplet
    warmups: tuple[int, int, int] = (9, 18, 58)
    power: float = 0.1
    decay_rate: float = 0.99
    weight_decay: float = 1e-5
    use_ln: bool = False
    augment: bool = True
    backbone: str = "none"  # none | imagenet | PATH to a torchvision resnet18 state_dict
    train_split: str = "train"
    val_split: str | None = "val"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast on CUDA)
    workers: int = 0
    overwrite: bool = False
    max_steps_per_epoch: int | None = None
    extra: dict = field(default_factory=dict)


class RendezvousLoss(nn.Module):
    """Sum of the four BCE-with-logits losses of the reference; returns (total, parts)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w_i", torch.tensor(TOOL_WEIGHT))
        self.register_buffer("w_v", torch.tensor(VERB_WEIGHT))
        self.register_buffer("w_t", torch.tensor(TARGET_WEIGHT))

    def forward(self, outputs, labels):
        (_, li), (_, lv), (_, lt), livt = outputs
        yi, yv, yt, yivt = labels
        bce = nn.functional.binary_cross_entropy_with_logits
        parts = {"i": bce(li.float(), yi, pos_weight=self.w_i), "v": bce(lv.float(), yv, pos_weight=self.w_v),
                 "t": bce(lt.float(), yt, pos_weight=self.w_t), "ivt": bce(livt.float(), yivt)}
        return sum(parts.values()), parts


def lr_factor(epoch: int, warmup: int, power: float, decay_rate: float) -> float:
    """Multiplier of `lr / power` at `epoch` (LinearLR warm-up from `power`, then exponential decay)."""
    if epoch <= warmup:
        return power + (1.0 - power) * (min(epoch, warmup) / warmup if warmup > 0 else 1.0)
    return decay_rate ** (epoch - warmup - 1)


def make_optimizer(model: Rendezvous, cfg: TrainRecognizerConfig):
    groups = model.parameter_groups()
    opt = torch.optim.SGD([{"params": groups[g], "lr": lr / cfg.power} for g, lr in zip(("i", "vt", "ivt"), cfg.lr)],
                          weight_decay=cfg.weight_decay)
    lambdas = [lambda e, w=w: lr_factor(e, w, cfg.power, cfg.decay_rate) for w in cfg.warmups]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambdas)


def train_step(model: Rendezvous, batch, loss_fn: RendezvousLoss, optimizer, *, scaler=None,
               autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """One optimisation step on `(images, (y_i, y_v, y_t, y_ivt))`; returns the losses."""
    images, labels = batch
    device = next(model.parameters()).device
    images = images.to(device, non_blocking=True)
    labels = tuple(y.to(device, non_blocking=True) for y in labels)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        outputs = model(images)
    loss, parts = loss_fn(outputs, labels)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}


def _check(cfg: TrainRecognizerConfig) -> tuple[Path, list[dict], list[dict]]:
    root = Path(cfg.data)
    records = read_metadata(root)
    labelled = [r for r in records if "triplets" in r]
    if not labelled:
        raise LapgenError("the dataset has no CholecT50 triplet labels", path=root,
                          hint="prepare it from CholecT50 (`lapgen prepare cholect50 ...`)")
    train = select_split(labelled, cfg.train_split, root / "metadata.jsonl")
    val = [r for r in labelled if cfg.val_split and r.get("split") == cfg.val_split]
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise LapgenError("--epochs and --batch-size must be at least 1")
    if cfg.backbone not in ("none", "imagenet") and not Path(cfg.backbone).is_file():
        raise LapgenError("backbone weights file not found", path=cfg.backbone,
                          hint="pass none, imagenet or a torchvision resnet18 state_dict file")
    if not cfg.name:
        raise LapgenError("a --name is required to register the recognizer")
    from lapgen.registry import check_name

    check_name(cfg.name)
    return root, train, val


def _load_backbone(model: Rendezvous, source: str) -> str | None:
    if source == "none":
        return None
    if source == "imagenet":  # downloads through torchvision's cache only when asked for
        from torchvision.models import ResNet18_Weights

        try:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except OSError as exc:  # offline, DNS failure, HTTP error (URLError is an OSError)
            raise LapgenError(f"cannot download the ImageNet ResNet-18 weights ({exc.__class__.__name__})",
                              hint="pass --backbone PATH to a local torchvision resnet18 state_dict, "
                              "or --backbone none") from exc
    else:
        state = read_state_dict(source)
        state = {k.removeprefix("encoder.basemodel.basemodel."): v for k, v in state.items()}
    try:
        model.encoder.basemodel.basemodel.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise LapgenError("backbone weights are not a torchvision resnet18 state_dict", path=source) from exc
    return source


@torch.no_grad()
def predict_scores(model: Rendezvous, dataset, *, batch_size: int = 32, workers: int = 0,
                   autocast_dtype: torch.dtype | None = None,
                   progress_label: str | None = None) -> dict[str, np.ndarray]:
    """Sigmoid scores `i` (N,6), `v` (N,10), `t` (N,15), `ivt` (N,100) of every item of `dataset`."""
    from torch.utils.data import DataLoader

    from lapgen.progress import track

    device = next(model.parameters()).device
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    out: dict[str, list] = {"i": [], "v": [], "t": [], "ivt": []}
    batches = track(loader, progress_label, total=len(loader)) if progress_label else loader
    for images, _ in batches:
        amp = autocast_dtype is not None
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=amp):
            (_, li), (_, lv), (_, lt), livt = model(images.to(device))
        for key, logit in (("i", li), ("v", lv), ("t", lt), ("ivt", livt)):
            out[key].append(torch.sigmoid(logit.float()).cpu().numpy())
    return {k: np.concatenate(v).astype(np.float64) for k, v in out.items()}


def _autocast(cfg: TrainRecognizerConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.precision == "fp32":
        return None
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[cfg.precision]


def train_recognizer(cfg: TrainRecognizerConfig) -> dict[str, Any]:
    """Train, keep the best validation epoch, write the folder + card, register it. Returns the card."""
    from torch.utils.data import DataLoader

    from lapgen.cards import make_card, write_card
    from lapgen.metrics.triplets import triplet_map
    from lapgen.device import resolve_device
    from lapgen.outputs import atomic_file, file_sha256, finalize_output_dir, prepare_output_dir
    from lapgen.progress import make_progress, notice

    if cfg.precision not in ("fp32", "fp16", "bf16"):
        raise LapgenError(f"unknown precision {cfg.precision!r}", hint="use fp32, fp16 or bf16")
    root, train_recs, val_recs = _check(cfg)
    device = resolve_device(cfg.device)
    amp = _autocast(cfg, device)
    train_set = RecognitionDataset(root, train_recs, train_transform(cfg.image_size, cfg.augment))
    val_set = RecognitionDataset(root, val_recs, eval_transform(cfg.image_size)) if val_recs else None
    torch.manual_seed(cfg.seed)
    model = Rendezvous(RendezvousConfig(image_size=cfg.image_size, use_ln=cfg.use_ln))
    backbone = _load_backbone(model, cfg.backbone)  # before any output exists
    stage = prepare_output_dir(cfg.out, overwrite=cfg.overwrite, resume=True)
    model.to(device)
    loss_fn = RendezvousLoss().to(device)
    optimizer, scheduler = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 else None
    # settings a resumed run must share (epochs may grow, device and workers may change)
    free = ("out", "overwrite", "workers", "device", "epochs")
    signature = {k: v for k, v in asdict(cfg).items() if k not in free}
    start, best, history = 0, -float("inf"), []
    state_file = stage / STATE_NAME
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state.get("signature") != _plain(signature):
            raise LapgenError("an interrupted run with other settings is in the staging folder",
                              path=stage, hint="re-run with the same options, or delete that folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, history = int(state["epoch"]) + 1, float(state["best"]), list(state["history"])
        notice(f"resuming recognizer training at epoch {start + 1}/{cfg.epochs}")

    steps = len(range(0, len(train_set), cfg.batch_size))
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    with make_progress() as progress:
        task = progress.add_task("train-recognizer", total=(cfg.epochs - start) * steps)
        for epoch in range(start, cfg.epochs):
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentations draw from the global generator
            loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                                num_workers=cfg.workers, pin_memory=device.type == "cuda")
            losses = []
            for k, batch in enumerate(loader):
                if k >= steps:
                    break
                losses.append(train_step(model, batch, loss_fn, optimizer, scaler=scaler, autocast_dtype=amp))
                progress.advance(task)
            scheduler.step()
            row = {"epoch": epoch + 1, **{k: float(np.mean([x[k] for x in losses])) for k in losses[0]}}
            score = None
            if val_set is not None:
                scores = predict_scores(model, val_set, batch_size=cfg.batch_size, autocast_dtype=amp)
                score = triplet_map(val_set.labels["ivt"], scores["ivt"], video_ids=val_set.video_ids())["mAP"]
                row["val_map_ivt"] = None if np.isnan(score) else float(score)
            history.append(row)
            # no validation, or a val split without positives: keep the latest weights
            improved = score is None or bool(np.isnan(score)) or score > best
            if improved or not (stage / "model.safetensors").exists():
                save_rendezvous(model, stage)
                if score is not None and not np.isnan(score):
                    best = max(best, score)
                row["saved"] = True
            with atomic_file(state_file) as fh:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, "best": best,
                            "history": history, "signature": _plain(signature)}, fh)

    best_epoch = max((r["epoch"] for r in history if r.get("saved")), default=None)
    card = make_card(
        "recognizer", name=cfg.name, architecture="rendezvous", description=f"Rendezvous trained on {root.name} "
        f"at {cfg.image_size[0]}x{cfg.image_size[1]}", config=model.config.to_dict(),
        image_size=list(cfg.image_size), preprocessing=preprocess_id(cfg.image_size),
        dataset={"path": str(root.resolve()), "metadata_sha256": file_sha256(root / "metadata.jsonl"),
                 "train_split": cfg.train_split, "val_split": cfg.val_split if val_set else None,
                 "n_train": len(train_set), "n_val": len(val_set) if val_set else 0},
        training={k: v for k, v in asdict(cfg).items() if k not in ("data", "out", "name", "overwrite", "extra")},
        backbone_init=backbone or "random", history=history, best_epoch=best_epoch,
        val_map_ivt=None if best == -float("inf") else float(best),
        weights_sha256=file_sha256(stage / "model.safetensors"),
    )
    write_card(stage, card)
    state_file.unlink()
    out = finalize_output_dir(cfg.out)
    from lapgen.registry import register_artifact

    register_artifact(cfg.name, "recognizer", out, card)
    return card


def _plain(value: Any) -> Any:
    from lapgen.cards import plain

    return plain(value)
