"""Reading the preprocess output (COCO per split) as tiles grouped by source frame."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from oringscan.errors import FrameError, ModelFileError


@dataclass(slots=True)
class TileRecord:
    path: Path
    source: str
    x: int
    y: int
    width: int
    height: int
    defect_areas: list[float] = field(default_factory=list)

    @property
    def is_defect(self) -> bool:
        return bool(self.defect_areas)


def annotations_path(output_root: Path, model: str, split: str) -> Path:
    return Path(output_root) / model / "annotations" / f"{split}.json"


def load_split(output_root: Path, model: str, split: str) -> list[TileRecord]:
    """Tiles of one split; a missing or unreadable COCO file is a clear error."""
    path = annotations_path(output_root, model, split)
    if not path.is_file():
        raise ModelFileError(path, f"no {split} annotations (run: oringscan preprocess --model {model})")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        images = coco["images"]
        anns = coco.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelFileError(path, f"not a COCO annotation file ({exc})") from None
    areas: dict[int, list[float]] = defaultdict(list)
    for ann in anns:
        areas[ann["image_id"]].append(float(ann.get("area", 0.0)))
    base = Path(output_root) / model
    out = []
    for im in images:
        name = im["file_name"]
        candidates = [base / "images" / split / name, base / name, Path(name)]
        tile_path = next((c for c in candidates if c.is_file()), candidates[0])
        out.append(
            TileRecord(
                path=tile_path,
                source=str(im.get("source_image", name)),
                x=int(im.get("tile_x", 0)),
                y=int(im.get("tile_y", 0)),
                width=int(im.get("width", 0)),
                height=int(im.get("height", 0)),
                defect_areas=areas.get(im["id"], []),
            )
        )
    return out


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
        h.update(f"{r.path.name}|{r.source}|{r.x}|{r.y}|{size}\n".encode())
    return h.hexdigest()[:16]
