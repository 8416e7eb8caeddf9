"""AnimateDiff with lapgen's tool-mask ControlNet (Guo et al. 2024; diffusers' AnimateDiffControlNetPipeline):
the pipeline with a resumable, FreeNoise-windowed denoising loop, and the FreeNoise windows and noise.

`lapgen video --method animatediff` (`lapgen.models.animatediff_video`) runs it with the Stage-1 model, a
motion adapter (`lapgen train-motion`) and the Stage-2 ControlNet.
"""

from lapgen.models.animatediff.pipeline import FUSIONS, AnimateDiffMaskOutput, AnimateDiffMaskPipeline
from lapgen.models.animatediff.windows import context_windows, pyramid_weights, reschedule_noise

__all__ = ["FUSIONS", "AnimateDiffMaskOutput", "AnimateDiffMaskPipeline", "context_windows", "pyramid_weights",
           "reschedule_noise"]
