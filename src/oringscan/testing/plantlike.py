"""An independent plant-like frame renderer for robustness tests of the ring ROI.

Deliberately NOT built on ``oringscan.synth``: a different noise model (multi-octave value noise,
"Perlin-like"), strong multiplicative lighting (linear or radial gradients times vignetting), a
woven belt, lint strands that touch or cross the ring's edge or span the bore, dust specks, a cast
shadow and face shading on one side of the ring, an optical blur plus a real JPEG round trip and
sensor noise. Every frame comes with its exact truth: the ring material (pits filled, bites
removed, bulges and flash added, bore open), the bore, and where the lint lies.

Labelled defects (``labelled_bulges``, ``labelled_pits``) are integer polygons whose
``cv2.fillPoly`` is exactly the pixels they change, as a labelling tool fills them; the LabelMe
file for a frame comes from :func:`labelme_json`, written here by hand (not through oringscan).

Used by ``tests/foundation/test_robustness.py``, ``tests/preprocess/test_preprocess_synth.py`` and the
benchmarks (bench_roi, bench_rework, bench_label_coverage, bench_operating_point).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

FULL_W, FULL_H = 2448, 2048


@dataclass(slots=True)
class PlantScene:
    """Everything that decides how one frame looks (all lengths at full resolution)."""

    cx: float = 1224.0
    cy: float = 1024.0
    r_out: float = 650.0
    r_in: float = 390.0
    ellipticity: float = 0.0  # relative difference of the outer ellipse's axes
    ring_level: float = 170.0
    belt_level: float = 18.0
    polarity: Literal["light", "dark"] = "light"
    mottle: float = 0.12  # relative amplitude of the ring's multi-octave blotches
    belt_mottle: float = 0.10
    weave: float = 0.18  # relative amplitude of the belt's woven texture
    weave_period: float = 7.0
    gradient: float = 0.0  # linear lighting: +/- this fraction across the frame
    gradient_angle: float = 0.0
    radial: float = 0.0  # radial falloff from an off-centre light: 1 - radial*(d/diag)^2
    light_center: tuple[float, float] = (0.5, 0.5)  # fractions of the frame
    vignette: float = 0.0  # corner darkening fraction
    face_shadow: float = 0.0  # the ring's face darker by up to this fraction on one side
    cast_shadow: float = 0.0  # the belt next to the ring darker by up to this fraction on one side
    shadow_angle: float = 0.0
    n_lint: int = 0
    lint_touching: int = 0  # of them, how many start on the ring's outer edge
    lint_across_bore: int = 0
    lint_width: tuple[float, float] = (2.0, 5.0)
    n_dust: int = 0
    n_pits: int = 0
    n_scratches: int = 0
    bites: list[tuple[float, float, str]] = field(default_factory=list)  # (angle, radius, "outer"/"inner")
    bulges: list[tuple[float, float, str]] = field(default_factory=list)
    flash: list[tuple[float, float, float, str]] = field(default_factory=list)  # (angle0, span, height, edge)
    blur_sigma: float = 1.2
    jpeg_quality: int = 80
    noise: float = 2.0
    # Labelled defects: (angle, proud_px, half_width_px, edge, shade) bumps of ring material standing
    # proud_px beyond the edge (shade: their gray level relative to the ring's, 1 = same material look)
    labelled_bulges: list[tuple[float, float, float, str, float]] = field(default_factory=list)
    # (angle, radial position 0..1 across the wall, diameter_px): belt-level pits inside the material
    labelled_pits: list[tuple[float, float, float]] = field(default_factory=list)
    # Failure modes
    second_ring: tuple[float, float, float, float] | None = None  # cx, cy, r_out, r_in
    cut: tuple[float, float] | None = None  # angle, width: a radial cut through the whole wall
    no_ring: bool = False


@dataclass(slots=True)
class LabelledDefect:
    """One labelled defect: its label and the int32 (N, 2) polygon whose fillPoly is what changed."""

    label: str
    points: np.ndarray

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, np.uint8)
        cv2.fillPoly(out, [self.points], 1)
        return out.astype(bool)


@dataclass(slots=True)
class PlantFrame:
    image: np.ndarray  # uint8 HxW gray (full size)
    ring: np.ndarray  # bool: ring material, pits filled, bore open (the truth the ROI should find)
    bore: np.ndarray  # bool
    lint: np.ndarray  # bool: lint pixels on the belt (never ring)
    pits: list[tuple[int, int]]  # a pixel inside each pit
    scene: PlantScene
    defects: list[LabelledDefect] = field(default_factory=list)  # the labelled ones, in scene order


def _bulge_polygon(scene: PlantScene, angle: float, proud: float, half_width: float, edge: str) -> np.ndarray:
    """A smooth bump on an edge: proud_px high at its middle, 2*half_width_px wide, 6 px into the wall."""
    r_edge = scene.r_out if edge == "outer" else scene.r_in
    out = 1.0 if edge == "outer" else -1.0
    t = np.linspace(-1.0, 1.0, 41)
    along = half_width * t / r_edge  # angle offsets
    height = proud * np.sqrt(np.clip(1 - t * t, 0, 1)) ** 0.8
    top = r_edge + out * height
    base = np.full_like(t, r_edge - out * 6.0)
    radii = np.concatenate([top, base[::-1]])
    angles = np.concatenate([angle + along, (angle + along)[::-1]])
    xs = scene.cx + radii * np.cos(angles) * (1 + scene.ellipticity)
    ys = scene.cy + radii * np.sin(angles)
    return np.round(np.stack([xs, ys], 1)).astype(np.int32)


def _pit_polygon(
    scene: PlantScene, angle: float, across: float, diameter: float, rng: np.random.Generator
) -> np.ndarray:
    """An irregular small pit: 10 corners around a centre inside the wall (at least 3 px across)."""
    r = scene.r_in + 25 + across * (scene.r_out - scene.r_in - 50)
    cx = scene.cx + r * math.cos(angle) * (1 + scene.ellipticity)
    cy = scene.cy + r * math.sin(angle)
    t = np.linspace(0, 2 * math.pi, 10, endpoint=False)
    rad = diameter / 2 * rng.uniform(0.8, 1.15, len(t))
    pts = np.round(np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1)).astype(np.int32)
    return pts


def value_noise(
    shape: tuple[int, int],
    rng: np.random.Generator,
    base_cells: int = 4,
    octaves: int = 5,
    persistence: float = 0.55,
) -> np.ndarray:
    """Multi-octave smooth noise in about [-1, 1] (random lattices upscaled bicubically).

    Summed at half resolution and upscaled once: the finest octave's cells are still >10 px.
    """
    full_h, full_w = shape
    h, w = full_h // 2, full_w // 2
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base_cells * (2**o)
        gh, gw = max(2, int(cells * h / max(h, w)) + 2), cells + 2
        lattice = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
        out += amp * cv2.resize(lattice, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
    return cv2.resize(out / total, (full_w, full_h), interpolation=cv2.INTER_LINEAR)


def _lighting(scene: PlantScene, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Multiplicative illumination field (computed at 1/8 scale: it is smooth)."""
    h, w = shape
    sh, sw = h // 8, w // 8
    y, x = np.mgrid[0:sh, 0:sw].astype(np.float32)
    x, y = x / (sw - 1), y / (sh - 1)
    light = np.ones((sh, sw), np.float32)
    if scene.gradient:
        along = (x - 0.5) * math.cos(scene.gradient_angle) + (y - 0.5) * math.sin(scene.gradient_angle)
        light *= 1 + 2 * scene.gradient * along / max(
            abs(math.cos(scene.gradient_angle)) + abs(math.sin(scene.gradient_angle)), 1e-6
        )
    if scene.radial:
        lx, ly = scene.light_center
        d2 = ((x - lx) ** 2 + ((y - ly) * h / w) ** 2) / (1 + (h / w) ** 2)
        light *= 1 - scene.radial * d2
    if scene.vignette:
        d2 = ((x - 0.5) ** 2 + ((y - 0.5) * h / w) ** 2) / (0.25 * (1 + (h / w) ** 2))
        light *= 1 - scene.vignette * d2**1.5
    light *= 1 + 0.03 * value_noise((sh, sw), rng, base_cells=2, octaves=2)
    return cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)


