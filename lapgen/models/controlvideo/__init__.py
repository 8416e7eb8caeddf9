"""ControlVideo (Zhang et al. 2023) for lapgen's Stage 3: masks + text -> laparoscopic video.

Importing this package imports torch and diffusers.
"""

from lapgen.models.controlvideo.attention import (
    CrossFrameAttnProcessor,
    FrameContext,
    chunked_attention,
    frame_coupling,
    poolable_group_norms,
    self_attention_names,
)
from lapgen.models.controlvideo.hierarchical import (
    KeyFramePlan,
    default_window,
    long_mode_decision,
    split_key_frames,
    use_long_mode,
)
from lapgen.models.controlvideo.interpolators import (
    InterpolatorChoice,
    get_interpolator,
    list_interpolators,
    register_interpolator,
    resolve_interpolator,
)
from lapgen.models.controlvideo.pipeline import ControlVideoPipeline, ControlVideoPipelineOutput
from lapgen.models.controlvideo.rife import IFNetHDv3, RifeMidpoint, load_ifnet
from lapgen.models.controlvideo.smoother import interleave_frames, smoother_parity, smoother_step_indices

__all__ = [
    "ControlVideoPipeline",
    "ControlVideoPipelineOutput",
    "CrossFrameAttnProcessor",
    "FrameContext",
    "IFNetHDv3",
    "InterpolatorChoice",
    "KeyFramePlan",
    "RifeMidpoint",
    "chunked_attention",
    "default_window",
    "frame_coupling",
    "get_interpolator",
    "interleave_frames",
    "list_interpolators",
    "load_ifnet",
    "long_mode_decision",
    "poolable_group_norms",
    "register_interpolator",
    "resolve_interpolator",
    "self_attention_names",
    "smoother_parity",
    "smoother_step_indices",
    "split_key_frames",
    "use_long_mode",
]
