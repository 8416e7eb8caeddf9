"""PyAV video IO: H.264 round trip, frame indexing, probing, GIF, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lapgen.data import video
from lapgen.errors import LapgenError


def _frames(n=30, w=64, h=48):
    # each frame a flat grey level plus a moving bright square: frame k is identifiable by its level
    out = []
    for k in range(n):
        f = np.full((h, w, 3), 4 * k + 10, np.uint8)
        f[8:16, 2 * k % (w - 8):2 * k % (w - 8) + 8] = 250
        out.append(f)
    return out


def test_mp4_round_trip(tmp_path):
    frames = _frames()
    path = video.write_mp4(frames, tmp_path / "v.mp4", fps=25, crf=10)
    info = video.probe(path)
    assert (info.frames, info.fps, info.size, info.codec) == (30, 25.0, (64, 48), "h264")
    assert video.probe(path, count=True).frames == 30
    arr = video.read_video(path)
    assert arr.shape == (30, 48, 64, 3) and arr.dtype == np.uint8
    levels = arr[:, 40:, :, :].reshape(30, -1).mean(axis=1)
    np.testing.assert_allclose(levels, [4 * k + 10 for k in range(30)], atol=2.5)  # order kept, lossy codec
    kept = list(video.iter_indexed_frames(path, step=25))
    assert [i for i, _ in kept] == [0, 25]
    np.testing.assert_array_equal(kept[1][1], arr[25])
    assert len(list(video.iter_frames(path, step=10))) == 3
    for step in (2, 7, 10):  # skipping undecoded non-reference frames keeps every kept frame bit-exact
        got = list(video.iter_indexed_frames(path, step=step))
        assert [i for i, _ in got] == list(range(0, 30, step))
        for i, frame in got:
            np.testing.assert_array_equal(frame, arr[i])
    import av

    with av.open(str(path)) as c:  # the skip path is exercised: x264 made non-reference B-frames
        s = c.streams.video[0]
        size = video._nal_length_size(s.codec_context)
        assert size and sum(video._disposable(memoryview(p), size) for p in c.demux(s) if p.size) > 0
    # deterministic encoder: same frames, same bytes
    again = video.write_mp4(frames, tmp_path / "w.mp4", fps=25, crf=10)
    assert again.read_bytes() == path.read_bytes()


def test_mp4_greyscale_and_errors(tmp_path):
    grey = [np.full((32, 32), 128, np.uint8)] * 3
    assert video.probe(video.write_mp4(grey, tmp_path / "g.mp4", fps=5)).frames == 3
    with pytest.raises(LapgenError, match="even width and height"):
        video.write_mp4([np.zeros((33, 32, 3), np.uint8)], tmp_path / "odd.mp4")
    with pytest.raises(LapgenError, match="one size"):
        video.write_mp4([np.zeros((32, 32, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)], tmp_path / "m.mp4")
    with pytest.raises(LapgenError, match="no frames"):
        video.write_mp4([], tmp_path / "e.mp4")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary leftovers
    with pytest.raises(LapgenError, match="not found"):
        video.probe(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 100)
    with pytest.raises(LapgenError, match="corrupt, truncated"):
        video.probe(tmp_path / "junk.mp4")
    good = video.write_mp4(_frames(10), tmp_path / "t.mp4").read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(good[: len(good) // 2])  # moov atom at the end: cut off
    with pytest.raises(LapgenError):
        list(video.iter_frames(tmp_path / "trunc.mp4"))


def test_gif(tmp_path):
    path = video.write_gif(_frames(5), tmp_path / "a.gif", fps=10)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.size == (64, 48)
        assert im.info["duration"] == 100 and im.info["loop"] == 0
