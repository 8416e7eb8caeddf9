"""ultralytics made offline-safe and quiet before lapgen uses it (`configure_ultralytics`, idempotent).

ultralytics reaches for the network in a few places; each is closed here (docs/segmentation.md, "Offline"):
- a connectivity probe and pip auto-installs: `YOLO_OFFLINE=1`, `YOLO_AUTOINSTALL=0`;
- the label-plot font (`check_font("Arial.ttf")`, a HEAD request to GitHub when missing): a local TTF
  (matplotlib's DejaVuSans) is copied into ultralytics' config folder under both names it asks for;
- integrations (sync/analytics, comet, wandb, ...): switched off in ultralytics' settings;
- the CUDA AMP check, which downloads `yolo26n.pt`: replaced by the same GPU blocklist without the
  download when that file is absent;
- its process-wide patch of `PIL.Image.open` (which pip-installs pi-heif on an unreadable file): undone.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from lapgen.outputs import lapgen_home

_INTEGRATIONS = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_configured = {"done": False}


def configure_ultralytics() -> None:
    """Make ultralytics offline-safe and quiet (idempotent). Call before anything imports it."""
    if _configured["done"]:
        return
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(lapgen_home() / "ultralytics"))
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    seed_fonts(Path(USER_CONFIG_DIR))
    if any(SETTINGS.get(k) for k in _INTEGRATIONS if k in SETTINGS):
        SETTINGS.update({k: False for k in _INTEGRATIONS if k in SETTINGS})
    trainer_module.check_amp = _offline_check_amp
    _restore_pil_open()
    _configured["done"] = True


def _restore_pil_open() -> None:
    """Undo ultralytics' process-wide patch of `PIL.Image.open`.

    Importing ultralytics replaces `PIL.Image.open` with a wrapper that, the first time a file cannot be
    identified, pip-installs and imports pi-heif (HEIC support). Offline that turns every corrupt image any
    lapgen code opens afterwards into a ModuleNotFoundError traceback; online it installs a package. lapgen
    reads PNG/JPEG only and reports unreadable files itself.
    """
    from PIL import Image

    try:
        import ultralytics.utils.patches as patches
    except ImportError:  # pragma: no cover - an ultralytics without the patch
        return
    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is getattr(patches, "image_open", None):
        Image.open = original


def seed_fonts(config_dir: Path) -> list[Path]:
    """Copy a local TTF into ultralytics' config folder as Arial.ttf / Arial.Unicode.ttf (if missing)."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    config_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in _FONT_NAMES:
        target = config_dir / name
        if not target.exists() and source.exists():
            tmp = target.with_name(f".{name}.tmp{os.getpid()}")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
            written.append(target)
    return written


_AMP_BLOCKLIST = re.compile(
    r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)", re.IGNORECASE
)  # GPUs ultralytics' check_amp disables AMP on


def _offline_check_amp(model: Any) -> bool:
    """ultralytics' `check_amp` without downloading its reference model: AMP on CUDA unless blocklisted."""
    import torch
    from ultralytics.utils import WEIGHTS_DIR
    from ultralytics.utils.checks import check_amp

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    if (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        return check_amp(model)
    return not _AMP_BLOCKLIST.search(torch.cuda.get_device_name(device))
