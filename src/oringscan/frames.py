"""Reading camera frames: 8-bit gray or 24-bit colour of a gray scene, full or 2x2-binned.

Everything downstream works on one uint8 gray array of the configured full size. Anything else is
refused with a :class:`FrameError` that names the file and the problem.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from oringscan.config import FrameConfig
from oringscan.errors import FrameError, path_text

__all__ = [
    "LoadedFrame",
    "check_regular_file",
    "iter_image_files",
    "normalize_frame",
    "path_text",
    "read_frame",
    "sha256_of",
    "write_frame",
]

# OpenCV refuses images over 2^30 pixels with a raw two-line assertion (CV_IO_MAX_IMAGE_PIXELS).
OPENCV_MAX_PIXELS = 1 << 30
_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass(slots=True)
class LoadedFrame:
    path: Path | None
    image: np.ndarray  # uint8 HxW gray at the configured full size
    scale: float  # full-size pixels per source pixel (2.0 for binned frames)
    source_shape: tuple[int, ...]
    notes: list[str]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def normalize_frame(array: np.ndarray, cfg: FrameConfig, path: Path | None = None) -> LoadedFrame:
    """Bring a decoded array to the pipeline's form, or refuse it with the reason."""
    notes: list[str] = []
    if array.dtype != np.uint8:
        bits = array.dtype.itemsize * 8
        raise FrameError(
            path, f"{bits}-bit frame ({array.dtype}); oringscan takes 8-bit gray or 24-bit colour frames"
        )
    if array.ndim == 3:
        channels = array.shape[2]
        if channels == 1:
            array = array[:, :, 0]
        elif channels in (3, 4):
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2GRAY if channels == 4 else cv2.COLOR_BGR2GRAY)
            notes.append(f"{channels * 8}-bit colour converted to gray")
        else:
            raise FrameError(path, f"unsupported channel count {channels}")
    elif array.ndim != 2:
        raise FrameError(path, f"unsupported array shape {array.shape}")
    source_shape = array.shape
    h, w = array.shape
    scale = 1.0
    if (w, h) == (cfg.width, cfg.height):
        pass
    elif cfg.accept_binned and (w * 2, h * 2) == (cfg.width, cfg.height):
        array = cv2.resize(array, (cfg.width, cfg.height), interpolation=cv2.INTER_LINEAR)
        scale = 2.0
        notes.append("2x2-binned frame scaled up to full size")
    elif cfg.accept_any_size:
        notes.append(f"unexpected size {w}x{h} processed as it is")
    else:
        raise FrameError(
            path,
            f"frame is {w}x{h}; expected {cfg.width}x{cfg.height} (or binned {cfg.width // 2}x{cfg.height // 2}); "
            "set frame.accept_any_size = true to process other sizes",
        )
    return LoadedFrame(
        path=path, image=np.ascontiguousarray(array), scale=scale, source_shape=source_shape, notes=notes
    )


