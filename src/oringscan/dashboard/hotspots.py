"""Where on a frame a reviewer should look: every hot spot, as a full-resolution crop.

A hot spot is a segmented defect (its box and mask), a screening tile scored above the marginal
level (with the pipeline's anomaly map, the peak inside the tile; otherwise the tile), or a fired
geometry rule (the place on the ring edge where the rule's quantity is worst). They come largest
first. Each crop is cut at 1:1 from the frame, and the same place relative to the ring centre is
cut from a reference good part of the type, so "is this normal?" is answered side by side.
Pure functions over arrays and the database's rows (no Streamlit): tested directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from oringscan.dashboard.overlays import DefectMark, RingGeometry, class_color

SPOT_PAD = 0.6  # context around a spot, as a share of its size on each side
MIN_CROP = 96  # px: a pit of 3 px still gets a readable crop
MAX_CROP = 640  # px: a whole screening tile at most
RULE_CROP = 200  # px: the stretch of ring edge shown for a fired rule


@dataclass(slots=True)
class HotSpot:
    """One place to look: what found it, its class or rule, its score, where (frame pixels)."""

    kind: str  # "defect" | "screening" | "rule"
    label: str
    score: float
    box: tuple[int, int, int, int]  # x, y, w, h
    area: float  # px², for "largest first"
    detail: str = ""  # e.g. "2.31 x threshold", "wall_min 241.2 < 250"
    defect_id: int | None = None
    mask_rle: dict[str, Any] | None = None

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0


def marginal_level(detail: Any, marginal_fraction: float | None = None) -> float | None:
    """The screening score above which a tile is worth a look: the run's marginal threshold, else
    ``marginal_fraction`` x threshold, else the threshold itself."""
    threshold = detail.frame.screen_threshold
    versions = getattr(detail.run, "model_versions", None) or {}
    screening = versions.get("screening") if isinstance(versions, dict) else None
    low = screening.get("marginal_threshold") if isinstance(screening, dict) else None
    if isinstance(low, int | float) and low > 0:
        return float(low)
    if threshold is None:
        return None
    return float(threshold) * (marginal_fraction if marginal_fraction else 1.0)


def _inside(point: tuple[float, float], box: tuple[int, int, int, int]) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


def _heat_peak(
    heat: np.ndarray, frame_shape: tuple[int, int], box: tuple[int, int, int, int]
) -> tuple[tuple[int, int, int, int], float] | None:
    """The hottest blob of an anomaly map (any size, 0..1) inside a tile: its box in frame pixels
    and its area; None when the map has nothing there."""
    fh, fw = frame_shape
    sy, sx = heat.shape[0] / float(fh), heat.shape[1] / float(fw)
    x, y, w, h = box
    x0, y0 = int(x * sx), int(y * sy)
    x1, y1 = max(x0 + 1, int((x + w) * sx)), max(y0 + 1, int((y + h) * sy))
    region = heat[y0:y1, x0:x1]
    if region.size == 0 or float(region.max()) <= 0:
        return None
    peak = float(region.max())
    blob = (region >= 0.5 * peak).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(blob, connectivity=8)
    py, px = np.unravel_index(int(np.argmax(region)), region.shape)
    k = int(labels[py, px])
    bx, by, bw, bh, area = (int(v) for v in stats[k])
    frame_box = (
        int((x0 + bx) / sx),
        int((y0 + by) / sy),
        max(1, int(round(bw / sx))),
        max(1, int(round(bh / sy))),
    )
    return frame_box, area / (sx * sy)


def _rule_point(metric: str, geometry: RingGeometry) -> tuple[float, float] | None:
    """Where on the ring a rule's quantity is worst: thinnest wall, or the largest edge deviation."""
    outer, inner = geometry.outer_contour, geometry.inner_contour
    name = metric.lower()
    if ("wall" in name or "concentric" in name) and outer is not None and inner is not None:
        if len(outer) == len(inner):  # measured along the same rays: index-aligned
            wall = np.linalg.norm(outer.astype(float) - inner.astype(float), axis=1)
            i = int(np.argmin(wall))
            return tuple(((outer[i] + inner[i]) / 2.0).tolist())  # type: ignore[return-value]
    use_inner = "inner" in name or "bore" in name
    contour, circle = (inner, geometry.inner) if use_inner else (outer, geometry.outer)
    if contour is None or circle is None or len(contour) == 0:
        return None
    radius = np.hypot(contour[:, 0] - circle.cx, contour[:, 1] - circle.cy)
    i = int(np.argmax(np.abs(radius - circle.r)))
    return float(contour[i, 0]), float(contour[i, 1])


