"""Tile annotations put back on their source frames: what a model trained on the tiles can see.

Preprocess cuts each labelled frame into tiles, blanks the belt and clips every defect to the
tiles; this module re-assembles both on the full frame, so a test, a benchmark or a plant engineer
can check that every labelled pixel reached the training data (annotated *and* shown, not blanked).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from oringscan.preprocess.split import SPLITS
from oringscan.workspace import TypeWorkspace, decode_segmentation


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
    return decode_segmentation(segmentation, height, width).astype(bool)


def reassemble(data_root: Path, type_output: Path, shape: tuple[int, int]) -> ReassembledFrames:
    """Read the splits under ``type_output`` (``output/<type>``) and their tiles, and paint them onto
    frame-size maps.

    ``shape`` is the frames' (height, width); frames are read from ``data_root / source_image``.
    """
    workspace = TypeWorkspace(Path(type_output).parent, Path(type_output).name)
    annotated: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(shape, bool))
    shown: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(shape, bool))
    frames: dict[str, np.ndarray] = {}
    for split in SPLITS:
        if not workspace.has_split(split):
            continue
        for record in workspace.read_split(split):
            src = record.source
            frame_path = workspace.source_frame(src, data_root)
            frame = frames.setdefault(src, cv2.imread(str(frame_path), cv2.IMREAD_GRAYSCALE))
            tile = cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE)
            window = np.s_[
                record.tile_y : record.tile_y + record.height, record.tile_x : record.tile_x + record.width
            ]
            # A tile pixel equal to the frame's is shown; a blanked pixel is 0 where the frame is not.
            shown[src][window] |= (tile == frame[window]) & ((tile > 0) | (frame[window] == 0))
            if record.annotations:
                annotated[src][window] |= record.masks().any(axis=0)
    return ReassembledFrames(shape, dict(annotated), dict(shown), frames)
