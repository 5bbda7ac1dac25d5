"""Ring geometry from the full-resolution ring mask: edges, fits, radial profile, metrics.

How, and why this way:
1. Pixel contours of the ring and the bore give a first circle and ellipse each (on the crop).
2. From the outer centre, ``angles`` rays sample the mask (bilinear) across both edges; each edge
   is where the ray leaves the rubber walking out of (outer) or into (inner) the wall's middle, so
   lint and loose specks beyond a gap are never mistaken for the edge.
3. Sub-pixel, with the frame: along the same ray the edge is where the gray level crosses the
   midpoint of the *local* rubber and belt levels, reached by walking from the mask edge. Local
   levels make it independent of the global Otsu threshold, gradients and polarity, and repair
   mask notches where mottled rubber dips under the threshold. Flat rays keep the mask edge.
4. Robust fits: least-trimmed-squares ellipse (cv2.fitEllipse) from several starts, then the
   algebraic circle on the same inliers. Flash cannot drag the fit that is used to measure it.
5. The radial profile is median-filtered over ``profile_median_deg`` (lint spikes and single noisy
   rays go, arcs of flash stay); protrusion and indentation are its excursions from the ellipse.
   A protrusion counts with the height it holds over ``flash_min_arc_deg`` (a grey opening): lint
   strands lying along the edge are wider than the median window but far narrower than a flash lip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.ndimage import grey_opening, median_filter

from oringscan.config import ReworkConfig
from oringscan.errors import OringscanError
from oringscan.rework_rules.metrics import METRICS, mm_name
from oringscan.roi import RingROI, RoiStatus

_CROP_PAD = 48  # px of belt kept around the ring's box: flash up to ~20 px plus blur
_RAY_STEP = 0.5  # px between samples along a ray


class MeasurementError(OringscanError):
    """The ring cannot be measured (no ring, broken, edges not found)."""


@dataclass(frozen=True, slots=True)
class CircleFit:
    cx: float
    cy: float
    r: float


@dataclass(frozen=True, slots=True)
class EllipseFit:
    cx: float
    cy: float
    a: float  # semi-axis along ``angle_deg``
    b: float
    angle_deg: float

    @property
    def ovality(self) -> float:
        return max(self.a, self.b) / min(self.a, self.b)

    def radius_along(self, origin: tuple[float, float], cos_t: np.ndarray, sin_t: np.ndarray) -> np.ndarray:
        """Distance from ``origin`` (inside the ellipse) to the ellipse along each ray."""
        phi = math.radians(self.angle_deg)
        c, s = math.cos(phi), math.sin(phi)
        ux, uy = c * cos_t + s * sin_t, -s * cos_t + c * sin_t
        ox, oy = origin[0] - self.cx, origin[1] - self.cy
        dx, dy = c * ox + s * oy, -s * ox + c * oy
        qa = (ux / self.a) ** 2 + (uy / self.b) ** 2
        qb = 2 * (dx * ux / self.a**2 + dy * uy / self.b**2)
        qc = (dx / self.a) ** 2 + (dy / self.b) ** 2 - 1
        disc = np.maximum(qb * qb - 4 * qa * qc, 0.0)
        return (-qb + np.sqrt(disc)) / (2 * qa)


@dataclass(frozen=True, slots=True)
class Excursion:
    """The largest local departure of an edge from its fit."""

    height: float  # px
    arc: float  # px along the edge
    start: int = -1  # first and last ray index of the arc (-1: none)
    stop: int = -1


@dataclass(slots=True)
class EdgeProfile:
    radius: np.ndarray  # sub-pixel edge distance from the ray origin per angle (NaN: not found)
    smooth: np.ndarray  # median-filtered, gaps interpolated
    ellipse: EllipseFit
    circle: CircleFit  # algebraic least-squares circle on the ellipse's inliers (for reference)
    fit_radius: np.ndarray  # ellipse distance along each ray
    excess: np.ndarray  # material beyond the fit, px (positive: protrusion, negative: indentation)
    inliers: np.ndarray  # rays used for the fits
    protrusion: Excursion
    indentation: Excursion


@dataclass(slots=True)
class RingMeasurement:
    """Every metric of one ring plus the geometry behind it (frame coordinates)."""

    values: dict[str, float]
    origin: tuple[float, float]  # ray origin = outer circle centre
    angles: np.ndarray  # radians, image convention (y down)
    outer: EdgeProfile
    inner: EdgeProfile
    wall: np.ndarray
    mm_per_px: float | None = None
    subpixel_fraction: float = 0.0  # rays whose edge the gray levels refined
    notes: list[str] = field(default_factory=list)

    def edge_points(self, which: str, smooth: bool = True) -> np.ndarray:
        """(N, 2) x, y of an edge in the frame."""
        edge = self.outer if which == "outer" else self.inner
        r = edge.smooth if smooth else edge.radius
        return np.stack(
            [self.origin[0] + r * np.cos(self.angles), self.origin[1] + r * np.sin(self.angles)], axis=1
        )


# --- fits -------------------------------------------------------------------------------------


def fit_circle(points: np.ndarray) -> CircleFit:
    """Algebraic (Kasa) least-squares circle: linear, exact for noise-free points."""
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    mx, my = x.mean(), y.mean()  # centring keeps the normal equations well conditioned
    u, v = x - mx, y - my
    a = np.stack([u, v, np.ones_like(u)], axis=1)
    sol, *_ = np.linalg.lstsq(a, u * u + v * v, rcond=None)
    cx, cy = sol[0] / 2, sol[1] / 2
    r = math.sqrt(max(sol[2] + cx * cx + cy * cy, 0.0))
    return CircleFit(float(cx + mx), float(cy + my), r)


def fit_ellipse(points: np.ndarray) -> EllipseFit:
    (cx, cy), (w, h), angle = cv2.fitEllipse(points.astype(np.float32))
    if w < h:  # report the major axis as ``a`` and its direction as the angle
        w, h, angle = h, w, angle + 90.0
    return EllipseFit(float(cx), float(cy), float(w) / 2, float(h) / 2, float(angle) % 180.0)


def _concentrate(
    pts: np.ndarray,
    radius: np.ndarray,
    origin: tuple[float, float],
    cos_t: np.ndarray,
    sin_t: np.ndarray,
    valid_idx: np.ndarray,
    start: np.ndarray,
    h: int,
) -> tuple[EllipseFit, np.ndarray, float]:
    """LTS concentration steps from one start: refit on the ``h`` rays closest to the fit."""
    keep = start
    ellipse = fit_ellipse(pts[keep])
    cost = math.inf
    for _ in range(8):
        res = np.abs(radius[valid_idx] - ellipse.radius_along(origin, cos_t[valid_idx], sin_t[valid_idx]))
        order = np.argsort(res)[:h]
        cost = float(np.sum(res[order] ** 2))
        new_keep = np.zeros(len(radius), dtype=bool)
        new_keep[valid_idx[order]] = True
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
        ellipse = fit_ellipse(pts[keep])
    return ellipse, keep, cost


def _robust_fits(
    radius: np.ndarray, origin: tuple[float, float], cos_t: np.ndarray, sin_t: np.ndarray, tol_px: float
) -> tuple[EllipseFit, CircleFit, np.ndarray, np.ndarray]:
    """Ellipse and circle of an edge's *body*, ignoring flash and bites.

    Least-trimmed-squares: from several starts (all rays, and all rays but one 135-degree sector,
    every 45 degrees, so any arc up to 90 degrees is left out by one start) concentration steps
    refit on the 60 % of rays closest to the fit; the start whose 60 % fit best wins. A flash arc
    of up to a quarter of the edge, which drags a plain least-squares ellipse, cannot drag this one.
    Then every ray within ``tol_px`` (or 4 robust sigmas) of that fit joins the final fit.
    """
    valid = np.isfinite(radius)
    pts = np.stack([origin[0] + radius * cos_t, origin[1] + radius * sin_t], axis=1)
    # The starts run on every third ray (a third of the time, same answer), the winner on all.
    sub = valid & (np.arange(len(radius)) % 3 == 0)
    sub_idx = np.flatnonzero(sub)
    h_sub = max(10, int(0.6 * len(sub_idx)))
    angles = np.arctan2(sin_t, cos_t)
    starts = [sub]
    for centre in np.radians(np.arange(0, 360, 45)):
        away = np.abs(np.angle(np.exp(1j * (angles - centre)))) > math.radians(67.5)
        starts.append(sub & away)
    best: tuple[EllipseFit, np.ndarray, float] | None = None
    for start in starts:
        if start.sum() < h_sub:
            continue
        trial = _concentrate(pts, radius, origin, cos_t, sin_t, sub_idx, start, h_sub)
        if best is None or trial[2] < best[2]:
            best = trial
    if best is None:
        raise MeasurementError("too few edge points to fit")
    valid_idx = np.flatnonzero(valid)
    ellipse, keep, _ = _concentrate(
        pts, radius, origin, cos_t, sin_t, valid_idx, best[1], max(10, int(0.6 * len(valid_idx)))
    )
    for _ in range(2):
        res = radius - ellipse.radius_along(origin, cos_t, sin_t)
        sigma = 1.4826 * float(np.median(np.abs(res[keep])))
        keep = valid & (np.abs(res) <= max(tol_px, 4.0 * sigma))
        ellipse = fit_ellipse(pts[keep])
    fit_r = ellipse.radius_along(origin, cos_t, sin_t)
    return ellipse, fit_circle(pts[keep]), fit_r, keep


# --- profile ----------------------------------------------------------------------------------


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    ok = np.isfinite(values)
    if ok.all():
        return values.copy()
    idx = np.arange(len(values))
    return np.interp(idx, idx[ok], values[ok], period=len(values))


def _excursion(excess: np.ndarray, radius: np.ndarray, step_rad: float, floor_px: float) -> Excursion:
    """Height of the largest positive excursion and the arc where it exceeds half that height."""
    peak = int(np.argmax(excess))
    height = float(max(excess[peak], 0.0))
    if height < floor_px:
        return Excursion(height, 0.0)
    above = excess > max(floor_px, height / 2)
    n = len(excess)
    if above.all():
        return Excursion(height, float(np.sum(radius) * step_rad), 0, n - 1)
    start = peak
    while above[(start - 1) % n]:
        start -= 1
    stop = peak
    while above[(stop + 1) % n]:
        stop += 1
    idx = np.arange(start, stop + 1) % n
    return Excursion(height, float(np.sum(radius[idx]) * step_rad), start % n, stop % n)


def _held(excess: np.ndarray, min_arc_deg: float, step_rad: float) -> np.ndarray:
    """The height the profile holds over at least ``min_arc_deg`` around each ray (grey opening).

    Flash is a lip along an arc; a lint strand lying over the edge or a speck is a few rays wide,
    so the opening drops it while a lip wider than the window keeps its full height.
    """
    rays = int(round(math.radians(min_arc_deg) / step_rad))
    if rays < 2:
        return excess
    return grey_opening(excess, size=rays, mode="wrap")


def _contour_points(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((0, 2), np.float64)
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)


_LEVEL_NEAR, _LEVEL_FAR = 8.0, 30.0  # px inside the edge where the rubber's gray level is read
_BELT_SPAN = 15.0  # px of belt read beyond the largest expected flash
_MAX_WALK = 64.0  # px the gray edge may lie from the mask edge (notches from dark blotches)


def _gray_edges(
    gray_rays: np.ndarray,
    mask_pos: np.ndarray,
    found: np.ndarray,
    fit_pos: np.ndarray,
    towards_belt: int,
    reach: float,
    min_contrast: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel edges where the gray level crosses the local midpoint of rubber and belt.

    Positions are in sample units along the rays; ``towards_belt`` is +1 for the outer edge (belt
    at larger radii) and -1 for the inner one. The rubber level is read 8-30 px inside the first
    fitted edge, the belt level beyond the largest expected flash, both median-filtered along the
    ring, so the threshold follows lighting gradients and the rubber's mottling and is the same
    for either polarity. From the mask edge, the walk goes towards the belt while the gray is
    still rubber, or back towards the rubber while it is already belt, and interpolates the
    crossing. Where the mask edge is off because the rubber locally dips under the global Otsu
    threshold (a dark blotch at the edge), this moves the edge to where the picture has it.
    """
    n, m = gray_rays.shape
    rows = np.arange(n)[:, None]
    step = _RAY_STEP

    def band(lo_px: float, hi_px: float, direction: int) -> np.ndarray:
        ks = np.arange(int(lo_px / step), int(hi_px / step) + 1)[None, :]
        idx = np.clip(np.rint(fit_pos)[:, None].astype(int) + direction * ks, 0, m - 1)
        return np.median(gray_rays[rows, idx], axis=1)

    rubber = median_filter(band(_LEVEL_NEAR, _LEVEL_FAR, -towards_belt), size=9, mode="wrap")
    belt = median_filter(band(reach, reach + _BELT_SPAN, towards_belt), size=9, mode="wrap")
    level = (rubber + belt) / 2
    sign = np.where(rubber >= belt, 1.0, -1.0)
    ok = found & (np.abs(rubber - belt) >= min_contrast)

    # Last mask sample on the rubber side of the mask edge.
    start = np.clip(
        np.floor(mask_pos).astype(int) if towards_belt > 0 else np.ceil(mask_pos).astype(int), 0, m - 1
    )
    k = np.arange(int(_MAX_WALK / step) + 1)[None, :]

    def side(idx: np.ndarray) -> np.ndarray:  # > 0: rubber, <= 0: belt
        return (gray_rays[rows, np.clip(idx, 0, m - 1)] - level[:, None]) * sign[:, None]

    at_start = side(start[:, None])[:, 0] > 0
    # Rubber at the start: walk towards the belt to the first belt sample.
    out_idx = start[:, None] + towards_belt * k
    s_out = side(out_idx)
    hit_out = s_out <= 0
    k_out = np.argmax(hit_out, axis=1)
    # Belt at the start: walk towards the rubber to the first rubber sample.
    in_idx = start[:, None] - towards_belt * k
    s_in = side(in_idx)
    hit_in = s_in > 0
    k_in = np.argmax(hit_in, axis=1)
    r_ = np.arange(n)
    # Crossing between the last rubber sample (a) and the first belt sample (b), a -> b towards the belt.
    a_idx = np.where(at_start, start + towards_belt * (k_out - 1), start - towards_belt * k_in)
    b_idx = a_idx + towards_belt
    sa = side(a_idx[:, None])[:, 0]
    sb = side(b_idx[:, None])[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(sa != sb, sa / (sa - sb), 0.5)
    pos = a_idx + towards_belt * np.clip(frac, 0.0, 1.0)
    walked = np.where(at_start, hit_out[r_, k_out] & (k_out > 0), hit_in[r_, k_in])
    ok &= walked & (a_idx >= 0) & (b_idx < m) & (b_idx >= 0)
    return np.where(ok, pos, mask_pos), ok


def measure_ring(
    roi: RingROI,
    mm_per_px: float | None = None,
    gray: np.ndarray | None = None,
    config: ReworkConfig | None = None,
) -> RingMeasurement:
    """Measure a ring found by :func:`oringscan.roi.find_ring`.

    ``gray`` (the frame the ROI came from) enables sub-pixel edges; without it the mask edges are
    used. Raises :class:`MeasurementError` for a ring that cannot be measured.
    """
    cfg = config or ReworkConfig()
    if roi.status is not RoiStatus.OK or roi.ring_mask is None or roi.bore_mask is None or roi.bbox is None:
        raise MeasurementError(roi.reason or f"ring not measurable ({roi.status})")
    fh, fw = roi.ring_mask.shape
    bx, by, bw, bh = roi.bbox
    x0, y0 = max(0, bx - _CROP_PAD), max(0, by - _CROP_PAD)
    x1, y1 = min(fw, bx + bw + _CROP_PAD), min(fh, by + bh + _CROP_PAD)
    ring = roi.ring_mask[y0:y1, x0:x1]
    bore = roi.bore_mask[y0:y1, x0:x1]

    outer_px, inner_px = _contour_points(ring), _contour_points(bore)
    if len(outer_px) < 20 or len(inner_px) < 20:
        raise MeasurementError("ring edges too short to measure")
    c_out, c_in = fit_circle(outer_px), fit_circle(inner_px)
    e_out, e_in = fit_ellipse(outer_px), fit_ellipse(inner_px)
    origin = (c_out.cx, c_out.cy)

    n = cfg.angles
    angles = np.arange(n) * (2 * math.pi / n)
    cos_t, sin_t = np.cos(angles), np.sin(angles)
    ecc = math.hypot(c_in.cx - c_out.cx, c_in.cy - c_out.cy)
    reach = cfg.max_excursion_px
    belt_reach = reach + _BELT_SPAN + 4  # the belt's gray level is read beyond the largest flash
    r_lo = max(1.0, min(e_in.a, e_in.b) - ecc - belt_reach)
    r_hi = max(e_out.a, e_out.b) + belt_reach
    radii = np.arange(r_lo, r_hi + _RAY_STEP, _RAY_STEP)
    m = len(radii)
    map_x = (origin[0] + cos_t[:, None] * radii[None, :]).astype(np.float32)
    map_y = (origin[1] + sin_t[:, None] * radii[None, :]).astype(np.float32)
    mask_rays = cv2.remap(
        ring.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )

    # Middle of the wall along each ray: halfway between the first circles' crossings.
    dx, dy = c_in.cx - origin[0], c_in.cy - origin[1]
    proj = dx * cos_t + dy * sin_t
    t_in = proj + np.sqrt(np.maximum(proj**2 - (dx * dx + dy * dy) + c_in.r**2, 0.0))
    j_mid = np.clip(np.rint(((t_in + c_out.r) / 2 - r_lo) / _RAY_STEP).astype(int), 1, m - 2)
    inside = mask_rays >= 0.5
    cols = np.arange(m)[None, :]
    rows = np.arange(n)
    mid_inside = inside[rows, j_mid]

    # Outer edge: first sample outside the rubber beyond the middle.
    leaving = ~inside & (cols >= j_mid[:, None])
    has_out = leaving.any(axis=1)
    j_out = np.where(has_out, np.argmax(leaving, axis=1), m - 1)
    s_prev, s_here = mask_rays[rows, j_out - 1], mask_rays[rows, j_out]
    with np.errstate(divide="ignore", invalid="ignore"):
        pos_out = (j_out - 1) + np.where(s_prev != s_here, (s_prev - 0.5) / (s_prev - s_here), 0.5)
    pos_out = np.where(mid_inside, pos_out, j_mid)
    # Inner edge: last sample outside the rubber before the middle.
    entering = ~inside & (cols <= j_mid[:, None])
    has_in = entering.any(axis=1)
    j_in = np.where(has_in, m - 1 - np.argmax(entering[:, ::-1], axis=1), 0)
    s_a, s_b = mask_rays[rows, j_in], mask_rays[rows, np.minimum(j_in + 1, m - 1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        pos_in = j_in + np.where(s_a != s_b, (0.5 - s_a) / (s_b - s_a), 0.5)
    pos_in = np.where(mid_inside, pos_in, j_mid)
    found_out = has_out & mid_inside
    found_in = has_in & mid_inside

    refined = np.zeros(n, dtype=bool)
    notes: list[str] = []
    if gray is not None and cfg.subpixel:
        if gray.shape != roi.ring_mask.shape:
            raise MeasurementError(
                f"gray image {gray.shape} and ring mask {roi.ring_mask.shape} differ in size"
            )
        crop = cv2.GaussianBlur(gray[y0:y1, x0:x1].astype(np.float32), (3, 3), 0)
        gray_rays = cv2.remap(crop, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fit_out = (e_out.radius_along(origin, cos_t, sin_t) - r_lo) / _RAY_STEP
        fit_in = (e_in.radius_along(origin, cos_t, sin_t) - r_lo) / _RAY_STEP
        pos_out, ok_out = _gray_edges(
            gray_rays, pos_out, found_out, fit_out, +1, reach, cfg.min_edge_contrast
        )
        pos_in, ok_in = _gray_edges(gray_rays, pos_in, found_in, fit_in, -1, reach, cfg.min_edge_contrast)
        refined = ok_out & ok_in
    r_out = np.where(found_out, r_lo + pos_out * _RAY_STEP, np.nan)
    r_in = np.where(found_in, r_lo + pos_in * _RAY_STEP, np.nan)
    # A bite through the middle of the wall: both edges sit at the middle there (zero wall).
    cut = ~mid_inside
    r_out[cut] = r_in[cut] = r_lo + j_mid[cut] * _RAY_STEP
    if np.isfinite(r_out).mean() < 0.5 or np.isfinite(r_in).mean() < 0.5:
        raise MeasurementError("could not trace the ring's edges on half of the rays")
    if cut.mean() > 0.02:
        notes.append(f"{cut.mean():.1%} of the rays find no rubber mid-wall (deep bite or cut)")

    step_rad = 2 * math.pi / n
    win = max(3, int(round(cfg.profile_median_deg / math.degrees(step_rad))) | 1)
    sm_out = median_filter(_fill_gaps(r_out), size=win, mode="wrap")
    sm_in = median_filter(_fill_gaps(r_in), size=win, mode="wrap")
    # Fit on the (lightly) filtered profile: single noisy rays never reach the fit.
    ell_o, cir_o, fit_o, keep_o = _robust_fits(
        np.where(np.isfinite(r_out), sm_out, np.nan), origin, cos_t, sin_t, cfg.fit_tolerance_px
    )
    ell_i, cir_i, fit_i, keep_i = _robust_fits(
        np.where(np.isfinite(r_in), sm_in, np.nan), origin, cos_t, sin_t, cfg.fit_tolerance_px
    )
    excess_o = sm_out - fit_o
    excess_i = fit_i - sm_in  # material reaching into the bore is the inner edge's protrusion
    floor = cfg.min_excursion_px
    held_o = _held(excess_o, cfg.flash_min_arc_deg, step_rad)
    held_i = _held(excess_i, cfg.flash_min_arc_deg, step_rad)
    outer = EdgeProfile(
        r_out,
        sm_out,
        ell_o,
        cir_o,
        fit_o,
        excess_o,
        keep_o,
        _excursion(held_o, sm_out, step_rad, floor),
        _excursion(-excess_o, sm_out, step_rad, floor),
    )
    inner = EdgeProfile(
        r_in,
        sm_in,
        ell_i,
        cir_i,
        fit_i,
        excess_i,
        keep_i,
        _excursion(held_i, sm_in, step_rad, floor),
        _excursion(-excess_i, sm_in, step_rad, floor),
    )

    # Lint strands narrower than a flash lip are not rubber: walls, area and circularity are read from
    # the edges with them taken off (the opened excess; flash arcs and bites stay as they are).
    body_out, body_in = fit_o + held_o, fit_i - held_i
    wall = body_out - body_in
    outer_poly = np.stack([origin[0] + body_out * cos_t, origin[1] + body_out * sin_t], axis=1).astype(
        np.float32
    )
    inner_poly = np.stack([origin[0] + body_in * cos_t, origin[1] + body_in * sin_t], axis=1).astype(
        np.float32
    )
    outer_area = float(cv2.contourArea(outer_poly))
    perimeter = float(cv2.arcLength(outer_poly, True))
    # Radius: mean semi-axis of the robust ellipse. For a round ring it is the circle's radius; for
    # an oval one it is the radius of the circle with the same perimeter (a circle fit would give
    # the RMS radius, ~(a-b)^2/8r larger).
    outer_radius, inner_radius = (ell_o.a + ell_o.b) / 2, (ell_i.a + ell_i.b) / 2
    mean_radius = (outer_radius + inner_radius) / 2
    # Centres of the robust ellipses: a circle fitted to an oval edge with a flash arc left out is
    # pulled off-centre (by ~1 px at 0.5 % ovality); the ellipse is not.
    centre_gap = math.hypot(ell_i.cx - ell_o.cx, ell_i.cy - ell_o.cy)
    values: dict[str, float] = {
        "outer_radius": outer_radius,
        "inner_radius": inner_radius,
        "mean_radius": mean_radius,
        "wall_min": float(wall.min()),
        "wall_max": float(wall.max()),
        "wall_mean": float(wall.mean()),
        "wall_range": float(wall.max() - wall.min()),
        "wall_ratio": float(wall.max() / wall.min()) if wall.min() > 0 else math.inf,
        "concentricity_px": centre_gap,
        "concentricity_pct": 100.0 * centre_gap / mean_radius,
        "outer_circularity": 4 * math.pi * outer_area / perimeter**2,
        "annular_area": outer_area - float(cv2.contourArea(inner_poly)),
        "outer_ovality": ell_o.ovality,
        "inner_ovality": ell_i.ovality,
        "outer_protrusion_px": outer.protrusion.height,
        "outer_protrusion_arc": outer.protrusion.arc,
        "inner_protrusion_px": inner.protrusion.height,
        "inner_protrusion_arc": inner.protrusion.arc,
        "outer_indentation_px": outer.indentation.height,
        "outer_indentation_arc": outer.indentation.arc,
        "inner_indentation_px": inner.indentation.height,
        "inner_indentation_arc": inner.indentation.arc,
    }
    if mm_per_px:
        for name, info in METRICS.items():
            if info.kind == "length":
                values[mm_name(name)] = values[name] * mm_per_px
            elif info.kind == "area":
                values[mm_name(name)] = values[name] * mm_per_px**2
    values = {k: float(v) for k, v in values.items()}

    # Back to frame coordinates.
    origin_frame = (origin[0] + x0, origin[1] + y0)
    outer.ellipse = _shift_ellipse(ell_o, x0, y0)
    inner.ellipse = _shift_ellipse(ell_i, x0, y0)
    outer.circle = CircleFit(cir_o.cx + x0, cir_o.cy + y0, cir_o.r)
    inner.circle = CircleFit(cir_i.cx + x0, cir_i.cy + y0, cir_i.r)
    return RingMeasurement(
        values, origin_frame, angles, outer, inner, wall, mm_per_px, float(refined.mean()), notes
    )


def _shift_ellipse(e: EllipseFit, dx: float, dy: float) -> EllipseFit:
    return EllipseFit(e.cx + dx, e.cy + dy, e.a, e.b, e.angle_deg)
