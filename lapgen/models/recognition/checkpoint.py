"""Saving and loading Rendezvous weights.

- lapgen checkpoints: a folder with `model.safetensors` (the state_dict) and `config.json`
  (`RendezvousConfig`), next to the provenance card `lapgen.yaml`.
- Official checkpoints (CAMMA-public/rendezvous README "Model Zoo"): a plain `torch.save(state_dict)`
  `.pth`, e.g. `rendezvous_l8_cholect50_crossval_k1_layernorm_lowres.pth` (LayerNorm, 256x448 input) or
  `rendezvous_l8_cholect50_challenge_k0_batchnorm_lowres.pth` (BatchNorm). Loaded with
  `torch.load(weights_only=True)`; the configuration is inferred from the tensors (LayerNorm shape ->
  feature map size -> input size; number of decoder layers).

Every load is strict: a key or shape mismatch is a one-line error naming the first differences.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from lapgen.errors import LapgenError
from lapgen.models.recognition.rendezvous import Rendezvous, RendezvousConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_CKPT_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors")


def save_rendezvous(model: Rendezvous, folder: str | Path) -> Path:
    """Write `model.safetensors` and `config.json` into `folder`; returns the weights path."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "architecture": "rendezvous"})
    tmp.replace(folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps(model.config.to_dict(), indent=1) + "\n")
    return folder / WEIGHTS_NAME


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (safetensors or a torch state_dict), `module.` prefixes removed."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, truncated or pickled objects beyond plain tensors
        raise LapgenError(f"cannot read Rendezvous checkpoint ({exc.__class__.__name__})", path=path,
                          hint="pass an official rendezvous_*.pth or a folder written by "
                          "`lapgen eval train-recognizer`") from exc
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise LapgenError("checkpoint holds no state_dict", path=path)
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def infer_config(state: dict[str, torch.Tensor], *, image_size: tuple[int, int] | None = None,
                 hr_output: bool | None = None) -> RendezvousConfig:
    """The configuration an official state_dict was trained with (what the tensors reveal)."""
    layers = {int(m.group(1)) for k in state if (m := re.match(r"decoder\.projection\.(\d+)\.", k))}
    ln = state.get("decoder.mhma.0.ln.weight")
    use_ln = ln is not None and ln.dim() == 3
    if use_ln:
        fh, fw = int(ln.shape[1]), int(ln.shape[2])
        if hr_output is None:
            hr_output = (fh, fw) == (32, 56)
        if image_size is None:
            image_size = (fh * 8, fw * 8) if hr_output else (fh * 32, fw * 32)
    d_model = state.get("decoder.projection.0.ivt_query.weight")
    return RendezvousConfig(
        image_size=image_size or (256, 448), hr_output=bool(hr_output), use_ln=use_ln,
        layer_size=max(layers) + 1 if layers else 8, d_model=int(d_model.shape[0]) if d_model is not None else 128,
    )


def _checkpoint_file(path: Path) -> tuple[Path, RendezvousConfig | None]:
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file():
            cfg = None
            if (path / CONFIG_NAME).is_file():
                try:
                    cfg = RendezvousConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
                except (json.JSONDecodeError, TypeError) as exc:
                    raise LapgenError(f"invalid {CONFIG_NAME}", path=path / CONFIG_NAME) from exc
            return path / WEIGHTS_NAME, cfg
        found = sorted(p for p in path.iterdir() if p.suffix in _CKPT_SUFFIXES)
        if len(found) != 1:
            count = f" ({len(found)} found)" if found else ""
            raise LapgenError(f"folder holds no single Rendezvous checkpoint{count}",
                              path=path, hint="point at the .pth file itself")
        return found[0], None
    if not path.is_file():
        raise LapgenError("Rendezvous checkpoint not found", path=path,
                          hint="pass an existing .pth/.safetensors file or a train-recognizer folder")
    return path, None


def load_rendezvous(path: str | Path, *, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, image_size: tuple[int, int] | None = None,
                    hr_output: bool | None = None) -> Rendezvous:
    """A Rendezvous model with the weights at `path` (lapgen folder, official .pth, .safetensors),
    loaded strictly, in eval mode, on `device`/`dtype`. `image_size`/`hr_output` override what a
    BatchNorm official checkpoint cannot reveal (default 256x448, low resolution)."""
    file, cfg = _checkpoint_file(Path(path))
    state = read_state_dict(file)
    if cfg is None:
        cfg = infer_config(state, image_size=image_size, hr_output=hr_output)
    elif image_size is not None and not cfg.use_ln:
        cfg.image_size = tuple(image_size)  # type: ignore[assignment]
    model = Rendezvous(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)}!={tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} with other shapes (e.g. {wrong[0]})" if wrong else ""]
        what = "; ".join(p for p in parts if p)
        raise LapgenError(f"checkpoint does not match the Rendezvous architecture: {what}",
                          path=file, hint="is it a Rendezvous (resnet18) checkpoint?")
    model.load_state_dict(state, strict=True)
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def load_recognizer(source=None, *, device="auto") -> Rendezvous:
    """The recognizer of a registry source (name, folder, official `.pth`; None: the default recognizer),
    loaded by `load_rendezvous` on `device` (`auto|cpu|cuda[:N]`). A registered recognizer without a file on
    this machine is a one-line error saying where to get or how to train one."""
    from lapgen.device import resolve_device
    from lapgen.registry import Entry, resolve

    entry = source if isinstance(source, Entry) else resolve(source, kind="recognizer")
    if entry.kind != "recognizer":
        raise LapgenError(f"'{entry.name}' is a {entry.kind}, not a recognizer")
    if entry.path is None:
        url = entry.options.get("url", "")
        add_name = entry.name if (entry.builtin or entry.user) else "NAME"
        raise LapgenError(
            f"recognizer '{entry.name}': no checkpoint on disk (looked for "
            f"{', '.join(entry.options.get('files', [])[:1]) or 'a weights file'} in $LAPGEN_HOME/weights)",
            hint=f"download an official checkpoint{' from ' + url if url else ''} or train one with "
                 f"`lapgen eval train-recognizer`, then `lapgen models add {add_name} PATH`")
    if not entry.path.exists():
        raise LapgenError(f"recognizer '{entry.name}': checkpoint does not exist", path=entry.path)
    return load_rendezvous(entry.path, device=resolve_device(device))

