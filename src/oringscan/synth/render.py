"""One synthetic camera frame: a mottled flat ring on a textured belt, with exact defect polygons.

Why it looks the way it does (DATASET.md): light ring (~170) on a dark belt (~18), outer radius ~650,
inner ~390, centred within a couple of hundred px, slow lighting gradients, lint on the belt that is
not a defect. Rarely the polarity is reversed (dark ring on a light belt).

Speed: every smooth field (lighting, mottling, shading) is made at quarter resolution and upscaled
once; only the sensor grain, the belt weave and the ring alpha are full-resolution work. Defects
are drawn in their own small crops.

Exactness: every defect is a shapely geometry snapped to the integer pixel grid; the pixels it
changes are exactly ``cv2.fillPoly`` of the points written to LabelMe (a 3x3 optical blur then
softens every edge in the frame by about one pixel, defects and ring alike).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from oringscan.preprocess.labelme import labelme_document as labelme_file
from oringscan.preprocess.labelme import polygon_shape

FULL_SIZE = (2448, 2048)  # width, height of the plant's camera frames
DEFECT_LABELS = ("hole", "pit", "scratch", "cut", "bite", "bulge", "particle")
REWORK_KINDS = ("bore_offset", "ovality", "flash")
TILE = 640  # defects are at most half a tile across

FrameKind = Literal["good", "defect", "rework"]


@dataclass(frozen=True, slots=True)
class TypeStyle:
    """How one o-ring type looks: size, shade and texture (at full 2448x2048 resolution)."""

    outer_radius: tuple[float, float]
    inner_ratio: tuple[float, float]  # inner radius / outer radius
    ring_shade: tuple[float, float]  # light polarity gray level
    dark_ring_shade: tuple[float, float]  # dark polarity gray level
    mottle: float  # amplitude of the blotchy texture (gray levels)
    mottle_sigma: float  # blotch size, quarter-resolution pixels
    grain: float  # fine grain on the ring (gray levels, 1 sigma)
    edge_darkening: float  # flat ring, slightly rounded edges: relative shade drop at the edges
    groove: float  # faint concentric moulding marks (gray levels; 0: none)
    groove_period: float  # their spacing in px


STYLES: dict[str, TypeStyle] = {
    "model1": TypeStyle(
        (630.0, 670.0), (0.585, 0.615), (165.0, 192.0), (48.0, 66.0), 11.0, 3.0, 3.5, 0.10, 0.0, 16.0
    ),
    "model2": TypeStyle(
        (585.0, 630.0), (0.555, 0.595), (138.0, 160.0), (38.0, 55.0), 7.0, 1.6, 2.5, 0.06, 2.5, 18.0
    ),
}


def style_for(oring_type: str) -> TypeStyle:
    """The type's style; a type the generator has never heard of gets a stable in-between look."""
    if oring_type in STYLES:
        return STYLES[oring_type]
    u = (zlib.crc32(oring_type.encode("utf-8")) % 1000) / 999.0
    a, b = STYLES["model1"], STYLES["model2"]

    def mix(x: float, y: float) -> float:
        return x + (y - x) * u

    def mix2(x: tuple[float, float], y: tuple[float, float]) -> tuple[float, float]:
        return (mix(x[0], y[0]), mix(x[1], y[1]))

    return TypeStyle(
        mix2(a.outer_radius, b.outer_radius),
        mix2(a.inner_ratio, b.inner_ratio),
        mix2(a.ring_shade, b.ring_shade),
        mix2(a.dark_ring_shade, b.dark_ring_shade),
        mix(a.mottle, b.mottle),
        mix(a.mottle_sigma, b.mottle_sigma),
        mix(a.grain, b.grain),
        mix(a.edge_darkening, b.edge_darkening),
        mix(a.groove, b.groove),
        mix(a.groove_period, b.groove_period),
    )


@dataclass(slots=True)
class SynthFrame:
    """A rendered frame, its LabelMe document (as LabelMe 5.x writes it) and the ground truth."""

    image: np.ndarray  # uint8 HxW gray, or HxWx3 BGR when colour
    labelme: dict[str, Any]
    truth: dict[str, Any]


