"""The classifier second stage: good or defect per tile, no outline.

The cheapest second stage: one small ImageNet classifier per flagged tile. A tile whose defect
probability reaches the reporting score yields one :class:`~oringscan.types.Instance` of the first
configured class (``defect`` when configured) with that probability as its score. It says *that* a
tile holds a defect, not *where*: the instance covers the tile's ring area (the pixels the tiling
kept; the whole tile when none is blank), or the hot region of the tile's screening anomaly map when
the caller passes maps (``predict_tiles(..., anomaly_maps=...)``; the Inspector passes none, since
this stage does not need them). Its calibration and evaluation are therefore per tile (see
``segmentation/dense_engine.py``): mask AP against the labelled outlines is reported but measures the
tile box, not the defect.
"""

from __future__ import annotations

import numpy as np
import torch

from oringscan.segmentation.stages import DenseStage
from oringscan.segmentation.stitching import tighten
from oringscan.types import Instance

# The hot region: map values at or above this fraction of the way from the map's median to its max.
HOT_FRACTION = 0.5


class TileClassifier(DenseStage):
    """``[segmentation] stage = "classifier"``."""

    stage = "classifier"

    @property
    def label(self) -> str:
        """The class a defect tile is reported as."""
        return "defect" if "defect" in self.class_names else self.class_names[0]

    def tile_instances(
        self,
        logits: torch.Tensor,
        gray: np.ndarray,
        offset: tuple[int, int],
        anomaly_map: np.ndarray | None,
        score_threshold: float,
    ) -> list[Instance]:
        score = float(logits.softmax(0)[1])
        if score < score_threshold:
            return []
        found = tighten(Instance(self.label, score, tile_region(gray, anomaly_map), offset))
        return [] if found is None else [found]


def tile_region(gray: np.ndarray, anomaly_map: np.ndarray | None = None) -> np.ndarray:
    """Where a defect tile's instance lies: the anomaly map's hot part of the ring when a map is
    given, else the ring area (non-blank pixels), else the whole tile."""
    ring = gray > 0
    if not ring.any():
        ring = np.ones(gray.shape[:2], dtype=bool)
    if anomaly_map is not None and anomaly_map.shape == gray.shape[:2]:
        values = anomaly_map[ring]
        low, high = float(np.median(values)), float(values.max())
        if high > low:
            hot = ring & (anomaly_map >= low + HOT_FRACTION * (high - low))
            if hot.any():
                return hot
    return ring