def check_regular_file(path: Path) -> os.stat_result:
    """The file's stat when it is a regular file (symlinks followed); else FrameError saying what it is.

    Never opens the file: opening a FIFO would block the batch.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FrameError(path, "symlink loop (the link points back at itself)") from None
        if exc.errno == errno.ENOENT:
            if os.path.islink(path):
                raise FrameError(
                    path, f"dangling symlink (points to {path_text(os.readlink(path))}, which does not exist)"
                ) from None
            raise FrameError(path, "file not found") from None
        raise FrameError(path, f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise FrameError(path, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
        raise FrameError(path, f"is {kind}, not an image file")
    return info


def read_frame(path: Path | str, cfg: FrameConfig | None = None) -> LoadedFrame:
    """Read one frame file; raises FrameError with a one-line reason for anything unusable."""
    cfg = cfg or FrameConfig()
    path = Path(path)
    size = check_regular_file(path).st_size
    if size == 0:
        raise FrameError(path, "empty file (0 bytes)")
    if path.suffix.lower() not in cfg.extensions:
        raise FrameError(path, f"not an image file type oringscan reads ({', '.join(cfg.extensions)})")
    _check_declared_size(path, cfg)
    _check_bmp_header(path, size)
    data = np.fromfile(path, dtype=np.uint8)  # works for Windows paths with spaces and non-ASCII names
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise FrameError(path, "cannot be decoded as an image (corrupt or not an image)")
    return normalize_frame(array, cfg, path)


def header_size(path: Path) -> tuple[int, int] | None:
    """Width and height a BMP or PNG header declares (None for other files or short headers)."""
    with open(path, "rb") as fh:
        header = fh.read(32)
    if header[:2] == b"BM" and len(header) >= 26:
        dib = int.from_bytes(header[14:18], "little")
        if dib == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            return int.from_bytes(header[18:20], "little"), int.from_bytes(header[20:22], "little")
        width = int.from_bytes(header[18:22], "little", signed=True)
        height = int.from_bytes(header[22:26], "little", signed=True)
        return abs(width), abs(height)
    if header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) >= 24 and header[12:16] == b"IHDR":
        return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    return None


def _check_declared_size(path: Path, cfg: FrameConfig) -> None:
    """Refuse a header that declares a huge image before the decoder tries to allocate it."""
    size = header_size(path)
    if size is None:
        return
    width, height = size
    # Sizes near the camera's decode and get the precise "frame is WxH; expected ..." message.
    if cfg.accept_any_size:
        limit, what = OPENCV_MAX_PIXELS, f"OpenCV's limit of {OPENCV_MAX_PIXELS:,} pixels"
    else:
        limit = min(OPENCV_MAX_PIXELS, 4 * cfg.width * cfg.height)
        what = f"4x the {cfg.width}x{cfg.height} frames oringscan takes; not decoded"
    if width * height > limit:
        raise FrameError(path, f"image header says {width}x{height}, larger than {what}")
    if width == 0 or height == 0:
        raise FrameError(path, f"image header says {width}x{height}: no pixels")


def _check_bmp_header(path: Path, size: int) -> None:
    """OpenCV decodes a truncated BMP silently as black rows; catch it from the header instead."""
    if path.suffix.lower() != ".bmp":
        return
    with open(path, "rb") as fh:
        header = fh.read(54)
    if len(header) < 26 or header[:2] != b"BM":
        raise FrameError(path, "not a BMP file (bad header)")
    declared = int.from_bytes(header[2:6], "little")
    offset = int.from_bytes(header[10:14], "little")
    if len(header) >= 34:
        width = int.from_bytes(header[18:22], "little", signed=True)
        height = abs(int.from_bytes(header[22:26], "little", signed=True))
        bpp = int.from_bytes(header[28:30], "little")
        compression = int.from_bytes(header[30:34], "little")
        if bpp in (1, 2, 4):  # OpenCV decodes these as 8-bit: a black-and-white frame would pass as gray
            raise FrameError(
                path,
                f"{bpp}-bit BMP ({2**bpp} levels): not a camera frame; "
                "oringscan takes 8-bit gray or 24-bit colour frames",
            )
        if compression == 0 and bpp in (8, 24, 32) and width > 0:
            row = ((width * bpp + 31) // 32) * 4
            needed = offset + row * height
            if size < needed:
                raise FrameError(path, f"truncated BMP: {size} bytes, header needs {needed}")
            return
    if declared and size < declared:
        raise FrameError(path, f"truncated BMP: {size} bytes, header says {declared}")


def write_frame(path: Path | str, image: np.ndarray) -> None:
    """Write an image with a path that may contain spaces or non-ASCII characters."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise FrameError(path, "could not encode image")
    buf.tofile(path)


def iter_image_files(paths: list[Path], cfg: FrameConfig | None = None) -> list[Path]:
    """Expand files, folders and globs into a sorted list of frame paths (non-images in folders skipped)."""
    cfg = cfg or FrameConfig()
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if any(ch in str(p) for ch in "*?["):
            base = Path(p.anchor) if p.is_absolute() else Path(".")
            pattern = str(p.relative_to(p.anchor)) if p.is_absolute() else str(p)
            out.extend(
                sorted(q for q in base.glob(pattern) if q.is_file() or q.suffix.lower() in cfg.extensions)
            )
        elif p.is_dir() and p.suffix.lower() not in cfg.extensions:
            # rglob lists FIFOs, dangling and looping links too: each becomes an error record.
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in cfg.extensions))
        else:
            out.append(p)
    return out
