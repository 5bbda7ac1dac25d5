"""Memory of `evaluate pipeline` (issue 17, OPS): what each frame's kept result may hold.

The report of an evaluation reads verdicts, scores, reasons and rework only; a frame's result is
kept for it after its overlay is written, so the pixels (anomaly maps, defect mask crops) must go:
with an unsure segmenter they were ~1 MB per frame (README "Memory is bounded by design").
"""

from __future__ import annotations

import tracemalloc

import numpy as np

from oringscan.pipeline.evaluate import _without_pixels
from oringscan.types import InspectionResult, Instance, ScreeningResult, Verdict


def _frame_result(i: int) -> InspectionResult:
    """What an unsure segmenter leaves on a frame: 100 defects, each a 96 px mask crop, plus
    9 tile-size anomaly maps."""
    rng = np.random.default_rng(i)
    defects = [
        Instance("pit", 0.51, rng.random((96, 96)) > 0.5, (int(x), int(x))) for x in rng.integers(0, 500, 100)
    ]
    screening = ScreeningResult(
        0.9, 0.5, True, False, [], anomaly_maps=[np.zeros((160, 160), np.float32) for _ in range(9)]
    )
    return InspectionResult(
        f"frame_{i}.png",
        Verdict.DEFECT,
        ["pit"],
        oring_type="model1",
        screening=screening,
        defects=defects,
        timings_ms={"total": 1.0},
    )


def test_kept_results_drop_pixels_but_not_what_the_report_reads() -> None:
    kept = _without_pixels(_frame_result(0))
    assert kept.defects == [] and kept.screening is not None and kept.screening.anomaly_maps is None
    assert kept.verdict is Verdict.DEFECT and kept.reasons == ["pit"] and kept.screen_score == 0.9


def test_memory_of_kept_results_does_not_grow_with_the_frames_pixels() -> None:
    """60 frames' kept results stay under 2 MB in all; the crops alone are ~55 MB."""
    tracemalloc.start()
    try:
        kept = []
        for i in range(60):
            kept.append(_without_pixels(_frame_result(i)))
        current, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(kept) == 60
    assert current < 2 * 2**20, current
