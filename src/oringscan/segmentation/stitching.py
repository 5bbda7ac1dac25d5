"""Tile predictions -> frame instances: duplicates merged, parts cut by tile borders re-joined.

Every instance stays a tight mask crop plus its frame offset; nothing here allocates a frame-size
array. Two pieces are one defect when

* their masks overlap by intersection-over-smaller >= ``ios`` (SAHI's greedy non-maximum merging,
  on masks instead of boxes: the same defect seen twice in an overlap), or
* inside the *window* where both pieces' boxes overlap, their masks agree (IoU >= ``window_iou``).
  A piece's box lies inside its tile, so that window lies inside both tiles: both saw the whole
  defect there, and two views of one defect cut by different tile borders agree, while two
  different defects that merely cross (an X of scratches) do not; or
* their boxes only abut (tiles without overlap) and their masks touch across the seam.

Matches are joined transitively (union-find), so a defect cut into four tiles comes back whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from oringscan.types import Instance

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def tighten(instance: Instance) -> Instance | None:
    """The same instance with its crop cut to the mask's extent; None when the mask is empty."""
    mask = instance.mask.astype(bool, copy=False)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1])
    return Instance(
        instance.label, float(instance.score), crop, (instance.offset[0] + x0, instance.offset[1] + y0)
    )


def _box(instance: Instance) -> tuple[int, int, int, int]:
    x, y = instance.offset
    h, w = instance.mask.shape
    return x, y, x + w, y + h


def _window(instance: Instance, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The instance's mask inside frame window [x0, x1) x [y0, y1), zero-padded."""
    out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    ix0, iy0, ix1, iy1 = _box(instance)
    cx0, cy0, cx1, cy1 = max(x0, ix0), max(y0, iy0), min(x1, ix1), min(y1, iy1)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = instance.mask[
            cy0 - iy0 : cy1 - iy0, cx0 - ix0 : cx1 - ix0
        ]
    return out


def same_defect(a: Instance, b: Instance, ios: float = 0.5, window_iou: float = 0.5) -> bool:
    """Whether two tight pieces are views of one defect (see the module docstring)."""
    ax0, ay0, ax1, ay1 = _box(a)
    bx0, by0, bx1, by1 = _box(b)
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x1 < x0 or y1 < y0:
        return False  # apart by at least a pixel
    if x1 == x0 or y1 == y0:
        # Boxes abut (zero-overlap tiling): one defect when the masks touch across the seam.
        wx0, wy0, wx1, wy1 = min(ax0, bx0), min(ay0, by0), max(ax1, bx1), max(ay1, by1)
        wa = _window(a, wx0, wy0, wx1, wy1).astype(np.uint8)
        wb = _window(b, wx0, wy0, wx1, wy1)
        return bool((cv2.dilate(wa, _CROSS) > 0)[wb].any())
    ma, mb = _window(a, x0, y0, x1, y1), _window(b, x0, y0, x1, y1)
    inter = int(np.count_nonzero(ma & mb))
    if inter == 0:
        return False
    if inter / max(1, min(a.area, b.area)) >= ios:
        return True
    return inter / max(1, int(np.count_nonzero(ma | mb))) >= window_iou


def merge(pieces: Sequence[Instance]) -> Instance:
    """Union of pieces' masks in one crop; label and score of the most confident piece."""
    best = max(pieces, key=lambda p: p.score)
    boxes = np.array([_box(p) for p in pieces])
    x0, y0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    x1, y1 = int(boxes[:, 2].max()), int(boxes[:, 3].max())
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for p in pieces:
        px0, py0, px1, py1 = _box(p)
        mask[py0 - y0 : py1 - y0, px0 - x0 : px1 - x0] |= p.mask
    return Instance(best.label, float(best.score), mask, (x0, y0))


def stitch(
    instances: Sequence[Instance],
    ios: float = 0.5,
    window_iou: float = 0.5,
    class_agnostic: bool = False,
    min_area: int = 1,
) -> list[Instance]:
    """Merge tile-level instances (frame coordinates) into frame instances, most confident first."""
    pieces = [t for t in (tighten(i) for i in instances) if t is not None and t.area >= min_area]
    pieces.sort(key=lambda p: (-p.score, p.offset[1], p.offset[0]))
    n = len(pieces)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    boxes = np.array([_box(p) for p in pieces], dtype=np.int64).reshape(-1, 4)
    for i in range(n):
        # Candidates whose boxes touch or overlap piece i's (vectorised prefilter).
        near = (boxes[i + 1 :, 0] <= boxes[i, 2]) & (boxes[i + 1 :, 2] >= boxes[i, 0])
        near &= (boxes[i + 1 :, 1] <= boxes[i, 3]) & (boxes[i + 1 :, 3] >= boxes[i, 1])
        for j in np.flatnonzero(near) + i + 1:
            if not class_agnostic and pieces[i].label != pieces[int(j)].label:
                continue
            if find(i) != find(int(j)) and same_defect(pieces[i], pieces[int(j)], ios, window_iou):
                parent[find(int(j))] = find(i)
    groups: dict[int, list[Instance]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(pieces[i])
    merged = [merge(g) if len(g) > 1 else g[0] for g in groups.values()]
    merged.sort(key=lambda p: (-p.score, p.offset[1], p.offset[0]))
    return merged
