"""Fixtures of the reliability suite: one session-wide `World` of valid inputs that the malformed-input cases
copy and break, and the thread setting shared by in-process and subprocess runs."""

from __future__ import annotations

import pytest

from tests.reliability.harness import (
    THREADS,
    World,
    assert_ok,
    in_process_one_thread,
    prepare_args,
    run_in_process,
    sample_args,
)


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


@pytest.fixture(scope="session")
def big_cholect50(tmp_path_factory):
    """A CholecT50 release with enough work for a mid-run kill of `prepare`: 4 videos x 30 frames, 320x180."""
    from PIL import Image

    from lapgen.data import synthetic

    root = synthetic.write_cholect50(
        tmp_path_factory.mktemp("big-t50") / "CholecT50", videos=(1, 8, 6, 103), num_frames=30
    )
    for png in root.glob("videos/*/*.png"):
        Image.open(png).resize((320, 180), Image.BILINEAR).save(png, compress_level=1)
    return root


@pytest.fixture(scope="session")
def prepare_reference(big_cholect50, tmp_path_factory):
    """An uninterrupted `lapgen prepare` of `big_cholect50` (in-process)."""
    out = tmp_path_factory.mktemp("prepare-ref") / "frames"
    assert_ok(run_in_process(prepare_args(big_cholect50, out)))
    return out


@pytest.fixture(scope="session")
def sample_reference(world, tmp_path_factory):
    """An uninterrupted `lapgen sample` (`harness.sample_args`, in-process, one torch thread)."""
    out = tmp_path_factory.mktemp("sample-ref") / "gen"
    assert_ok(in_process_one_thread(sample_args(world, out)))
    return out