def _polar(scene: PlantScene, shape: tuple[int, int], rx: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    dx = np.arange(w, dtype=np.float32)[None, :] - np.float32(scene.cx)
    dy = np.arange(h, dtype=np.float32)[:, None] - np.float32(scene.cy)
    # A slight ellipse: scale x by (1 + e), so the outer/inner edges are ellipses with the same axes.
    dist = np.sqrt((dx / (1 + scene.ellipticity)) ** 2 + dy**2)
    return dist, np.arctan2(dy, dx)


def _disc(mask_shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    out = np.zeros(mask_shape, np.uint8)
    cv2.circle(
        out,
        (int(round(center[0] * 16)), int(round(center[1] * 16))),
        int(round(radius * 16)),
        1,
        -1,
        lineType=cv2.LINE_8,
        shift=4,
    )
    return out.astype(bool)


def _random_strand(
    rng: np.random.Generator, start: tuple[float, float], heading: float, length: float
) -> np.ndarray:
    """A gently curving fibre as a polyline."""
    n = max(4, int(length / 12))
    turn = rng.normal(0, 0.12, n).cumsum()
    angles = heading + turn
    steps = np.stack([np.cos(angles), np.sin(angles)], 1) * (length / n)
    pts = np.vstack([np.array(start)[None], np.array(start)[None] + np.cumsum(steps, 0)])
    return pts


def render_plant_frame(scene: PlantScene, seed: int = 0) -> PlantFrame:
    """Render one full-size frame and its truth."""
    rng = np.random.default_rng(seed)
    shape = (FULL_H, FULL_W)
    h, w = shape
    dist, theta = _polar(scene, shape)

    ring = (dist <= scene.r_out) & (dist > scene.r_in)
    bore = dist <= scene.r_in
    if scene.no_ring:
        ring[:] = False
        bore[:] = False
    for ang, rad, edge in scene.bites:
        r = scene.r_out if edge == "outer" else scene.r_in
        c = (scene.cx + r * math.cos(ang) * (1 + scene.ellipticity), scene.cy + r * math.sin(ang))
        d = _disc(shape, c, rad)
        ring &= ~d
        if edge == "inner":
            bore |= d & ~ring & (dist < scene.r_in + rad)
    for ang, rad, edge in scene.bulges:
        r = scene.r_out if edge == "outer" else scene.r_in
        c = (scene.cx + r * math.cos(ang) * (1 + scene.ellipticity), scene.cy + r * math.sin(ang))
        d = _disc(shape, c, rad)
        ring |= d
        bore &= ~d
    defects: list[LabelledDefect] = []
    shaded = np.zeros(shape, np.float32)  # relative shade of labelled bulges (0: none)
    for ang, proud, half_width, edge, shade in scene.labelled_bulges:
        d = LabelledDefect("bulge", _bulge_polygon(scene, ang, proud, half_width, edge))
        m = d.mask(shape)
        ring |= m
        bore &= ~m
        shaded[m & (dist > scene.r_out if edge == "outer" else dist <= scene.r_in)] = shade
        defects.append(d)
    for a0, span, height, edge in scene.flash:
        delta = np.angle(np.exp(1j * (theta - a0)))
        along = (delta >= 0) & (delta <= span)
        if edge == "outer":
            lip = along & (dist > scene.r_out) & (dist <= scene.r_out + height)
        else:
            lip = along & (dist <= scene.r_in) & (dist > scene.r_in - height)
        ring |= lip
        bore &= ~lip
    if scene.second_ring is not None:
        cx2, cy2, ro2, ri2 = scene.second_ring
        d2 = np.sqrt((np.arange(w)[None, :] - cx2) ** 2 + (np.arange(h)[:, None] - cy2) ** 2)
        ring |= (d2 <= ro2) & (d2 > ri2)
    if scene.cut is not None:
        ang, width = scene.cut
        perp = np.abs(
            (np.arange(w)[None, :] - scene.cx) * math.sin(ang)
            - (np.arange(h)[:, None] - scene.cy) * math.cos(ang)
        )
        ahead = (np.arange(w)[None, :] - scene.cx) * math.cos(ang) + (
            np.arange(h)[:, None] - scene.cy
        ) * math.sin(ang) > 0
        gap = (perp <= width / 2) & ahead
        ring &= ~gap
        bore |= gap & (dist <= scene.r_out + 2)  # the bore now opens to the belt: no closed bore

    # Pits and scratches: belt-level marks inside the material (the truth keeps them filled).
    pits: list[tuple[int, int]] = []
    pit_mask = np.zeros(shape, bool)
    if not scene.no_ring:
        for _ in range(scene.n_pits):
            rr = rng.uniform(scene.r_in + 40, scene.r_out - 40)
            aa = rng.uniform(0, 2 * math.pi)
            px, py = scene.cx + rr * math.cos(aa) * (1 + scene.ellipticity), scene.cy + rr * math.sin(aa)
            rad = rng.uniform(2, 14)
            pit_mask |= _disc(shape, (px, py), rad)
            pits.append((int(round(px)), int(round(py))))
        for _ in range(scene.n_scratches):  # thin dark lines inside the wall, never through it
            rr = rng.uniform(scene.r_in + 60, scene.r_out - 60)
            aa = rng.uniform(0, 2 * math.pi)
            p0 = (scene.cx + rr * math.cos(aa), scene.cy + rr * math.sin(aa))
            heading = aa + math.pi / 2 + rng.normal(0, 0.4)
            ln = rng.uniform(40, 120)
            p1 = (p0[0] + ln * math.cos(heading), p0[1] + ln * math.sin(heading))
            tmp = np.zeros(shape, np.uint8)
            cv2.line(tmp, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 1, int(rng.integers(1, 4)))
            pit_mask |= tmp.astype(bool) & ring

    label_rng = np.random.default_rng(seed + 7919)  # its own stream: the unlabelled scene stays the same
    for ang, across, diameter in scene.labelled_pits:
        d = LabelledDefect("pit", _pit_polygon(scene, ang, across, diameter, label_rng))
        pit_mask |= d.mask(shape) & ring
        defects.append(d)

    # Reflectances (before lighting)
    ring_tex = 1 + scene.mottle * value_noise(shape, rng, base_cells=6, octaves=6)
    belt_tex = 1 + scene.belt_mottle * value_noise(shape, rng, base_cells=5, octaves=4)
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    p = scene.weave_period
    # A twill: over/under threads (separable) plus a diagonal rib (sin(a+b) = sin a cos b + cos a sin b).
    wa, wb = 2 * np.pi * xs / (3.1 * p), 2 * np.pi * ys / (3.1 * p)
    weave = 0.6 * np.outer(np.sin(2 * np.pi * ys / (2 * p)), np.sign(np.sin(2 * np.pi * xs / p)))
    weave += 0.4 * (np.outer(np.cos(wb), np.sin(wa)) + np.outer(np.sin(wb), np.cos(wa)))
    weave = cv2.GaussianBlur(weave.astype(np.float32), (0, 0), 0.8)
    belt = scene.belt_level * belt_tex * (1 + scene.weave * weave)
    if scene.cast_shadow:
        # The ring's shadow on the belt, on the side away from the light: a darkening that fades outward.
        delta = np.cos(theta - scene.shadow_angle).clip(0, 1)
        fade = np.exp(-np.clip(dist - scene.r_out, 0, None) / 60.0) * (dist > scene.r_out)
        belt *= 1 - scene.cast_shadow * delta * fade
    ring_face = scene.ring_level * ring_tex
    if scene.face_shadow:
        ring_face *= 1 - scene.face_shadow * np.cos(theta - scene.shadow_angle).clip(0, 1)
    img = np.where(ring, ring_face, belt).astype(np.float32)
    img[pit_mask] = belt[pit_mask] * 0.9
    if scene.labelled_bulges:
        bump = shaded > 0
        img[bump] = scene.belt_level + (img[bump] - scene.belt_level) * shaded[bump]

    # Lint (on the belt and draped over the ring's edge) and dust specks.
    lint_canvas = np.zeros(shape, np.uint8)
    lint_level = scene.ring_level
    for i in range(scene.n_lint + scene.lint_across_bore):
        if i < scene.lint_across_bore:
            aa = rng.uniform(0, 2 * math.pi)
            start = (scene.cx + (scene.r_in + 30) * math.cos(aa), scene.cy + (scene.r_in + 30) * math.sin(aa))
            pts = _random_strand(rng, start, aa + math.pi + rng.normal(0, 0.2), 2 * scene.r_in + 60)
        elif i - scene.lint_across_bore < scene.lint_touching:
            aa = rng.uniform(0, 2 * math.pi)
            start = (
                scene.cx + (scene.r_out - 15) * math.cos(aa),
                scene.cy + (scene.r_out - 15) * math.sin(aa),
            )
            pts = _random_strand(rng, start, aa + rng.normal(0, 0.6), rng.uniform(80, 260))
        else:
            start = (rng.uniform(0, w), rng.uniform(0, h))
            pts = _random_strand(rng, start, rng.uniform(0, 2 * math.pi), rng.uniform(60, 300))
        width = int(round(rng.uniform(*scene.lint_width)))
        cv2.polylines(
            lint_canvas, [np.round(pts * 16).astype(np.int32)], False, 1, max(1, width), cv2.LINE_AA, shift=4
        )
    lint_any = lint_canvas > 0
    if lint_any.any():
        shade = lint_level * (0.85 + 0.3 * rng.random())
        img[lint_any] = shade * (1 + 0.05 * rng.standard_normal(int(lint_any.sum()))).astype(np.float32)
    for _ in range(scene.n_dust):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        level = rng.choice(
            [scene.ring_level * 0.8, scene.belt_level * 0.4, (scene.ring_level + scene.belt_level) / 2]
        )
        cv2.circle(img, (x, y), int(rng.integers(1, 4)), float(level), -1)

    img *= _lighting(scene, shape, rng)
    if scene.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), scene.blur_sigma)
    img += rng.normal(0, scene.noise, shape).astype(np.float32) * np.sqrt(np.clip(img, 1, None) / 60.0)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if scene.polarity == "dark":
        pass  # levels are given explicitly: a dark ring simply has ring_level < belt_level
    if scene.jpeg_quality and scene.jpeg_quality < 100:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, scene.jpeg_quality])
        assert ok
        out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    lint_truth = lint_any & ~ring & ((dist > scene.r_out + 4) | (dist < scene.r_in - 4))
    return PlantFrame(out, ring, bore, lint_truth, pits, scene, defects)


