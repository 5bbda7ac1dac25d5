"""The one tile grid, shared by preprocessing (training) and inference.

Training and inference must cut a frame in exactly the same way, so both call
:func:`ring_tiles`; the grid covers the ring's bounding box with ``tile_size`` tiles overlapping by
at least ``overlap`` pixels, the last row/column flush with the box's far edge (clamped in-frame).
"""

from __future__ import annotations

import numpy as np

from oringscan.config import Config, TilingConfig
from oringscan.roi import RingROI, roi_with_margin
from oringscan.types import Tile, TileBox


def _starts(lo: int, hi: int, tile: int, stride: int, limit: int) -> list[int]:
    """Start offsets covering [lo, hi) with tiles of ``tile`` inside [0, limit)."""
    if limit <= tile:
        return [0]
    lo = max(0, min(lo, limit - tile))
    end = max(lo + tile, min(hi, limit))
    starts = list(range(lo, max(end - tile, lo) + 1, stride))
    last = min(end - tile, limit - tile)
    if starts[-1] < last:
        starts.append(last)
    return starts


def tile_grid(
    bbox: tuple[int, int, int, int], frame_shape: tuple[int, int], cfg: TilingConfig | None = None
) -> list[TileBox]:
    """Tiles covering ``bbox`` (x, y, w, h) in a frame of ``frame_shape`` (h, w), row-major."""
    cfg = cfg or TilingConfig()
    size, stride = cfg.tile_size, cfg.tile_size - cfg.overlap
    fh, fw = frame_shape
    x, y, w, h = bbox
    xs = _starts(x, x + w, size, stride, fw)
    ys = _starts(y, y + h, size, stride, fh)
    return [TileBox(tx, ty, min(size, fw - tx), min(size, fh - ty)) for ty in ys for tx in xs]


def _tiling_box(roi: RingROI, frame_shape: tuple[int, int], margin: int) -> tuple[int, int, int, int]:
    """The ring's box grown by the background margin (clamped in-frame): edge defects and the ring's
    outermost pixels, which the mask may miss by a pixel, are inside the kept margin, so in a tile too."""
    x, y, w, h = roi.bbox
    fh, fw = frame_shape
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(fw, x + w + margin), min(fh, y + h + margin)
    return x0, y0, x1 - x0, y1 - y0


def ring_tile_boxes(
    roi: RingROI, frame_shape: tuple[int, int], config: Config, keep: np.ndarray | None = None
) -> list[tuple[TileBox, float]]:
    """Grid tiles that contain ring (within the background margin), with their ring fraction.

    ``keep``: the ring grown by the margin when the caller has it already (saves a dilation).
    """
    if roi.ring_mask is None or roi.bbox is None:
        return []
    if keep is None:
        keep = roi_with_margin(roi.ring_mask, config.roi.background_margin_px)
    out = []
    for box in tile_grid(_tiling_box(roi, frame_shape, config.roi.background_margin_px), frame_shape, config.tiling):
        frac = float(keep[box.slices()].mean())
        if frac > config.tiling.min_ring_fraction:
            out.append((box, frac))
    return out


def ring_tiles(gray: np.ndarray, roi: RingROI, config: Config) -> tuple[list[Tile], int]:
    """Background-subtracted tiles over the ring, and how many grid tiles were skipped as empty."""
    if roi.ring_mask is None or roi.bbox is None:
        return [], 0
    keep = roi_with_margin(roi.ring_mask, config.roi.background_margin_px)
    clean = np.where(keep, gray, np.uint8(0))  # = subtract_background, sharing the one dilation
    all_boxes = tile_grid(_tiling_box(roi, gray.shape, config.roi.background_margin_px), gray.shape, config.tiling)
    kept = ring_tile_boxes(roi, gray.shape, config, keep=keep)
    tiles = [Tile(box=b, image=np.ascontiguousarray(clean[b.slices()]), ring_fraction=f) for b, f in kept]
    return tiles, len(all_boxes) - len(kept)
