"""Ring-shape screen: a frame flag from the edges' shape, for the defects texture barely sees.

Why: PatchCore on texture tiles ranks edge bulges (material proud of the ring's edge) poorly: on the
second renderer's full-size frames every defect frame it missed held only bulges, 20-40 px proud,
while every pit was caught. A bulge is geometry, and the rework stage already measures it: each edge
against its robust ellipse, as a median-filtered radial profile (``RingMeasurement``).

Lint is what makes the shape of a good ring look bulged: a strand of rubber-grey lint touching an
edge joins it in the mask and in the grey level, and on the second renderer's unseen good frames
strands lying along an edge read 5-8 px proud. The ROI already says how wide lint gets
(``roi.lint_max_width_px``, w), and that bounds what a strand can do to the profile
(:func:`lint_envelope`): a strand meeting the edge at 30 degrees or steeper covers at most
w / sin 30 = 2w of it, so the profile's grey opening over an arc of 2w drops it; a shallower
strand stands at most w / cos 30 = 1.15w proud of the edge, so no height up to that is material.
The shape score is therefore the height the edge's profile holds over an arc of 2w (the larger of
the outer and inner edge, frame px), and the threshold never sits below 1.15w (13.9 px at the
default 12 px); a bulge 20-40 px proud holds its height over that arc (a 24 px bulge 43 px wide
reads 21 px, where the flash rule's 4 degree opening reads 2 px). Bulges and flash lower than the
widest lint are left to the flash rule (``rework``), which measures them whatever screening says.

Its threshold comes from good frames the way the texture threshold does (the generalized Pareto tail
of their scores, with the expected rate and its interval) at its share of the line's budget:
``screening.shape_share`` of rework's share, as it measures what the flash rule measures (the rules
get the rest). A measurement has nothing fitted, so every good frame is already unseen by it: no
folds are needed. The threshold never sits below ``rework.min_excursion_limit_px`` (the flash rule's
floor, 2.5 px) nor below the lint height above. What the flag changes is the route: the frame counts
as flagged, the tiles at the protrusion go to segmentation, and the verdict table
(``pipeline/policy.py``) decides: a confirmed defect is a ``defect``; unconfirmed, the geometry's
``rework`` (flash) stands, or, with no rework rule fired, the unconfirmed-flag verdict.

Models calibrated before the lint envelope (no ``arc_px`` in their ``shape_screen`` entry) keep the
score they were calibrated with: the flash rule's protrusion (held over ``flash_min_arc_deg``).
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
    from oringscan.rework_rules.measure import EdgeProfile, RingMeasurement

log = logging.getLogger(__name__)

SHAPE_METRICS: tuple[str, str] = ("outer_protrusion_px", "inner_protrusion_px")
MIN_SHAPE_FRAMES = 10  # fewer measured good frames: no shape screen (its threshold would be a guess)
LINT_COVER = 2.0  # 1 / sin 30 deg: the edge arc (x lint width) a strand at 30 deg or steeper covers at most
LINT_STAND = 2.0 / math.sqrt(3.0)  # 1 / cos 30 deg: the height (x lint width) a shallower strand stands


@dataclass(frozen=True)
class LintEnvelope:
    """What a lint strand up to ``width_px`` wide can do to an edge's profile (module docstring)."""

    width_px: float
    arc_px: float  # the profile is opened over this arc: strands crossing the edge drop out
    height_px: float  # strands lying along the edge stand at most this proud: no threshold below it


def lint_envelope(lint_max_width_px: float) -> LintEnvelope:
    """The envelope of lint as wide as ``roi.lint_max_width_px`` (0: no lint, the plain median profile)."""
    w = max(float(lint_max_width_px), 0.0)
    return LintEnvelope(w, LINT_COVER * w, LINT_STAND * w)


def flag_rates(config: Any) -> tuple[float, float]:
    """(texture, shape) shares of good frames flagged. The shape screen measures what the flash rule
    measures, so its share is ``screening.shape_share`` of rework's share of the budget (rework's
    rules get the rest, :func:`oringscan.rework_rules.calibrate.rework_target`); texture keeps
    screening's whole share. Shape 0: no shape screen."""
    from oringscan.budget import split_false_reject_budget

    budget = split_false_reject_budget(config)
    return budget.screening, budget.rework * float(config.screening.shape_share)