def labelme_json(frame: PlantFrame, image_path: str) -> dict:
    """The frame's labelled defects as LabelMe 5.x writes them (float points, keys in LabelMe's order)."""
    h, w = frame.image.shape[:2]
    shapes = [
        {
            "label": d.label,
            "points": [[float(x), float(y)] for x, y in d.points],
            "group_id": None,
            "description": "",
            "shape_type": "polygon",
            "flags": {},
            "mask": None,
        }
        for d in frame.defects
    ]
    return {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": h,
        "imageWidth": w,
    }


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


def random_plant_scene(rng: np.random.Generator, variant: str = "any") -> PlantScene:
    """A random plant-like scene: sizes r_out 500-800 / r_in 300-500, centre within +/-200 px.

    ``variant``: "light" (ring ~150-200 on belt ~18), "low_contrast" (ring 60 / belt 18),
    "low_contrast_grey" (ring 90 / belt 40), "dark" (dark ring on a light belt), or "any".
    """
    if variant == "any":
        variant = str(rng.choice(["light", "light", "low_contrast", "low_contrast_grey", "dark"]))
    r_out = float(rng.uniform(500, 800))
    r_in = float(np.clip(r_out * rng.uniform(0.55, 0.68), 300, 500))
    if r_out - r_in < 150:
        r_in = r_out - 150
    max_off_x = min(200.0, FULL_W / 2 - r_out - 30)
    max_off_y = min(200.0, FULL_H / 2 - r_out - 30)
    cx = FULL_W / 2 + rng.uniform(-max_off_x, max_off_x)
    cy = FULL_H / 2 + rng.uniform(-max_off_y, max_off_y)
    levels = {
        "light": (float(rng.uniform(140, 200)), float(rng.uniform(14, 24)), "light"),
        "low_contrast": (60.0, 18.0, "light"),
        "low_contrast_grey": (90.0, 40.0, "light"),
        "dark": (float(rng.uniform(40, 70)), float(rng.uniform(170, 215)), "dark"),
    }
    ring_level, belt_level, polarity = levels[variant]
    angle = float(rng.uniform(0, 2 * math.pi))
    lighting = str(rng.choice(["linear", "radial", "both"]))
    return PlantScene(
        cx=cx,
        cy=cy,
        r_out=r_out,
        r_in=r_in,
        ellipticity=float(rng.uniform(-0.01, 0.01)),
        ring_level=ring_level,
        belt_level=belt_level,
        polarity=polarity,  # type: ignore[arg-type]
        mottle=float(rng.uniform(0.06, 0.15)),
        belt_mottle=float(rng.uniform(0.05, 0.15)),
        weave=float(rng.uniform(0.1, 0.25)),
        weave_period=float(rng.uniform(5, 10)),
        gradient=float(rng.uniform(0.15, 0.3)) if lighting in ("linear", "both") else 0.0,
        gradient_angle=float(rng.uniform(0, 2 * math.pi)),
        radial=float(rng.uniform(0.3, 0.5)) if lighting in ("radial", "both") else 0.0,
        light_center=(float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8))),
        vignette=float(rng.uniform(0.15, 0.35)),
        face_shadow=float(rng.uniform(0.0, 0.25)),
        cast_shadow=float(rng.uniform(0.0, 0.4)),
        shadow_angle=angle,
        n_lint=int(rng.integers(3, 9)),
        lint_touching=int(rng.integers(1, 3)),
        lint_across_bore=int(rng.integers(0, 2)),
        n_dust=int(rng.integers(20, 80)),
        n_pits=int(rng.integers(0, 5)),
        n_scratches=int(rng.integers(0, 3)),
        blur_sigma=float(rng.uniform(0.8, 1.8)),
        jpeg_quality=int(rng.integers(60, 92)),
        noise=float(rng.uniform(1.0, 3.0)),
    )


