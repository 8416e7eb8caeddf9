"""Checked reading of files uploaded to the studio.

Rules: an upload is identified by its *content* (magic bytes), never by the name the browser sent; it is
size-limited before it is decoded; image dimensions are bounded before pixels are decoded (PIL's
decompression-bomb guard); and nothing ever builds a path from an upload. Whatever the studio keeps of an
upload is written under a fixed name inside its own run folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from lapgen.errors import LapgenError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # 20 MiB: a 10 s mask video at 128 px is well below 1 MiB
MAX_IMAGE_SIDE = 4096  # px
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")


def _upload_path(upload: object) -> Path:
    """The server-side temporary file of a Gradio upload (a path string or a FileData-like object)."""
    if upload is None:
        raise LapgenError("no file uploaded")
    path = getattr(upload, "path", None) or getattr(upload, "name", None) or upload
    if isinstance(path, dict):
        path = path.get("path")
    return Path(str(path))


def check_size(upload: object, max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """The upload's temporary file, after checking it exists and is at most `max_bytes`."""
    path = _upload_path(upload)
    if not path.is_file():
        raise LapgenError("the uploaded file is missing on the server; upload it again")
    size = path.stat().st_size
    if size == 0:
        raise LapgenError("the uploaded file is empty")
    if size > max_bytes:
        raise LapgenError(
            f"the uploaded file is too large ({size / 2**20:.1f} MiB; limit {max_bytes / 2**20:.0f} MiB)"
        )
    return path


def sniff_video(head: bytes) -> str | None:
    """A container suffix from a file's first bytes (".mp4", ".webm", ".avi", ".gif"), else None."""
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if head[4:8] == b"ftyp":  # ISO base media (MP4, MOV)
        return ".mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML (WebM, Matroska)
        return ".webm"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    return None


def sniff_image(head: bytes) -> str | None:
    """A PIL format name from a file's first bytes (PNG, JPEG, BMP, TIFF, WEBP, GIF), else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def read_upload_image(upload: object, *, max_bytes: int = MAX_UPLOAD_BYTES, mode: str = "RGB") -> np.ndarray:
    """An uploaded image as an array (`mode` "RGB" -> (H, W, 3) uint8, "L" -> (H, W) uint8).

    Accepts PNG, JPEG, BMP, TIFF and WebP by content; anything else is a LapgenError.
    """
    path = check_size(upload, max_bytes)
    with open(path, "rb") as fh:
        kind = sniff_image(fh.read(16))
    if kind is None:
        raise LapgenError("the uploaded file is not a readable image", hint="upload a PNG or JPEG image")
    if kind not in IMAGE_FORMATS:
        raise LapgenError(f"unsupported image type {kind}", hint="upload a PNG or JPEG image")
    try:
        with Image.open(path, formats=[kind]) as img:  # only the decoder its magic bytes name
            width, height = img.size
            if max(width, height) > MAX_IMAGE_SIDE or min(width, height) < 8:
                raise LapgenError(f"image size {width}x{height} outside 8..{MAX_IMAGE_SIDE} px")
            img.load()
            return np.asarray(img.convert(mode))
    except LapgenError:
        raise
    except Exception as exc:
        raise LapgenError(
            "the uploaded file is not a readable image", hint="upload a PNG or JPEG image"
        ) from exc


def store_upload_video(upload: object, folder: Path, *, max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
    """Copy an uploaded video into `folder` as `uploaded_masks<suffix>` (suffix from its content)."""
    path = check_size(upload, max_bytes)
    with open(path, "rb") as fh:
        head = fh.read(16)
    suffix = sniff_video(head)
    if suffix is None:
        raise LapgenError(
            "the uploaded file is not a video (MP4, WebM, AVI or GIF)",
            hint="upload the mask sequence as a video, e.g. one written by `lapgen masks`",
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"uploaded_masks{suffix}"
    shutil.copyfile(path, target)
    return target
