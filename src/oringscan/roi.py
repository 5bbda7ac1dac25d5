"""Finding the ring: a lighting-corrected two-class threshold, polarity, largest component, pits filled.

Nothing here assumes the ring's brightness or size, and the plant's lighting is neither flat nor
known, so the threshold is local:

1. At coarse scale (1/4 for a full frame) the frame is flat-fielded by a smooth lighting model
   fitted to the frame border (always belt), then Otsu splits it in two. The belt is the side that
   owns most of the frame border, unless only the other side's largest object is ring-like (closed,
   with a bore).
2. Twice: the belt's and the ring's local gray levels are estimated by normalized convolution and
   the threshold becomes their local midpoint. Gradients, vignetting, a shadow over one side of the
   ring and low contrast (ring 60 on belt 18) then all cut the ring's edge at the same place.
3. The coarse foreground is opened (lint strands and lint bridges across the bore or the edge are
   thinner than the kernel) and its largest component is the ring. A "ring" whose outline is no
   steeper than the texture (bare belt, lighting) or that barely differs from the belt is no ring.
4. At full resolution the same local threshold is applied in a band (``band_px``) around that
   component only (edge detail, flash and bites come back; lint is left outside the band, stubs at
   most ~``band_px`` long). Pits are filled, the bore (the largest hole) is kept; other large holes
   are left open and noted.

About 60-120 ms per full frame on one core (benchmarks/bench_roi.py).
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
    threshold: float  # typical gray level of the (local) threshold along the ring's edge
    ring_mask: np.ndarray | None = None  # bool HxW: ring material, pits filled, bore open
    raw_mask: np.ndarray | None = None  # bool HxW: the thresholded component before filling
    bore_mask: np.ndarray | None = None  # bool HxW: the enclosed bore
    bbox: tuple[int, int, int, int] | None = None  # x, y, w, h of the ring
    ring_level: float | None = None  # median gray level of the ring material
    belt_level: float | None = None  # median gray level of the belt next to the ring
    notes: tuple[str, ...] = ()  # what was noticed on the way (lint cut off, large holes left open...)
    # Coarse local belt and ring gray-level maps and their scale factor, as the threshold used them:
    # :func:`ring_material` reuses them to find material attached to the ring (bulges, flash).
    level_maps: tuple[np.ndarray, np.ndarray, int] | None = None

    @property
    def ok(self) -> bool:
        return self.status is RoiStatus.OK

    @property
    def usable(self) -> bool:
        """Good enough to tile (a broken or edge-touching ring can still be inspected for defects)."""
        return self.ring_mask is not None and self.status in (
            RoiStatus.OK,
            RoiStatus.BROKEN,
            RoiStatus.TOUCHES_EDGE,
        )

    @property
    def contrast(self) -> float | None:
        """Ring minus belt gray level (negative for a dark ring)."""
        if self.ring_level is None or self.belt_level is None:
            return None
        return self.ring_level - self.belt_level


def _disk(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _border_pixels(binary: np.ndarray, width: int = 4) -> np.ndarray:
    return np.concatenate(
        [
            binary[:width].ravel(),
            binary[-width:].ravel(),
            binary[:, :width].ravel(),
            binary[:, -width:].ravel(),
        ]
    )


def _border_band(shape: tuple[int, int], width: int) -> np.ndarray:
    band = np.zeros(shape, dtype=bool)
    band[:width], band[-width:], band[:, :width], band[:, -width:] = True, True, True, True
    return band


def _flatten_by_border(coarse: np.ndarray) -> np.ndarray:
    """Divide out a smooth lighting field fitted (in log space) to the frame border, which is belt.

    A quadratic in x, y captures linear gradients and vignetting well enough for a first split;
    lint or a ring grazing the border are outliers and are dropped before the refit.
    """
    h, w = coarse.shape
    band = _border_band((h, w), max(2, min(h, w) // 100))
    ys, xs = np.nonzero(band)
    values = np.log(np.maximum(coarse[ys, xs].astype(np.float32), 1.0))
    u, v = xs / max(w - 1, 1) * 2 - 1, ys / max(h - 1, 1) * 2 - 1
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1).astype(np.float32)
    keep = np.ones(len(values), dtype=bool)
    coef = np.zeros(6, dtype=np.float32)
    for _ in range(2):
        d = design[keep].astype(np.float64)
        coef = np.linalg.solve(d.T @ d + 1e-9 * np.eye(6), d.T @ values[keep].astype(np.float64)).astype(
            np.float32
        )
        resid = values - design @ coef
        mad = float(np.median(np.abs(resid[keep] - np.median(resid[keep])))) + 1e-3
        keep = np.abs(resid) < 4 * 1.4826 * mad
        if keep.sum() < 12:
            return coarse.astype(np.float32)
    # The field is smooth: evaluate it on a 4x coarser grid and interpolate.
    gw, gh = max(2, w // 4), max(2, h // 4)
    uu = np.linspace(-1, 1, gw, dtype=np.float32)[None, :]
    vv = np.linspace(-1, 1, gh, dtype=np.float32)[:, None]
    log_light = (
        coef[0] + coef[1] * uu + coef[2] * vv + coef[3] * uu * uu + coef[4] * uu * vv + coef[5] * vv * vv
    )
    gain = np.exp(float(np.median(design[keep] @ coef)) - log_light).astype(np.float32)
    return coarse.astype(np.float32) * cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of a float image (through an 8-bit histogram of its robust range)."""
    lo, hi = np.percentile(values[::3, ::3], [0.1, 99.9])
    if hi - lo < 1e-6:
        return float(hi)
    scaled = np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(lo + t * (hi - lo) / 255.0)


