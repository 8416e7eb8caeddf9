"""Video IO through PyAV (FFmpeg's libraries, no subprocess): decode, probe, encode H.264 MP4, write GIF.

Decoding is sequential (`container.decode(video=0)`), which is the fast path for long-GOP H.264: seeking
per frame re-decodes from the previous keyframe every time (the paper's `prepare_cholec80.py` does that,
and reads the frame before the annotated one). Frame k of `iter_frames` is the k-th decoded frame
(0-based), i.e. the Cholec80 C-index for constant-frame-rate videos.

Frames are numpy arrays `(H, W, 3)` uint8 RGB. MP4 output is H.264 (`libx264`), `yuv420p`, so width and
height must be even (4:2:0 chroma subsampling, yuv420p, halves both; libx264 refuses odd sides).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from lapgen.errors import LapgenError


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` reports: frame count (decoded frames when the container does not say), fps, size."""

    frames: int
    fps: float
    width: int
    height: int
    codec: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return (self.width, self.height)


def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise LapgenError("video file not found", path=path, hint="check the path")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise LapgenError(f"cannot open video ({type(exc).__name__}: {exc})", path=path,
                          hint="the file is corrupt, truncated or not a video; re-download or re-encode it") from exc
    if not container.streams.video:
        container.close()
        raise LapgenError("file holds no video stream", path=path, hint="point at an .mp4 video")
    return container


def probe(path: str | Path, *, count: bool = False) -> VideoInfo:
    """Frame count, fps, size and codec of a video.

    The count is the container's (`nb_frames`); with `count=True`, or when the container has none, the
    packets of the video stream are counted (demux only, no decoding).
    """
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        frames = int(stream.frames or 0)
        if count or frames <= 0:
            frames = 0
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        frames += 1
            except av.error.FFmpegError as exc:
                raise LapgenError(f"video is corrupt ({exc})", path=path,
                                  hint="re-download or re-encode the file") from exc
        return VideoInfo(frames=frames, fps=fps, width=stream.codec_context.width,
                         height=stream.codec_context.height, codec=stream.codec_context.name)
    finally:
        container.close()


# Skip decoding H.264 frames that are neither kept nor referenced (see iter_indexed_frames). A module
# switch so benchmarks can measure its effect; results are bit-identical either way.
SKIP_UNREFERENCED = True


def _nal_length_size(codec_context) -> int | None:
    """Bytes of the NAL length prefix of an H.264 stream in MP4 (avcC) form; None if not that form."""
    extra = codec_context.extradata
    if codec_context.name != "h264" or not extra or len(extra) < 7 or extra[0] != 1:
        return None
    return (extra[4] & 3) + 1


def _disposable(data: memoryview, length_size: int) -> bool:
    """True if every slice of this H.264 access unit has nal_ref_idc == 0 (no other frame refers to it)."""
    pos, slices = 0, 0
    while pos + length_size < len(data):
        n = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if n <= 0 or pos + n > len(data):
            return False  # malformed: decode it rather than guess
        header = data[pos]
        if header & 0x1F in (1, 5):  # coded slice (non-IDR, IDR)
            slices += 1
            if (header >> 5) & 3:
                return False
        pos += n
    return slices > 0


