"""Drawing what the machine saw onto the frame: masks, boxes, the screening heatmap, geometry.

Everything is drawn at display size (a 2448x2048 frame is shown about half size), so a frame with
many defects still renders in tens of milliseconds. Masks come from the COCO RLE stored in the
database (pycocotools decodes them), boxes carry the class and score, the heatmap comes from an
anomaly-map file when the pipeline saved one and otherwise from the per-tile screening scores.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# BGR, readable on a gray frame and distinct from each other; a class keeps its colour everywhere.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (40, 40, 230),
    (0, 160, 255),
    (230, 60, 200),
    (40, 200, 250),
    (255, 120, 40),
    (120, 60, 240),
    (60, 220, 120),
    (200, 200, 40),
)
GEOMETRY_COLOR = (255, 200, 0)
DISPLAY_WIDTH = 1400


def class_color(label: str) -> tuple[int, int, int]:
    return PALETTE[zlib.crc32(label.encode("utf-8")) % len(PALETTE)]


def class_color_hex(label: str) -> str:
    b, g, r = class_color(label)
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass(slots=True)
class DefectMark:
    """One stored defect: class, score, tight box [x, y, w, h] in frame pixels, optional COCO RLE."""

    label: str
    score: float
    bbox: tuple[float, float, float, float]
    rle: dict[str, Any] | None = None
    polygon: list[float] | None = None

    def mask(self) -> np.ndarray | None:
        """Full-frame bool mask from the RLE (None when there is none or it is unreadable)."""
        if not self.rle:
            return None
        from pycocotools import mask as mask_utils

        counts = self.rle.get("counts")
        size = self.rle.get("size")
        if counts is None or size is None:
            return None
        rle = {
            "size": [int(size[0]), int(size[1])],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
        try:
            if isinstance(rle["counts"], list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(rle, rle["size"][0], rle["size"][1])
            return mask_utils.decode(rle).astype(bool)
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(slots=True)
class TileHeat:
    x: int
    y: int
    w: int
    h: int
    score: float


@dataclass(slots=True)
class Circle:
    cx: float
    cy: float
    r: float


@dataclass(slots=True)
class RingGeometry:
    """Outer and inner edge of the ring as found in the frame, with their fitted circles.

    ``values`` are the rework metrics measured for this drawing; ``stored`` the ones the run
    recorded (the numbers the measurement table shows): labels use the stored ones.
    """

    outer_contour: np.ndarray | None = None  # (N, 2) frame pixels
    inner_contour: np.ndarray | None = None
    outer: Circle | None = None
    inner: Circle | None = None
    notes: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    stored: dict[str, float] = field(default_factory=dict)


# Stored and redrawn radii further apart than this (px) mean the drawing is not the measurement.
GEOMETRY_AGREEMENT_PX = 0.5


@dataclass(slots=True)
class GeometrySettings:
    """The [roi]/[rework] settings (and mm per px) a run measured its frames with."""

    roi: Any = None  # oringscan.config.RoiConfig; None = defaults
    rework: Any = None  # oringscan.config.ReworkConfig
    mm_per_px: float | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_run_config(
        cls, run_config: dict[str, Any] | None, oring_type: str | None = None
    ) -> GeometrySettings:
        """From the config stored with the run; a section that no longer validates falls back to
        the defaults with a note (the drawing may then disagree with the stored numbers)."""
        from pydantic import ValidationError

        from oringscan.config import ReworkConfig, RoiConfig

        if not run_config:
            return cls(notes=["this run stored no config: ring geometry drawn with default settings"])
        settings = cls()
        for name, model in (("roi", RoiConfig), ("rework", ReworkConfig)):
            try:
                setattr(settings, name, model.model_validate(run_config.get(name) or {}))
            except ValidationError as exc:
                settings.notes.append(
                    f"the run's [{name}] settings are not readable by this version "
                    f"({exc.error_count()} problem(s)): drawn with defaults"
                )
        types = run_config.get("types") or {}
        entry = types.get(oring_type) if oring_type and isinstance(types, dict) else None
        if isinstance(entry, dict) and entry.get("mm_per_px") is not None:
            settings.mm_per_px = float(entry["mm_per_px"])
        return settings


def display_scale(shape: tuple[int, ...], max_width: int = DISPLAY_WIDTH) -> float:
    return min(1.0, max_width / float(shape[1]))


def _to_bgr(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if gray.ndim == 2 else gray.copy()


def _label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    # Sized for a frame shown about 800-1000 px wide in the browser.
    font, size, thick = (
        cv2.FONT_HERSHEY_SIMPLEX,
        max(0.5, canvas.shape[1] / 1600),
        max(1, canvas.shape[1] // 900),
    )
    (tw, th), base = cv2.getTextSize(text, font, size, thick)
    y_top = y - th - base - 4
    if y_top < 0:  # no room above the box: write inside it
        y_top = y
    x = max(0, min(x, canvas.shape[1] - tw - 4))
    cv2.rectangle(canvas, (x, y_top), (x + tw + 4, y_top + th + base + 4), color, -1)
    cv2.putText(canvas, text, (x + 2, y_top + th + 2), font, size, (255, 255, 255), thick, cv2.LINE_AA)


def _draw_masks(canvas: np.ndarray, defects: list[DefectMark], scale: float) -> list[str]:
    problems = []
    for d in defects:
        full = d.mask()
        if full is None:
            if d.rle:
                problems.append(f"mask of a {d.label} defect could not be decoded")
            continue
        ys, xs = np.nonzero(full)
        if len(xs) == 0:
            continue
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        crop = full[y0:y1, x0:x1].astype(np.uint8)
        dx0, dy0 = int(x0 * scale), int(y0 * scale)
        dw = max(1, int(round((x1 - x0) * scale)))
        dh = max(1, int(round((y1 - y0) * scale)))
        small = (
            cv2.resize(crop, (dw, dh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST) > 0
        )
        region = canvas[dy0 : dy0 + dh, dx0 : dx0 + dw]
        small = small[: region.shape[0], : region.shape[1]]
        color = np.array(class_color(d.label), dtype=np.float32)
        region[small] = (0.45 * region[small] + 0.55 * color).astype(np.uint8)
        contours, _ = cv2.findContours(small.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(region, contours, -1, class_color(d.label), 1, cv2.LINE_AA)
    return problems


def _draw_boxes(canvas: np.ndarray, defects: list[DefectMark], scale: float) -> None:
    for d in defects:
        x, y, w, h = d.bbox
        p0 = (int(x * scale) - 2, int(y * scale) - 2)
        p1 = (int((x + w) * scale) + 2, int((y + h) * scale) + 2)
        color = class_color(d.label)
        cv2.rectangle(canvas, p0, p1, color, 2)
        _label(canvas, f"{d.label} {d.score:.2f}", p0[0], p0[1], color)


def heat_from_tiles(
    shape: tuple[int, int], tiles: list[TileHeat], threshold: float | None, scale: float
) -> np.ndarray:
    """Display-size float map: each pixel the worst (score / threshold) of the tiles covering it."""
    from oringscan.screening.heatmap import frame_heatmap

    norm = threshold if threshold and threshold > 0 else max((t.score for t in tiles), default=1.0) or 1.0
    return frame_heatmap(
        shape, [(t.x, t.y, t.w, t.h) for t in tiles], [t.score for t in tiles], threshold=norm, scale=scale
    )


def heat_from_file(path: Path, out_shape: tuple[int, int]) -> np.ndarray | None:
    """An anomaly-map picture or .npy saved by the pipeline, as a 0..1 map at display size."""
    try:
        if path.suffix.lower() == ".npy":
            data = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            raw = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
            if raw is None:
                return None
            data = raw.astype(np.float32) / 255.0
    except (OSError, ValueError):
        return None
    if data.ndim != 2 or data.size == 0:
        return None
    hi = float(data.max())
    data = data / hi if hi > 1.0 else data
    return cv2.resize(data, (out_shape[1], out_shape[0]), interpolation=cv2.INTER_LINEAR)


def _draw_heat(
    canvas: np.ndarray, heat: np.ndarray, tiles: list[TileHeat], threshold: float | None, scale: float
) -> None:
    clipped = np.clip(heat, 0.0, 1.5) / 1.5
    colored = cv2.applyColorMap((clipped * 255).astype(np.uint8), cv2.COLORMAP_INFERNO).astype(np.float32)
    # Opacity grows with the score: quiet areas stay readable, hot ones (>= threshold) stand out.
    alpha = (0.15 + 0.5 * np.clip(heat, 0.0, 1.0))[..., None] * (heat > 0.02)[..., None]
    canvas[:] = (canvas.astype(np.float32) * (1 - alpha) + colored * alpha).astype(np.uint8)
    for t in tiles:
        if threshold is not None and t.score >= threshold:
            p0 = (int(t.x * scale), int(t.y * scale))
            p1 = (int((t.x + t.w) * scale) - 1, int((t.y + t.h) * scale) - 1)
            cv2.rectangle(canvas, p0, p1, (0, 0, 255), 2)
            _label(canvas, f"tile {t.score:.3g}", p0[0] + 2, p0[1] + 22, (0, 0, 200))


def _fit_circle(points: np.ndarray) -> Circle | None:
    """Least-squares (Kasa) circle through edge points."""
    if points is None or len(points) < 5:
        return None
    x = points[:, 0].astype(np.float64)
    y = points[:, 1].astype(np.float64)
    a = np.column_stack([x, y, np.ones_like(x)])
    b = x * x + y * y
    (c0, c1, c2), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = c0 / 2, c1 / 2
    r2 = c2 + cx * cx + cy * cy
    return Circle(float(cx), float(cy), float(np.sqrt(r2))) if r2 > 0 else None


def ring_geometry(
    gray: np.ndarray,
    roi_config: Any = None,
    rework_config: Any = None,
    *,
    settings: GeometrySettings | None = None,
    stored: dict[str, float | None] | None = None,
) -> RingGeometry:
    """Find the ring and its outer and bore edges with fitted circles.

    The rework rules' own measurement (sub-pixel edges along rays) is used when it can measure the
    ring, with the settings the run measured with (``settings``, from :meth:`GeometrySettings.
    from_run_config`; or ``roi_config``/``rework_config``), so the drawing is the measurement in
    the table. ``stored`` (metric -> value as recorded) labels the drawing and is compared with it:
    a disagreement is said in a note. Otherwise the edges of the ring mask (a broken or
    edge-touching ring still gets a picture).
    """
    from oringscan.roi import find_ring

    settings = settings or GeometrySettings(roi=roi_config, rework=rework_config)
    roi_config = settings.roi if settings.roi is not None else roi_config
    rework_config = settings.rework if settings.rework is not None else rework_config
    try:
        roi = find_ring(gray, roi_config)
    except Exception as exc:  # a drawing aid must never take the page down with it
        return RingGeometry(notes=[*settings.notes, f"ring finder failed: {type(exc).__name__}: {exc}"])
    geometry = RingGeometry(notes=[*settings.notes, *([roi.reason] if roi.reason else [])])
    geometry.stored = {k: float(v) for k, v in (stored or {}).items() if v is not None and np.isfinite(v)}
    if roi.ring_mask is None:
        return geometry
    try:
        from oringscan.rework_rules.measure import measure_ring

        measured = measure_ring(roi, settings.mm_per_px, gray, rework_config)
        geometry.values = {k: float(v) for k, v in measured.values.items()}
        geometry.outer_contour = measured.edge_points("outer")
        geometry.inner_contour = measured.edge_points("inner")
        geometry.outer, geometry.inner = (
            _fit_circle(geometry.outer_contour),
            _fit_circle(geometry.inner_contour),
        )
        _compare_with_stored(geometry)
        return geometry
    except Exception as exc:  # not measurable (or the rules part unavailable): use the mask's edges
        geometry.notes.append(f"edges from the ring mask ({type(exc).__name__}: {exc})")
    mask = roi.ring_mask.astype(np.uint8)
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return geometry
    outer_idx = max(
        range(len(contours)), key=lambda i: cv2.contourArea(contours[i]) if hierarchy[0][i][3] < 0 else -1
    )
    holes = [i for i in range(len(contours)) if hierarchy[0][i][3] == outer_idx]
    geometry.outer_contour = contours[outer_idx].reshape(-1, 2)
    geometry.outer = _fit_circle(geometry.outer_contour)
    if holes:
        inner_idx = max(holes, key=lambda i: cv2.contourArea(contours[i]))
        geometry.inner_contour = contours[inner_idx].reshape(-1, 2)
        geometry.inner = _fit_circle(geometry.inner_contour)
    return geometry


def _compare_with_stored(geometry: RingGeometry) -> None:
    """Say when the redrawn ring is not the one whose numbers were stored."""
    off = [
        f"{name} stored {geometry.stored[name]:.2f} px, drawn {geometry.values[name]:.2f} px"
        for name in ("outer_radius", "inner_radius")
        if name in geometry.stored
        and name in geometry.values
        and abs(geometry.stored[name] - geometry.values[name]) > GEOMETRY_AGREEMENT_PX
    ]
    if off:
        geometry.notes.append("the drawing differs from the stored measurement (" + "; ".join(off) + ")")


def _draw_geometry(canvas: np.ndarray, geometry: RingGeometry, scale: float) -> None:
    for contour in (geometry.outer_contour, geometry.inner_contour):
        if contour is not None:
            pts = (contour.astype(np.float32) * scale).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [pts], True, (0, 255, 0), 1, cv2.LINE_AA)
    centers = []
    for name, circle in (("outer", geometry.outer), ("inner", geometry.inner)):
        if circle is None:
            continue
        c = (int(circle.cx * scale), int(circle.cy * scale))
        cv2.circle(canvas, c, int(circle.r * scale), GEOMETRY_COLOR, 1, cv2.LINE_AA)
        cv2.drawMarker(canvas, c, GEOMETRY_COLOR, cv2.MARKER_CROSS, 14, 2)
        centers.append(c)
        radius = geometry.stored.get(f"{name}_radius", circle.r)  # the recorded number, as in the table
        _label(
            canvas,
            f"{name} r={radius:.1f}px",
            c[0] + int(circle.r * scale * 0.71),
            c[1] - int(circle.r * scale * 0.71),
            (150, 110, 0),
        )
    if len(centers) == 2:
        cv2.line(canvas, centers[0], centers[1], (0, 0, 255), 2, cv2.LINE_AA)


@dataclass(slots=True)
class OverlayLayers:
    masks: bool = True
    boxes: bool = True
    heatmap: bool = False
    geometry: bool = False


def render_overlay(
    gray: np.ndarray,
    defects: list[DefectMark],
    layers: OverlayLayers,
    *,
    tiles: list[TileHeat] | None = None,
    threshold: float | None = None,
    heatmap_file: Path | None = None,
    geometry: RingGeometry | None = None,
    max_width: int = DISPLAY_WIDTH,
) -> tuple[np.ndarray, list[str]]:
    """The frame at display size (BGR) with the chosen layers, and notes on anything not drawn."""
    scale = display_scale(gray.shape, max_width)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    canvas = _to_bgr(small)
    notes: list[str] = []
    if layers.heatmap:
        heat = heat_from_file(heatmap_file, canvas.shape[:2]) if heatmap_file is not None else None
        if heat is None and tiles:
            heat = heat_from_tiles(gray.shape[:2], tiles, threshold, scale)
        if heat is None:
            notes.append("no screening heatmap stored for this frame")
        else:
            _draw_heat(canvas, heat, tiles or [], threshold, scale)
    if layers.geometry:
        if geometry is None or (geometry.outer is None and geometry.inner is None):
            notes.append(
                "ring geometry could not be found in this frame"
                + (f" ({'; '.join(geometry.notes)})" if geometry and geometry.notes else "")
            )
        else:
            _draw_geometry(canvas, geometry, scale)
    if layers.masks:
        notes.extend(_draw_masks(canvas, defects, scale))
    if layers.boxes:
        _draw_boxes(canvas, defects, scale)
    return canvas, notes


def defect_crop(
    gray: np.ndarray, defect: DefectMark, *, size: int = 240, margin: float = 0.6, min_side: int = 48
) -> np.ndarray:
    """A zoomed view of one defect with its outline, so a pit of a few pixels is visible."""
    x, y, w, h = (float(v) for v in defect.bbox)
    side = max(min_side, w * (1 + 2 * margin), h * (1 + 2 * margin))
    cx, cy = x + w / 2, y + h / 2
    H, W = gray.shape[:2]
    x0 = int(max(0, min(W - side, cx - side / 2)))
    y0 = int(max(0, min(H - side, cy - side / 2)))
    x1, y1 = int(min(W, x0 + side)), int(min(H, y0 + side))
    crop = _to_bgr(gray[y0:y1, x0:x1])
    zoom = size / max(1, max(crop.shape[:2]))
    interp = cv2.INTER_NEAREST if zoom >= 2 else cv2.INTER_LINEAR
    crop = cv2.resize(crop, None, fx=zoom, fy=zoom, interpolation=interp)
    color = class_color(defect.label)
    full = defect.mask()
    if full is not None:
        local = full[y0:y1, x0:x1].astype(np.uint8)
        local = cv2.resize(local, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(local, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(crop, contours, -1, color, 2, cv2.LINE_AA)
    else:
        p0 = (int((x - x0) * zoom), int((y - y0) * zoom))
        p1 = (int((x + w - x0) * zoom), int((y + h - y0) * zoom))
        cv2.rectangle(crop, p0, p1, color, 2)
    return crop
