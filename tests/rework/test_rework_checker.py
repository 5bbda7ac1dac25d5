"""Verdicts: every metric listed, rules fire, bad rings get a verdict and a reason, never an exception."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support.rework import SCENES, SPECS, gray_of, measured, ring_frame

from oringscan.rework_rules import ReworkChecker, Rule, RulesFile, RulesFileError, save_rules
from oringscan.rework_rules.metrics import METRICS
from oringscan.rework_rules.vis import draw_measurement, out_of_limit_arcs
from oringscan.synth.exact import RingSpec, Scene, draw_ring
from oringscan.types import ReworkVerdict


def _rules() -> RulesFile:
    """Limits that a round, centred ring passes (like a calibration would give)."""
    return RulesFile(
        rule=[
            Rule(metric="outer_radius", lower=640, upper=660, message="outer radius out of tolerance"),
            Rule(metric="concentricity_px", upper=5.0, message="bore off-centre"),
            Rule(metric="outer_ovality", upper=1.02),
            Rule(metric="outer_protrusion_px", upper=3.0, message="excess flash on the outer edge"),
            Rule(metric="inner_protrusion_px", upper=3.0),
            Rule(
                metric="outer_indentation_px", upper=3.0, verdict="defect", message="bite in the outer edge"
            ),
            Rule(metric="wall_min", lower=250.0),
        ]
    )


@pytest.fixture(scope="module")
def checker() -> ReworkChecker:
    return ReworkChecker(_rules())


def test_good_ring_passes_and_lists_every_metric(checker: ReworkChecker) -> None:
    result = checker.check(ring_frame("round", "plant"))
    assert result.verdict is ReworkVerdict.PASS, result.reasons
    assert result.reasons == [] and result.fired == []
    assert set(METRICS) <= set(result.metrics)
    radius = next(c for c in result.checks if c.name == "outer_radius")
    assert (radius.lower, radius.upper, radius.fired, radius.unit) == (640, 660, False, "px")
    assert radius.value == pytest.approx(SPECS["round"].outer_a, abs=0.3)
    unruled = next(c for c in result.checks if c.name == "wall_ratio")
    assert unruled.lower is None and unruled.upper is None and not unruled.fired


@pytest.mark.parametrize(
    ("spec", "expected_fired", "verdict"),
    [
        ("offset", {"concentricity_px", "wall_min"}, ReworkVerdict.REWORK),
        ("oval", {"outer_ovality"}, ReworkVerdict.REWORK),
        ("flash_outer", {"outer_protrusion_px"}, ReworkVerdict.REWORK),
        ("flash_inner_long", {"inner_protrusion_px"}, ReworkVerdict.REWORK),
        ("bite", {"outer_indentation_px"}, ReworkVerdict.DEFECT),
    ],
)
def test_rework_and_defect_geometry_fires_its_rule(
    checker: ReworkChecker, spec: str, expected_fired: set[str], verdict: ReworkVerdict
) -> None:
    roi, m = measured(spec)
    result = checker.judge(m)
    assert result.verdict is verdict
    assert expected_fired <= set(result.fired)
    assert len(result.reasons) == len(result.fired)
    name = sorted(expected_fired)[0]
    assert any(name in r for r in result.reasons)


def test_defect_beats_rework_and_reasons_say_why(checker: ReworkChecker) -> None:
    _, m = measured("bite")
    values = dict(m.values, concentricity_px=9.0)  # also off-centre
    m2 = type(m)(values, m.origin, m.angles, m.outer, m.inner, m.wall)
    result = checker.judge(m2)
    assert result.verdict is ReworkVerdict.DEFECT
    assert any(
        r.startswith("bite in the outer edge: outer_indentation_px = ") and "> upper limit 3" in r
        for r in result.reasons
    )
    assert any(
        r.startswith("bore off-centre: concentricity_px = 9 px > upper limit 5") for r in result.reasons
    )


def test_check_accepts_a_found_roi_and_colour_frames(checker: ReworkChecker) -> None:
    roi, _ = measured("round", "plant")
    assert checker.check(roi, gray_of(ring_frame("round", "plant"))).verdict is ReworkVerdict.PASS
    # Without the picture only the mask is measured: fine on clean rings...
    plain_roi, _ = measured("round", "plain")
    assert checker.check(plain_roi).verdict is ReworkVerdict.PASS
    # ...but a dark blotch at the edge of the plant scene notches the mask (hence: pass the gray).
    assert checker.check(roi).verdict is not ReworkVerdict.PASS
    colour = ring_frame("round", "color")
    assert colour.ndim == 3
    assert checker.check(colour).verdict is ReworkVerdict.PASS


def _two_rings() -> np.ndarray:
    image = np.full((2048, 2448), 18, np.uint8)
    for cx in (600, 1850):
        cv2.circle(image, (cx, 1024), 450, 170, -1)
        cv2.circle(image, (cx, 1024), 270, 18, -1)
    return image


def _broken() -> np.ndarray:
    image = draw_ring(RingSpec(), Scene(lint=0))
    cv2.rectangle(image, (1224 - 15, 1024 - 700), (1224 + 15, 1024 - 300), 18, -1)  # cut through the wall
    return image


@pytest.mark.parametrize(
    ("make", "verdict", "words"),
    [
        (lambda: np.full((2048, 2448), 18, np.uint8), ReworkVerdict.ERROR, "no ring"),
        (_two_rings, ReworkVerdict.ERROR, "two rings"),
        (lambda: draw_ring(RingSpec(cx=300.0), Scene(lint=0)), ReworkVerdict.ERROR, "touches the frame edge"),
        (_broken, ReworkVerdict.ERROR, "broken through"),  # the pipeline policy makes it a defect
        (lambda: np.zeros((2048, 2448), np.float32), ReworkVerdict.ERROR, "not an 8-bit"),
        (lambda: np.zeros((0, 0), np.uint8), ReworkVerdict.ERROR, ""),
    ],
    ids=["blank", "two-rings", "edge", "broken", "float", "empty"],
)
def test_unmeasurable_frames_get_a_verdict_not_an_exception(
    checker: ReworkChecker, make, verdict: ReworkVerdict, words: str
) -> None:  # noqa: ANN001
    report = checker.inspect(make())
    assert report.result.verdict is verdict
    assert len(report.result.reasons) == 1 and words in report.result.reasons[0]
    assert report.measurement is None
    # The rules are still listed, unmeasured.
    assert {c.name for c in report.result.checks} == {r.metric for r in checker.rules.rule}
    assert all(c.value is None for c in report.result.checks)
    # And a picture can still be drawn.
    image = make()
    if image.ndim == 2 and image.dtype == np.uint8 and image.size:
        assert draw_measurement(image, report).shape == (*image.shape, 3)


def test_millimetre_rules_need_a_scale(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "rules.toml"
    save_rules(path, RulesFile(rule=[Rule(metric="outer_radius_mm", lower=12.0, upper=14.0)]))
    with pytest.raises(RulesFileError, match="mm_per_px"):
        ReworkChecker.load(path)
    checker = ReworkChecker.load(path, mm_per_px=0.02)
    result = checker.check(ring_frame("round", "plain"))
    check = next(c for c in result.checks if c.name == "outer_radius_mm")
    assert check.unit == "mm" and check.value == pytest.approx(650.3 * 0.02, abs=0.01)
    assert result.verdict is ReworkVerdict.PASS


def test_picture_marks_the_out_of_limit_arc(checker: ReworkChecker) -> None:
    gray = gray_of(ring_frame("flash_outer"))
    report = checker.inspect(gray)
    assert report.result.verdict is ReworkVerdict.REWORK
    arcs = out_of_limit_arcs(report.measurement, report.result.checks)
    flash = SPECS["flash_outer"].arcs[0]
    marked = np.degrees(report.measurement.angles[arcs["outer"]])
    assert len(marked) > 0 and not arcs["inner"].any()
    assert marked.min() >= flash.start_deg - 1 and marked.max() <= flash.start_deg + flash.span_deg + 1
    picture = draw_measurement(gray, report, "flash.bmp")
    assert picture.shape == (*gray.shape, 3)
    # Thick red along the flash arc.
    t = np.radians(flash.start_deg + flash.span_deg / 2)
    r = report.measurement.outer.smooth[int(round((flash.start_deg + flash.span_deg / 2) * 2))]
    x = int(round(report.measurement.origin[0] + r * np.cos(t)))
    y = int(round(report.measurement.origin[1] + r * np.sin(t)))
    b, g, red = picture[y, x]
    assert red > 200 and g < 100 and b < 100


def test_plant_scenes_all_pass(checker: ReworkChecker) -> None:
    for scene in SCENES:
        assert checker.check(ring_frame("round", scene)).verdict is ReworkVerdict.PASS, scene
