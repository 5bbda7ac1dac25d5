"""Pictures people would rather look at than read: overlays of masks, boxes, class and score."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from oringscan.types import Instance

# BGR colours per class index (cycled), chosen to stand out on a gray ring.
_PALETTE = [(0, 0, 255), (0, 200, 255), (255, 0, 255), (0, 255, 0), (255, 128, 0), (255, 255, 0)]
_TRUTH = (255, 200, 0)


def colour_for(label: str, class_names: Sequence[str]) -> tuple[int, int, int]:
    index = list(class_names).index(label) if label in class_names else len(class_names)
    return _PALETTE[index % len(_PALETTE)]


def overlay(
    gray: np.ndarray,
    instances: Sequence[Instance],
    class_names: Sequence[str] = ("defect",),
    truth: Sequence[Instance] = (),
    alpha: float = 0.45,
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """BGR picture: filled translucent masks, boxes and 'label score' tags; truth as cyan outlines.

    ``origin`` is the frame position of ``gray``'s top-left (for drawing frame instances on a tile).
    """
    image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if gray.ndim == 2 else gray.copy()
    h, w = image.shape[:2]
    thick = max(1, round(max(h, w) / 800))
    scale = max(0.4, max(h, w) / 1600)
    ox, oy = origin
    for inst in truth:
        mask = _place(inst, h, w, ox, oy)
        if mask is None:
            continue
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, _TRUTH, thick)
    for inst in instances:
        mask = _place(inst, h, w, ox, oy)
        if mask is None:
            continue
        colour = colour_for(inst.label, class_names)
        region = mask.astype(bool)
        image[region] = (image[region] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
        x, y, bw, bh = inst.bbox
        x, y = x - ox, y - oy
        pad = 3 * thick
        cv2.rectangle(image, (x - pad, y - pad), (x + bw + pad, y + bh + pad), colour, thick)
        text = f"{inst.label} {inst.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - pad - 2 if y - pad - th - 4 > 0 else y + bh + pad + th + 2
        tx = min(max(0, x - pad), max(0, w - tw))
        cv2.rectangle(image, (tx, ty - th - 2), (tx + tw, ty + base), (0, 0, 0), -1)
        cv2.putText(image, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return image


def _place(inst: Instance, h: int, w: int, ox: int, oy: int) -> np.ndarray | None:
    """The instance's mask on an hxw canvas whose top-left is frame (ox, oy); None if off-canvas."""
    x, y = inst.offset[0] - ox, inst.offset[1] - oy
    mh, mw = inst.mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mw, w), min(y + mh, h)
    if x1 <= x0 or y1 <= y0:
        return None
    out = np.zeros((h, w), dtype=np.uint8)
    out[y0:y1, x0:x1] = inst.mask[y0 - y : y1 - y, x0 - x : x1 - x]
    return out


def grid(images: Sequence[np.ndarray], columns: int = 3, cell: int = 320) -> np.ndarray:
    """Images resized to ``cell`` px squares (aspect kept, padded) in a grid, BGR uint8."""
    if not images:
        return np.zeros((cell, cell, 3), dtype=np.uint8)
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    out = np.zeros((rows * cell, columns * cell, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
        f = cell / max(img.shape[:2])
        small = cv2.resize(
            img, (max(1, int(img.shape[1] * f)), max(1, int(img.shape[0] * f))), interpolation=cv2.INTER_AREA
        )
        r, c = divmod(i, columns)
        out[r * cell : r * cell + small.shape[0], c * cell : c * cell + small.shape[1]] = small
    return out
