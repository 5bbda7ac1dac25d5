"""Pictures of a measurement: fitted circles, traced edges and the arcs that broke a limit."""

from __future__ import annotations

import math

import cv2
import numpy as np

from oringscan.rework_rules.checker import ReworkReport
from oringscan.rework_rules.measure import EllipseFit, RingMeasurement
from oringscan.types import MetricCheck, ReworkVerdict

_GREEN, _CYAN, _YELLOW, _RED, _WHITE = (
    (60, 200, 60),
    (220, 200, 0),
    (0, 220, 255),
    (40, 40, 255),
    (255, 255, 255),
)
_VERDICT_COLOURS = {
    ReworkVerdict.PASS: _GREEN,
    ReworkVerdict.REWORK: (0, 165, 255),
    ReworkVerdict.DEFECT: _RED,
    ReworkVerdict.ERROR: (200, 0, 200),
}
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing


def _pts(xy: np.ndarray) -> np.ndarray:
    return np.round(xy * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _ellipse_poly(e: EllipseFit, n: int = 720) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    phi = math.radians(e.angle_deg)
    x = e.cx + e.a * np.cos(t) * math.cos(phi) - e.b * np.sin(t) * math.sin(phi)
    y = e.cy + e.a * np.cos(t) * math.sin(phi) + e.b * np.sin(t) * math.cos(phi)
    return np.stack([x, y], axis=1)


def _runs(flags: np.ndarray) -> list[np.ndarray]:
    """Index runs of True, wrapping around the circle."""
    n = len(flags)
    if not flags.any():
        return []
    if flags.all():
        return [np.arange(n)]
    start = int(np.argmin(flags))  # a False: runs never straddle it
    rolled = np.roll(flags, -start)
    runs, cur = [], []
    for i, f in enumerate(rolled):
        if f:
            cur.append((i + start) % n)
        elif cur:
            runs.append(np.array(cur))
            cur = []
    if cur:
        runs.append(np.array(cur))
    return runs


def out_of_limit_arcs(m: RingMeasurement, checks: list[MetricCheck]) -> dict[str, np.ndarray]:
    """Per edge ("outer"/"inner"), the rays where a fired local rule is out of its limit."""
    n = len(m.angles)
    flags = {"outer": np.zeros(n, bool), "inner": np.zeros(n, bool)}
    scale = m.mm_per_px or 1.0
    for c in checks:
        if not c.fired:
            continue
        px = 1.0 / scale if c.unit == "mm" else 1.0
        name = c.name
        for edge in ("outer", "inner"):
            prof = m.outer if edge == "outer" else m.inner
            if name.startswith(f"{edge}_protrusion") and c.upper is not None:
                flags[edge] |= prof.excess > c.upper * px
            elif name.startswith(f"{edge}_indentation") and c.upper is not None:
                flags[edge] |= -prof.excess > c.upper * px
        bad = None
        if name.startswith("wall_min") and c.lower is not None:
            bad = m.wall < c.lower * px
        elif name.startswith("wall_max") and c.upper is not None:
            bad = m.wall > c.upper * px
        if bad is not None:
            # Mark the edge that moved (flash, bite); both where neither did (an off-centre bore).
            out_dev, in_dev = np.abs(m.outer.excess), np.abs(m.inner.excess)
            flags["outer"] |= bad & ~(in_dev > out_dev + 1.0)
            flags["inner"] |= bad & ~(out_dev > in_dev + 1.0)
    return flags


def draw_measurement(image: np.ndarray, report: ReworkReport, title: str = "") -> np.ndarray:
    """BGR picture: traced edges (yellow), fitted ellipses (cyan), circles (green, red if a
    global rule fired), centres, out-of-limit arcs thick red, verdict and reasons on top."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    h, w = canvas.shape[:2]
    thick = max(2, round(min(h, w) / 700))
    m = report.measurement
    result = report.result
    if m is None and report.roi is not None and report.roi.ring_mask is not None:
        contours, _ = cv2.findContours(
            report.roi.ring_mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(canvas, contours, -1, _RED, thick)
    if m is not None:
        global_fired = any(
            c.fired
            and not c.name.startswith(
                (
                    "outer_protrusion",
                    "inner_protrusion",
                    "outer_indentation",
                    "inner_indentation",
                    "wall_min",
                    "wall_max",
                )
            )
            for c in result.checks
        )
        for edge in (m.outer, m.inner):
            cv2.polylines(canvas, [_pts(_ellipse_poly(edge.ellipse))], True, _CYAN, 1, cv2.LINE_AA, _SHIFT)
            # The ring's circle as the metrics see it: ellipse centre, mean semi-axis as radius.
            e = edge.ellipse
            cx, cy, r = e.cx, e.cy, (e.a + e.b) / 2
            colour = _RED if global_fired else _GREEN
            cv2.circle(
                canvas, (round(cx * 16), round(cy * 16)), round(r * 16), colour, thick, cv2.LINE_AA, _SHIFT
            )
            cv2.drawMarker(canvas, (round(cx), round(cy)), colour, cv2.MARKER_CROSS, 24, thick)
        for name in ("outer", "inner"):
            cv2.polylines(canvas, [_pts(m.edge_points(name))], True, _YELLOW, 1, cv2.LINE_AA, _SHIFT)
        for name, flags in out_of_limit_arcs(m, result.checks).items():
            pts = m.edge_points(name)
            for run in _runs(flags):
                seg = pts[run] if len(run) > 1 else np.repeat(pts[run], 2, axis=0)
                cv2.polylines(
                    canvas, [_pts(seg)], len(run) == len(flags), _RED, thick * 3, cv2.LINE_AA, _SHIFT
                )
    colour = _VERDICT_COLOURS.get(result.verdict, _WHITE)
    scale = max(0.6, min(h, w) / 1400)
    lines = [f"{title}  {str(result.verdict).upper()}".strip()] + result.reasons[:8]
    y = int(40 * scale)
    for i, text in enumerate(lines):
        cv2.putText(
            canvas,
            text,
            (int(20 * scale), y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale * (1.2 if i == 0 else 0.8),
            (0, 0, 0),
            thick + 3,
            cv2.LINE_AA,
        )
        cv2.putText(
            canvas,
            text,
            (int(20 * scale), y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale * (1.2 if i == 0 else 0.8),
            colour if i == 0 else _WHITE,
            thick,
            cv2.LINE_AA,
        )
        y += int((48 if i == 0 else 34) * scale)
    return canvas
