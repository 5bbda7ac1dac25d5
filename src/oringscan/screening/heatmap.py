"""Heatmap overlays: where the screen thinks a tile or frame looks unlike the good parts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from oringscan.frames import write_frame
from oringscan.types import ScreeningResult


def frame_anomaly_map(shape: tuple[int, int], result: ScreeningResult) -> np.ndarray:
    """Tile maps pasted into a frame-size map (overlaps keep the larger value)."""
    if result.anomaly_maps is None:
        raise ValueError("score the tiles with with_maps=True to draw a heatmap")
    out = np.zeros(shape, dtype=np.float32)
    for tile, amap in zip(result.tiles, result.anomaly_maps, strict=True):
        ys, xs = tile.box.slices()
        region = out[ys, xs]
        h, w = region.shape
        np.maximum(region, amap[:h, :w], out=region)
    return out


def render_heatmap(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    threshold: float | None = None,
    result: ScreeningResult | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """BGR picture: the gray image with the map in colour (red at and above the threshold)."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    scale = threshold if threshold and np.isfinite(threshold) and threshold > 0 else float(anomaly_map.max() or 1.0)
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
        text = f"score {result.score:.3f} / threshold {result.threshold:.3f}" + (" FLAGGED" if result.flagged else "")
        size = max(0.6, gray.shape[1] / 1600)
        cv2.putText(out, text, (10, int(40 * size)), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 4 * thick, cv2.LINE_AA)
        cv2.putText(out, text, (10, int(40 * size)), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), thick, cv2.LINE_AA)
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
