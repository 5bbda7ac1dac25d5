"""A picture of why a frame was not good: defect masks, the screening heatmap, the ring geometry.

Saved at half size (a 2448x2048 frame becomes 1224x1024 plus a header with the verdict and
reasons): big enough to see a pit (tiny defects get a ring drawn around them), small enough to
keep thousands. Next to it a ``*_heat.png`` holds the anomaly map alone (255 = the threshold) for
the dashboard's heatmap layer.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np

from oringscan.config import Config
from oringscan.frames import write_frame
from oringscan.pipeline.inspector import FrameInspection
from oringscan.screening.heatmap import frame_anomaly_map
from oringscan.types import InspectionResult, Verdict

VERDICT_COLORS: dict[Verdict, tuple[int, int, int]] = {  # BGR
    Verdict.GOOD: (80, 170, 60),
    Verdict.DEFECT: (40, 40, 220),
    Verdict.REWORK: (0, 150, 255),
    Verdict.SUSPECT: (200, 80, 200),
    Verdict.ERROR: (90, 90, 90),
}
DEFECT_COLOR = (40, 40, 255)
FLAGGED_TILE_COLOR = (0, 0, 255)
TILE_COLOR = (110, 110, 110)
GEOMETRY_COLOR = (255, 200, 0)
SCALE = 0.5


def heat_image(inspection: FrameInspection) -> np.ndarray | None:
    """Full-frame anomaly map divided by the threshold (1.0 = at threshold), or None without maps."""
    result, gray = inspection.result, inspection.gray
    screening = result.screening
    if screening is None or not screening.anomaly_maps or gray is None:
        return None
    heat = frame_anomaly_map(gray.shape[:2], screening, per_threshold=True)
    if inspection.roi is not None and inspection.roi.ring_mask is not None:
        heat[~inspection.roi.ring_mask] *= 0.25  # the belt is not inspected; keep it quiet
    return heat


def render_overlay(inspection: FrameInspection, config: Config | None = None) -> np.ndarray:
    """The annotated picture (BGR, half size, with a header)."""
    result, gray = inspection.result, inspection.gray
    if gray is None:
        raise ValueError("no frame to draw on")
    small = cv2.resize(gray, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
    canvas = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    heat = heat_image(inspection)
    if heat is not None:
        heat_small = cv2.resize(heat, (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_AREA)
        colored = cv2.applyColorMap(
            (np.clip(heat_small / 1.5, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO
        )
        hot = heat_small > 0.5
        canvas[hot] = (0.55 * canvas[hot] + 0.45 * colored[hot]).astype(np.uint8)
    _draw_tiles(canvas, inspection)
    _draw_geometry(canvas, inspection)
    _draw_defects(canvas, inspection)
    return np.vstack([_header(result, canvas.shape[1]), canvas])


def save_overlay(inspection: FrameInspection, path: Path, config: Config | None = None) -> Path:
    """Write the overlay PNG (and the heatmap PNG next to it when there is one)."""
    path = Path(path)
    write_frame(path, render_overlay(inspection, config))
    heat = heat_image(inspection)
    if heat is not None:
        small = cv2.resize(heat, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
        write_frame(path.with_name(path.stem + "_heat.png"), (np.clip(small, 0, 1) * 255).astype(np.uint8))
    return path


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * SCALE)), int(round(y * SCALE))


def _draw_tiles(canvas: np.ndarray, inspection: FrameInspection) -> None:
    screening = inspection.result.screening
    if screening is None:
        return
    for tile in screening.tiles:
        b = tile.box
        color, width = (FLAGGED_TILE_COLOR, 2) if tile.flagged else (TILE_COLOR, 1)
        cv2.rectangle(canvas, _pt(b.x, b.y), _pt(b.x2 - 1, b.y2 - 1), color, width)
        if tile.flagged:
            _text(canvas, f"{tile.score:.3g}", _pt(b.x + 6, b.y + 36), color, 0.5)


def _draw_geometry(canvas: np.ndarray, inspection: FrameInspection) -> None:
    geometry = inspection.geometry
    if geometry is not None and hasattr(geometry, "edge_points"):
        for which in ("outer", "inner"):
            pts = (np.asarray(geometry.edge_points(which)) * SCALE).round().astype(np.int32)
            cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], True, GEOMETRY_COLOR, 1, cv2.LINE_AA)
        return
    roi = inspection.roi
    if roi is not None and roi.ring_mask is not None:
        small = cv2.resize(
            roi.ring_mask.astype(np.uint8),
            (canvas.shape[1], canvas.shape[0]),
            interpolation=cv2.INTER_NEAREST,
        )
        contours, _ = cv2.findContours(small, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, GEOMETRY_COLOR, 1, cv2.LINE_AA)


def _draw_defects(canvas: np.ndarray, inspection: FrameInspection) -> None:
    for d in inspection.result.defects:
        x, y = d.offset
        h, w = d.mask.shape
        x0, y0 = _pt(x, y)
        crop = cv2.resize(
            d.mask.astype(np.uint8),
            (max(1, int(round(w * SCALE))), max(1, int(round(h * SCALE)))),
            interpolation=cv2.INTER_NEAREST,
        ).astype(bool)
        hh = min(crop.shape[0], canvas.shape[0] - y0)
        ww = min(crop.shape[1], canvas.shape[1] - x0)
        if hh > 0 and ww > 0:
            region = canvas[y0 : y0 + hh, x0 : x0 + ww]
            m = crop[:hh, :ww]
            region[m] = (0.4 * region[m] + 0.6 * np.array(DEFECT_COLOR)).astype(np.uint8)
        bx, by, bw, bh = d.bbox
        p0, p1 = _pt(bx, by), _pt(bx + bw, by + bh)
        cv2.rectangle(canvas, p0, p1, DEFECT_COLOR, 1)
        if max(bw, bh) * SCALE < 12:  # a pit: ring it so the eye finds it
            c = _pt(bx + bw / 2, by + bh / 2)
            cv2.circle(canvas, c, 14, DEFECT_COLOR, 2, cv2.LINE_AA)
        _text(canvas, f"{d.label} {d.score:.2f}", (p0[0], max(12, p0[1] - 6)), DEFECT_COLOR, 0.5)


def _header(result: InspectionResult, width: int) -> np.ndarray:
    lines = [f"{result.verdict.upper()}  {Path(result.image).name}"]
    if result.screen_score is not None and result.screening is not None:
        lines[0] += f"   screen {result.screen_score:.4g} / thr {result.screening.threshold:.4g}"
    for reason in result.reasons[:6]:
        lines.extend(textwrap.wrap(reason, width=max(40, width // 9))[:2])
    height = 14 + 22 * len(lines)
    header = np.full((height, width, 3), 255, np.uint8)
    cv2.rectangle(header, (0, 0), (width - 1, 30), VERDICT_COLORS.get(result.verdict, (90, 90, 90)), -1)
    for i, line in enumerate(lines):
        color = (255, 255, 255) if i == 0 else (30, 30, 30)
        cv2.putText(
            header,
            line,
            (8, 22 + 22 * i),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6 if i == 0 else 0.5,
            color,
            2 if i == 0 else 1,
            cv2.LINE_AA,
        )
    return header


def _text(
    canvas: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int], size: float
) -> None:
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, size, color, 1, cv2.LINE_AA)
