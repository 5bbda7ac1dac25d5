"""Ring geometry against rings whose every number is known (analytic, anti-aliased drawings)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from support.rework import SCENES, SPECS, binned, gray_of, measured, ring_frame

from oringscan.config import FrameConfig, ReworkConfig
from oringscan.frames import normalize_frame
from oringscan.rework_rules import METRICS, MeasurementError, measure_ring
from oringscan.roi import RoiStatus, find_ring
from oringscan.synth.exact import RingSpec, Scene, draw_ring


@pytest.mark.parametrize("scene", list(SCENES))
def test_round_ring_matches_truth_in_every_scene(scene: str) -> None:
    roi, m = measured("round", scene)
    spec, v = SPECS["round"], m.values
    assert roi.status is RoiStatus.OK
    assert set(METRICS) <= set(v)
    assert v["outer_radius"] == pytest.approx(spec.outer_a, abs=0.3)
    assert v["inner_radius"] == pytest.approx(spec.inner_a, abs=0.3)
    assert v["mean_radius"] == pytest.approx((spec.outer_a + spec.inner_a) / 2, abs=0.3)
    assert v["wall_mean"] == pytest.approx(spec.outer_a - spec.inner_a, abs=0.3)
    assert v["wall_range"] < 2.0 and v["wall_ratio"] < 1.008  # mottled rubber moves the edge a little
    assert v["concentricity_px"] < 0.3
    assert v["outer_ovality"] < 1.001 and v["inner_ovality"] < 1.001
    assert v["outer_circularity"] > 0.999
    true_area = math.pi * (spec.outer_a**2 - spec.inner_a**2)
    assert v["annular_area"] == pytest.approx(true_area, rel=0.002)
    for edge in ("outer", "inner"):
        assert v[f"{edge}_protrusion_px"] < 1.2, edge
        assert v[f"{edge}_indentation_px"] < 1.2, edge
    # The fit's centre is where the ring was drawn.
    assert m.outer.circle.cx == pytest.approx(spec.cx, abs=0.2)
    assert m.outer.circle.cy == pytest.approx(spec.cy, abs=0.2)


def test_off_centre_bore() -> None:
    _, m = measured("offset")
    spec, v = SPECS["offset"], m.values
    offset = math.hypot(spec.bore_dx, spec.bore_dy)  # 15 px
    assert v["concentricity_px"] == pytest.approx(offset, abs=0.3)
    assert v["concentricity_pct"] == pytest.approx(
        100 * offset / ((spec.outer_a + spec.inner_a) / 2), abs=0.06
    )
    wall = spec.outer_a - spec.inner_a
    assert v["wall_min"] == pytest.approx(wall - offset, abs=0.7)
    assert v["wall_max"] == pytest.approx(wall + offset, abs=0.7)
    assert v["wall_range"] == pytest.approx(2 * offset, abs=1.0)
    assert v["wall_ratio"] == pytest.approx((wall + offset) / (wall - offset), abs=0.01)
    assert m.inner.circle.cx - m.outer.circle.cx == pytest.approx(spec.bore_dx, abs=0.3)
    assert m.inner.circle.cy - m.outer.circle.cy == pytest.approx(spec.bore_dy, abs=0.3)


def test_oval_ring() -> None:
    _, m = measured("oval")
    spec, v = SPECS["oval"], m.values
    assert v["outer_ovality"] == pytest.approx(spec.outer_a / spec.outer_b, abs=0.002)
    assert v["inner_ovality"] == pytest.approx(spec.inner_a / spec.inner_b, abs=0.002)
    assert v["outer_radius"] == pytest.approx((spec.outer_a + spec.outer_b) / 2, abs=0.5)
    assert v["inner_radius"] == pytest.approx((spec.inner_a + spec.inner_b) / 2, abs=0.5)
    assert m.outer.ellipse.angle_deg % 180 == pytest.approx(30, abs=1.0)
    # An oval ring is not flash: the ellipse takes the shape, nothing is proud of it.
    assert v["outer_protrusion_px"] < 1.2 and v["outer_indentation_px"] < 1.2


def test_outer_flash_height_and_arc() -> None:
    _, m = measured("flash_outer")
    spec, v = SPECS["flash_outer"], m.values
    arc = spec.arcs[0]
    assert v["outer_protrusion_px"] == pytest.approx(arc.height, abs=1.0)
    assert v["outer_protrusion_arc"] == pytest.approx(
        math.radians(arc.span_deg) * (spec.outer_a + arc.height), rel=0.1
    )
    assert v["inner_protrusion_px"] < 1.2
    # The flash does not drag the fitted body of the edge.
    assert v["outer_radius"] == pytest.approx(spec.outer_a, abs=0.3)
    start = math.degrees(m.angles[m.outer.protrusion.start])
    assert (start - arc.start_deg) % 360 == pytest.approx(0, abs=3) or (start - arc.start_deg) % 360 > 357


def test_long_inner_flash_does_not_drag_the_fit() -> None:
    """85 degrees of flash (a quarter of the bore) would pull a plain least-squares ellipse."""
    _, m = measured("flash_inner_long")
    spec, v = SPECS["flash_inner_long"], m.values
    assert v["inner_protrusion_px"] == pytest.approx(spec.arcs[0].height, abs=1.0)
    assert v["inner_radius"] == pytest.approx(spec.inner_a, abs=0.3)
    assert v["concentricity_px"] < 0.3
    assert v["inner_ovality"] < 1.002


def test_bite_is_an_indentation() -> None:
    _, m = measured("bite")
    spec, v = SPECS["bite"], m.values
    assert v["outer_indentation_px"] == pytest.approx(-spec.arcs[0].height, abs=1.5)
    assert v["outer_indentation_arc"] == pytest.approx(
        math.radians(spec.arcs[0].span_deg) * spec.outer_a, rel=0.35
    )
    assert v["outer_protrusion_px"] < 1.2
    assert v["wall_min"] == pytest.approx(spec.outer_a - spec.inner_a - 12, abs=1.5)


def test_lint_touching_the_edge_is_not_flash() -> None:
    """A fibre lying across the edge is a spike a few rays wide; the median profile drops it."""
    spec = SPECS["round"]
    image = draw_ring(spec, SCENES["plain"]).copy()
    for angle in (20.0, 140.0, 250.0):
        t = math.radians(angle)
        p0 = (spec.cx + (spec.outer_a - 15) * math.cos(t), spec.cy + (spec.outer_a - 15) * math.sin(t))
        p1 = (
            spec.cx + (spec.outer_a + 30) * math.cos(t + 0.01),
            spec.cy + (spec.outer_a + 30) * math.sin(t + 0.01),
        )
        cv2.line(image, tuple(round(c) for c in p0), tuple(round(c) for c in p1), 170, 2, cv2.LINE_AA)
    roi = find_ring(image)
    m = measure_ring(roi, None, image)
    assert m.values["outer_protrusion_px"] < 2.0
    assert m.values["outer_radius"] == pytest.approx(spec.outer_a, abs=0.3)


def test_subpixel_edges_reduce_edge_scatter() -> None:
    """Sub-pixel gray-level edges measurably beat the thresholded mask on the per-ray edge."""
    _, sub = measured("round", "plant", subpixel=True)
    _, mask = measured("round", "plant", subpixel=False)
    scatter_sub = float(np.nanstd(sub.outer.radius - sub.outer.fit_radius))
    scatter_mask = float(np.nanstd(mask.outer.radius - mask.outer.fit_radius))
    assert sub.subpixel_fraction > 0.9
    assert scatter_sub < 0.75 * scatter_mask
    assert mask.subpixel_fraction == 0.0


def test_edge_under_a_dark_blotch_follows_the_picture() -> None:
    """Rubber that dips under the global Otsu threshold near the edge notches the mask; the
    local gray-level edge does not."""
    spec = SPECS["round"]
    image = draw_ring(spec, SCENES["plain"]).astype(np.float32)
    t = math.radians(60)
    centre = (spec.cx + (spec.outer_a - 10) * math.cos(t), spec.cy + (spec.outer_a - 10) * math.sin(t))
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    blotch = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 18.0**2))
    image = np.clip(image * (1 - 0.55 * blotch), 0, 255).astype(np.uint8)  # rubber 175 -> ~80 there
    roi = find_ring(image)
    sub = measure_ring(roi, None, image, ReworkConfig(subpixel=True))
    mask = measure_ring(roi, None, image, ReworkConfig(subpixel=False))
    assert mask.values["outer_indentation_px"] > 2.0  # the mask sees a bite that is not there
    assert sub.values["outer_indentation_px"] < 1.5


def test_binned_frame_scaled_up_measures_full_size_pixels() -> None:
    image = ring_frame("round", "plain")
    loaded = normalize_frame(binned(image), FrameConfig())
    assert loaded.scale == 2.0
    m = measure_ring(find_ring(loaded.image), None, loaded.image)
    assert m.values["outer_radius"] == pytest.approx(SPECS["round"].outer_a, abs=1.0)
    assert m.values["inner_radius"] == pytest.approx(SPECS["round"].inner_a, abs=1.0)


def test_millimetres_when_the_type_has_a_scale() -> None:
    roi, px = measured("round", "plain")
    gray = gray_of(ring_frame("round", "plain"))
    mm = measure_ring(roi, 0.02, gray).values
    assert mm["outer_radius_mm"] == pytest.approx(px.values["outer_radius"] * 0.02)
    assert mm["annular_area_mm"] == pytest.approx(px.values["annular_area"] * 0.02**2)
    assert mm["outer_protrusion_mm"] == pytest.approx(px.values["outer_protrusion_px"] * 0.02)
    assert "outer_ovality_mm" not in mm and "outer_radius_mm" not in px.values


def test_more_angles_same_answer_and_deterministic() -> None:
    roi, m720 = measured("offset", "plant")
    gray = gray_of(ring_frame("offset", "plant"))
    m1440 = measure_ring(roi, None, gray, ReworkConfig(angles=1440))
    assert len(m1440.angles) == 1440
    for name in ("outer_radius", "inner_radius", "concentricity_px", "wall_min"):
        assert m1440.values[name] == pytest.approx(m720.values[name], abs=0.15), name
    again = measure_ring(roi, None, gray)
    assert again.values == m720.values


def test_unmeasurable_rings_raise_measurement_error() -> None:
    blank = np.full((1024, 1224), 18, np.uint8)
    with pytest.raises(MeasurementError):
        measure_ring(find_ring(blank))
    roi, _ = measured("round", "plain")
    with pytest.raises(MeasurementError, match="differ in size"):
        measure_ring(roi, None, np.zeros((10, 10), np.uint8))


def test_small_ring_on_small_frame() -> None:
    """Nothing assumes the plant's size: a 200 px ring on a 800x600 frame measures too."""
    spec = RingSpec(
        cx=400.2, cy=300.6, outer_a=200.0, outer_b=200.0, inner_a=120.0, inner_b=120.0, bore_dx=3.0
    )
    image = draw_ring(spec, Scene(width=800, height=600, lint=0))
    m = measure_ring(find_ring(image), None, image)
    assert m.values["outer_radius"] == pytest.approx(200.0, abs=0.3)
    assert m.values["concentricity_px"] == pytest.approx(3.0, abs=0.3)
