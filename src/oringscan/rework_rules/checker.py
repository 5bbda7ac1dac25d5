"""A frame's geometry against the rules file: every metric, its limits, and a verdict with reasons."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from oringscan.config import ReworkConfig, RoiConfig

if TYPE_CHECKING:
    from oringscan.config import Config
    from oringscan.workspace import TypeWorkspace
from oringscan.rework_rules.measure import MeasurementError, RingMeasurement, measure_ring
from oringscan.rework_rules.metrics import ALL_METRICS, MM_METRICS, unit_of
from oringscan.rework_rules.rules import Rule, RulesFile, RulesFileError, load_rules
from oringscan.roi import RingROI, RoiStatus, find_ring
from oringscan.types import MetricCheck, ReworkResult, ReworkVerdict

log = logging.getLogger(__name__)

_ROI_REASONS = {
    RoiStatus.NO_RING: "no ring in the frame",
    RoiStatus.TWO_RINGS: "two rings in the frame",
    RoiStatus.TOUCHES_EDGE: "the ring touches the frame edge, so it cannot be measured whole",
    RoiStatus.BROKEN: "the ring is broken through (no closed bore)",
}


@dataclass(slots=True)
class ReworkReport:
    """The result plus what produced it (for pictures and debugging)."""

    result: ReworkResult
    measurement: RingMeasurement | None = None
    roi: RingROI | None = None


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return image


class ReworkChecker:
    """Rules of one o-ring type, ready to check frames."""

    def __init__(
        self,
        rules: RulesFile,
        path: Path | None = None,
        mm_per_px: float | None = None,
        config: ReworkConfig | None = None,
        roi_config: RoiConfig | None = None,
    ) -> None:
        self.rules = rules
        self.path = path
        self.mm_per_px = mm_per_px
        self.config = config or ReworkConfig()
        self.roi_config = roi_config or RoiConfig()
        needs_mm = sorted({r.metric for r in rules.rule if r.metric in MM_METRICS})
        if needs_mm and not mm_per_px:
            where = path if path is not None else Path("<rules>")
            raise RulesFileError(
                where,
                f"rules use millimetre metrics ({', '.join(needs_mm)}) "
                "but no mm_per_px is configured for this o-ring type",
            )

    @classmethod
    def from_config(
        cls, config: Config, workspace: TypeWorkspace, version: str | None = None
    ) -> ReworkChecker:
        """The type's rules file with its scale and the config's measuring settings."""
        return cls.load(
            workspace.models_for(version).rework_rules,
            mm_per_px=config.oring_type(workspace.oring_type).mm_per_px,
            config=config.rework,
            roi_config=config.roi,
        )

    @classmethod
    def load(
        cls,
        path: Path | str,
        mm_per_px: float | None = None,
        config: ReworkConfig | None = None,
        roi_config: RoiConfig | None = None,
    ) -> ReworkChecker:
        path = Path(path)
        return cls(load_rules(path), path, mm_per_px, config, roi_config)

    # --- public ---------------------------------------------------------------------------

    def check(self, image_or_roi: np.ndarray | RingROI, gray: np.ndarray | None = None) -> ReworkResult:
        """Verdict of one frame (gray or BGR array) or of an already found ring ROI; never raises.

        With a ROI, pass the frame as ``gray`` too: edges are then located on the picture with
        sub-pixel precision; from the mask alone, rubber that dips under the Otsu threshold at
        the edge reads as missing material.
        """
        return self.inspect(image_or_roi, gray).result

    def inspect(self, image_or_roi: np.ndarray | RingROI, gray: np.ndarray | None = None) -> ReworkReport:
        """Like :meth:`check`, keeping the measurement and ROI for pictures."""
        roi: RingROI | None = None
        try:
            if isinstance(image_or_roi, RingROI):
                roi = image_or_roi
                gray = None if gray is None else _to_gray(gray)
            else:
                gray = _to_gray(np.asarray(image_or_roi))
                if gray.dtype != np.uint8 or gray.ndim != 2:
                    return ReworkReport(
                        self._error(
                            f"not an 8-bit gray or colour image (dtype {gray.dtype}, shape {gray.shape})"
                        )
                    )
                roi = find_ring(gray, self.roi_config)
            if roi.status is not RoiStatus.OK:
                # Not measurable: say why. What a ring status means for the part (a broken ring is a
                # defect, a ring at the edge an error) is decided in pipeline/policy.py alone.
                reason = _ROI_REASONS.get(roi.status, str(roi.status))
                detail = f" ({roi.reason})" if roi.reason and roi.status is not RoiStatus.BROKEN else ""
                return ReworkReport(
                    ReworkResult(ReworkVerdict.ERROR, [reason + detail], self._unmeasured_checks()), None, roi
                )
            measurement = measure_ring(roi, self.mm_per_px, gray, self.config)
        except MeasurementError as exc:
            return ReworkReport(self._error(f"ring could not be measured: {exc}"), None, roi)
        except Exception as exc:  # the line must get a verdict for every frame
            log.exception("rework measurement failed")
            return ReworkReport(self._error(f"measurement failed: {type(exc).__name__}: {exc}"), None, roi)
        return ReworkReport(self.judge(measurement), measurement, roi)

    def judge(self, measurement: RingMeasurement) -> ReworkResult:
        """Apply the rules to a measurement."""
        values = measurement.values
        by_metric: dict[str, list[Rule]] = {}
        for rule in self.rules.rule:
            by_metric.setdefault(rule.metric, []).append(rule)
        checks: list[MetricCheck] = []
        reasons: list[tuple[tuple[int, int], str]] = []
        worst = ReworkVerdict.PASS
        names = list(values) + [m for m in by_metric if m not in values]
        for name in names:
            value = values.get(name)
            rules = by_metric.get(name, [])
            fired = [r for r in rules if r.fires(value)]
            # Show the most severe fired rule's limits, else the first rule's.
            shown = (
                sorted(fired, key=lambda r: r.verdict != "defect")[0]
                if fired
                else (rules[0] if rules else None)
            )
            check = MetricCheck(name=name, value=value, unit=unit_of(name) if name in ALL_METRICS else "")
            if shown is not None:
                check.lower, check.upper = shown.lower, shown.upper
                check.verdict, check.message = shown.verdict, shown.message or ALL_METRICS[name].reason
                check.fired = bool(fired)
            checks.append(check)
            for rule in fired:
                reasons.append((_priority(rule, name), _reason(rule, name, value)))
                if rule.verdict == "defect":
                    worst = ReworkVerdict.DEFECT
                elif worst is ReworkVerdict.PASS:
                    worst = ReworkVerdict.REWORK
        # Most telling first: defects, then the specific findings (bite, flash, off-centre bore,
        # ovality) before the sizes and walls they also move.
        return ReworkResult(worst, [text for _, text in sorted(reasons, key=lambda r: r[0])], checks)

    # --- helpers --------------------------------------------------------------------------

    def _unmeasured_checks(self) -> list[MetricCheck]:
        return [
            MetricCheck(
                name=r.metric,
                value=None,
                lower=r.lower,
                upper=r.upper,
                verdict=r.verdict,
                message=r.message,
                unit=unit_of(r.metric),
            )
            for r in self.rules.rule
        ]

    def _error(self, reason: str) -> ReworkResult:
        return ReworkResult(ReworkVerdict.ERROR, [reason], self._unmeasured_checks())


_SPECIFIC = ("indentation", "protrusion", "concentricity", "ovality", "circularity", "radius", "wall", "area")


def _priority(rule: Rule, name: str) -> tuple[int, int]:
    rank = next((i for i, word in enumerate(_SPECIFIC) if word in name), len(_SPECIFIC))
    return (0 if rule.verdict == "defect" else 1, rank)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def _reason(rule: Rule, name: str, value: float | None) -> str:
    unit = unit_of(name)
    unit = f" {unit}" if unit else ""
    if value is None or not math.isfinite(value):
        return f"{rule.message or ALL_METRICS[name].reason}: {name} could not be measured"
    if rule.lower is not None and value < rule.lower:
        limit = f"< lower limit {_fmt(rule.lower)}"
    else:
        limit = f"> upper limit {_fmt(rule.upper)}"
    return f"{rule.message or ALL_METRICS[name].reason}: {name} = {_fmt(value)}{unit} {limit}"