# --- geometry --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Ellipse:
    """An ellipse in frame pixels; angle in degrees as atan2(y, x) with y pointing down."""

    cx: float
    cy: float
    a: float  # semi-axis along ``angle``
    b: float
    angle: float

    def radius_at(self, theta_deg: np.ndarray | float) -> np.ndarray:
        """Distance from the centre to the ellipse along the polar angle ``theta`` (degrees)."""
        phi = np.deg2rad(np.asarray(theta_deg, dtype=np.float64) - self.angle)
        return self.a * self.b / np.sqrt((self.b * np.cos(phi)) ** 2 + (self.a * np.sin(phi)) ** 2)

    def points(self, theta_deg: np.ndarray, offset: np.ndarray | float = 0.0) -> np.ndarray:
        """Points at polar angles ``theta`` pushed ``offset`` px outward along the ray."""
        r = self.radius_at(theta_deg) + offset
        t = np.deg2rad(theta_deg)
        return np.stack([self.cx + r * np.cos(t), self.cy + r * np.sin(t)], axis=1)

    def outline(self, n: int = 1440) -> np.ndarray:
        return self.points(np.linspace(0.0, 360.0, n, endpoint=False))

    def to_json(self) -> dict[str, Any]:
        return {
            "center": [round(self.cx, 3), round(self.cy, 3)],
            "semi_axes": [round(self.a, 3), round(self.b, 3)],
            "angle_deg": round(self.angle, 3),
            "radius": round((self.a + self.b) / 2.0, 3),
        }


@dataclass(slots=True)
class Defect:
    """One drawn defect: its LabelMe label and the integer polygons whose fill is exactly what changed."""

    label: str
    parts: list[np.ndarray]  # int32 (N, 2) polygons, x/y in frame pixels
    params: dict[str, Any] = field(default_factory=dict)

    def mask_crop(self) -> tuple[np.ndarray, int, int]:
        """uint8 mask of the filled polygons in their own bounding box, and the box origin."""
        pts = np.concatenate(self.parts)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        mask = np.zeros((int(y1 - y0) + 1, int(x1 - x0) + 1), np.uint8)
        cv2.fillPoly(mask, [p - (x0, y0) for p in self.parts], 1)
        return mask, int(x0), int(y0)


def _rng_log(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _blob(
    rng: np.random.Generator, cx: float, cy: float, radius: float, irregular: float, aspect: float = 1.0
) -> Polygon:
    """A smooth irregular blob (star-shaped) around (cx, cy)."""
    n = 48
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 4, 5):
        r += irregular / k * rng.uniform(-1, 1) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.35, None) * radius
    rot = rng.uniform(0, 2 * np.pi)
    x, y = r * np.cos(t) * aspect, r * np.sin(t) / aspect
    xs = cx + x * math.cos(rot) - y * math.sin(rot)
    ys = cy + x * math.sin(rot) + y * math.cos(rot)
    return Polygon(np.stack([xs, ys], axis=1))


def _snap_parts(geom: BaseGeometry, min_area: float = 3.0) -> list[np.ndarray]:
    """Snap a geometry to the pixel grid (staying valid) and return its polygons as int arrays."""
    if geom.is_empty:
        return []
    snapped = shapely.set_precision(geom.simplify(0.25), grid_size=1.0)
    polys = list(snapped.geoms) if isinstance(snapped, MultiPolygon) else [snapped]
    if snapped.geom_type == "GeometryCollection":
        polys = [g for g in snapped.geoms if isinstance(g, Polygon)]
    parts: list[np.ndarray] = []
    for poly in polys:
        if not isinstance(poly, Polygon) or poly.is_empty or poly.area < min_area:
            continue
        pts = np.asarray(poly.exterior.coords)[:-1].round().astype(np.int32)
        if len(np.unique(pts, axis=0)) >= 3:
            parts.append(pts)
    return parts


# --- the scene: everything but the defects ---------------------------------------------------------


@dataclass(slots=True)
class _Scene:
    width: int
    height: int
    scale: float
    polarity: str
    outer: Ellipse
    inner: Ellipse
    ring_poly: Polygon
    belt: np.ndarray  # float32 HxW, lighting applied, lint drawn
    ring: np.ndarray  # float32 HxW ring surface, lighting applied
    alpha: np.ndarray  # float32 HxW ring coverage in [0, 1] (flash included)
    grain: np.ndarray  # float32 HxW sensor grain (unit sigma)
    grain_ring: float
    blur_sigma: float  # optics: slightly different focus per frame (3x3 kernel: edges spread 1 px at most)
    grain_belt: float
    belt_shade: float
    ring_shade: float
    lint: int
    flash: dict[str, Any] | None = None
    _buffered: dict[float, BaseGeometry] = field(default_factory=dict)

    def ring_buffered(self, distance: float) -> BaseGeometry:
        """The ring polygon grown (or shrunk, negative) by ``distance`` px, computed once per scene."""
        if distance not in self._buffered:
            self._buffered[distance] = self.ring_poly.buffer(distance, quad_segs=4)
        return self._buffered[distance]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise (for mottling at quarter resolution)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    std = float(noise.std()) or 1.0
    return noise / std


def _fixed(points: np.ndarray) -> np.ndarray:
    """Points in OpenCV's 4-bit fixed point for sub-pixel anti-aliased filling."""
    return np.round(points * 16.0).astype(np.int32)