def iter_indexed_frames(path: str | Path, *, step: int = 1, threads: int = 0, frame_format: str = "rgb24",
                        as_pil: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(index, frame)` for every `step`-th frame (index % step == 0), decoding sequentially.

    `index` is the 0-based display index (from the timestamps of a constant-frame-rate stream, else
    the decode count). Only kept frames are converted to RGB. With `step > 1`, H.264 access units
    that no other frame references (`nal_ref_idc == 0`, typically non-reference B-frames) and that
    are not kept are not decoded at all; dropping them cannot change any other frame, so the kept
    frames are bit-identical to a full decode. `threads` = codec threads (0 = FFmpeg's choice).
    `as_pil=True` yields RGB PIL images instead of arrays (one copy less when the next step is Pillow).
    A decode error mid-stream raises a one-line LapgenError naming the file and the last good frame.
    """
    import av

    if step < 1:
        raise ValueError("step must be >= 1")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        tb, rate = stream.time_base, stream.average_rate or stream.guessed_rate
        start = stream.start_time
        use_pts = bool(tb and rate and start is not None)

        def index_of(pts):  # display index of a timestamp, frames
            return round(float((pts - start) * tb * rate))

        skip = SKIP_UNREFERENCED and step > 1 and use_pts
        length_size = _nal_length_size(stream.codec_context) if skip else None
        count, index = -1, -1
        try:
            for packet in container.demux(stream):
                if (length_size and packet.size and packet.pts is not None and not packet.is_keyframe
                        and index_of(packet.pts) % step and _disposable(memoryview(packet), length_size)):
                    count += 1  # a frame we do not need and nothing depends on: skip its decode
                    continue
                for frame in packet.decode():
                    count += 1
                    index = index_of(frame.pts) if (use_pts and frame.pts is not None) else count
                    if index % step == 0:
                        yield index, (frame.to_image() if as_pil else frame.to_ndarray(format=frame_format))
        except av.error.FFmpegError as exc:
            raise LapgenError(f"video is corrupt after frame {index} ({exc})", path=path,
                              hint="re-download or re-encode the file") from exc
    finally:
        container.close()


def iter_frames(path: str | Path, *, step: int = 1, threads: int = 0) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames `(H, W, 3)` in decode order (every `step`-th one)."""
    for _index, frame in iter_indexed_frames(path, step=step, threads=threads):
        yield frame


def read_video(path: str | Path, *, step: int = 1) -> np.ndarray:
    """All (every `step`-th) frames as one array `(T, H, W, 3)` uint8. Mind memory for long videos."""
    frames = list(iter_frames(path, step=step))
    if not frames:
        raise LapgenError("video has no decodable frames", path=path, hint="re-download or re-encode the file")
    return np.stack(frames)


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) frame, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frame.dtype}")
    return np.ascontiguousarray(frame[..., :3])


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float = 25, *, crf: int = 18,
              preset: str = "medium", codec: str = "libx264", threads: int = 0) -> Path:
    """Encode RGB uint8 frames `(H, W, 3)` (or greyscale `(H, W)`) to an H.264 yuv420p MP4.

    Width and height must be even. `crf` is x264's quality (0 = lossless luma, 18 = visually lossless,
    23 = x264's default); `preset` trades speed for size. Written to a temporary name, then renamed.
    Returns the path. x264 output is deterministic for the same frames and options.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix or '.mp4'}")
    rate = Fraction(fps).limit_denominator(1001)
    n = 0
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                rgb = _as_rgb(frame)
                h, w = rgb.shape[:2]
                if stream is None:
                    if w % 2 or h % 2:
                        raise LapgenError(f"H.264 yuv420p needs even width and height, got {w}x{h}",
                                          path=path, hint="crop or resize the frames to even sizes")
                    stream = container.add_stream(codec, rate=rate)
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.options = {"crf": str(crf), "preset": preset}
                    if threads:
                        stream.codec_context.thread_count = threads
                    size = (h, w)
                elif (h, w) != size:
                    raise LapgenError(f"frame {n} is {w}x{h}, the video is {size[1]}x{size[0]}", path=path,
                                      hint="all frames of a video must have one size")
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
                n += 1
            if stream is None:
                raise LapgenError("no frames to write", path=path, hint="pass at least one frame")
            for packet in stream.encode():
                container.mux(packet)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_gif(frames: Iterable[np.ndarray], path: str | Path, fps: float = 8, *, loop: int = 0) -> Path:
    """Write an animated GIF with Pillow (`duration = 1000 / fps` ms per frame, looping forever)."""
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(_as_rgb(f)) for f in frames]
    if not images:
        raise LapgenError("no frames to write", path=path, hint="pass at least one frame")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.gif")
    try:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(1, round(1000 / fps)), loop=loop, optimize=False)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