def line_scene(kind: str, seed: int) -> PlantScene:
    """One ring as a line camera sees it (one size, centre within +/-150 px, light variant, no
    unlabelled pits or scratches); ``kind="defect"`` adds 0-2 labelled pits (15-45 px across) and
    edge bulges (20-40 px proud), at least one defect per frame."""
    rng = np.random.default_rng(seed)
    scene = random_plant_scene(rng, "light")
    scene.r_out = float(650 + rng.uniform(-8, 8))
    scene.r_in = float(390 + rng.uniform(-5, 5))
    scene.cx = float(1224 + rng.uniform(-150, 150))
    scene.cy = float(1024 + rng.uniform(-150, 150))
    scene.n_pits, scene.n_scratches, scene.lint_across_bore = 0, 0, 0
    if kind == "defect":
        scene.labelled_pits = [
            (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.1, 0.9)), float(rng.uniform(15, 45)))
            for _ in range(int(rng.integers(0, 3)))
        ]
        scene.labelled_bulges = [
            (
                float(rng.uniform(0, 2 * math.pi)),
                float(rng.uniform(20, 40)),
                float(rng.uniform(20, 50)),
                str(rng.choice(["outer", "inner"])),
                float(rng.uniform(0.8, 1.0)),
            )
            for _ in range(int(rng.integers(0 if scene.labelled_pits else 1, 3)))
        ]
    return scene


