"""Tile annotations put back on their source frames: what a model trained on the tiles can see.

Preprocess cuts each labelled frame into tiles, blanks the belt and clips every defect to the
tiles; this module re-assembles both on the full frame, so a test, a benchmark or a plant engineer
can check that every labelled pixel reached the training data (annotated *and* shown, not blanked).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from oringscan.preprocess.split import SPLITS


@dataclass(slots=True)
class ReassembledFrames:
    """Per source frame (``source_image`` as in the COCO files): the union of the tile annotations
    and the pixels the tiles show unchanged (not blanked), at frame size."""

    shape: tuple[int, int]
    annotated: dict[str, np.ndarray] = field(default_factory=dict)
    shown: dict[str, np.ndarray] = field(default_factory=dict)
    frames: dict[str, np.ndarray] = field(default_factory=dict)

    def coverage(self, source_image: str, truth: np.ndarray) -> float:
        """Share of ``truth`` (a frame-size bool mask) that is annotated and shown."""
        got = truth & self.annotated[source_image] & self.shown[source_image]
        return float(got.sum() / max(int(truth.sum()), 1))


def decode_annotation(segmentation: object, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, or RLE with str or bytes counts) as a bool mask."""
    if isinstance(segmentation, list):
        return mask_utils.decode(
            mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        ).astype(bool)
    counts = segmentation["counts"]  # type: ignore[index]
    rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}  # type: ignore[index]
    return mask_utils.decode(rle).astype(bool)


def reassemble(data_root: Path, type_output: Path, shape: tuple[int, int]) -> ReassembledFrames:
    """Read ``type_output/annotations/<split>.json`` and the tiles, and paint them onto frame-size maps.

    ``shape`` is the frames' (height, width); frames are read from ``data_root / source_image``.
    """
    annotated: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(shape, bool))
    shown: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(shape, bool))
    frames: dict[str, np.ndarray] = {}
    for split in SPLITS:
        path = type_output / "annotations" / f"{split}.json"
        if not path.is_file():
            continue
        coco = json.loads(path.read_text(encoding="utf-8"))
        by_id = {im["id"]: im for im in coco["images"]}
        for im in coco["images"]:
            src = im["source_image"]
            frame = frames.setdefault(src, cv2.imread(str(data_root / src), cv2.IMREAD_GRAYSCALE))
            tile = cv2.imread(str(type_output / "images" / split / im["file_name"]), cv2.IMREAD_GRAYSCALE)
            window = np.s_[
                im["tile_y"] : im["tile_y"] + im["height"], im["tile_x"] : im["tile_x"] + im["width"]
            ]
            # A tile pixel equal to the frame's is shown; a blanked pixel is 0 where the frame is not.
            shown[src][window] |= (tile == frame[window]) & ((tile > 0) | (frame[window] == 0))
        for ann in coco["annotations"]:
            im = by_id[ann["image_id"]]
            window = np.s_[
                im["tile_y"] : im["tile_y"] + im["height"], im["tile_x"] : im["tile_x"] + im["width"]
            ]
            annotated[im["source_image"]][window] |= decode_annotation(
                ann["segmentation"], im["height"], im["width"]
            )
    return ReassembledFrames(shape, dict(annotated), dict(shown), frames)