def find_hotspots(
    detail: Any,
    *,
    level: float | None,
    heat: np.ndarray | None = None,
    geometry: RingGeometry | None = None,
    frame_shape: tuple[int, int] | None = None,
) -> list[HotSpot]:
    """Every hot spot of a frame, largest first (see the module doc)."""
    shape = frame_shape or detail.frame_shape or (2048, 2448)
    spots = [
        HotSpot(
            "defect",
            d.label,
            float(d.score),
            (int(d.x), int(d.y), max(1, int(d.w)), max(1, int(d.h))),
            float(d.area_px or d.w * d.h),
            f"{d.area_px} px²",
            defect_id=d.id,
            mask_rle=d.mask_rle,
        )
        for d in detail.defects
    ]
    threshold = detail.frame.screen_threshold
    if level is not None:
        for t in sorted(detail.tiles, key=lambda t: -t.score):
            if t.score <= level:
                continue
            box = (int(t.x), int(t.y), int(t.w), int(t.h))
            if any(_inside(s.center, box) for s in spots if s.kind == "defect"):
                continue  # the defect's own crop shows this place already
            area = float(t.w * t.h)
            peak = _heat_peak(heat, shape, box) if heat is not None else None
            if peak is not None:
                box, area = peak
            ratio = f"{t.score / threshold:.2f} x threshold" if threshold else f"score {t.score:.3g}"
            spots.append(HotSpot("screening", "screening", float(t.score), box, area, ratio))
    if geometry is not None:
        for m in detail.measurements:
            if not m.fired:
                continue
            point = _rule_point(m.metric, geometry)
            if point is None:
                continue
            half = RULE_CROP // 2
            box = (int(point[0]) - half // 2, int(point[1]) - half // 2, half, half)
            limits = " ".join(
                x
                for x in (
                    f"< {m.lower:.4g}"
                    if m.lower is not None and m.value is not None and m.value < m.lower
                    else "",
                    f"> {m.upper:.4g}"
                    if m.upper is not None and m.value is not None and m.value > m.upper
                    else "",
                )
                if x
            )
            value = "?" if m.value is None else f"{m.value:.4g}"
            spots.append(
                HotSpot(
                    "rule",
                    m.metric,
                    float(m.value or 0.0),
                    box,
                    float(half * half),
                    f"{value} {limits}".strip(),
                )
            )
    return sorted(spots, key=lambda s: -s.area)


def crop_window(
    box: tuple[int, int, int, int], frame_shape: tuple[int, int], pad: float = SPOT_PAD
) -> tuple[int, int, int, int]:
    """The square window (x0, y0, x1, y1) cut around a spot: its size plus context, inside the frame."""
    x, y, w, h = box
    side = int(min(MAX_CROP, max(MIN_CROP, max(w, h) * (1 + 2 * pad))))
    H, W = frame_shape
    cx, cy = x + w / 2.0, y + h / 2.0
    x0 = int(max(0, min(W - side, cx - side / 2)))
    y0 = int(max(0, min(H - side, cy - side / 2)))
    return x0, y0, int(min(W, x0 + side)), int(min(H, y0 + side))


def spot_crop(gray: np.ndarray, spot: HotSpot) -> np.ndarray:
    """The spot at full resolution (BGR), outlined: the defect's mask, else its box."""
    x0, y0, x1, y1 = crop_window(spot.box, gray.shape[:2])
    crop = gray[y0:y1, x0:x1]
    crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR) if crop.ndim == 2 else crop.copy()
    color = (
        class_color(spot.label)
        if spot.kind == "defect"
        else (0, 0, 255)
        if spot.kind == "screening"
        else (255, 200, 0)
    )
    mask = DefectMark(spot.label, spot.score, spot.box, spot.mask_rle).mask() if spot.mask_rle else None
    if mask is not None:
        local = mask[y0:y1, x0:x1].astype(np.uint8)
        contours, _ = cv2.findContours(local, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(crop, contours, -1, color, 1, cv2.LINE_8)
    else:
        x, y, w, h = spot.box
        cv2.rectangle(crop, (x - x0 - 2, y - y0 - 2), (x - x0 + w + 1, y - y0 + h + 1), color, 1)
    return crop


def ring_center(gray: np.ndarray) -> tuple[float, float, float] | None:
    """Centre (x, y) and outer radius of the ring, from a coarse Otsu mask: cheap and enough to find
    "the same place" on another part of the type."""
    f = max(1, gray.shape[1] // 400)
    small = cv2.resize(gray, (gray.shape[1] // f, gray.shape[0] // f), interpolation=cv2.INTER_AREA)
    _, binary = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if np.count_nonzero(binary) > binary.size / 2:  # dark ring on a light belt
        binary = 255 - binary
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    (cx, cy), r = cv2.minEnclosingCircle(max(contours, key=cv2.contourArea))
    return cx * f, cy * f, r * f


def reference_crop(
    reference: np.ndarray,
    spot: HotSpot,
    frame_shape: tuple[int, int],
    frame_ring: tuple[float, float, float] | None,
    reference_ring: tuple[float, float, float] | None,
) -> np.ndarray:
    """The same place on the reference part: the spot's window moved (and scaled) from the frame's
    ring centre to the reference's, cut at the same size."""
    x0, y0, x1, y1 = crop_window(spot.box, frame_shape)
    side = x1 - x0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    if frame_ring is not None and reference_ring is not None and frame_ring[2] > 0:
        k = reference_ring[2] / frame_ring[2]
        cx = reference_ring[0] + (cx - frame_ring[0]) * k
        cy = reference_ring[1] + (cy - frame_ring[1]) * k
    # Not clamped to the picture: near its border the part sits elsewhere, and black shows where.
    H, W = reference.shape[:2]
    rx0, ry0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    out = np.zeros((y1 - y0, side) + reference.shape[2:], reference.dtype)
    sx0, sy0 = max(0, rx0), max(0, ry0)
    sx1, sy1 = min(W, rx0 + side), min(H, ry0 + (y1 - y0))
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - ry0 : sy1 - ry0, sx0 - rx0 : sx1 - rx0] = reference[sy0:sy1, sx0:sx1]
    return cv2.cvtColor(out, cv2.COLOR_GRAY2BGR) if out.ndim == 2 else out


def thumbnail(gray: np.ndarray, width: int = 120) -> np.ndarray:
    """A small picture of the whole frame for the queue's rows."""
    scale = width / float(gray.shape[1])
    return cv2.resize(gray, (width, max(1, int(round(gray.shape[0] * scale)))), interpolation=cv2.INTER_AREA)
