"""`oringscan evaluate pipeline`: the ring-shape screen's share of the line's false-reject budget
(issue 11), expected against measured, in the same table as the other stages."""

from __future__ import annotations

import numpy as np
import pytest

from oringscan.screening.shape import calibrate_shape_screen, flag_rates
from oringscan.types import ReworkResult, ReworkVerdict, ScreeningResult, Verdict

PASS = ReworkResult(ReworkVerdict.PASS, [])


def _good_scores(n: int, seed: int) -> np.ndarray:
    """Good frames' shape scores: the measurement's noise, ~0.3 px."""
    return np.abs(np.random.default_rng(seed).normal(0.3, 0.1, n))


def test_evaluate_reports_the_shape_screens_share_expected_against_measured(tiny_models) -> None:  # noqa: ANN001
    """With a shape screen in the model, the budget table has its row: its share comes out of rework's
    (the rules' row keeps the rest, 1.5 %), its expectation is the calibration's, and a
    good part it flagged counts there, not as a texture flag."""
    from oringscan.budget import split_false_reject_budget
    from oringscan.pipeline import Inspector
    from oringscan.pipeline.evaluate import false_reject_report, false_reject_table
    from oringscan.types import InspectionResult

    inspector = Inspector.load(tiny_models.config, tiny_models.output_root, tiny_models.model)
    plain = false_reject_report(inspector, [("good", InspectionResult("f", Verdict.GOOD))])
    assert "shape" not in plain["stages"]  # the tiny model has no shape screen: no row
    assert plain["stages"]["rework"]["budget"] == pytest.approx(0.02)

    scores = _good_scores(40, 7)
    shape = calibrate_shape_screen(scores, [f"f{i}" for i in range(40)], 0.005, 2.5, lint_px=12.0)
    inspector.screening.meta.calibration["shape_screen"] = shape.to_json()

    def part(texture: bool = False, bulge: bool = False) -> InspectionResult:
        reason = "ring shape: material 20.0 px proud of the outer edge at (1, 1)" if bulge else None
        screen = ScreeningResult(
            2.0 if texture else 0.5, 1.0, texture or bulge, False, [], shape_reason=reason
        )
        verdict = Verdict.SUSPECT if texture or bulge else Verdict.GOOD
        return InspectionResult("frame", verdict, screening=screen, rework=PASS)

    good = [part(bulge=True), part(texture=True, bulge=True), part(texture=True)] + [
        part() for _ in range(37)
    ]
    report = false_reject_report(inspector, [("good", r) for r in good])
    stages = report["stages"]
    assert list(stages) == ["screening", "shape", "review", "rework", "line"]
    row = stages["shape"]
    assert (
        row["meaning"] == "ring-shape screen" and row["count"] == 2 and row["measured"] == pytest.approx(0.05)
    )
    assert stages["screening"]["count"] == 2 and stages["line"]["count"] == 3
    assert row["budget"] == pytest.approx(flag_rates(tiny_models.config)[1])
    shares = split_false_reject_budget(tiny_models.config)
    assert stages["rework"]["budget"] == pytest.approx(shares.rework - row["budget"]) == pytest.approx(0.015)
    total = sum(stages[s]["budget"] for s in ("screening", "shape", "review", "rework"))
    assert total == pytest.approx(stages["line"]["budget"])
    assert row["expected"] == shape.info["expected_false_reject_rate"] == 0.0
    assert row["expected_interval"] == shape.info["expected_false_reject_interval"]
    low, high = row["measured_interval"]
    assert low < 0.05 < high and row["consistent"] is False  # 2 of 40 against 0 expected: off, said so
    assert false_reject_table(report).row_count == 5
