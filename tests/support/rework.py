"""Rings with exact geometry for the rework tests (drawn once per session, cached).

Import in a test module::

    from support.rework import SPECS, ring_frame, measured, write_dataset
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from oringscan.frames import write_frame
from oringscan.rework_rules.measure import RingMeasurement, measure_ring
from oringscan.roi import RingROI, find_ring
from oringscan.synth.exact import EdgeArc, RingSpec, Scene, draw_ring, random_scene, random_spec

_OV = math.sqrt(1.05)  # 5 % ovality
SPECS: dict[str, RingSpec] = {
    "round": RingSpec(cx=1230.4, cy=1011.7, outer_a=650.3, outer_b=650.3, inner_a=390.6, inner_b=390.6),
    "offset": RingSpec(
        cx=1180.2,
        cy=1050.9,
        outer_a=640.0,
        outer_b=640.0,
        inner_a=385.0,
        inner_b=385.0,
        bore_dx=12.0,
        bore_dy=-9.0,
    ),
    "oval": RingSpec(
        outer_a=650 * _OV,
        outer_b=650 / _OV,
        outer_angle_deg=30,
        inner_a=390 * _OV,
        inner_b=390 / _OV,
        inner_angle_deg=30,
    ),
    "flash_outer": RingSpec(arcs=[EdgeArc("outer", 100.0, 40.0, 8.0)]),
    "flash_inner_long": RingSpec(arcs=[EdgeArc("inner", 300.0, 85.0, 7.0)]),
    "bite": RingSpec(arcs=[EdgeArc("outer", 200.0, 6.0, -12.0)]),
}
SCENES: dict[str, Scene] = {
    "plain": Scene(lint=0, gradient=0.0, mottle=0.05, noise=2.0),
    "plant": Scene(lint=6, gradient=35.0, mottle=0.13, blur_sigma=1.5, noise=4.0, ring_level=150.0),
    "dark": Scene(polarity="dark", lint=4, gradient=25.0, mottle=0.1),
    "color": Scene(color=True, lint=3, gradient=20.0),
}


@lru_cache(maxsize=32)
def ring_frame(spec: str, scene: str = "plant", seed: int = 0) -> np.ndarray:
    """The frame as the camera saves it (BGR for the colour scene). Treat as read-only."""
    return draw_ring(SPECS[spec], SCENES[scene], seed=seed)


def gray_of(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


@lru_cache(maxsize=32)
def measured(spec: str, scene: str = "plant", subpixel: bool = True) -> tuple[RingROI, RingMeasurement]:
    from oringscan.config import ReworkConfig

    gray = gray_of(ring_frame(spec, scene))
    roi = find_ring(gray)
    return roi, measure_ring(roi, None, gray, ReworkConfig(subpixel=subpixel))


def binned(image: np.ndarray) -> np.ndarray:
    """The frame a 2x2-binning camera would save."""
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def half_size(spec: RingSpec) -> RingSpec:
    """The same ring as a 2x2-binned camera sees it (half the size, 1224x1024 frame)."""
    return RingSpec(
        spec.cx / 2,
        spec.cy / 2,
        spec.outer_a / 2,
        spec.outer_b / 2,
        spec.outer_angle_deg,
        spec.inner_a / 2,
        spec.inner_b / 2,
        spec.inner_angle_deg,
        spec.bore_dx / 2,
        spec.bore_dy / 2,
        [EdgeArc(a.edge, a.start_deg, a.span_deg, a.height / 2) for a in spec.arcs],
    )


def binned_frame(spec: RingSpec, scene: Scene, seed: int = 0) -> np.ndarray:
    """A binned-size frame (1224x1024, 4x faster to draw); read_frame scales it back up."""
    return draw_ring(half_size(spec), _half_scene(scene), seed=seed)


def _half_scene(scene: Scene) -> Scene:
    from dataclasses import replace

    return replace(scene, width=1224, height=1024, lint=min(scene.lint, 2))


def write_dataset(root: Path, n_good: int = 5, seed: int = 0, good_folder: str = "model1good") -> list[Path]:
    """Binned-size good frames under root/images/<folder> (names with spaces, as plants have)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_good):
        spec = random_spec("good", rng)
        image = draw_ring(half_size(spec), _half_scene(random_scene(rng)), seed=i)
        path = root / "images" / good_folder / f"good {i:02d}.bmp"
        write_frame(path, image)
        paths.append(path)
    return paths
