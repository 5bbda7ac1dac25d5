"""Types shared by every stage, defined once.

Masks of instances are kept as a tight crop plus its offset in the frame, never as a dense
full-frame array: a frame can hold dozens of defects and 2448x2048 bools each would be 5 MB.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class Verdict(StrEnum):
    GOOD = "good"
    DEFECT = "defect"
    REWORK = "rework"
    SUSPECT = "suspect"
    ERROR = "error"


class ReworkVerdict(StrEnum):
    PASS = "pass"
    REWORK = "rework"
    DEFECT = "defect"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TileBox:
    """A tile's place in the frame (pixels, x to the right, y down)."""

    x: int
    y: int
    w: int
    h: int

    @property
    def x2(self) -> int:
        return self.x + self.w

    @property
    def y2(self) -> int:
        return self.y + self.h

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y2), slice(self.x, self.x2)

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


@dataclass(slots=True)
class Tile:
    box: TileBox
    image: np.ndarray  # uint8, HxW gray, already background-subtracted
    ring_fraction: float = 0.0


@dataclass(slots=True)
class Instance:
    """One segmented (or labelled) defect in frame coordinates."""

    label: str
    score: float
    mask: np.ndarray  # bool crop, shape (h, w)
    offset: tuple[int, int]  # (x, y) of the crop's top-left in the frame

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Tight [x, y, w, h] of the mask in frame pixels."""
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return (self.offset[0], self.offset[1], 0, 0)
        x0, y0 = int(xs.min()), int(ys.min())
        return (self.offset[0] + x0, self.offset[1] + y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """Dense frame-size mask (for tests and small frames only)."""
        out = np.zeros((height, width), dtype=bool)
        x, y = self.offset
        h, w = self.mask.shape
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = self.mask[y0 - y : y1 - y, x0 - x : x1 - x]
        return out

    def rle(self, height: int, width: int) -> dict[str, Any]:
        """COCO RLE of the mask in frame coordinates (counts as str, JSON-ready)."""
        from pycocotools import mask as mask_utils

        encoded = mask_utils.encode(np.asfortranarray(self.full_mask(height, width).astype(np.uint8)))
        return {"size": list(encoded["size"]), "counts": encoded["counts"].decode("ascii")}

    def polygons(self, min_points: int = 3) -> list[list[float]]:
        """Outer contours in frame pixels as flat [x0, y0, x1, y1, ...] lists."""
        import cv2

        contours, _ = cv2.findContours(self.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        ox, oy = self.offset
        out = []
        for c in contours:
            if len(c) < min_points:
                continue
            pts = c.reshape(-1, 2).astype(float) + (ox, oy)
            out.append(pts.flatten().tolist())
        return out

    def to_json(self) -> dict[str, Any]:
        polys = self.polygons()
        return {
            "label": self.label,
            "score": round(float(self.score), 4),
            "bbox": list(self.bbox),
            "area": self.area,
            "polygon": polys[0] if polys else [],
        }


@dataclass(slots=True)
class TileScore:
    box: TileBox
    score: float
    flagged: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.box.as_dict(), "score": round(float(self.score), 6), "flagged": self.flagged}


@dataclass(slots=True)
class ScreeningResult:
    """A frame's anomaly verdict: its score is its worst tile's."""

    score: float
    threshold: float
    flagged: bool
    marginal: bool
    tiles: list[TileScore]
    # Optional per-tile anomaly maps (tile-sized float32), same order as ``tiles``.
    anomaly_maps: list[np.ndarray] | None = None
    # Lower edge of the marginal band (a person looks between it and ``threshold``); None: no band.
    # Carried by the result so the Inspector needs nothing else from the screening stage.
    marginal_threshold: float | None = None
    # Set when the ring-shape screen (screening/shape.py) flagged the frame: what it measured, where.
    shape_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "score": round(float(self.score), 6),
            "threshold": round(float(self.threshold), 6),
            "flagged": self.flagged,
            "marginal": self.marginal,
            "tiles": [t.to_json() for t in self.tiles],
        }
        if self.marginal_threshold is not None:
            out["marginal_threshold"] = round(float(self.marginal_threshold), 6)
        if self.shape_reason is not None:
            out["shape_reason"] = self.shape_reason
        return out


@dataclass(slots=True)
class MetricCheck:
    """One measured value against its limits."""

    name: str
    value: float | None
    lower: float | None = None
    upper: float | None = None
    fired: bool = False
    verdict: str | None = None  # what firing means: "rework" or "defect"
    message: str = ""
    unit: str = "px"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.value is None else round(float(self.value), 4),
            "lower": self.lower,
            "upper": self.upper,
            "fired": self.fired,
            "verdict": self.verdict,
            "message": self.message,
            "unit": self.unit,
        }


@dataclass(slots=True)
class ReworkResult:
    verdict: ReworkVerdict
    reasons: list[str]
    checks: list[MetricCheck] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float | None]:
        return {c.name: c.value for c in self.checks}

    @property
    def fired(self) -> list[str]:
        return [c.name for c in self.checks if c.fired]


@dataclass(slots=True)
class InspectionResult:
    """Everything the line needs to know about one frame."""

    image: str
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    oring_type: str | None = None
    screening: ScreeningResult | None = None
    defects: list[Instance] = field(default_factory=list)
    rework: ReworkResult | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    sha256: str | None = None
    overlay_path: str | None = None

    @property
    def screen_score(self) -> float | None:
        return None if self.screening is None else self.screening.score

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "verdict": str(self.verdict),
            "reasons": list(self.reasons),
            "screen_score": None if self.screen_score is None else round(float(self.screen_score), 6),
            "defects": [
                {k: v for k, v in d.to_json().items() if k in ("label", "score", "bbox", "area")}
                for d in self.defects
            ],
            "rework": [] if self.rework is None else self.rework.fired,
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
            "error": self.error,
        }
