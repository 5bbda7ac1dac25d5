"""Which image files the dashboard may show, and reading them.

The database stores file paths written by whoever ran the inspection; the dashboard must not turn
into a file browser for the machine it runs on. Every path is resolved (symlinks followed, ``..``
collapsed) and shown only when it lies under one of the configured roots: ``dashboard.image_roots``
plus the data and output roots. Anything else is refused with a message the page prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from oringscan.errors import OringscanError


class ImageRefused(OringscanError):
    """A stored image path that lies outside every configured image root."""

    def __init__(self, path: Path | str, roots: Iterable[Path]) -> None:
        self.path = Path(path)
        shown = ", ".join(str(r) for r in roots) or "(none configured)"
        super().__init__(
            f"{self.path}: refused, not under a configured image root ({shown}); "
            "add its folder to dashboard.image_roots to show it"
        )


class ImageUnavailable(OringscanError):
    """An allowed image path whose file is gone or unreadable."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _resolve(path: Path) -> Path:
    try:
        return path.expanduser().resolve(strict=False)
    except (OSError, RuntimeError):  # symlink loops, odd drives
        return path.absolute()


@dataclass(frozen=True, slots=True)
class ImageRoots:
    """The folders images may be served from (already resolved)."""

    roots: tuple[Path, ...]

    @classmethod
    def of(cls, roots: Iterable[Path | str]) -> ImageRoots:
        unique: list[Path] = []
        for root in roots:
            resolved = _resolve(Path(root))
            if resolved not in unique:
                unique.append(resolved)
        return cls(tuple(unique))

    def allowed(self, stored: Path | str) -> Path:
        """The resolved file path for a stored path, or :class:`ImageRefused`.

        A relative stored path is taken from the working folder first (where the inspection most
        likely ran), then under each root in turn (the first that exists wins), so a database
        written with relative paths still works when the dashboard runs elsewhere.
        """
        raw = Path(stored)
        candidates = [raw] if raw.is_absolute() else [Path.cwd() / raw, *(root / raw for root in self.roots)]
        inside = [c for c in (_resolve(c) for c in candidates) if self._inside(c)]
        if not inside:
            raise ImageRefused(stored, self.roots)
        for path in inside:
            if path.exists():
                return path
        return inside[0]

    def _inside(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def read(self, stored: Path | str, *, color: bool = False) -> np.ndarray:
        """Decode an allowed image (gray uint8, or BGR when ``color``); refuses or reports one line."""
        path = self.allowed(stored)
        if not path.is_file():
            raise ImageUnavailable(path, "image file is gone (moved or deleted since the inspection)")
        try:
            data = np.fromfile(path, dtype=np.uint8)  # Windows paths with spaces / non-ASCII
        except OSError as exc:
            raise ImageUnavailable(path, f"cannot be read: {exc.strerror or exc}") from None
        flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
        image = cv2.imdecode(data, flag) if data.size else None
        if image is None:
            raise ImageUnavailable(path, "cannot be decoded as an image (corrupt or not an image)")
        return image


def encode_jpeg(image: np.ndarray, quality: int = 88) -> bytes:
    """JPEG bytes for the browser: a 2448x2048 PNG would take far longer to encode and send."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 arrays
        raise ImageUnavailable("<memory>", "could not encode the picture")
    return buf.tobytes()