def shape_score(values: Mapping[str, float]) -> float:
    """The flash rule's protrusion (held over ``flash_min_arc_deg``), the score of models calibrated
    before the lint envelope: the highest edge protrusion (px); NaN when the ring was not measured."""
    found = [float(values[m]) for m in SHAPE_METRICS if m in values and math.isfinite(float(values[m]))]
    return max(found) if found else math.nan


def _edge_bulge(profile: EdgeProfile, step_rad: float, arc_px: float) -> tuple[float, int]:
    """(height the edge's profile holds over ``arc_px``, the ray at its middle) for one edge."""
    from scipy.ndimage import grey_opening

    excess = np.asarray(profile.excess, dtype=np.float64)
    radius = float(np.nanmedian(profile.smooth))
    rays = math.ceil(arc_px / (radius * step_rad)) if radius > 0 and arc_px > 0 else 1
    held = grey_opening(excess, size=rays, mode="wrap") if rays >= 2 else excess
    height = max(float(held.max()), 0.0)
    # The highest point of the profile inside the held arc: the middle of the bulge, not its flank.
    ray = int(np.argmax(np.where(held >= 0.5 * height, excess, -np.inf))) if height > 0 else 0
    return height, ray


def bulge_score(measurement: RingMeasurement, arc_px: float) -> tuple[float, str, int]:
    """The frame's shape score (px): the highest any edge's profile holds over ``arc_px`` (see
    :func:`lint_envelope`), with the edge ("outer", "inner") and the ray where it is."""
    step = 2 * math.pi / len(measurement.angles)
    outer = _edge_bulge(measurement.outer, step, arc_px)
    inner = _edge_bulge(measurement.inner, step, arc_px)
    if not math.isfinite(outer[0]) and not math.isfinite(inner[0]):
        return math.nan, "outer", 0
    if inner[0] > outer[0]:
        return inner[0], "inner", inner[1]
    return outer[0], "outer", outer[1]


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
    """The calibrated threshold and what it promises (stored in the screening metadata).

    ``arc_px``: the score is :func:`bulge_score` over this arc; None (a model calibrated before the
    lint envelope): the flash rule's protrusion, :func:`shape_score`."""

    threshold: float
    info: dict[str, Any] = field(default_factory=dict)
    arc_px: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": float(self.threshold), **self.info}
        if self.arc_px is not None:
            out["arc_px"] = float(self.arc_px)
        return out

    def score(self, measurement: RingMeasurement) -> tuple[float, str, int | None]:
        """(shape score, edge, ray or None) of one measured ring, as this screen was calibrated."""
        if self.arc_px is not None:
            return bulge_score(measurement, self.arc_px)
        score = shape_score(measurement.values)
        edge = "outer" if measurement.values.get("outer_protrusion_px", -1.0) >= score else "inner"
        return score, edge, None

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
        arc = data.get("arc_px")
        if arc is not None and (
            not isinstance(arc, int | float) or isinstance(arc, bool) or not math.isfinite(arc) or arc < 0
        ):
            raise CalibrationError(
                None, f"screening metadata: shape_screen arc_px {arc!r} is not a non-negative number (refit)"
            )
        info = {k: v for k, v in data.items() if k not in ("threshold", "arc_px")}
        return cls(thr, info, None if arc is None else float(arc))

    def judge(self, measurement: RingMeasurement | None) -> ShapeFlag | None:
        """The flag for one measured ring (None: not flagged, or the ring was not measured)."""
        if measurement is None:
            return None
        score, edge, at = self.score(measurement)
        if not math.isfinite(score) or score <= self.threshold:
            return None
        profile = measurement.outer if edge == "outer" else measurement.inner
        exc = profile.protrusion
        n = len(measurement.angles)
        if at is not None:
            ray = at
        elif exc.start >= 0 and exc.stop >= 0:
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
    lint_px: float = 0.0,
    tail_fraction: float = 0.3,
    min_tail_points: int = 8,
    confidence: float = 0.9,
    seed: int = 0,
) -> ShapeScreen:
    """The shape threshold from good frames' shape scores (see the module docstring).

    ``scores``: :func:`bulge_score` over ``lint_envelope(lint_px).arc_px`` (``lint_px``:
    ``roi.lint_max_width_px``); ``floor_px``: the flash rule's floor. The threshold is at least the
    larger of ``floor_px`` and the lint height. Good shape scores are a tight body (the
    measurement's noise, ~0.3 px) with a real tail (lint along an edge, up to ~8 px), so a frame
    counts as an outlier (left out of the fit and named: check it) only when it is far above the
    others by the texture rule *and* above the floor: a part whose edge stands prouder than lint can.
    The expected rate at a threshold raised to the floor is the order statistic of all good frames
    at it (j / (n + 1)), with its exact interval.
    """
    lint = lint_envelope(lint_px)
    flash_floor = float(floor_px)
    floor_px = max(flash_floor, lint.height_px)
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
        source="ring-shape screen calibration",
    )
    out: dict[str, Any] = {
        "score": f"highest edge excess held over {lint.arc_px:.3g} px of arc (2 x lint width)",
        "false_reject_rate_target": rate,
        "fitted_threshold": fit.threshold,
        "floor_px": float(floor_px),
        "flash_floor_px": flash_floor,
        "lint_width_px": lint.width_px,
        "lint_floor_px": lint.height_px,
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
        which = (
            f"lint: 1.15 x roi.lint_max_width_px ({lint.width_px:g} px) = {floor_px:.3g} px"
            if lint.height_px > flash_floor
            else f"rework.min_excursion_limit_px ({floor_px:g} px)"
        )
        out["method"] = f"floor: {which}, above the tail fit ({fit.threshold:.3g} px)"
    n = int(good.size)
    out["expected_false_reject_rate"] = float(expected)
    out["expected_false_reject_interval"] = [float(interval[0]), float(interval[1])]
    out["statement"] = (
        f"shape screen: threshold {thr:.2f} px, expected to flag {expected:.1%} "
        f"({interval[0]:.1%}-{interval[1]:.1%}) of unseen good frames, from {n} good frames"
        + (f"; {n} frames support about {supported_rate(n):.1%}" if rate < supported_rate(n) else "")
    )
    return ShapeScreen(thr, out, lint.arc_px)


def measure_shape_scores(
    frames: Sequence[Path], config: Any, arc_px: float, progress: bool = True
) -> tuple[list[float], list[str], list[tuple[str, str]]]:
    """(shape score, file name) of each measurable frame, and (frame, why) for the others: the rework
    stage's measurement (ROI, edges, profile), scored by :func:`bulge_score` over ``arc_px``."""
    from tqdm import tqdm

    from oringscan.errors import FrameError
    from oringscan.frames import read_frame
    from oringscan.rework_rules import ReworkChecker, RulesFile

    checker = ReworkChecker(RulesFile(), config=config.rework, roi_config=config.roi)
    scores: list[float] = []
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    for path in tqdm(frames, desc="measuring good frames' ring shape", unit="frame", disable=not progress):
        try:
            gray = read_frame(path, config.frame).image
        except FrameError as exc:
            skipped.append((str(path), exc.problem))
            continue
        report = checker.inspect(gray)
        if report.measurement is None:
            skipped.append((str(path), "; ".join(report.result.reasons)))
            continue
        scores.append(bulge_score(report.measurement, arc_px)[0])
        names.append(Path(path).name)
    return scores, names, skipped


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
    from oringscan.workspace import TypeWorkspace

    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    paths = [workspace.source_frame(s, data_root) for s in sources]
    found = [p for p in paths if p.is_file()]
    lint_px = float(config.roi.lint_max_width_px)
    scores, names, skipped = (
        measure_shape_scores(found, config, lint_envelope(lint_px).arc_px, progress)
        if found
        else ([], [], [])
    )
    if len(scores) < MIN_SHAPE_FRAMES:
        log.warning(
            "%s: no ring-shape screen: %d of %d good frames found under %s and measured (%d needed)",
            oring_type,
            len(scores),
            len(paths),
            data_root,
            MIN_SHAPE_FRAMES,
        )
        return None
    for frame, why in skipped:
        log.warning("ring-shape screen: %s left out: %s", frame, why)
    sc = config.screening
    return calibrate_shape_screen(
        scores,
        names,
        flag_rates(config)[1],
        config.rework.min_excursion_limit_px,
        lint_px=lint_px,
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
