"""Fixtures of the reliability suite: one session-wide `World` of valid inputs that the malformed-input cases
copy and break, and the thread setting shared by in-process and subprocess runs."""

from __future__ import annotations

import pytest

from tests.reliability.harness import THREADS, World


@pytest.fixture(scope="session")
def world(
    tmp_path_factory,
    synthetic_cholect50,
    synthetic_cholec80,
    cholecseg8k_dir,
    artnet_dir,
    yolo_dataset_dir,
    frames_dir,
    controlnet_frames_dir,
    tiny_sd_dir,
    tiny_controlnet_dir,
    image_sets,
    moving_masks,
    tiny_clip,
) -> World:
    import numpy as np

    from lapgen.data.video import write_mp4

    root = tmp_path_factory.mktemp("reliability-world")
    masks = root / "masks"
    masks.mkdir()
    seq = moving_masks(6)
    for i, m in enumerate(seq):
        m.save(masks / f"{i:06d}.png")
    mask_video = write_mp4([np.stack([np.asarray(m)] * 3, -1) for m in seq], root / "masks.mp4", fps=25)
    from lapgen.models.segmentation import load_yolo

    segmenter = root / "yolov8n-seg-random.pt"
    load_yolo("yolov8n-seg.yaml").save(segmenter)
    return World(
        t50=synthetic_cholect50,
        c80=synthetic_cholec80,
        seg8k=cholecseg8k_dir,
        artnet=artnet_dir,
        yolo=yolo_dataset_dir,
        frames=frames_dir,
        frames_masks=controlnet_frames_dir,
        tiny_sd=tiny_sd_dir,
        tiny_controlnet=tiny_controlnet_dir,
        images=image_sets,
        masks=masks,
        mask_video=mask_video,
        segmenter=segmenter,
        clip=tiny_clip,
    )


@pytest.fixture
def torch_threads():
    """In-process runs use the same number of torch threads as the subprocesses (results depend on it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield THREADS
    torch.set_num_threads(before)
