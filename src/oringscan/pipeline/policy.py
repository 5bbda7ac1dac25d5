"""One verdict per frame from three opinions: screening, segmentation and the rework rules.

Kept as a pure function of the stages' results and ``config.pipeline`` so the plant can read (and
test) exactly which stage wins: a defect found by segmentation (or a bite the geometry measured)
beats rework, rework beats good, and a screening flag nobody could confirm goes to a person
(``suspect``) unless the config says otherwise. A ring that cannot be measured is an ``error``:
the part was not fully inspected, so it must not pass silently.

Segmentation decides only as far as it has shown it can (:class:`DefectGate`): an instance counts
as a defect at the score calibrated on val for a precision target (per class where the data
allowed), and a segmenter that is not qualified (val AP50 below the floor, no score reaching the
precision, or no calibration at all) is treated as absent: it calls no defect, and a part screening
flagged goes to ``suspect`` whatever ``unconfirmed_flag`` says, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oringscan.config import PipelineConfig
from oringscan.roi import RingROI, RoiStatus
from oringscan.types import Instance, ReworkResult, ReworkVerdict, ScreeningResult, Verdict

NO_CALIBRATION = (
    "segmentation model not qualified: no segmentation_calibration.json next to the checkpoint "
    "(run `oringscan calibrate segmentation`, or set [pipeline] defect_min_score)"
)


@dataclass(frozen=True, slots=True)
class DefectGate:
    """Which segmented instances count as defects: a score per class, or none at all."""

    qualified: bool
    min_score: float | None = None  # for classes without their own score
    per_class: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""  # what people read: why it may not decide, or where its score comes from

    @classmethod
    def from_calibration(cls, calibration: Any, policy: PipelineConfig) -> DefectGate:
        """From a :class:`~oringscan.segmentation.calibration.SegmentationCalibration` (or None).

        An explicit ``pipeline.defect_min_score`` overrides the calibration (and lets a checkpoint
        without one decide); otherwise no calibration means not qualified.
        """
        if policy.defect_min_score is not None:
            note = f"defect score {policy.defect_min_score:g} set by [pipeline] defect_min_score"
            if calibration is not None and not calibration.qualified:
                note += f" (overrides: {calibration.summary})"
            return cls(True, float(policy.defect_min_score), {}, note)
        if calibration is None:
            return cls(False, reason=NO_CALIBRATION)
        if not calibration.qualified:
            return cls(False, reason=str(calibration.summary))
        return cls(True, float(calibration.threshold), dict(calibration.per_class), str(calibration.summary))

    def threshold(self, label: str) -> float | None:
        """Score an instance of ``label`` needs (None: it never counts)."""
        if not self.qualified:
            return None
        return self.per_class.get(label, self.min_score)

    @property
    def lowest(self) -> float | None:
        """The lowest score any class needs (what the segmenter must report down to)."""
        scores = [s for s in (self.min_score, *self.per_class.values()) if s is not None]
        return min(scores) if self.qualified and scores else None


def confident_defects(
    defects: Sequence[Instance], policy: PipelineConfig, gate: DefectGate | None = None
) -> list[Instance]:
    """The segmentation instances that count as defects (score at or above their class's score).

    Without a ``gate``, only an explicit ``policy.defect_min_score`` lets instances count.
    """
    gate = gate if gate is not None else DefectGate.from_calibration(None, policy)
    out = []
    for d in defects:
        needed = gate.threshold(d.label)
        if needed is not None and d.score >= needed:
            out.append(d)
    return out


def _defect_reason(defects: Sequence[Instance]) -> str:
    shown = ", ".join(f"{d.label} {d.score:.2f} at ({d.bbox[0]}, {d.bbox[1]})" for d in defects[:5])
    more = f" and {len(defects) - 5} more" if len(defects) > 5 else ""
    return f"segmentation found {len(defects)} defect(s): {shown}{more}"


def decide_verdict(
    roi: RingROI | None,
    screening: ScreeningResult | None,
    defects: Sequence[Instance],
    rework: ReworkResult | None,
    policy: PipelineConfig,
    gate: DefectGate | None = None,
) -> tuple[Verdict, list[str]]:
    """The frame's verdict and the reasons a person reads for it (empty for a clean good part).

    ``defects`` must already be filtered by :func:`confident_defects`. With a ``gate`` that is not
    qualified, a flagged part is ``suspect`` (nobody could confirm or clear it) and says why.
    """
    if roi is None or not roi.usable:
        why = roi.reason if roi is not None else "no ring region"
        return Verdict.ERROR, [
            f"ring not found: {why}" if roi is not None and roi.status is RoiStatus.NO_RING else why
        ]

    defect_reasons: list[str] = []
    rework_reasons: list[str] = []
    if defects:
        defect_reasons.append(_defect_reason(defects))
    if roi.status is RoiStatus.BROKEN:  # cut through: a defect whatever else was found
        defect_reasons.append(f"ring broken: {roi.reason}")
    rework_error: list[str] = []
    if rework is not None:
        if rework.verdict is ReworkVerdict.DEFECT:
            defect_reasons.extend(f"geometry: {r}" for r in rework.reasons or ["out of defect limits"])
        elif rework.verdict is ReworkVerdict.REWORK:
            rework_reasons.extend(f"geometry: {r}" for r in rework.reasons or ["out of rework limits"])
        elif rework.verdict is ReworkVerdict.ERROR and roi.status is RoiStatus.OK:
            # A ring in another status was not measured because of that status (decided below).
            rework_error.extend(f"geometry not measured: {r}" for r in rework.reasons or ["unknown problem"])

    if defect_reasons and rework_reasons:
        if policy.rework_overrides_defect:
            return Verdict.REWORK, rework_reasons + defect_reasons
        return Verdict.DEFECT, defect_reasons + rework_reasons
    if defect_reasons:
        return Verdict.DEFECT, defect_reasons
    if rework_reasons:
        return Verdict.REWORK, rework_reasons

    reasons: list[str] = []
    verdict = Verdict.GOOD
    flagged_by = ""
    if screening is not None and screening.flagged:
        # Texture score over its threshold, or the ring-shape screen's measured bulge (or both).
        causes: list[str] = []
        if screening.score > screening.threshold or not screening.shape_reason:
            causes.append(f"score {screening.score:.4g} > threshold {screening.threshold:.4g}")
        if screening.shape_reason:
            causes.append(screening.shape_reason)
        flagged_by = f"screening flagged it ({'; '.join(causes)})"
    if screening is not None and screening.flagged and gate is not None and not gate.qualified:
        reasons.append(f"{flagged_by}; {gate.reason}, so it confirmed nothing: a person looks")
        verdict = Verdict.SUSPECT
    elif screening is not None and screening.flagged:
        reasons.append(f"{flagged_by} but segmentation found no defect")
        verdict = Verdict(policy.unconfirmed_flag)
    elif screening is not None and screening.marginal:
        reasons.append(
            f"screening score {screening.score:.4g} is in the marginal band "
            f"just below threshold {screening.threshold:.4g}"
        )
        verdict = Verdict(policy.marginal_verdict)
    if roi.status is RoiStatus.TOUCHES_EDGE:
        edge = f"{roi.reason}: the whole ring is not in view, so its geometry was not measured"
        return Verdict.ERROR, [edge, *reasons]
    if rework_error:
        return Verdict.ERROR, rework_error + reasons
    return verdict, reasons
