"""The verdict policy: which stage wins, the marginal band, and what people read as the reason."""

from __future__ import annotations

import numpy as np
import pytest

from oringscan.config import PipelineConfig
from oringscan.pipeline.policy import DefectGate, confident_defects, decide_verdict
from oringscan.roi import RingROI, RoiStatus
from oringscan.types import (
    Instance,
    MetricCheck,
    ReworkResult,
    ReworkVerdict,
    ScreeningResult,
    TileBox,
    TileScore,
    Verdict,
)


def roi(status: RoiStatus = RoiStatus.OK, reason: str = "") -> RingROI:
    mask = np.zeros((64, 64), bool)
    mask[8:56, 8:56] = True
    usable = status in (RoiStatus.OK, RoiStatus.BROKEN, RoiStatus.TOUCHES_EDGE)
    return RingROI(
        status,
        reason,
        "light",
        100.0,
        mask if usable else None,
        None,
        None,
        (8, 8, 48, 48) if usable else None,
    )


def screening(score: float, threshold: float = 1.0, marginal_from: float = 0.9) -> ScreeningResult:
    flagged = score > threshold
    return ScreeningResult(
        score=score,
        threshold=threshold,
        flagged=flagged,
        marginal=(not flagged) and score > marginal_from,
        tiles=[TileScore(TileBox(0, 0, 32, 32), score, flagged)],
    )


def defect(score: float = 0.9, label: str = "defect") -> Instance:
    return Instance(label, score, np.ones((3, 4), bool), (10, 20))


def rework(verdict: ReworkVerdict, reason: str = "wall_ratio 1.4 > 1.2") -> ReworkResult:
    fired = verdict in (ReworkVerdict.REWORK, ReworkVerdict.DEFECT)
    return ReworkResult(
        verdict,
        [reason] if verdict is not ReworkVerdict.PASS else [],
        [MetricCheck("wall_ratio", 1.4, None, 1.2, fired, str(verdict))],
    )


PASS = ReworkResult(ReworkVerdict.PASS, [], [MetricCheck("wall_ratio", 1.05, None, 1.2)])


def test_clean_part_is_good_without_reasons():
    assert decide_verdict(roi(), screening(0.5), [], PASS, PipelineConfig()) == (Verdict.GOOD, [])


def test_confirmed_defect_names_label_score_and_place():
    verdict, reasons = decide_verdict(
        roi(), screening(2.0), [defect(0.87, "scratch")], PASS, PipelineConfig()
    )
    assert verdict is Verdict.DEFECT
    assert "scratch 0.87 at (10, 20)" in reasons[0]


def test_unconfirmed_flag_is_suspect_or_good_as_configured():
    verdict, reasons = decide_verdict(roi(), screening(2.0), [], PASS, PipelineConfig())
    assert verdict is Verdict.SUSPECT and "segmentation found no defect" in reasons[0]
    verdict, reasons = decide_verdict(
        roi(), screening(2.0), [], PASS, PipelineConfig(unconfirmed_flag="good")
    )
    assert verdict is Verdict.GOOD and reasons  # the note stays for the record


def test_marginal_band():
    verdict, reasons = decide_verdict(roi(), screening(0.95), [], PASS, PipelineConfig())
    assert verdict is Verdict.SUSPECT and "marginal" in reasons[0]
    assert (
        decide_verdict(roi(), screening(0.95), [], PASS, PipelineConfig(marginal_verdict="good"))[0]
        is Verdict.GOOD
    )


def test_defect_beats_rework_unless_configured():
    both = (roi(), screening(2.0), [defect()], rework(ReworkVerdict.REWORK))
    verdict, reasons = decide_verdict(*both, PipelineConfig())
    assert verdict is Verdict.DEFECT and any("wall_ratio" in r for r in reasons)
    assert decide_verdict(*both, PipelineConfig(rework_overrides_defect=True))[0] is Verdict.REWORK


def test_rework_beats_suspect_and_good():
    assert (
        decide_verdict(roi(), screening(0.2), [], rework(ReworkVerdict.REWORK), PipelineConfig())[0]
        is Verdict.REWORK
    )
    assert (
        decide_verdict(roi(), screening(2.0), [], rework(ReworkVerdict.REWORK), PipelineConfig())[0]
        is Verdict.REWORK
    )


def test_geometry_defect_is_a_defect():
    verdict, reasons = decide_verdict(
        roi(), screening(0.2), [], rework(ReworkVerdict.DEFECT, "bite 9 px"), PipelineConfig()
    )
    assert verdict is Verdict.DEFECT and reasons == ["geometry: bite 9 px"]


@pytest.mark.parametrize("status", [RoiStatus.NO_RING, RoiStatus.TWO_RINGS])
def test_no_usable_ring_is_an_error(status: RoiStatus):
    verdict, reasons = decide_verdict(roi(status, "two ring-sized objects"), None, [], None, PipelineConfig())
    assert verdict is Verdict.ERROR and reasons


