"""The one tile grid, shared by preprocessing (training) and inference.

Training and inference must cut a frame in exactly the same way, so both call
:func:`ring_tiles`; the grid covers the kept region (the ring's material, bulges and bites
included, grown by the background margin: :func:`oringscan.roi.kept_region`) with ``tile_size``
tiles overlapping by at least ``overlap`` pixels, the last row/column flush with the region's far
edge (clamped in-frame).
"""

from __future__ import annotations

import cv2
import numpy as np

from oringscan.config import Config, TilingConfig
from oringscan.roi import RingROI, kept_region, roi_with_margin
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


def _tiling_box(keep: np.ndarray) -> tuple[int, int, int, int]:
    """The kept region's box: every kept pixel (material, bulges, the margin) is inside a tile."""
    return cv2.boundingRect(keep.view(np.uint8))


def ring_tile_boxes(
    roi: RingROI, frame_shape: tuple[int, int], config: Config, keep: np.ndarray | None = None
) -> list[tuple[TileBox, float]]:
    """Grid tiles that contain kept region, with the fraction of each that is kept.

    ``keep``: :func:`oringscan.roi.kept_region` of the frame (what :func:`ring_tiles` uses);
    without it, the ring mask grown by the margin (no gray image to follow attached material).
    """
    if roi.ring_mask is None or roi.bbox is None:
        return []
    if keep is None:
        keep = roi_with_margin(roi.ring_mask, config.roi.background_margin_px)
    out = []
    for box in tile_grid(_tiling_box(keep), frame_shape, config.tiling):
        frac = float(keep[box.slices()].mean())
        if frac > config.tiling.min_ring_fraction:
            out.append((box, frac))
    return out


def ring_tiles_and_keep(
    gray: np.ndarray, roi: RingROI, config: Config
) -> tuple[list[Tile], int, np.ndarray | None]:
    """:func:`ring_tiles` plus the kept-region mask it blanked with (None without a ring)."""
    if roi.ring_mask is None or roi.bbox is None:
        return [], 0, None
    keep = kept_region(gray, roi, config.roi)
    clean = np.where(keep, gray, np.uint8(0))  # = subtract_background, sharing the one kept region
    all_boxes = tile_grid(_tiling_box(keep), gray.shape, config.tiling)
    kept = ring_tile_boxes(roi, gray.shape, config, keep=keep)
    tiles = [Tile(box=b, image=np.ascontiguousarray(clean[b.slices()]), ring_fraction=f) for b, f in kept]
    return tiles, len(all_boxes) - len(kept), keep


def ring_tiles(gray: np.ndarray, roi: RingROI, config: Config) -> tuple[list[Tile], int]:
    """Background-subtracted tiles over the ring, and how many grid tiles were skipped as empty."""
    tiles, skipped, _ = ring_tiles_and_keep(gray, roi, config)
    return tiles, skipped
