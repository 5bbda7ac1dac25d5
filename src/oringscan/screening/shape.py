"""Ring-shape screen: a frame flag from the edges' shape, for the defects texture barely sees.

Why: PatchCore on texture tiles ranks edge bulges (material proud of the ring's edge) poorly: on the
second renderer's full-size frames every defect frame it missed held only bulges, 20-40 px proud,
while every pit was caught. A bulge is geometry, and the rework stage already measures it: each edge
against its robust ellipse, the highest protrusion held over ``rework.flash_min_arc_deg``. That
measurement (the larger of ``outer_protrusion_px`` and ``inner_protrusion_px``, full-frame px) is the
shape score; labelled bulges read 15-38 px, good frames ~0.15 px and lint lying along an edge up to
~6 px.

Its threshold comes from good frames the way the texture threshold does (the generalized Pareto tail
of their scores, with the expected rate and its interval) at its share of the line's budget:
``screening.shape_share`` of rework's share, as it measures what the flash rule measures (the rules
get the rest). A measurement has nothing fitted, so every good frame is already unseen by it: no
folds are needed. The threshold never sits below ``rework.min_excursion_limit_px`` (the flash rule's
floor, 2.5 px): below it lint and the measurement's repeatability decide, and a good frame the
screen flags is one whose protrusion the flash rule at its floor flags too. What the flag changes is the
route: the frame counts as flagged, the tiles at the protrusion go to segmentation, and the verdict
table (``pipeline/policy.py``) decides: a confirmed defect is a ``defect``; unconfirmed, the
geometry's ``rework`` (flash) stands, or, with no rework rule fired, the unconfirmed-flag verdict.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oringscan.screening.calibration import (
    CalibrationError,
    order_statistic_rate,
    robust_outliers,
    supported_rate,
    tail_threshold,
)
from oringscan.types import ScreeningResult, TileScore

if TYPE_CHECKING:
    from oringscan.rework_rules.measure import RingMeasurement

log = logging.getLogger(__name__)

SHAPE_METRICS: tuple[str, str] = ("outer_protrusion_px", "inner_protrusion_px")
MIN_SHAPE_FRAMES = 10  # fewer measured good frames: no shape screen (its threshold would be a guess)


def flag_rates(config: Any) -> tuple[float, float]:
    """(texture, shape) shares of good frames flagged. The shape screen measures what the flash rule
    measures, so its share is ``screening.shape_share`` of rework's share of the budget (rework's
    rules get the rest, :func:`oringscan.rework_rules.calibrate.rework_target`); texture keeps
    screening's whole share. Shape 0: no shape screen."""
    from oringscan.budget import split_false_reject_budget

    budget = split_false_reject_budget(config)
    return budget.screening, budget.rework * float(config.screening.shape_share)


def shape_score(values: Mapping[str, float]) -> float:
    """The frame's shape score: its highest edge protrusion (px); NaN when the ring was not measured."""
    found = [float(values[m]) for m in SHAPE_METRICS if m in values and math.isfinite(float(values[m]))]
    return max(found) if found else math.nan


@dataclass(frozen=True)
class ShapeFlag:
    """A frame the shape screen flagged: where, and the sentence a person reads."""

    score: float
    threshold: float
    edge: str  # "outer" or "inner"
    point: tuple[float, float]  # frame px, the middle of the protrusion's arc
    reason: str


