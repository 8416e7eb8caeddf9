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
    split_key_frames,
    use_long_mode,
)
from lapgen.models.controlvideo.interpolators import (
    get_interpolator,
    list_interpolators,
    register_interpolator,
)
from lapgen.models.controlvideo.pipeline import ControlVideoPipeline, ControlVideoPipelineOutput
from lapgen.models.controlvideo.smoother import interleave_frames, smoother_step_indices

__all__ = [
    "ControlVideoPipeline",
    "ControlVideoPipelineOutput",
    "CrossFrameAttnProcessor",
    "FrameContext",
    "KeyFramePlan",
    "chunked_attention",
    "default_window",
    "frame_coupling",
    "get_interpolator",
    "interleave_frames",
    "list_interpolators",
    "poolable_group_norms",
    "register_interpolator",
    "self_attention_names",
    "smoother_step_indices",
    "split_key_frames",
    "use_long_mode",
]
