"""`lapgen studio`: a local web page over lapgen's library functions (optional extra `studio`: `pip install -e ".[studio]"` in the checkout).

- `prompting`: prompt composition from the CholecT50 vocabulary (plain functions).
- `silhouettes`: built-in tool silhouettes drawn as binary masks.
- `authoring`: tool tracks, keyframes, the click canvas, mask-sequence animation and previews.
- `uploads`: type- and size-checked reading of uploads (never used as paths).
- `generation`: `Studio` (one generation at a time) over `lapgen.models.video_generation.generate_video`.
- `app`: the Gradio page (`build_app`, `launch`); the only module that imports gradio.
"""

from __future__ import annotations

from lapgen.errors import LapgenError


def require_gradio() -> None:
    """A one-line error naming the extra when gradio is not installed."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise LapgenError(
            "lapgen studio needs gradio, which is not installed",
            hint='install the extra from the lapgen checkout: pip install -e ".[studio]"',
        )
