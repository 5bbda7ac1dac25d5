"""One verdict per frame from three opinions: screening, segmentation and the rework rules.

Kept as a pure function of the stages' results and ``config.pipeline`` so the plant can read (and
test) exactly which stage wins: a defect found by segmentation (or a bite the geometry measured)
beats rework, rework beats good, and a screening flag nobody could confirm goes to a person
(``suspect``) unless the config says otherwise. A ring that cannot be measured is an ``error``:
the part was not fully inspected, so it must not pass silently.
"""

from __future__ import annotations

from collections.abc import Sequence

from oringscan.config import PipelineConfig
from oringscan.roi import RingROI, RoiStatus
from oringscan.types import Instance, ReworkResult, ReworkVerdict, ScreeningResult, Verdict


def confident_defects(defects: Sequence[Instance], policy: PipelineConfig) -> list[Instance]:
    """The segmentation instances the policy counts as defects (score at or above the minimum)."""
    return [d for d in defects if d.score >= policy.defect_min_score]


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
) -> tuple[Verdict, list[str]]:
    """The frame's verdict and the reasons a person reads for it (empty for a clean good part).

    ``defects`` must already be filtered by :func:`confident_defects`.
    """
    if roi is None or not roi.usable:
        why = roi.reason if roi is not None else "no ring region"
        return Verdict.ERROR, [f"ring not found: {why}" if roi is not None and roi.status is RoiStatus.NO_RING else why]

    defect_reasons: list[str] = []
    rework_reasons: list[str] = []
    if defects:
        defect_reasons.append(_defect_reason(defects))
    if roi.status is RoiStatus.BROKEN and (rework is None or rework.verdict is not ReworkVerdict.DEFECT):
        defect_reasons.append(f"ring broken: {roi.reason}")
    rework_error: list[str] = []
    if rework is not None:
        if rework.verdict is ReworkVerdict.DEFECT:
            defect_reasons.extend(f"geometry: {r}" for r in rework.reasons or ["out of defect limits"])
        elif rework.verdict is ReworkVerdict.REWORK:
            rework_reasons.extend(f"geometry: {r}" for r in rework.reasons or ["out of rework limits"])
        elif rework.verdict is ReworkVerdict.ERROR and roi.status is not RoiStatus.BROKEN:
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
    if screening is not None and screening.flagged:
        reasons.append(
            f"screening flagged it (score {screening.score:.4g} > threshold {screening.threshold:.4g}) "
            "but segmentation found no defect"
        )
        verdict = Verdict(policy.unconfirmed_flag)
    elif screening is not None and screening.marginal:
        reasons.append(
            f"screening score {screening.score:.4g} is in the marginal band just below threshold {screening.threshold:.4g}"
        )
        verdict = Verdict(policy.marginal_verdict)
    if rework_error:
        return Verdict.ERROR, rework_error + reasons
    if roi.status is RoiStatus.TOUCHES_EDGE:
        return Verdict.ERROR, [f"{roi.reason}: the whole ring is not in view"] + reasons
    return verdict, reasons