def test_broken_ring_is_a_defect_once():
    """The ring status decides (here alone): the checker only says it could not measure."""
    broken = roi(RoiStatus.BROKEN, "no closed bore")
    unmeasured = rework(ReworkVerdict.ERROR, "the ring is broken through (no closed bore)")
    verdict, reasons = decide_verdict(broken, screening(0.2), [], unmeasured, PipelineConfig())
    assert verdict is Verdict.DEFECT and reasons == ["ring broken: no closed bore"]
    assert decide_verdict(broken, screening(0.2), [], None, PipelineConfig())[0] is Verdict.DEFECT


def test_unmeasurable_geometry_is_an_error_unless_a_defect_was_found():
    edge = roi(RoiStatus.TOUCHES_EDGE, "the ring touches the frame edge")
    err = ReworkResult(ReworkVerdict.ERROR, ["the ring touches the frame edge"])
    verdict, reasons = decide_verdict(edge, screening(0.2), [], err, PipelineConfig())
    assert verdict is Verdict.ERROR and "not in view" in reasons[0] and "not measured" in reasons[0]
    assert decide_verdict(edge, screening(2.0), [defect()], err, PipelineConfig())[0] is Verdict.DEFECT


def test_low_score_instances_do_not_count():
    policy = PipelineConfig(defect_min_score=0.6)
    kept = confident_defects([defect(0.59), defect(0.6), defect(0.95)], policy)
    assert [d.score for d in kept] == [0.6, 0.95]


# --- a segmenter decides only as far as it has shown it can (issue 11) ----------------------------


class Calibration:
    """What segmentation/calibration.py stores (the policy reads only these fields)."""

    def __init__(
        self, qualified: bool, threshold: float | None = None, per_class: dict | None = None, reason: str = ""
    ) -> None:
        self.qualified, self.threshold, self.per_class = qualified, threshold, per_class or {}
        self.summary = (
            f"segmentation model not qualified: {reason}" if not qualified else "segmentation qualified"
        )


NOT_LEARNED = Calibration(False, reason="val AP50 0.02 < 0.30")
LEARNED = Calibration(True, 0.7, {"scratch": 0.85})


def test_an_unqualified_or_uncalibrated_segmenter_counts_no_defect():
    for calibration in (NOT_LEARNED, None):
        gate = DefectGate.from_calibration(calibration, PipelineConfig())
        assert not gate.qualified and gate.lowest is None
        assert confident_defects([defect(0.99), defect(0.51)], PipelineConfig(), gate) == []
    assert "val AP50 0.02 < 0.30" in DefectGate.from_calibration(NOT_LEARNED, PipelineConfig()).reason
    assert "calibrate segmentation" in DefectGate.from_calibration(None, PipelineConfig()).reason
    assert confident_defects([defect(0.99)], PipelineConfig()) == []  # no gate, no explicit score: none


def test_calibrated_scores_per_class_and_the_explicit_override():
    gate = DefectGate.from_calibration(LEARNED, PipelineConfig())
    found = [defect(0.72, "hole"), defect(0.69, "hole"), defect(0.8, "scratch"), defect(0.86, "scratch")]
    assert [(d.label, d.score) for d in confident_defects(found, PipelineConfig(), gate)] == [
        ("hole", 0.72),
        ("scratch", 0.86),
    ]
    assert gate.lowest == 0.7
    override = DefectGate.from_calibration(NOT_LEARNED, PipelineConfig(defect_min_score=0.5))
    assert override.qualified and override.min_score == 0.5 and "overrides" in override.reason
    assert DefectGate.from_calibration(None, PipelineConfig(defect_min_score=0.5)).qualified


UNQUALIFIED = DefectGate.from_calibration(NOT_LEARNED, PipelineConfig())


@pytest.mark.parametrize(
    ("screen", "rework_result", "policy", "expected", "words"),
    [
        # flagged: nobody confirmed or cleared it -> a person looks, whatever unconfirmed_flag says
        (
            2.0,
            PASS,
            PipelineConfig(),
            Verdict.SUSPECT,
            "segmentation model not qualified: val AP50 0.02 < 0.30",
        ),
        (2.0, PASS, PipelineConfig(unconfirmed_flag="good"), Verdict.SUSPECT, "not qualified"),
        # marginal and clean parts: screening's call, as configured
        (0.95, PASS, PipelineConfig(), Verdict.SUSPECT, "marginal"),
        (0.95, PASS, PipelineConfig(marginal_verdict="good"), Verdict.GOOD, "marginal"),
        (0.5, PASS, PipelineConfig(), Verdict.GOOD, None),
        # geometry still decides rework and bites
        (2.0, rework(ReworkVerdict.REWORK), PipelineConfig(), Verdict.REWORK, "wall_ratio"),
        (
            0.5,
            rework(ReworkVerdict.DEFECT, "bite 9 px"),
            PipelineConfig(),
            Verdict.DEFECT,
            "geometry: bite 9 px",
        ),
    ],
)
def test_policy_with_an_unqualified_segmenter(screen, rework_result, policy, expected, words):
    verdict, reasons = decide_verdict(roi(), screening(screen), [], rework_result, policy, UNQUALIFIED)
    assert verdict is expected, reasons
    if words is None:
        assert reasons == []
    else:
        assert words in reasons[0]
