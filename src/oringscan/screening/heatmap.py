"""Heatmap overlays: where the screen thinks a tile or frame looks unlike the good parts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from oringscan.frames import write_frame
from oringscan.types import ScreeningResult


def frame_heatmap(
    shape: tuple[int, int],
    boxes: Sequence[tuple[int, int, int, int]],
    values: Sequence[np.ndarray | float],
    *,
    threshold: float | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """The one place tile heatmaps become a frame map (saved overlays, ``screen --heatmaps``, dashboard).

    ``boxes`` are the tiles' (x, y, w, h) in frame pixels; ``values`` per tile either its anomaly
    map (pasted at the box's corner, cropped to the frame) or one score (fills the box). Overlaps
    keep the larger value. With ``threshold`` the map is in threshold units (1.0 = at threshold);
    ``scale`` < 1 builds it at display size (``shape`` stays the frame's).
    """
    if len(boxes) != len(values):
        raise ValueError(f"{len(boxes)} tile boxes but {len(values)} tile maps/scores")
    out = np.zeros((max(1, int(shape[0] * scale)), max(1, int(shape[1] * scale))), dtype=np.float32)
    norm = float(threshold) if threshold is not None and np.isfinite(threshold) and threshold > 0 else 1.0
    for (x, y, w, h), value in zip(boxes, values, strict=True):
        x0, y0 = int(x * scale), int(y * scale)
        region = (
            out[y0 : int((y + h) * scale), x0 : int((x + w) * scale)]
            if scale != 1.0
            else out[y : y + h, x : x + w]
        )
        if region.size == 0:
            continue
        if np.ndim(value) == 0:
            np.maximum(region, float(value) / norm, out=region)
            continue
        amap = np.asarray(value, dtype=np.float32)
        if scale != 1.0:
            amap = cv2.resize(
                amap,
                (max(1, int(amap.shape[1] * scale)), max(1, int(amap.shape[0] * scale))),
                interpolation=cv2.INTER_AREA,
            )
        part = amap[: region.shape[0], : region.shape[1]]
        view = region[: part.shape[0], : part.shape[1]]
        np.maximum(view, part / norm, out=view)
    return out


def frame_anomaly_map(
    shape: tuple[int, int], result: ScreeningResult, *, per_threshold: bool = False
) -> np.ndarray:
    """A result's tile maps pasted into a frame-size map (``per_threshold``: 1.0 = at threshold)."""
    if result.anomaly_maps is None:
        raise ValueError("score the tiles with with_maps=True to draw a heatmap")
    boxes = [(t.box.x, t.box.y, t.box.w, t.box.h) for t in result.tiles]
    return frame_heatmap(
        shape, boxes, result.anomaly_maps, threshold=result.threshold if per_threshold else None
    )


def render_heatmap(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    threshold: float | None = None,
    result: ScreeningResult | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """BGR picture: the gray image with the map in colour (red at and above the threshold)."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    scale = (
        threshold
        if threshold and np.isfinite(threshold) and threshold > 0
        else float(anomaly_map.max() or 1.0)
    )
    # Same colours in every picture: 0 -> blue, threshold -> red; quiet areas stay uncoloured.
    level = np.clip(anomaly_map / scale, 0.0, 1.0)
    colour = cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    weight = (alpha * np.clip((level - 0.3) / 0.4, 0.0, 1.0))[..., None]
    out = (base * (1 - weight) + colour * weight).astype(np.uint8)
    thick = max(2, gray.shape[1] // 600)
    if threshold is not None and np.isfinite(threshold):
        # Defects can be a few pixels: ring every spot above the threshold so nobody has to search.
        hot = (anomaly_map > threshold).astype(np.uint8)
        contours, _ = cv2.findContours(hot, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            (cx, cy), r = cv2.minEnclosingCircle(c)
            cv2.circle(out, (int(cx), int(cy)), int(r) + 6 * thick, (0, 255, 255), thick, cv2.LINE_AA)
    if result is not None:
        for t in result.tiles:
            if t.flagged:
                cv2.rectangle(out, (t.box.x, t.box.y), (t.box.x2 - 1, t.box.y2 - 1), (0, 0, 255), thick)
        text = f"score {result.score:.3f} / threshold {result.threshold:.3f}" + (
            " FLAGGED" if result.flagged else ""
        )
        size = max(0.6, gray.shape[1] / 1600)
        cv2.putText(
            out, text, (10, int(40 * size)), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 4 * thick, cv2.LINE_AA
        )
        cv2.putText(
            out,
            text,
            (10, int(40 * size)),
            cv2.FONT_HERSHEY_SIMPLEX,
            size,
            (255, 255, 255),
            thick,
            cv2.LINE_AA,
        )
    return out


def save_heatmap(
    path: Path | str,
    image: np.ndarray,
    anomaly_map: np.ndarray | ScreeningResult,
    threshold: float | None = None,
    max_width: int | None = 1600,
) -> Path:
    """Write the overlay PNG; ``anomaly_map`` may be a map or a result scored ``with_maps=True``."""
    result = None
    if isinstance(anomaly_map, ScreeningResult):
        result = anomaly_map
        threshold = result.threshold if threshold is None else threshold
        if len(result.tiles) == 1 and result.anomaly_maps and result.anomaly_maps[0].shape == image.shape[:2]:
            amap = result.anomaly_maps[0]
        else:
            amap = frame_anomaly_map(image.shape[:2], result)
    else:
        amap = anomaly_map
    picture = render_heatmap(image, amap, threshold, result)
    if max_width and picture.shape[1] > max_width:
        f = max_width / picture.shape[1]
        picture = cv2.resize(picture, (max_width, round(picture.shape[0] * f)), interpolation=cv2.INTER_AREA)
    path = Path(path)
    write_frame(path, picture)
    return path
