"""Finding the ring: Otsu, polarity from the frame border, largest component, small holes filled.

Nothing here assumes the ring's brightness or size: the side of the Otsu threshold that owns most
of the frame border is the belt, the other side is ring candidates. Lint on the belt is small and
disconnected, so it falls away with the largest component. Pits inside the ring are filled; the
bore (the largest hole) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from oringscan.config import RoiConfig


class RoiStatus(StrEnum):
    OK = "ok"
    NO_RING = "no_ring"
    TWO_RINGS = "two_rings"
    TOUCHES_EDGE = "touches_edge"
    BROKEN = "broken"  # no closed bore: the ring is cut through


@dataclass(slots=True)
class RingROI:
    status: RoiStatus
    reason: str
    polarity: str  # "light" (ring brighter than belt) or "dark"
    threshold: float
    ring_mask: np.ndarray | None = None  # bool HxW: ring material, pits filled, bore open
    raw_mask: np.ndarray | None = None  # bool HxW: the thresholded component before filling
    bore_mask: np.ndarray | None = None  # bool HxW: the enclosed bore
    bbox: tuple[int, int, int, int] | None = None  # x, y, w, h of the ring

    @property
    def ok(self) -> bool:
        return self.status is RoiStatus.OK

    @property
    def usable(self) -> bool:
        """Good enough to tile (a broken or edge-touching ring can still be inspected for defects)."""
        return self.ring_mask is not None and self.status in (RoiStatus.OK, RoiStatus.BROKEN, RoiStatus.TOUCHES_EDGE)


def _border_pixels(binary: np.ndarray, width: int = 4) -> np.ndarray:
    return np.concatenate(
        [binary[:width].ravel(), binary[-width:].ravel(), binary[:, :width].ravel(), binary[:, -width:].ravel()]
    )


def find_ring(gray: np.ndarray, cfg: RoiConfig | None = None) -> RingROI:
    """Locate the single ring in a gray frame and say whether it can be measured."""
    cfg = cfg or RoiConfig()
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError("find_ring expects a uint8 gray image")
    h, w = gray.shape
    # Work at half resolution for the threshold/components: 4x fewer pixels, same answer.
    small = cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    k = cfg.blur_ksize | 1
    blurred = cv2.GaussianBlur(small, (k, k), 0) if k > 1 else small
    threshold, light = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    light_bool = light > 0
    # The belt owns the border: if most border pixels are "light", the ring is the dark side.
    polarity = "dark" if _border_pixels(light_bool).mean() > 0.5 else "light"
    fg = ~light_bool if polarity == "dark" else light_bool
    fg = fg.astype(np.uint8)
    if cfg.open_ksize > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.open_ksize, cfg.open_ksize))
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return RingROI(RoiStatus.NO_RING, "no foreground found by Otsu", polarity, float(threshold))
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1]
    largest = int(order[0]) + 1
    min_area = cfg.min_ring_area_fraction * small.size
    if areas[order[0]] < min_area:
        return RingROI(
            RoiStatus.NO_RING,
            f"largest object covers {areas[order[0]] / small.size:.2%} of the frame (< {cfg.min_ring_area_fraction:.0%})",
            polarity,
            float(threshold),
        )
    if len(order) > 1 and areas[order[1]] >= cfg.second_ring_fraction * areas[order[0]]:
        return RingROI(
            RoiStatus.TWO_RINGS,
            f"two ring-sized objects ({areas[order[0]] * 4} and {areas[order[1]] * 4} px)",
            polarity,
            float(threshold),
        )
    comp_small = (labels == largest).astype(np.uint8)
    # Refine at full resolution, on the coarse component's box only (same answer, ~3x faster
    # than the whole frame: everything outside the box is belt).
    sx, sy, sw, sh = (int(v) for v in stats[largest, :4])
    x0, y0 = max(0, 2 * sx - 8), max(0, 2 * sy - 8)
    x1, y1 = min(w, 2 * (sx + sw) + 8), min(h, 2 * (sy + sh) + 8)
    comp = cv2.resize(comp_small, (w, h), interpolation=cv2.INTER_NEAREST)[y0:y1, x0:x1]
    gray_c = gray[y0:y1, x0:x1]
    # Threshold within a band around the coarse component.
    full_fg = (gray_c > threshold) if polarity == "light" else (gray_c <= threshold)
    band = cv2.dilate(comp, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    raw = (full_fg & (band > 0)).astype(np.uint8)
    n2, labels2, stats2, _ = cv2.connectedComponentsWithStats(raw, connectivity=8)
    if n2 > 1:
        raw = (labels2 == (int(np.argmax(stats2[1:, cv2.CC_STAT_AREA])) + 1)).astype(np.uint8)
    ring_area = int(raw.sum())
    # Holes: background components of the ring's complement that do not touch the box's border
    # (outside the box is all belt, so touching the box border means touching the frame's).
    inv = (1 - raw).astype(np.uint8)
    nh, hl, hstats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    touches = np.zeros(nh, dtype=bool)
    touches[np.unique(hl[0])] = True
    touches[np.unique(hl[-1])] = True
    touches[np.unique(hl[:, 0])] = True
    touches[np.unique(hl[:, -1])] = True
    hole_ids = [i for i in range(1, nh) if not touches[i]]
    filled_c = raw.astype(bool)
    bore_c = None
    if hole_ids:
        hole_areas = {i: int(hstats[i, cv2.CC_STAT_AREA]) for i in hole_ids}
        bore_id = max(hole_areas, key=hole_areas.get)
        small_limit = cfg.fill_holes_max_fraction * ring_area
        fill_ids = [i for i in hole_ids if i != bore_id or hole_areas[i] < small_limit]
        if hole_areas[bore_id] >= small_limit:
            bore_c = hl == bore_id
        if fill_ids:
            filled_c |= np.isin(hl, fill_ids)
    bx, by, bw, bh = cv2.boundingRect(filled_c.astype(np.uint8))
    bbox = (bx + x0, by + y0, bw, bh)

    def _full(crop: np.ndarray) -> np.ndarray:
        out = np.zeros((h, w), dtype=bool)
        out[y0:y1, x0:x1] = crop
        return out

    filled = _full(filled_c)
    bore_mask = None if bore_c is None else _full(bore_c)
    raw = _full(raw.astype(bool))
    raw_bool = raw.astype(bool)
    edge = bbox[0] == 0 or bbox[1] == 0 or bbox[0] + bbox[2] >= w or bbox[1] + bbox[3] >= h
    if edge:
        return RingROI(RoiStatus.TOUCHES_EDGE, "the ring touches the frame edge", polarity, float(threshold), filled, raw_bool, bore_mask, bbox)
    if bore_mask is None:
        return RingROI(RoiStatus.BROKEN, "no closed bore: the ring is broken through or not a ring", polarity, float(threshold), filled, raw_bool, None, bbox)
    return RingROI(RoiStatus.OK, "", polarity, float(threshold), filled, raw_bool, bore_mask, bbox)


def roi_with_margin(ring_mask: np.ndarray, margin_px: int) -> np.ndarray:
    """The ring grown by ``margin_px`` (bore included where it is within the margin)."""
    if margin_px <= 0:
        return ring_mask.copy()
    size = 2 * margin_px + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(ring_mask.astype(np.uint8), kernel) > 0


def subtract_background(gray: np.ndarray, roi: RingROI, margin_px: int) -> np.ndarray:
    """Belt (and bore) set to 0 outside the ring plus a margin, as the seed pipeline does."""
    if roi.ring_mask is None:
        return gray.copy()
    keep = roi_with_margin(roi.ring_mask, margin_px)
    out = gray.copy()
    out[~keep] = 0
    return out