def write_line_dataset(
    root: Path, good_folder: str, defect_folder: str, n_good: int, n_defect: int, seed: int
) -> None:
    """``root/images/<folder>/*.bmp`` and LabelMe files in ``root/labels/<folder>/`` for defect
    frames, as the plant's data lives (frame k of a kind is rendered from seed ``seed + k``)."""
    for kind, folder, count, offset in (
        ("good", good_folder, n_good, 0),
        ("defect", defect_folder, n_defect, 50_000),
    ):
        images = root / "images" / folder
        images.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            frame_seed = seed + offset + k
            frame = render_plant_frame(line_scene(kind, frame_seed), seed=frame_seed)
            name = f"plant_{kind}_{k:04d}"
            if not cv2.imwrite(str(images / f"{name}.bmp"), frame.image):
                raise OSError(f"{images / name}.bmp: could not be written")
            if kind == "defect":
                labels = root / "labels" / folder
                labels.mkdir(parents=True, exist_ok=True)
                doc = labelme_json(frame, f"../../images/{folder}/{name}.bmp")
                (labels / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")


def _random(variant: str, seed: int, **overrides: object) -> PlantScene:
    scene = random_plant_scene(np.random.default_rng(seed), variant)
    for key, value in overrides.items():
        setattr(scene, key, value)
    return scene


def hard_scenes() -> dict[str, PlantScene]:
    """The named hard cases (what broke a global-Otsu ROI): used by the tests and the benchmark."""
    return {
        "light_random": _random("light", 101),
        "low_contrast_60_on_18": _random("low_contrast", 102, gradient=0.3, vignette=0.35),
        "low_contrast_90_on_40": _random("low_contrast_grey", 103, gradient=0.3, radial=0.5, vignette=0.35),
        "dark_ring_light_belt": _random("dark", 104, gradient=0.3, vignette=0.4, cast_shadow=0.4),
        "shadow_one_side_low_contrast": PlantScene(
            ring_level=60,
            belt_level=18,
            face_shadow=0.4,
            cast_shadow=0.4,
            shadow_angle=1.0,
            gradient=0.3,
            gradient_angle=4.0,
            vignette=0.3,
            n_lint=4,
            lint_touching=2,
            n_dust=50,
            n_pits=4,
        ),
        "lint_across_bore_and_edge": PlantScene(
            lint_across_bore=2, n_lint=6, lint_touching=4, lint_width=(3, 7), n_dust=60, n_pits=4, radial=0.4
        ),
        "largest_offset": PlantScene(
            cx=1224 + 200,
            cy=1024 - 200,
            r_out=800,
            r_in=500,
            ring_level=90,
            belt_level=40,
            radial=0.5,
            light_center=(0.1, 0.9),
            n_lint=4,
            lint_touching=2,
            n_dust=40,
            n_pits=3,
        ),
        "smallest_offset": PlantScene(
            cx=1224 - 200,
            cy=1024 + 200,
            r_out=500,
            r_in=300,
            gradient=0.3,
            gradient_angle=2.5,
            n_lint=4,
            lint_touching=2,
            n_dust=40,
            n_pits=3,
        ),
    }


def bin2x2(image: np.ndarray) -> np.ndarray:
    """What the camera's 2x2 binning gives: the mean of each 2x2 block."""
    h, w = image.shape[:2]
    blocks = image[: h - h % 2, : w - w % 2].reshape(h // 2, 2, w // 2, 2, *image.shape[2:])
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


def as_colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 24-bit colour frame of the gray scene: slightly different channel gains and noise."""
    gains = rng.uniform(0.96, 1.04, 3)
    chans = [np.clip(image.astype(np.float32) * g + rng.normal(0, 0.7, image.shape), 0, 255) for g in gains]
    return np.rint(np.dstack(chans)).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