def _lint(
    rng: np.random.Generator,
    scene_shape: tuple[int, int],
    outer: Ellipse,
    inner: Ellipse,
    scale: float,
    contrast: float,
) -> tuple[np.ndarray, int]:
    """Lint strands and specks on the belt (never on the ring): an unsigned layer of gray-level offsets.

    Lint stays well on the belt's side of the ring/belt contrast (at most 40 % of it), like the
    plant's, so it is texture to a threshold and never joins the ring.
    """
    h, w = scene_shape
    layer = np.zeros((h, w), np.uint8)
    keep_out = 22.0 * scale
    r_out = max(outer.a, outer.b) + keep_out
    r_in = min(inner.a, inner.b) - keep_out

    def clear(pts: np.ndarray) -> bool:
        d_out = np.hypot(pts[:, 0] - outer.cx, pts[:, 1] - outer.cy)
        d_in = np.hypot(pts[:, 0] - inner.cx, pts[:, 1] - inner.cy)
        return bool(np.all((d_out > r_out) | (d_in < r_in)))

    count = int(rng.integers(4, 40))
    clump: np.ndarray | None = None
    drawn = 0
    for _ in range(count):
        strand = rng.random() < 0.6
        # Lint gathers: a third of the pieces start next to the previous one.
        if clump is not None and rng.random() < 0.33:
            start = clump + rng.normal(0, 25 * scale, 2)
        else:
            start = rng.uniform([0, 0], [w, h])
        value = int(rng.integers(12, max(13, int(0.4 * contrast))))
        if strand:
            n = int(rng.integers(6, 30)) if rng.random() < 0.85 else int(rng.integers(30, 70))
            step = rng.uniform(3, 9) * scale
            heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.35, n))
            pts = start + np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1) * step, axis=0)
            if not clear(pts):
                continue
            thickness = 1 if rng.random() < 0.7 else 2
            cv2.polylines(layer, [_fixed(pts)], False, value, thickness, cv2.LINE_AA, shift=4)
            clump = start
        else:
            radius = rng.uniform(0.8, 3.5) * scale
            if not clear(start[None, :]):
                continue
            cv2.circle(
                layer, tuple(int(v) for v in _fixed(start)), int(radius * 16), value, -1, cv2.LINE_AA, shift=4
            )
        drawn += 1
    return layer, drawn


