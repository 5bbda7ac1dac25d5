"""Test rings with exact, known geometry: the yardstick for the measurement's accuracy.

Edges are anti-aliased analytically (pixel coverage from the distance to the boundary along the
radius), so a ring drawn with outer radius 650.3 px really measures 650.3 px; the plant's nuisances
(mottled rubber, textured belt, lighting gradients, defocus, lint, both polarities, colour frames)
are added on top. The synth package's second entry point: ``render`` draws whole data sets
(random geometry, LabelMe polygons), this draws one ring whose every number is known, for the
measurement tests and the rework benchmark. The independent renderer is ``oringscan.testing.plantlike``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

Edge = Literal["outer", "inner"]


@dataclass(slots=True)
class EdgeArc:
    """Extra (flash, bulge: height > 0) or missing (bite: height < 0) material along an arc."""

    edge: Edge
    start_deg: float  # angle about the outer centre, x to the right, y down (image convention)
    span_deg: float
    height: float  # px proud of (>0) or into (<0) the edge


@dataclass(slots=True)
class RingSpec:
    cx: float = 1224.0
    cy: float = 1024.0
    outer_a: float = 650.0  # semi-axes of the outer ellipse
    outer_b: float = 650.0
    outer_angle_deg: float = 0.0
    inner_a: float = 390.0
    inner_b: float = 390.0
    inner_angle_deg: float = 0.0
    bore_dx: float = 0.0  # inner centre minus outer centre
    bore_dy: float = 0.0
    arcs: list[EdgeArc] = field(default_factory=list)

    def truth(self) -> dict[str, Any]:
        """The numbers a perfect measurement reports."""
        flash = [a for a in self.arcs if a.height > 0]
        bites = [a for a in self.arcs if a.height < 0]
        out: dict[str, Any] = {
            "outer_radius": (self.outer_a + self.outer_b) / 2,
            "inner_radius": (self.inner_a + self.inner_b) / 2,
            "concentricity_px": math.hypot(self.bore_dx, self.bore_dy),
            "outer_ovality": max(self.outer_a, self.outer_b) / min(self.outer_a, self.outer_b),
            "inner_ovality": max(self.inner_a, self.inner_b) / min(self.inner_a, self.inner_b),
        }
        for edge in ("outer", "inner"):
            f = [a for a in flash if a.edge == edge]
            b = [a for a in bites if a.edge == edge]
            out[f"{edge}_protrusion_px"] = max((a.height for a in f), default=0.0)
            out[f"{edge}_indentation_px"] = max((-a.height for a in b), default=0.0)
        return out


@dataclass(slots=True)
class Scene:
    """How the frame around the ring looks."""

    width: int = 2448
    height: int = 2048
    polarity: Literal["light", "dark"] = "light"
    ring_level: float = 175.0
    belt_level: float = 18.0
    mottle: float = 0.10  # relative amplitude of the rubber's low-frequency mottling
    belt_texture: float = 4.0  # gray levels of belt texture
    noise: float = 3.0  # gray levels of pixel noise
    gradient: float = 20.0  # gray levels of a linear lighting ramp across the frame
    blur_sigma: float = 1.0  # optics: edge softness in px
    lint: int = 4  # fibres on the belt near (not touching) the ring
    flash_contrast: float = 0.8  # flash is thinner rubber: a bit less contrast than the ring
    color: bool = False


def _ellipse_radius(theta: np.ndarray, a: float, b: float, angle_deg: float) -> np.ndarray:
    t = theta - math.radians(angle_deg)
    return 1.0 / np.sqrt((np.cos(t) / a) ** 2 + (np.sin(t) / b) ** 2)


def _arc_offset(
    theta: np.ndarray, arcs: list[EdgeArc], edge: Edge, sign_out: float
) -> tuple[np.ndarray, np.ndarray]:
    """Radial offsets (outward positive) from flash and from bites along this edge."""
    flash = np.zeros_like(theta)
    bite = np.zeros_like(theta)
    deg = np.degrees(theta) % 360.0
    for arc in arcs:
        if arc.edge != edge:
            continue
        inside = ((deg - arc.start_deg) % 360.0) <= arc.span_deg
        if arc.height > 0:
            flash = np.where(inside, np.maximum(flash, arc.height), flash)
        else:
            bite = np.where(inside, np.minimum(bite, arc.height), bite)
    return sign_out * flash, sign_out * bite


def _coverage(boundary: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.clip(boundary - r + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    small = rng.standard_normal((max(2, shape[0] // cell), max(2, shape[1] // cell))).astype(np.float32)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _add_lint(
    img: np.ndarray, rng: np.random.Generator, spec: RingSpec, scene: Scene, ring_px: np.ndarray, level: float
) -> None:
    """Thin fibres on the belt, outside the ring and inside the bore, at least 6 px from it."""
    keep_out = cv2.dilate(ring_px.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    for _ in range(scene.lint):
        in_bore = rng.random() < 0.3
        theta = rng.uniform(0, 2 * math.pi)
        base = (
            (min(spec.inner_a, spec.inner_b) - rng.uniform(20, 60))
            if in_bore
            else (max(spec.outer_a, spec.outer_b) + rng.uniform(12, 60))
        )
        x, y = spec.cx + base * math.cos(theta), spec.cy + base * math.sin(theta)
        pts = [(x, y)]
        heading = theta + math.pi / 2 + rng.normal(0, 0.4)
        for _ in range(int(rng.integers(6, 20))):
            heading += rng.normal(0, 0.35)
            x, y = x + 8 * math.cos(heading), y + 8 * math.sin(heading)
            pts.append((x, y))
        layer = np.zeros_like(img, dtype=np.uint8)
        poly = np.round(np.array(pts) * 16).astype(np.int32)
        cv2.polylines(
            layer, [poly], False, 255, thickness=int(rng.integers(1, 3)), lineType=cv2.LINE_AA, shift=4
        )
        layer[keep_out > 0] = 0
        img += (layer.astype(np.float32) / 255.0) * (level - img) * 0.9


def _edge_coverage(spec: RingSpec, scene: Scene, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Fraction of each pixel (centres ``xx``, ``yy``) covered by rubber, flash at its lower contrast."""
    # Outer boundary about the outer centre.
    dx, dy = xx - spec.cx, yy - spec.cy
    r_out = np.sqrt(dx * dx + dy * dy)
    th_out = np.arctan2(dy, dx)
    base_out = _ellipse_radius(th_out, spec.outer_a, spec.outer_b, spec.outer_angle_deg)
    flash_o, bite_o = _arc_offset(th_out, spec.arcs, "outer", +1.0)
    body_out = _coverage(base_out + bite_o, r_out)
    full_out = _coverage(base_out + bite_o + flash_o, r_out)
    # Inner boundary about the bore centre; arcs are placed by angle about the outer centre.
    ix, iy = xx - (spec.cx + spec.bore_dx), yy - (spec.cy + spec.bore_dy)
    r_in = np.sqrt(ix * ix + iy * iy)
    th_in = np.arctan2(iy, ix)
    base_in = _ellipse_radius(th_in, spec.inner_a, spec.inner_b, spec.inner_angle_deg)
    flash_i, bite_i = _arc_offset(th_out, spec.arcs, "inner", -1.0)
    bore_body = _coverage(base_in + bite_i, r_in)  # bites widen the bore (bite_i >= 0)
    bore_full = _coverage(base_in + bite_i + flash_i, r_in)  # flash narrows it (flash_i <= 0)
    body = body_out * (1.0 - bore_body)
    material = full_out * (1.0 - bore_full)
    flash = np.clip(material - body, 0.0, 1.0)
    return (body + scene.flash_contrast * flash).astype(np.float32)


