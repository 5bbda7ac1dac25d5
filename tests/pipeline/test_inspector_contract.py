"""The Inspector runs on anything that keeps the stage Protocols: here, fakes that record what they
were asked. The real ROI, tiling and verdict policy run; only the three models are stand-ins, so
these tests pin what the Inspector asks of each stage and what it does with the answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import pytest

from oringscan.config import Config
from oringscan.errors import OringscanError
from oringscan.pipeline.inspector import Inspector, ReworkStage, ScreeningStage, SegmentationStage
from oringscan.rework_rules.checker import ReworkReport
from oringscan.roi import RingROI
from oringscan.segmentation.calibration import SegmentationCalibration
from oringscan.types import (
    Instance,
    ReworkResult,
    ReworkVerdict,
    ScreeningResult,
    Tile,
    TileScore,
    Verdict,
)

SIZE = (612, 512)


def ring_frame(seed: int = 0) -> np.ndarray:
    """A light mottled ring on a dark belt at quarter size."""
    rng = np.random.default_rng(seed)
    image = np.full((SIZE[1], SIZE[0]), 18, np.float32)
    cv2.circle(image, (306, 256), 165, 165.0, -1)
    cv2.circle(image, (306, 256), 98, 18.0, -1)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def config() -> Config:
    cfg = Config()
    cfg.frame.width, cfg.frame.height = SIZE
    cfg.tiling.tile_size, cfg.tiling.overlap = 160, 20
    cfg.pipeline.save_overlays = False
    return cfg


class FakeScreening:
    """Scores tile ``i`` as ``scores[i]`` (the rest 0.1); threshold 1.0, marginal band from 0.9."""

    def __init__(self, scores: dict[int, float]) -> None:
        self.scores = scores
        self.calls: list[bool] = []
        self.shape_screen = None  # no ring-shape screen fitted

    def score_tiles(self, tiles: list[Tile], with_maps: bool = False) -> ScreeningResult:
        self.calls.append(with_maps)
        scores = [self.scores.get(i, 0.1) for i in range(len(tiles))]
        frame = max(scores)
        return ScreeningResult(
            score=frame,
            threshold=1.0,
            flagged=frame > 1.0,
            marginal=0.9 < frame <= 1.0,
            tiles=[TileScore(t.box, s, s > 1.0) for t, s in zip(tiles, scores, strict=True)],
            anomaly_maps=[np.zeros(t.image.shape, np.float32) for t in tiles] if with_maps else None,
            marginal_threshold=0.9,
        )

    def describe(self) -> dict[str, Any]:
        return {"backbone": "fake-screening"}


class FakeSegmenter:
    """Finds one 'hole' in the middle of the first tile it is given, scored ``score``."""

    def __init__(self, calibration: SegmentationCalibration | None, score: float = 0.8) -> None:
        self.calibration = calibration
        self.score = score
        self.seen: list[list[Tile]] = []
        self.reported_from: float | None = None

    @property
    def needs_anomaly_maps(self) -> bool:
        return False

    def predict_tiles(
        self, tiles: Sequence[Tile], batch_size: int = 4, *, anomaly_maps: Sequence[np.ndarray] | None = None
    ) -> list[Instance]:
        self.seen.append(list(tiles))
        box = tiles[0].box
        return [Instance("hole", self.score, np.ones((6, 6), bool), (box.x + box.w // 2, box.y + box.h // 2))]

    def report_scores_from(self, score: float) -> None:
        self.reported_from = score

    def describe(self) -> dict[str, Any]:
        return {"backbone": "fake-segmenter"}


class FakeRework:
    """Passes every ring it is given, or raises what it is told to."""

    def __init__(self, raises: Exception | None = None) -> None:
        self.raises = raises
        self.rois: list[RingROI] = []

    def inspect(self, image_or_roi: np.ndarray | RingROI, gray: np.ndarray | None = None) -> ReworkReport:
        assert isinstance(image_or_roi, RingROI) and gray is not None
        self.rois.append(image_or_roi)
        if self.raises is not None:
            raise self.raises
        return ReworkReport(ReworkResult(ReworkVerdict.PASS, []), None, image_or_roi)


def qualified() -> SegmentationCalibration:
    return SegmentationCalibration(True, "", 0.6, ap50=0.8, precision=0.95, recall=0.7)


def not_learned() -> SegmentationCalibration:
    return SegmentationCalibration(False, "val AP50 0.02 < 0.30", None)


def inspector(
    screening: ScreeningStage, segmenter: SegmentationStage, rework: ReworkStage | None = None
) -> Inspector:
    return Inspector(config(), "model1", screening, segmenter, rework or FakeRework())


def test_flagged_tile_only_is_segmented_and_confirmed() -> None:
    screening, segmenter, rework = FakeScreening({2: 3.0}), FakeSegmenter(qualified()), FakeRework()
    result = inspector(screening, segmenter, rework).inspect_array(ring_frame(), "f.bmp")
    assert result.verdict is Verdict.DEFECT, result.reasons
    assert len(segmenter.seen) == 1 and len(segmenter.seen[0]) == 1  # the one flagged tile, no other
    flagged_box = result.screening.tiles[2].box
    assert segmenter.seen[0][0].box == flagged_box
    assert [d.label for d in result.defects] == ["hole"]
    assert len(rework.rois) == 1 and rework.rois[0].ok
    assert segmenter.reported_from == pytest.approx(0.6)  # told to report down to the gate's score
    assert screening.calls == [False]  # no overlays, no anomaly-guided segmenter: no maps


def test_marginal_frame_segments_the_band_and_clean_frame_nothing() -> None:
    segmenter = FakeSegmenter(qualified(), score=0.3)  # below the calibrated 0.6: does not count
    result = inspector(FakeScreening({0: 0.95, 1: 0.92}), segmenter).inspect_array(ring_frame(), "m.bmp")
    assert [len(s) for s in segmenter.seen] == [2]  # both tiles above the band's lower edge (0.9)
    assert result.verdict is Verdict(config().pipeline.marginal_verdict) and not result.defects

    clean = FakeSegmenter(qualified())
    result = inspector(FakeScreening({}), clean).inspect_array(ring_frame(), "g.bmp")
    assert result.verdict is Verdict.GOOD and clean.seen == []


def test_unqualified_segmenter_is_never_asked_and_the_part_goes_to_a_person() -> None:
    segmenter = FakeSegmenter(not_learned())
    checked = inspector(FakeScreening({1: 5.0}), segmenter)
    result = checked.inspect_array(ring_frame(), "s.bmp")
    assert result.verdict is Verdict.SUSPECT and segmenter.seen == []
    assert "val AP50 0.02 < 0.30" in " ".join(result.reasons)
    assert checked.segmentation_notice and segmenter.reported_from is None


def test_model_versions_come_from_the_stages() -> None:
    versions = inspector(FakeScreening({}), FakeSegmenter(qualified())).model_versions()
    assert versions["screening"] == {"backbone": "fake-screening"}
    assert versions["segmentation"]["backbone"] == "fake-segmenter"
    assert versions["segmentation"]["qualified"] is True and versions["segmentation"]["defect_score"] == 0.6


def test_a_failing_rework_stage_is_an_unmeasured_geometry_not_a_crash() -> None:
    rework = FakeRework(raises=OringscanError("rework_rules.toml: rule 3 has no limits"))
    result = inspector(FakeScreening({}), FakeSegmenter(qualified()), rework).inspect_array(
        ring_frame(), "r.bmp"
    )
    assert result.verdict is Verdict.ERROR
    assert result.reasons[0] == "geometry not measured: rework_rules.toml: rule 3 has no limits"


def test_no_ring_never_reaches_the_stages() -> None:
    screening, segmenter, rework = FakeScreening({}), FakeSegmenter(qualified()), FakeRework()
    blank = np.full((SIZE[1], SIZE[0]), 18, np.uint8)
    result = inspector(screening, segmenter, rework).inspect_array(blank, "blank.bmp")
    assert result.verdict is Verdict.ERROR and "ring not found" in result.reasons[0]
    assert screening.calls == [] and segmenter.seen == [] and rework.rois == []