def _build_scene(
    rng: np.random.Generator,
    oring_type: str,
    polarity: str,
    size: tuple[int, int],
    ovality_pct: float,
    bore_offset_px: float,
    flash: dict[str, Any] | None,
) -> _Scene:
    width, height = size
    scale = min(width / FULL_SIZE[0], height / FULL_SIZE[1])
    style = style_for(oring_type)

    # Geometry: size and position jitter, natural or rework ovality and bore offset.
    r_out = rng.uniform(*style.outer_radius) * scale
    r_in = r_out * rng.uniform(*style.inner_ratio)
    margin = r_out * (1 + ovality_pct / 200.0) + 40 * scale
    jitter_x = min(170 * scale, max(0.0, width / 2 - margin))
    jitter_y = min(130 * scale, max(0.0, height / 2 - margin))
    cx = width / 2 + rng.uniform(-jitter_x, jitter_x)
    cy = height / 2 + rng.uniform(-jitter_y, jitter_y)
    angle = rng.uniform(0.0, 180.0)
    e = ovality_pct / 100.0
    outer = Ellipse(cx, cy, r_out * (1 + e / 2), r_out * (1 - e / 2), angle)
    offset_dir = rng.uniform(0.0, 360.0)
    icx = cx + bore_offset_px * math.cos(math.radians(offset_dir))
    icy = cy + bore_offset_px * math.sin(math.radians(offset_dir))
    inner = Ellipse(icx, icy, r_in * (1 + e / 2), r_in * (1 - e / 2), angle)
    ring_poly = Polygon(outer.outline(), [inner.outline()[::-1]])

    # Shades, lighting (slow gradient + vignetting), quarter-resolution fields.
    if polarity == "light":
        ring_shade = rng.uniform(*style.ring_shade)
        belt_shade = rng.uniform(14.0, 22.0)
        belt_mottle = rng.uniform(1.5, 3.0)
        grain_belt = rng.uniform(1.6, 2.6)
    else:
        ring_shade = rng.uniform(*style.dark_ring_shade)
        belt_shade = rng.uniform(150.0, 185.0)
        belt_mottle = rng.uniform(4.0, 8.0)
        grain_belt = rng.uniform(3.0, 4.5)
    qh, qw = (height + 3) // 4, (width + 3) // 4
    ys = (np.arange(qh, dtype=np.float32) * 4 + 1.5)[:, None]
    xs = (np.arange(qw, dtype=np.float32) * 4 + 1.5)[None, :]
    gx, gy = rng.uniform(-0.16, 0.16, 2)
    vignette = rng.uniform(0.0, 0.14)
    nx, ny = (xs - width / 2) / (width / 2), (ys - height / 2) / (height / 2)
    gain = (1.0 + gx * nx + gy * ny - vignette * (nx * nx + ny * ny) / 2).astype(np.float32)

    sigma_q = style.mottle_sigma * scale
    mottle = 0.7 * _smooth_noise(rng, (qh, qw), sigma_q) + 0.5 * _smooth_noise(rng, (qh, qw), 4 * sigma_q + 2)
    amp = style.mottle * (ring_shade / 170.0)
    # Flat ring with slightly rounded edges: shade drops a little near both edges.
    radial = np.hypot(xs - cx, ys - cy)
    wall_pos = np.clip((radial - r_in) / max(r_out - r_in, 1.0), 0.0, 1.0) * 2.0 - 1.0
    profile = 1.0 - style.edge_darkening * wall_pos**6
    grooves = style.groove * np.sin(2 * np.pi * radial / (style.groove_period * scale) + rng.uniform(0, 6.3))
    ring_q = (ring_shade * profile + amp * mottle + grooves) * gain
    belt_q = (
        belt_shade
        + belt_mottle * _smooth_noise(rng, (qh, qw), 6.0 * scale + 1)
        + 0.6 * belt_mottle * _smooth_noise(rng, (qh, qw), 1.0)
    ) * gain

    ring_full = cv2.resize(ring_q.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    belt_full = cv2.resize(belt_q.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)

    # Belt weave: a faint periodic texture across and along the belt.
    period_x, period_y = rng.uniform(5.0, 11.0, 2) * scale + 2.0
    weave = 0.5 * belt_mottle + 0.5
    row = (weave * np.sin(2 * np.pi * np.arange(height) / period_y + rng.uniform(0, 6.3))).astype(np.float32)
    col = (weave * np.sin(2 * np.pi * np.arange(width) / period_x + rng.uniform(0, 6.3))).astype(np.float32)
    belt_full += row[:, None]
    belt_full += col[None, :]

    lint_layer, lint_count = _lint(rng, (height, width), outer, inner, scale, abs(ring_shade - belt_shade))
    lint_sign = 1.0 if polarity == "light" or rng.random() < 0.3 else -1.0
    belt_full += lint_sign * lint_layer.astype(np.float32)

    # Ring coverage with anti-aliased edges (4-bit sub-pixel precision).
    cover = np.zeros((height, width), np.uint8)
    cv2.fillPoly(cover, [_fixed(outer.outline())], 255, cv2.LINE_AA, shift=4)
    cv2.fillPoly(cover, [_fixed(inner.outline())], 0, cv2.LINE_AA, shift=4)

    flash_truth = None
    if flash is not None:
        flash_truth = _draw_flash(rng, cover, outer, inner, flash, scale)

    grain = rng.standard_normal((height, width), dtype=np.float32)
    return _Scene(
        width=width,
        height=height,
        scale=scale,
        polarity=polarity,
        outer=outer,
        inner=inner,
        ring_poly=ring_poly,
        belt=belt_full,
        ring=ring_full,
        alpha=cover.astype(np.float32) * np.float32(1 / 255),
        grain=grain,
        grain_ring=style.grain * float(rng.uniform(0.8, 1.25)),
        blur_sigma=float(rng.uniform(0.55, 0.9)),
        grain_belt=float(grain_belt),
        belt_shade=float(belt_shade),
        ring_shade=float(ring_shade),
        lint=lint_count,
        flash=flash_truth,
    )


def _draw_flash(
    rng: np.random.Generator,
    cover: np.ndarray,
    outer: Ellipse,
    inner: Ellipse,
    flash: dict[str, Any],
    scale: float,
) -> dict[str, Any]:
    """A thin lip proud of one edge along an arc, tapered at its ends (rework, not a defect)."""
    edge = flash["edge"]
    height_px = flash["height_px"]
    start, arc = flash["arc_start_deg"], flash["arc_deg"]
    theta = np.linspace(start, start + arc, max(16, int(arc * 4)))
    u = (theta - start) / arc
    ramp = np.clip(np.minimum(u, 1 - u) / 0.12, 0.0, 1.0)
    taper = ramp * ramp * (3 - 2 * ramp)
    ripple = 1.0 + 0.06 * np.sin(2 * np.pi * u * rng.uniform(3, 7) + rng.uniform(0, 6.3))
    proud = height_px * taper * np.minimum(ripple, 1.0)
    ellipse = outer if edge == "outer" else inner
    sign = 1.0 if edge == "outer" else -1.0
    tip = ellipse.points(theta, sign * proud)
    base = ellipse.points(theta[::-1], -sign * 2.0)
    coverage = int(round(255 * flash["opacity"]))
    lip = np.zeros_like(cover)
    cv2.fillPoly(lip, [_fixed(np.concatenate([tip, base]))], coverage, cv2.LINE_AA, shift=4)
    np.maximum(cover, lip, out=cover)
    return dict(flash)


# --- defects ---------------------------------------------------------------------------------------


def _random_point_on_ring(
    rng: np.random.Generator, scene: _Scene, inset: float
) -> tuple[float, float] | None:
    for _ in range(50):
        theta = rng.uniform(0, 360)
        ro = float(scene.outer.radius_at(theta))
        # Position along the ray between the inner and outer edge (bore centre differs slightly; fine).
        p_out = scene.outer.points(np.array([theta]))[0]
        p_in = scene.inner.points(np.array([theta]))[0]
        t = rng.uniform(0, 1)
        p = p_in + (p_out - p_in) * t
        point = shapely.Point(p)
        if ro > 0 and scene.ring_poly.contains(point) and scene.ring_poly.boundary.distance(point) >= inset:
            return float(p[0]), float(p[1])
    return None


def _sample_defect(
    rng: np.random.Generator, label: str, scene: _Scene
) -> tuple[BaseGeometry, dict[str, Any]] | None:
    """Geometry (float, not yet snapped) and parameters of one defect of the given kind."""
    s = scene.scale
    wall = (scene.outer.a + scene.outer.b - scene.inner.a - scene.inner.b) / 2.0
    if label in ("pit", "hole", "particle"):
        radius = {
            "pit": _rng_log(rng, 1.6, 12),
            "hole": _rng_log(rng, 3, 30),
            "particle": _rng_log(rng, 2, 60),
        }[label] * s
        radius = max(radius, 1.6)
        centre = _random_point_on_ring(rng, scene, radius + 3)
        if centre is None:
            return None
        irregular = {"pit": 0.12, "hole": 0.18, "particle": 0.45}[label]
        aspect = rng.uniform(0.75, 1.3) if label == "particle" else rng.uniform(0.85, 1.15)
        geom = _blob(rng, *centre, radius, irregular, aspect).intersection(scene.ring_buffered(-1.0))
        return geom, {"radius_px": round(radius, 2)}
    if label in ("scratch", "cut"):
        width = rng.uniform(3.0, 6.0) if label == "scratch" else rng.uniform(3.5, 9.0)
        width = max(3.0, width * s)
        across = rng.random() < (0.5 if label == "scratch" else 0.7)
        if across:
            max_len = wall * (1.3 if label == "scratch" else 0.7)
            length = min(_rng_log(rng, 12, 320) * s, max_len)
        else:
            length = _rng_log(rng, 25, 320) * s
        centre = _random_point_on_ring(rng, scene, 4)
        if centre is None:
            return None
        cx0, cy0 = scene.outer.cx, scene.outer.cy
        radial = math.atan2(centre[1] - cy0, centre[0] - cx0)
        if across:
            direction = radial + rng.normal(0, 0.35)
            n = 5
            t = np.linspace(-0.5, 0.5, n) * length
            bend = rng.normal(0, 0.04 * length, n) * np.sin(np.linspace(0, np.pi, n))
            xs = centre[0] + t * math.cos(direction) - bend * math.sin(direction)
            ys = centre[1] + t * math.sin(direction) + bend * math.cos(direction)
        else:
            r0 = math.hypot(centre[0] - cx0, centre[1] - cy0)
            span = length / max(r0, 1.0)
            n = max(6, int(span * 40))
            phis = radial + np.linspace(-span / 2, span / 2, n)
            drift = np.cumsum(rng.normal(0, 0.6 * s, n))
            rr = r0 + drift - drift.mean()
            xs, ys = cx0 + rr * np.cos(phis), cy0 + rr * np.sin(phis)
        line = LineString(np.stack([xs, ys], axis=1))
        cap = "round" if label == "scratch" else "flat"
        geom = line.buffer(width / 2.0, cap_style=cap).intersection(scene.ring_buffered(-1.5))
        return geom, {
            "width_px": round(width, 2),
            "length_px": round(line.length, 2),
            "direction": "across" if across else "along",
        }
    if label in ("bite", "bulge"):
        edge = "outer" if rng.random() < 0.6 else "inner"
        ellipse = scene.outer if edge == "outer" else scene.inner
        other = scene.inner if edge == "outer" else scene.outer
        radius = _rng_log(rng, 4, 140) * s
        radius = max(radius, 3.0)
        theta = rng.uniform(0, 360)
        outward = 1.0 if edge == "outer" else -1.0
        if label == "bite":
            shift = rng.uniform(-0.2, 0.5) * radius  # centre outside the material: the bite is shallower
        else:
            shift = rng.uniform(-0.5, 0.15) * radius  # centre inside the material: the bulge is lower
        centre = ellipse.points(np.array([theta]), outward * shift)[0]
        shape = _blob(rng, float(centre[0]), float(centre[1]), radius, 0.3, rng.uniform(0.7, 1.4))
        if label == "bite":
            # The missing material, plus the ring's anti-aliased edge pixels inside it.
            geom = shape.intersection(scene.ring_buffered(1.5))
            other_edge = LineString(other.outline(720))
            if geom.is_empty or geom.distance(other_edge) < 0.4 * wall:
                return None
        else:
            # The extra material, plus a 1.5 px seam into the ring so no edge line is left between.
            geom = shape.difference(scene.ring_buffered(-1.5))
            if edge == "inner" and geom.distance(LineString(other.outline(720))) < wall:
                return None
        return geom, {"edge": edge, "radius_px": round(radius, 2)}
    raise ValueError(f"unknown defect label {label!r}; known: {', '.join(DEFECT_LABELS)}")


def _place_defects(rng: np.random.Generator, scene: _Scene, count: int) -> list[Defect]:
    """``count`` non-overlapping defects of random kinds, each at most half a tile across."""
    defects: list[Defect] = []
    taken: list[BaseGeometry] = []
    limit = TILE / 2 * max(scene.scale, 0.5)
    attempts = 0
    # A defect frame must carry at least one defect: keep trying longer for the first one.
    while len(defects) < count and (attempts < 60 * count or (not defects and attempts < 2000)):
        attempts += 1
        label = DEFECT_LABELS[int(rng.integers(len(DEFECT_LABELS)))]
        sampled = _sample_defect(rng, label, scene)
        if sampled is None:
            continue
        geom, params = sampled
        if geom.is_empty:
            continue
        x0, y0, x1, y1 = geom.bounds
        if (
            x1 - x0 > limit
            or y1 - y0 > limit
            or x0 < 3
            or y0 < 3
            or x1 > scene.width - 4
            or y1 > scene.height - 4
        ):
            continue
        if any(geom.buffer(6.0).intersects(t) for t in taken):
            continue
        parts = _snap_parts(geom)
        if not parts:
            continue
        params = dict(params)
        params["appearance"] = _appearance(rng, label, scene)
        defects.append(Defect(label, parts, params))
        taken.append(geom)
    return defects


def _appearance(rng: np.random.Generator, label: str, scene: _Scene) -> dict[str, float]:
    """How strongly a surface defect changes the surface (relative factors, so lighting still applies)."""
    dark_ring = scene.polarity == "dark"
    if label == "pit":
        return {"depth": rng.uniform(0.3, 0.6) if not dark_ring else rng.uniform(0.35, 0.55)}
    if label == "hole":
        return {"rim": rng.uniform(0.25, 0.5)}
    if label == "scratch":
        if rng.random() < 0.6:
            return {"gain": -rng.uniform(0.18, 0.4)}
        return {"gain": rng.uniform(0.14, 0.28) if not dark_ring else rng.uniform(0.4, 0.8)}
    if label == "cut":
        return {"gain": -rng.uniform(0.5, 0.8)}
    if label == "particle":
        if rng.random() < 0.65:
            return {"ratio": rng.uniform(0.15, 0.55) if not dark_ring else rng.uniform(0.2, 0.5)}
        return {"ratio": rng.uniform(1.25, 1.45) if not dark_ring else rng.uniform(1.8, 3.2)}
    if label == "bite":
        return {}
    if label == "bulge":
        return {"opacity": rng.uniform(0.92, 1.0)}
    raise ValueError(label)


# --- compositing -----------------------------------------------------------------------------------


def _compose(scene: _Scene, defects: list[Defect], rng_grain_offset: int = 0) -> np.ndarray:
    """Belt + ring by coverage, defects drawn from their polygon masks, blur, grain; uint8 gray."""
    alpha = scene.alpha
    geometry = [d for d in defects if d.label in ("bite", "bulge")]
    if geometry:
        alpha = alpha.copy()
        for d in geometry:
            mask, x0, y0 = d.mask_crop()
            view = alpha[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
            value = 0.0 if d.label == "bite" else d.params["appearance"]["opacity"]
            view[mask > 0] = value
    img = scene.ring - scene.belt
    img *= alpha
    img += scene.belt

    for d in defects:
        if d.label in ("bite", "bulge"):
            continue
        mask, x0, y0 = d.mask_crop()
        sl = np.s_[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        crop = img[sl]
        inside = cv2.distanceTransform(mask, cv2.DIST_L2, 3)  # 1 at the polygon's edge pixels
        look = d.params["appearance"]
        if d.label == "pit":
            depth_map = np.clip(inside / max(float(inside.max()), 1.0), 0, 1)
            effect = 1.0 - look["depth"] * (0.35 + 0.65 * depth_map)
            crop[mask > 0] *= effect[mask > 0]
        elif d.label == "hole":
            core = np.clip((inside - 1.0) / max(float(inside.max()) * 0.5, 1.0), 0, 1)
            rimmed = crop * (1.0 - look["rim"])
            through = scene.belt[sl]
            blended = rimmed * (1 - core) + through * core
            crop[mask > 0] = blended[mask > 0]
        elif d.label in ("scratch", "cut"):
            half = max(float(inside.max()), 1.0)
            profile = np.clip(0.35 + 0.65 * inside / half, 0, 1)
            factor = 1.0 + look["gain"] * profile
            crop[mask > 0] *= factor[mask > 0]
        elif d.label == "particle":
            local = float(np.median(crop[mask > 0]))
            # Foreign material of another gray that keeps a little of the surface's mottling.
            value = np.clip(local * look["ratio"] + 0.5 * (crop - local), 4.0, 250.0)
            edge = np.clip(inside / 1.5, 0.5, 1.0)
            mixed = crop * (1 - edge) + value * edge
            crop[mask > 0] = mixed[mask > 0]

    img = cv2.GaussianBlur(img, (3, 3), scene.blur_sigma)
    sigma = scene.grain_belt + (scene.grain_ring - scene.grain_belt) * alpha
    img += scene.grain * sigma
    np.clip(img, 0, 255, out=img)
    return (img + 0.5).astype(np.uint8)


# --- public entry points ----------------------------------------------------------------------------


def labelme_document(defects: list[Defect], image_path: str, width: int, height: int) -> dict[str, Any]:
    """The LabelMe 5.x JSON for these defects: key order, fields and types as LabelMe writes them."""
    shapes: list[dict[str, Any]] = []
    group = 0
    for d in defects:
        group_id = None
        if len(d.parts) > 1:
            group += 1
            group_id = group
        shapes.extend(polygon_shape(d.label, part, group_id) for part in d.parts)
    return labelme_file(shapes, image_path, width, height)


def _defect_truth(d: Defect, group_id: int | None) -> dict[str, Any]:
    mask, x0, y0 = d.mask_crop()
    ys, xs = np.nonzero(mask)
    bbox = [
        int(x0 + xs.min()),
        int(y0 + ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]
    params = {k: v for k, v in d.params.items() if k != "appearance"}
    return {
        "label": d.label,
        "kind": d.label,
        "bbox": bbox,
        "area": int(mask.sum()),
        "group_id": group_id,
        "polygons": [part.tolist() for part in d.parts],
        **params,
    }


def _sample_rework(rng: np.random.Generator, rework_kind: str | None, scale: float) -> dict[str, Any]:
    kind = rework_kind or REWORK_KINDS[int(rng.integers(len(REWORK_KINDS)))]
    if kind not in REWORK_KINDS:
        raise ValueError(f"unknown rework kind {kind!r}; known: {', '.join(REWORK_KINDS)}")
    out: dict[str, Any] = {"kind": kind}
    if kind == "bore_offset":
        out["bore_offset_px"] = float(rng.uniform(10.0, 40.0) * scale)
    elif kind == "ovality":
        out["ovality_pct"] = float(rng.uniform(3.0, 8.0))
    else:
        out["flash"] = {
            "edge": "outer" if rng.random() < 0.65 else "inner",
            "height_px": float(rng.uniform(6.0, 20.0) * max(scale, 0.5)),
            "arc_start_deg": float(rng.uniform(0.0, 360.0)),
            "arc_deg": float(rng.uniform(20.0, 90.0)),
            "opacity": float(rng.uniform(0.8, 0.95)),
        }
    return out


def _render(
    kind: FrameKind,
    rng: np.random.Generator,
    *,
    oring_type: str,
    color: bool,
    polarity: str | None,
    rework_kind: str | None,
    size: tuple[int, int],
    image_path: str,
    with_reference: bool,
) -> tuple[SynthFrame, np.ndarray | None]:
    if kind not in ("good", "defect", "rework"):
        raise ValueError(f"unknown frame kind {kind!r}; expected good, defect or rework")
    if polarity not in (None, "light", "dark"):
        raise ValueError(f"polarity must be 'light', 'dark' or None, not {polarity!r}")
    if rework_kind is not None and kind != "rework":
        raise ValueError("rework_kind is only meaningful for kind='rework'")
    width, height = int(size[0]), int(size[1])
    if width < 256 or height < 256:
        raise ValueError(f"frame size {width}x{height} is too small (at least 256x256)")
    scale = min(width / FULL_SIZE[0], height / FULL_SIZE[1])

    # Fixed draw order: polarity, natural variation, rework, scene, defects, colour.
    chosen_polarity = polarity or ("dark" if rng.random() < 0.08 else "light")
    ovality = float(rng.uniform(0.0, 0.8))
    bore_offset = float(rng.uniform(0.0, 2.5) * scale)
    rework = _sample_rework(rng, rework_kind, scale) if kind == "rework" else None
    if rework is not None:
        ovality = rework.get("ovality_pct", ovality)
        bore_offset = rework.get("bore_offset_px", bore_offset)
    scene = _build_scene(
        rng,
        oring_type,
        chosen_polarity,
        (width, height),
        ovality,
        bore_offset,
        rework.get("flash") if rework else None,
    )
    defects = _place_defects(rng, scene, int(rng.integers(1, 5))) if kind == "defect" else []
    gray = _compose(scene, defects)
    reference = _compose(scene, []) if with_reference else None
    channel_gain = rng.uniform(0.965, 1.035, 3)
    if color:
        # 24-bit colour of a gray scene: each channel the gray with a slight white-balance gain.
        image = cv2.merge([cv2.convertScaleAbs(gray, alpha=float(g)) for g in channel_gain])
    else:
        image = gray

    group = 0
    defect_truth = []
    for d in defects:
        gid = None
        if len(d.parts) > 1:
            group += 1
            gid = group
        defect_truth.append(_defect_truth(d, gid))
    outer, inner = scene.outer, scene.inner
    mean_outer = (outer.a + outer.b) / 2
    mean_inner = (inner.a + inner.b) / 2
    truth: dict[str, Any] = {
        "kind": kind,
        "oring_type": oring_type,
        "polarity": chosen_polarity,
        "color": bool(color),
        "size": [width, height],
        "ring_center": [round(outer.cx, 3), round(outer.cy, 3)],
        "bore_center": [round(inner.cx, 3), round(inner.cy, 3)],
        "outer": outer.to_json(),
        "inner": inner.to_json(),
        "outer_radius": round(mean_outer, 3),
        "inner_radius": round(mean_inner, 3),
        "wall_px": round(mean_outer - mean_inner, 3),
        "bore_offset_px": round(bore_offset, 3),
        "ovality_pct": round(ovality, 4),
        "ring_shade": round(scene.ring_shade, 2),
        "belt_shade": round(scene.belt_shade, 2),
        "lint_count": scene.lint,
        "defects": defect_truth,
        "rework": None,
    }
    if rework is not None:
        info: dict[str, Any] = {
            "kind": rework["kind"],
            "bore_offset_px": round(bore_offset, 3),
            "bore_offset_pct_of_mean_radius": round(100 * bore_offset / ((mean_outer + mean_inner) / 2), 4),
            "ovality_pct": round(ovality, 4),
            "flash": None,
        }
        if scene.flash is not None:
            f = scene.flash
            info["flash"] = {
                "edge": f["edge"],
                "height_px": round(f["height_px"], 3),
                "arc_start_deg": round(f["arc_start_deg"] % 360, 3),
                "arc_end_deg": round((f["arc_start_deg"] + f["arc_deg"]) % 360, 3),
                "arc_deg": round(f["arc_deg"], 3),
                "opacity": round(f["opacity"], 3),
            }
        truth["rework"] = info
    labelme = labelme_document(defects, image_path, width, height)
    return SynthFrame(image=image, labelme=labelme, truth=truth), reference


def render_frame(
    kind: FrameKind,
    rng: np.random.Generator,
    *,
    oring_type: str = "model1",
    color: bool = False,
    polarity: Literal["light", "dark"] | None = None,
    rework_kind: str | None = None,
    size: tuple[int, int] = FULL_SIZE,
    image_path: str = "frame.bmp",
) -> SynthFrame:
    """Render one frame of ``kind`` (good, defect, rework) from ``rng`` alone (same state, same bytes).

    ``polarity`` None picks light (ring brighter than belt) mostly, dark rarely. ``rework_kind`` is
    one of bore_offset, ovality, flash (random when None). ``size`` is (width, height).
    """
    frame, _ = _render(
        kind,
        rng,
        oring_type=oring_type,
        color=color,
        polarity=polarity,
        rework_kind=rework_kind,
        size=size,
        image_path=image_path,
        with_reference=False,
    )
    return frame


def render_with_reference(
    kind: FrameKind,
    rng: np.random.Generator,
    **kwargs: Any,
) -> tuple[SynthFrame, np.ndarray]:
    """Like :func:`render_frame`, plus the same scene rendered without defects (uint8 gray).

    The difference between the two is exactly what the defects changed: tests use it to show that
    the LabelMe polygons cover what was drawn.
    """
    kwargs.setdefault("oring_type", "model1")
    kwargs.setdefault("color", False)
    kwargs.setdefault("polarity", None)
    kwargs.setdefault("rework_kind", None)
    kwargs.setdefault("size", FULL_SIZE)
    kwargs.setdefault("image_path", "frame.bmp")
    frame, reference = _render(kind, rng, with_reference=True, **kwargs)
    assert reference is not None
    return frame, reference