def _ring_coverage(spec: RingSpec, scene: Scene, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Fraction of each pixel covered by rubber (flash counted at its lower contrast).

    Only pixels within reach of an edge (its ellipse, flash and bites, plus a pixel) need the exact
    computation; every other pixel is plainly rubber (1) or plainly belt or bore (0).
    """
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - spec.cx, yy - spec.cy
    r_out = np.sqrt(dx * dx + dy * dy)
    ix, iy = xx - (spec.cx + spec.bore_dx), yy - (spec.cy + spec.bore_dy)
    r_in = np.sqrt(ix * ix + iy * iy)

    def heights(edge: Edge) -> list[float]:
        return [0.0] + [a.height for a in spec.arcs if a.edge == edge]

    margin = 1.5  # coverage is exactly 0 or 1 half a pixel from a boundary; a pixel more for safety
    out_lo = min(spec.outer_a, spec.outer_b) + min(heights("outer")) - margin
    out_hi = max(spec.outer_a, spec.outer_b) + max(heights("outer")) + margin
    in_lo = min(spec.inner_a, spec.inner_b) - max(heights("inner")) - margin
    in_hi = max(spec.inner_a, spec.inner_b) - min(heights("inner")) + margin
    rubber = (r_out <= out_lo) & (r_in >= in_hi)
    band = ~(rubber | (r_out >= out_hi) | (r_in <= in_lo))
    coverage = rubber.astype(np.float32)
    coverage[band] = _edge_coverage(spec, scene, xx[band], yy[band])
    return coverage


def draw_ring(spec: RingSpec, scene: Scene | None = None, seed: int = 0) -> np.ndarray:
    """A camera frame (uint8 gray, or BGR when ``scene.color``) of the ring in ``spec``."""
    scene = scene or Scene()
    rng = np.random.default_rng(seed)
    h, w = scene.height, scene.width
    coverage = np.zeros((h, w), dtype=np.float32)
    reach = max(spec.outer_a, spec.outer_b) + max((a.height for a in spec.arcs), default=0.0) + 8
    x0, x1 = max(0, int(spec.cx - reach)), min(w, int(spec.cx + reach) + 2)
    y0, y1 = max(0, int(spec.cy - reach)), min(h, int(spec.cy + reach) + 2)
    if x1 > x0 and y1 > y0:
        coverage[y0:y1, x0:x1] = _ring_coverage(spec, scene, x0, y0, x1, y1)
    xx = np.arange(w, dtype=np.float32)[None, :]
    yy = np.arange(h, dtype=np.float32)[:, None]
    ring_level, belt_level = scene.ring_level, scene.belt_level
    if scene.polarity == "dark":
        ring_level, belt_level = 255.0 - ring_level - 40.0, 255.0 - belt_level - 40.0
    ring = ring_level * (1.0 + scene.mottle * _smooth_noise(rng, (h, w), 48))
    ring += 0.5 * scene.mottle * ring_level * _smooth_noise(rng, (h, w), 8)
    belt = belt_level + scene.belt_texture * _smooth_noise(rng, (h, w), 6)
    img = belt + coverage * (ring - belt)
    if scene.lint:
        _add_lint(img, rng, spec, scene, coverage > 0.02, ring_level)
    if scene.gradient:
        ramp = (xx / w - 0.5) * math.cos(rng.uniform(0, 2 * math.pi)) + (yy / h - 0.5)
        img += scene.gradient * ramp
    if scene.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), scene.blur_sigma)
    img += scene.noise * rng.standard_normal((h, w), dtype=np.float32)
    gray = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if scene.color:
        gains = np.array([0.97, 1.0, 1.03], dtype=np.float32)
        return np.clip(np.rint(gray[:, :, None].astype(np.float32) * gains), 0, 255).astype(np.uint8)
    return gray


ReworkKind = Literal["good", "offset", "oval", "flash"]


def random_spec(
    kind: ReworkKind, rng: np.random.Generator, width: int = 2448, height: int = 2048
) -> RingSpec:
    """A plausible ring of the given kind: good parts vary a little, rework ones by a known amount.

    ``offset``: bore off-centre by 10-30 px; ``oval``: outer ellipse 3-8 % longer one way;
    ``flash``: a lip 6-20 px proud of the outer or inner edge over a 10-90 degree arc.
    """
    ro = rng.uniform(620, 680)
    ri = ro * rng.uniform(0.57, 0.63)
    spec = RingSpec(
        cx=width / 2 + rng.uniform(-150, 150),
        cy=height / 2 + rng.uniform(-120, 120),
        outer_a=ro,
        outer_b=ro,
        inner_a=ri,
        inner_b=ri,
        outer_angle_deg=rng.uniform(0, 180),
        inner_angle_deg=rng.uniform(0, 180),
    )
    # Good parts are not perfect either: a little ovality and eccentricity.
    ov = rng.uniform(1.0, 1.006)
    spec.outer_a, spec.outer_b = ro * math.sqrt(ov), ro / math.sqrt(ov)
    ecc, ang = rng.uniform(0, 2.0), rng.uniform(0, 2 * math.pi)
    spec.bore_dx, spec.bore_dy = ecc * math.cos(ang), ecc * math.sin(ang)
    if kind == "offset":
        ecc = rng.uniform(10, 30)
        spec.bore_dx, spec.bore_dy = ecc * math.cos(ang), ecc * math.sin(ang)
    elif kind == "oval":
        ov = rng.uniform(1.03, 1.08)
        spec.outer_a, spec.outer_b = ro * math.sqrt(ov), ro / math.sqrt(ov)
    elif kind == "flash":
        edge: Edge = "outer" if rng.random() < 0.6 else "inner"
        spec.arcs.append(EdgeArc(edge, rng.uniform(0, 360), rng.uniform(10, 90), rng.uniform(6, 20)))
    return spec


def random_scene(rng: np.random.Generator) -> Scene:
    """The plant's variety: polarity, levels, lighting, focus, lint, colour frames."""
    return Scene(
        polarity="dark" if rng.random() < 0.25 else "light",
        ring_level=rng.uniform(120, 210),
        belt_level=rng.uniform(12, 30),
        mottle=rng.uniform(0.04, 0.14),
        gradient=rng.uniform(0, 40),
        blur_sigma=rng.uniform(0.6, 1.8),
        noise=rng.uniform(1.5, 5.0),
        lint=int(rng.integers(0, 7)),
        flash_contrast=rng.uniform(0.7, 1.0),
        color=bool(rng.random() < 0.2),
    )