def _local_level(image: np.ndarray, weights: np.ndarray, sigma: float, fallback: float) -> np.ndarray:
    """Normalized convolution: the weighted local mean of ``image`` (computed at 1/4 of its scale: smooth)."""
    h, w = image.shape
    hs, ws = max(1, h // 4), max(1, w // 4)
    wt = cv2.resize(weights.astype(np.float32), (ws, hs), interpolation=cv2.INTER_AREA)
    val = cv2.resize(image * weights, (ws, hs), interpolation=cv2.INTER_AREA)
    s = max(sigma / 4, 0.5)
    wt = cv2.GaussianBlur(wt, (0, 0), s, borderType=cv2.BORDER_REPLICATE)
    val = cv2.GaussianBlur(val, (0, 0), s, borderType=cv2.BORDER_REPLICATE)
    level = np.where(wt > 1e-3, val / np.maximum(wt, 1e-6), np.float32(fallback)).astype(np.float32)
    return cv2.resize(level, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(slots=True)
class _Candidate:
    """The largest object on one side of the threshold, at coarse scale."""

    foreground: np.ndarray  # uint8, opened
    labels: np.ndarray
    stats: np.ndarray
    order: np.ndarray  # component ids (1-based) by decreasing area
    touches_border: bool
    bore_fraction: float  # largest enclosed hole / object area

    @property
    def component(self) -> np.ndarray:
        return self.labels == self.order[0]

    @property
    def area(self) -> int:
        return int(self.stats[self.order[0], cv2.CC_STAT_AREA]) if len(self.order) else 0

    @property
    def ring_like(self) -> bool:
        return len(self.order) > 0 and not self.touches_border and self.bore_fraction > 0.02


def _candidate(foreground: np.ndarray, open_kernel: np.ndarray) -> _Candidate:
    fg = cv2.morphologyEx(foreground.astype(np.uint8), cv2.MORPH_OPEN, open_kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    order = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1] + 1 if n > 1 else np.zeros(0, dtype=np.int64)
    if not len(order):
        return _Candidate(fg, labels, stats, order, False, 0.0)
    x, y, bw, bh, area = (int(v) for v in stats[order[0]])
    h, w = fg.shape
    touches = x == 0 or y == 0 or x + bw >= w or y + bh >= h
    comp = (labels[y : y + bh, x : x + bw] == order[0]).astype(np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max((cv2.contourArea(c) for c in contours), default=0.0)
    # Enclosed area minus material ~ the holes; the bore dominates them.
    bore_fraction = max(0.0, (outline - area) / max(area, 1))
    return _Candidate(fg, labels, stats, order, touches, float(bore_fraction))


def _edge_strength(image: np.ndarray, chosen: _Candidate, textured: list[np.ndarray]) -> float:
    """Gray-level slope across the object's outline over the slope inside the two classes.

    A ring's edge is a step, many times steeper than anything in the ring's or the belt's texture
    (7-100x); the boundary between blotches of a bare belt, or between the halves of a lighting
    gradient, is no steeper than the texture itself (~1x), however large the gray-level difference.
    """
    comp = chosen.component.astype(np.uint8)
    outline = (comp - cv2.erode(comp, np.ones((3, 3), np.uint8))) > 0
    outline[:2], outline[-2:], outline[:, :2], outline[:, -2:] = False, False, False, False
    if not outline.any():
        return 0.0
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    slope = cv2.magnitude(gx, gy) / 8.0  # gray levels per coarse pixel
    texture = max((float(np.median(slope[w > 0][::5])) for w in textured if w.any()), default=0.0)
    return float(np.median(slope[outline]) / max(texture, 0.1))


def _coarse_factor(shape: tuple[int, int]) -> int:
    return int(max(1, min(4, min(shape) // 256)))


def find_ring(gray: np.ndarray, cfg: RoiConfig | None = None) -> RingROI:
    """Locate the single ring in a gray frame and say whether it can be measured."""
    cfg = cfg or RoiConfig()
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError("find_ring expects a uint8 gray image")
    h, w = gray.shape
    f = _coarse_factor((h, w))
    ch, cw = h // f, w // f
    coarse = (
        cv2.resize(gray[: ch * f, : cw * f], (cw, ch), interpolation=cv2.INTER_AREA) if f > 1 else gray.copy()
    )
    k = max(1, cfg.blur_ksize * 2 // (f + 1)) | 1
    coarse = cv2.GaussianBlur(coarse, (k, k), 0) if k > 1 else coarse
    coarse_f = coarse.astype(np.float32)
    open_size = max(cfg.open_ksize, int(round(cfg.lint_max_width_px / f)) + 1) | 1
    open_kernel = _disk(open_size)
    sigma = cfg.level_sigma_px / f
    notes: list[str] = []

    # Pass 1: border-flattened global Otsu; polarity by the border, checked by ring shape.
    flat = _flatten_by_border(coarse)
    t0 = _otsu(flat)
    light = flat > t0
    border_light = float(_border_pixels(light, max(2, min(ch, cw) // 100)).mean())
    polarity = "dark" if border_light > 0.5 else "light"
    chosen = _candidate(~light if polarity == "dark" else light, open_kernel)
    if not chosen.ring_like:
        other = _candidate(light if polarity == "dark" else ~light, open_kernel)
        if other.ring_like and other.area >= cfg.min_ring_area_fraction * ch * cw:
            polarity = "light" if polarity == "dark" else "dark"
            chosen = other
            notes.append("polarity taken from the ring's shape, not the frame border")
    sign = 1.0 if polarity == "light" else -1.0
    if not len(chosen.order):
        return RingROI(
            RoiStatus.NO_RING, "no foreground found by the threshold", polarity, float(t0), notes=tuple(notes)
        )

    # Passes 2-3: the local midpoint between the belt's and the ring's levels.
    threshold_map = np.full((ch, cw), np.float32(np.median(coarse_f[::3, ::3])))
    ring_level = belt_level = float(threshold_map[0, 0])
    step = 0.0
    level_maps: tuple[np.ndarray, np.ndarray, int] | None = None
    textured: list[np.ndarray] = []
    guard = _disk(5)
    for _ in range(cfg.refine_passes):
        comp = chosen.component.astype(np.uint8)
        ring_w = cv2.erode(comp, guard)
        belt_w = 1 - cv2.dilate(chosen.foreground | comp, guard)
        if ring_w.sum() < 16 or belt_w.sum() < 16:
            step = 0.0
            break
        ring_px, belt_px = coarse_f[ring_w > 0][::5], coarse_f[belt_w > 0][::5]
        ring_level, belt_level = float(np.median(ring_px)), float(np.median(belt_px))
        ring_map = _local_level(coarse_f, ring_w.astype(np.float32), sigma, ring_level)
        belt_map = _local_level(coarse_f, belt_w.astype(np.float32), sigma, belt_level)
        threshold_map = 0.5 * (ring_map + belt_map)
        step = float(np.median(sign * (ring_map - belt_map)[ring_w > 0][::5]))
        textured = [ring_w, belt_w]
        level_maps = (belt_map, ring_map, f)
        chosen = _candidate(sign * (coarse_f - threshold_map) > 0, open_kernel)
        if not len(chosen.order):
            break

    strength = _edge_strength(coarse_f, chosen, textured) if len(chosen.order) else 0.0
    frame_area = ch * cw
    if not len(chosen.order) or chosen.area < cfg.min_ring_area_fraction * frame_area:
        share = chosen.area / frame_area
        return RingROI(
            RoiStatus.NO_RING,
            f"largest object covers {share:.2%} of the frame (< {cfg.min_ring_area_fraction:.0%})",
            polarity,
            float(t0),
            ring_level=ring_level,
            belt_level=belt_level,
            notes=tuple(notes),
        )
    if step < cfg.min_contrast or strength < cfg.min_edge_strength:
        why = (
            f"differs from the belt next to it by only {step:.1f} gray levels"
            if step < cfg.min_contrast
            else f"has no sharp edge (edge slope {strength:.1f}x the texture's, < {cfg.min_edge_strength:g}x): "
            "bare belt texture or lighting"
        )
        return RingROI(
            RoiStatus.NO_RING,
            f"no ring: the largest object {why}",
            polarity,
            float(t0),
            ring_level=ring_level,
            belt_level=belt_level,
            notes=tuple(notes),
        )
    areas = chosen.stats[chosen.order, cv2.CC_STAT_AREA]
    if len(areas) > 1 and areas[1] >= cfg.second_ring_fraction * areas[0]:
        return RingROI(
            RoiStatus.TWO_RINGS,
            f"two ring-sized objects ({int(areas[0]) * f * f} and {int(areas[1]) * f * f} px)",
            polarity,
            float(t0),
            ring_level=ring_level,
            belt_level=belt_level,
            notes=tuple(notes),
        )

    # Full resolution, in a band around the coarse ring only: everything outside it is belt or lint.
    sx, sy, sw, sh = (int(v) for v in chosen.stats[chosen.order[0], :4])
    margin_c = int(np.ceil(cfg.band_px / f)) + 3
    cx0, cy0 = max(0, sx - margin_c), max(0, sy - margin_c)
    cx1, cy1 = min(cw, sx + sw + margin_c), min(ch, sy + sh + margin_c)
    x0, y0, x1, y1 = cx0 * f, cy0 * f, cx1 * f, cy1 * f
    if cx1 == cw:
        x1 = w
    if cy1 == ch:
        y1 = h
    band_reach = max(1, int(np.ceil(cfg.band_px / f)))
    band_c = cv2.dilate(
        chosen.component[cy0:cy1, cx0:cx1].astype(np.uint8) * np.uint8(255), _disk(2 * band_reach + 1)
    )
    crop_w, crop_h = x1 - x0, y1 - y0
    # Linear upsampling and a half-way cut: a smooth band, not 4x4 blocks.
    band = cv2.compare(
        cv2.resize(band_c, (cx1 * f - x0, cy1 * f - y0), interpolation=cv2.INTER_LINEAR), 127, cv2.CMP_GT
    )
    thr = cv2.resize(
        threshold_map[cy0:cy1, cx0:cx1], (cx1 * f - x0, cy1 * f - y0), interpolation=cv2.INTER_LINEAR
    )
    if (crop_h, crop_w) != band.shape:  # frame sizes not a multiple of the coarse factor
        band = cv2.copyMakeBorder(
            band, 0, crop_h - band.shape[0], 0, crop_w - band.shape[1], cv2.BORDER_REPLICATE
        )
        thr = cv2.copyMakeBorder(
            thr, 0, crop_h - thr.shape[0], 0, crop_w - thr.shape[1], cv2.BORDER_REPLICATE
        )
    gray_c = gray[y0:y1, x0:x1]
    if cfg.full_res_blur > 1:
        gray_c = cv2.GaussianBlur(gray_c, (cfg.full_res_blur | 1, cfg.full_res_blur | 1), 0)
    # gray > t  <=>  gray > floor(t) for integer gray: compare in uint8 (fast, no float copy of the crop)
    thr_u8 = np.clip(np.floor(thr), 0, 255).astype(np.uint8)
    fg = cv2.compare(gray_c, thr_u8, cv2.CMP_GT if polarity == "light" else cv2.CMP_LE)
    fg = cv2.bitwise_and(fg, band) // 255
    comp_c = chosen.component[cy0:cy1, cx0:cx1].astype(np.uint8)
    edge_zone = (band_c > 0) & (cv2.erode(comp_c, _disk(2 * band_reach + 1)) == 0)
    edge_thr = float(np.median(threshold_map[cy0:cy1, cx0:cx1][edge_zone])) if edge_zone.any() else float(t0)

    # The ring is the object with the largest outline; flood fills (cost ~ area filled) are several
    # times faster than labelling the whole crop.
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return RingROI(
            RoiStatus.NO_RING, "the ring vanished at full resolution", polarity, float(t0), notes=tuple(notes)
        )
    outline = max(contours, key=cv2.contourArea)
    seed = (int(outline[0, 0, 0]), int(outline[0, 0, 1]))
    ring_area = cv2.floodFill(fg, None, seed, 2, flags=8)[0]
    raw = fg == 2
    # Holes: background not connected to the crop's border (outside the crop is belt, so touching
    # its border means touching the frame's). Pad so all border-touching belt is one region.
    _OUTSIDE, _BORE, _OPEN = 4, 3, 5
    pad = cv2.copyMakeBorder(raw.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(pad, None, (0, 0), _OUTSIDE, flags=4)
    holes = (pad == 0).view(np.uint8)
    hole_contours, _ = cv2.findContours(holes, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    has_bore = False
    if hole_contours:
        small_limit = cfg.fill_holes_max_fraction * ring_area
        by_size = sorted(hole_contours, key=cv2.contourArea, reverse=True)
        first = (int(by_size[0][0, 0, 0]), int(by_size[0][0, 0, 1]))
        bore_area = cv2.floodFill(pad, None, first, _BORE, flags=4)[0]
        has_bore = bore_area >= small_limit
        if not has_bore:
            pad[pad == _BORE] = 0  # no bore: a broken ring; the biggest hole is filled like the pits
        left_open = 0
        for contour in by_size[1:]:
            if cv2.contourArea(contour) < small_limit:
                break
            cv2.floodFill(pad, None, (int(contour[0, 0, 0]), int(contour[0, 0, 1])), _OPEN, flags=4)
            left_open += 1
        if left_open:
            notes.append(f"{left_open} large hole(s) besides the bore left open")
    inner = pad[1:-1, 1:-1]
    filled_c = inner <= 1  # ring material and the pits
    bore_c = inner == _BORE if has_bore else None
    bx, by, bw, bh = cv2.boundingRect(filled_c.view(np.uint8))
    bbox = (bx + x0, by + y0, bw, bh)
    levels = {
        "ring_level": ring_level,
        "belt_level": belt_level,
        "notes": tuple(notes),
        "level_maps": level_maps,
    }

    def _full(crop: np.ndarray) -> np.ndarray:
        out = np.zeros((h, w), dtype=bool)
        out[y0:y1, x0:x1] = crop
        return out

    filled = _full(filled_c)
    bore_mask = None if bore_c is None else _full(bore_c)
    raw_full = _full(raw)
    touches_edge = bbox[0] == 0 or bbox[1] == 0 or bbox[0] + bbox[2] >= w or bbox[1] + bbox[3] >= h
    if touches_edge:
        return RingROI(
            RoiStatus.TOUCHES_EDGE,
            "the ring touches the frame edge",
            polarity,
            edge_thr,
            filled,
            raw_full,
            bore_mask,
            bbox,
            **levels,
        )
    if bore_mask is None:
        return RingROI(
            RoiStatus.BROKEN,
            "no closed bore: the ring is broken through or not a ring",
            polarity,
            edge_thr,
            filled,
            raw_full,
            None,
            bbox,
            **levels,
        )
    return RingROI(RoiStatus.OK, "", polarity, edge_thr, filled, raw_full, bore_mask, bbox, **levels)


# What the tiles and the kept background follow besides the ring mask (see ring_material).
# Attached material counts when it stands this fraction of the local ring-belt step away from the belt:
# a shaded bulge (ring 170, bulge 80, belt 18) does, belt texture and lighting do not.
MATERIAL_STEP_FRACTION = 0.3
# Material is followed up to this far (px) from the ring mask (a defect is at most half a tile
# across), and never farther than half the ring's outer radius (smaller rings, binned frames).
MATERIAL_REACH_PX = 320
# Missing material (bites, cuts) up to about this radius (px; at most a quarter of the ring's outer
# radius) stays inside the kept region, so the belt showing through a bite is in the tiles as it is
# at the plant, not blanked.
NOTCH_RADIUS_PX = 160


def ring_material(gray: np.ndarray, roi: RingROI, cfg: RoiConfig | None = None) -> np.ndarray:
    """The ring mask plus what is attached to it and the notches in it: what tiles and blanking follow.

    The ring mask stops where the midpoint threshold and the lint opening stop (the rework
    measurement wants exactly that), so a shaded bulge or one that stands far proud of the edge is
    only partly in it. Here, at the threshold's coarse scale and with its local belt/ring levels:
    anything standing ``MATERIAL_STEP_FRACTION`` of the step off the belt, no thinner than lint
    (``lint_max_width_px``) and connected to the ring within ``MATERIAL_REACH_PX``, is material;
    lint on the belt (not attached, or as thin as lint) stays out. Bites and cuts (missing
    material: the ring's hull minus the bore) are added too. About 10-20 ms per full frame.
    """
    if roi.ring_mask is None:
        raise ValueError("ring_material needs a ring mask")
    ring = roi.ring_mask
    if roi.level_maps is None or not ring.any():
        return ring.copy()
    cfg = cfg or RoiConfig()
    belt_map, ring_map, f = roi.level_maps
    ch, cw = belt_map.shape
    h, w = ring.shape
    x, y, bw, bh = cv2.boundingRect(ring.view(np.uint8))
    r_out = (bw + bh) / 4.0
    reach = int(np.ceil(min(MATERIAL_REACH_PX, 0.5 * r_out) / f))
    cx0, cy0 = max(0, x // f - reach), max(0, y // f - reach)
    cx1, cy1 = min(cw, (x + bw) // f + 1 + reach), min(ch, (y + bh) // f + 1 + reach)
    if cx1 - cx0 < 3 or cy1 - cy0 < 3:
        return ring.copy()
    size = (cx1 - cx0, cy1 - cy0)
    full = np.s_[cy0 * f : cy1 * f, cx0 * f : cx1 * f]
    if f > 1:
        coarse = cv2.resize(gray[full], size, interpolation=cv2.INTER_AREA).astype(np.float32)
        ring_c = (
            cv2.resize(ring[full].view(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA) > 127
        )
    else:
        coarse, ring_c = gray[full].astype(np.float32), ring[full].copy()
    coarse = cv2.GaussianBlur(coarse, (3, 3), 0)
    belt, level = belt_map[cy0:cy1, cx0:cx1], ring_map[cy0:cy1, cx0:cx1]
    sign = 1.0 if roi.polarity == "light" else -1.0
    lower = belt + np.float32(MATERIAL_STEP_FRACTION) * (level - belt)
    candidate = (sign * (coarse - lower) > 0).view(np.uint8)
    # Lint as find_ring's coarse opening defines it: strands up to ~lint_max_width_px wide are no material.
    lint = max(cfg.open_ksize, int(round(cfg.lint_max_width_px / f)) + 1) | 1
    candidate = cv2.morphologyEx(candidate, cv2.MORPH_OPEN, _disk(lint))
    candidate |= ring_c.view(np.uint8)
    near = cv2.distanceTransform((~ring_c).view(np.uint8), cv2.DIST_L2, 3) <= reach
    candidate &= near.view(np.uint8)
    _, labels = cv2.connectedComponents(candidate, connectivity=8)
    ids = np.unique(labels[ring_c])
    attached = np.isin(labels, ids[ids > 0])
    # Notches: inside the hull of the material but not material, except large empty cores (the bore,
    # belt between far-apart protrusions). The bore counts as empty even where material crosses it.
    contours, _ = cv2.findContours(attached.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = np.zeros(attached.shape, np.uint8)
    if contours:
        cv2.fillPoly(hull, [cv2.convexHull(np.concatenate(contours))], 1)
    empty = hull.view(bool) & ~attached
    if roi.bore_mask is not None:
        bore = roi.bore_mask[full]
        empty |= (
            (cv2.resize(bore.view(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA) > 127)
            if f > 1
            else bore
        )
    notch_px = min(NOTCH_RADIUS_PX, 0.25 * r_out)
    if roi.bore_mask is not None:  # a small bore must stay the core: notches well below its radius
        notch_px = min(notch_px, 0.6 * float(np.sqrt(np.count_nonzero(roi.bore_mask) / np.pi)))
    notch = max(1.0, notch_px / f)
    # Opening by a disk, as two distance transforms (a large structuring element is ~50x slower).
    eroded = cv2.distanceTransform(empty.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) > notch
    core = cv2.distanceTransform((~eroded).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= notch
    region = (attached | (empty & ~core)).view(np.uint8)
    out = ring.copy()
    up = cv2.resize(region, (size[0] * f, size[1] * f), interpolation=cv2.INTER_NEAREST) > 0
    out[full] |= up
    return out


def roi_with_margin(ring_mask: np.ndarray, margin_px: int) -> np.ndarray:
    """The ring grown by ``margin_px`` (bore included where it is within the margin)."""
    if margin_px <= 0:
        return ring_mask.copy()
    # Grow only the ring's box grown by the margin (nothing outside it can change), by a Euclidean
    # distance transform: the same disk as a dilation, ~3x faster than a 49x49 structuring element.
    out = np.zeros(ring_mask.shape, dtype=bool)
    x, y, bw, bh = cv2.boundingRect(ring_mask.astype(np.uint8))
    if bw == 0 or bh == 0:
        return out
    h, w = ring_mask.shape
    x0, y0 = max(0, x - margin_px), max(0, y - margin_px)
    x1, y1 = min(w, x + bw + margin_px), min(h, y + bh + margin_px)
    outside = (ring_mask[y0:y1, x0:x1] == 0).view(np.uint8)
    out[y0:y1, x0:x1] = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= margin_px
    return out


def kept_region(gray: np.ndarray, roi: RingROI, cfg: RoiConfig | None = None) -> np.ndarray:
    """What background subtraction keeps: the ring's material (:func:`ring_material`) grown by
    ``background_margin_px``. The one definition for tiles (training and inspection) and blanking."""
    cfg = cfg or RoiConfig()
    if roi.ring_mask is None:
        return np.ones(gray.shape[:2], dtype=bool)
    return roi_with_margin(ring_material(gray, roi, cfg), cfg.background_margin_px)


def subtract_background(
    gray: np.ndarray, roi: RingROI, margin_px: int, cfg: RoiConfig | None = None
) -> np.ndarray:
    """Belt (and bore) set to 0 outside the ring's material plus a margin, as the tiles show it."""
    if roi.ring_mask is None:
        return gray.copy()
    cfg = (cfg or RoiConfig()).model_copy(update={"background_margin_px": margin_px})
    keep = kept_region(gray, roi, cfg)
    out = gray.copy()
    out[~keep] = 0
    return out