@dataclass
class ShapeScreen:
    """The calibrated threshold and what it promises (stored in the screening metadata)."""

    threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"threshold": float(self.threshold), **self.info}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ShapeScreen | None:
        """From the metadata's ``shape_screen`` entry; None when absent (an older model: no shape screen).

        A broken entry is one clear error, never a silently disabled screen."""
        if not data:
            return None
        raw = data.get("threshold") if isinstance(data, Mapping) else None
        thr = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else math.nan
        if not math.isfinite(thr) or thr <= 0:
            raise CalibrationError(
                None, f"screening metadata: shape_screen threshold {raw!r} is not a positive number (refit)"
            )
        return cls(thr, {k: v for k, v in data.items() if k != "threshold"})

    def judge(self, measurement: RingMeasurement | None) -> ShapeFlag | None:
        """The flag for one measured ring (None: not flagged, or the ring was not measured)."""
        if measurement is None:
            return None
        score = shape_score(measurement.values)
        if not math.isfinite(score) or score <= self.threshold:
            return None
        edge = "outer" if measurement.values.get("outer_protrusion_px", -1.0) >= score else "inner"
        profile = measurement.outer if edge == "outer" else measurement.inner
        exc = profile.protrusion
        n = len(measurement.angles)
        if exc.start >= 0 and exc.stop >= 0:
            span = (exc.stop - exc.start) % n
            ray = (exc.start + span // 2) % n
        else:
            ray = int(np.argmax(profile.excess))
        r = float(profile.smooth[ray])
        a = float(measurement.angles[ray])
        point = (measurement.origin[0] + r * math.cos(a), measurement.origin[1] + r * math.sin(a))
        reason = (
            f"ring shape: material {score:.1f} px proud of the {edge} edge at ({point[0]:.0f}, {point[1]:.0f}) "
            f"(shape threshold {self.threshold:.2f} px)"
        )
        return ShapeFlag(score, self.threshold, edge, point, reason)


def calibrate_shape_screen(
    scores: Sequence[float] | np.ndarray,
    names: Sequence[str],
    rate: float,
    floor_px: float,
    *,
    tail_fraction: float = 0.3,
    min_tail_points: int = 8,
    confidence: float = 0.9,
    seed: int = 0,
) -> ShapeScreen:
    """The shape threshold from good frames' shape scores (see the module docstring).

    Good shape scores are a tight body (the measurement's noise, ~0.15 px) with a real tail (lint
    along an edge, 1-6 px), so a frame counts as an outlier (left out of the fit and named: check it)
    only when it is far above the others by the texture rule *and* above the floor: a good part the
    flash rule would send to rework. The expected rate at a threshold raised to the floor is the
    order statistic of all good frames at it (j / (n + 1)), with its exact interval.
    """
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    s, names = s[finite], [n for n, k in zip(names, finite, strict=True) if k]
    if s.size == 0:
        raise CalibrationError(None, "no measured good frame to calibrate the ring-shape screen on")
    out_idx = [int(i) for i in robust_outliers(s) if s[i] > floor_px]
    keep = np.ones(s.size, dtype=bool)
    keep[out_idx] = False
    outliers = [{"frame": names[i], "score": float(s[i])} for i in out_idx]
    for o in outliers:
        log.warning(
            "ring-shape screen: good frame %s has material %.1f px proud of an edge (median %.2f px): "
            "left out of the threshold fit; check it",
            o["frame"],
            o["score"],
            float(np.median(s)),
        )
    good = s[keep]
    fit = tail_threshold(
        good,
        rate,
        tail_fraction=tail_fraction,
        min_tail_points=min_tail_points,
        confidence=confidence,
        seed=seed,
    )
    out: dict[str, Any] = {
        "score": "max(outer_protrusion_px, inner_protrusion_px)",
        "false_reject_rate_target": rate,
        "fitted_threshold": fit.threshold,
        "floor_px": float(floor_px),
        "n_good_frames": int(good.size),
        "outlier_frames": outliers,
        "method": ("tail fit" if fit.method == "gpd" else "empirical quantile")
        + " of good frames' shape scores",
        "good_frame_score_p50": float(np.median(good)),
        "good_frame_score_max": float(good.max()),
    }
    if fit.threshold >= floor_px:
        thr, expected, interval = fit.threshold, fit.expected_rate, fit.interval
    else:
        thr = float(floor_px)
        expected, interval = order_statistic_rate(good, thr, confidence)
        out["method"] = (
            f"floor: rework.min_excursion_limit_px ({floor_px:g} px) above the tail fit ({fit.threshold:.3g} px)"
        )
    n = int(good.size)
    out["expected_false_reject_rate"] = float(expected)
    out["expected_false_reject_interval"] = [float(interval[0]), float(interval[1])]
    out["statement"] = (
        f"shape screen: threshold {thr:.2f} px, expected to flag {expected:.1%} "
        f"({interval[0]:.1%}-{interval[1]:.1%}) of unseen good frames, from {n} good frames"
        + (f"; {n} frames support about {supported_rate(n):.1%}" if rate < supported_rate(n) else "")
    )
    return ShapeScreen(thr, out)


def fit_shape_screen(
    config: Any,
    output_root: Path,
    oring_type: str,
    sources: Sequence[str],
    data_root: Path,
    progress: bool = True,
) -> ShapeScreen | None:
    """Measure the good frames the texture thresholds were calibrated on and calibrate the shape
    screen at its share; None (with a warning) when too few of the frames can be found or measured."""
    from oringscan.rework_rules.calibrate import measure_frames
    from oringscan.workspace import TypeWorkspace

    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    paths = [workspace.source_frame(s, data_root) for s in sources]
    found = [p for p in paths if p.is_file()]
    names: list[str] = []
    values, skipped = measure_frames(found, config, oring_type, progress, names) if found else ([], [])
    if len(values) < MIN_SHAPE_FRAMES:
        log.warning(
            "%s: no ring-shape screen: %d of %d good frames found under %s and measured (%d needed)",
            oring_type,
            len(values),
            len(paths),
            data_root,
            MIN_SHAPE_FRAMES,
        )
        return None
    for frame, why in skipped:
        log.warning("ring-shape screen: %s left out: %s", frame, why)
    sc = config.screening
    return calibrate_shape_screen(
        [shape_score(v) for v in values],
        names,
        flag_rates(config)[1],
        config.rework.min_excursion_limit_px,
        tail_fraction=sc.tail_fraction,
        min_tail_points=sc.min_tail_points,
        confidence=sc.confidence,
        seed=sc.seed,
    )


def apply_shape_flag(screening: ScreeningResult, flag: ShapeFlag | None) -> ScreeningResult:
    """The screening result with the shape flag added: the frame flagged, the tiles at the protrusion
    flagged (so segmentation looks there), the reason kept. Unchanged when ``flag`` is None."""
    if flag is None:
        return screening
    x, y = flag.point
    reach = flag.score + 2.0  # the bulge reaches this far from the edge point

    def near(t: TileScore) -> bool:
        b = t.box
        return b.x - reach <= x < b.x + b.w + reach and b.y - reach <= y < b.y + b.h + reach

    hits = [near(t) for t in screening.tiles]
    if not any(hits) and screening.tiles:
        centres = [
            (t.box.x + t.box.w / 2 - x) ** 2 + (t.box.y + t.box.h / 2 - y) ** 2 for t in screening.tiles
        ]
        hits[int(np.argmin(centres))] = True
    new_tiles = [replace(t, flagged=t.flagged or h) for t, h in zip(screening.tiles, hits, strict=True)]
    return replace(screening, flagged=True, marginal=False, tiles=new_tiles, shape_reason=flag.reason)
