"""Reading the preprocess output (COCO per split) as tiles grouped by source frame."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from oringscan.errors import FrameError

# The data set's record type is the workspace's; re-exported for the screening code.
from oringscan.workspace import TileRecord, TypeWorkspace


def load_split(output_root: Path, oring_type: str, split: str) -> list[TileRecord]:
    """Tiles of one split (see :mod:`oringscan.workspace`); a missing or unreadable COCO file is
    one clear error."""
    return TypeWorkspace(Path(output_root), oring_type).read_split(split)


def group_frames(records: list[TileRecord]) -> dict[str, list[int]]:
    """Source frame -> indices of its tiles (in file order)."""
    frames: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        frames[r.source].append(i)
    return dict(frames)


def good_frame_tiles(records: list[TileRecord]) -> list[TileRecord]:
    """Tiles of frames without any annotation (a defect frame's clean-looking tiles may still hold
    a clipped or unlabelled part of a defect, so they stay out of the memory bank)."""
    bad_sources = {r.source for r in records if r.is_defect}
    return [r for r in records if r.source not in bad_sources]


def read_tile(path: Path) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8) if Path(path).is_file() else None
    img = None if data is None else cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FrameError(path, "tile missing or not decodable")
    return img


def iter_tile_batches(
    records: list[TileRecord], batch_size: int
) -> Iterator[tuple[list[TileRecord], list[np.ndarray]]]:
    for start in range(0, len(records), batch_size):
        part = records[start : start + batch_size]
        yield part, [read_tile(r.path) for r in part]


def fingerprint(records: list[TileRecord], extra: str = "") -> str:
    """Identifies the training data: tile names, sizes and places (changes when the data does)."""
    h = hashlib.sha256(extra.encode())
    for r in sorted(records, key=lambda r: str(r.path)):
        size = r.path.stat().st_size if r.path.is_file() else -1
        h.update(f"{r.path.name}|{r.source}|{r.tile_x}|{r.tile_y}|{size}\n".encode())
    return h.hexdigest()[:16]
