"""Reading camera frames: 8-bit gray or 24-bit colour of a gray scene, full or 2x2-binned.

Everything downstream works on one uint8 gray array of the configured full size. Anything else is
refused with a :class:`FrameError` that names the file and the problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from oringscan.config import FrameConfig
from oringscan.errors import FrameError


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
        raise FrameError(path, f"{bits}-bit frame ({array.dtype}); oringscan takes 8-bit gray or 24-bit colour frames")
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
    return LoadedFrame(path=path, image=np.ascontiguousarray(array), scale=scale, source_shape=source_shape, notes=notes)


def read_frame(path: Path | str, cfg: FrameConfig | None = None) -> LoadedFrame:
    """Read one frame file; raises FrameError with a one-line reason for anything unusable."""
    cfg = cfg or FrameConfig()
    path = Path(path)
    if path.is_dir():
        raise FrameError(path, "is a directory, not an image file")
    if not path.exists():
        raise FrameError(path, "file not found")
    size = path.stat().st_size
    if size == 0:
        raise FrameError(path, "empty file (0 bytes)")
    if path.suffix.lower() not in cfg.extensions:
        raise FrameError(path, f"not an image file type oringscan reads ({', '.join(cfg.extensions)})")
    _check_bmp_header(path, size)
    data = np.fromfile(path, dtype=np.uint8)  # works for Windows paths with spaces and non-ASCII names
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise FrameError(path, "cannot be decoded as an image (corrupt or not an image)")
    return normalize_frame(array, cfg, path)


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
            out.extend(sorted(q for q in base.glob(pattern) if q.is_file() or q.suffix.lower() in cfg.extensions))
        elif p.is_dir() and p.suffix.lower() not in cfg.extensions:
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in cfg.extensions))
        else:
            out.append(p)
    return out
