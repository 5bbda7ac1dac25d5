"""Helpers for the preprocess tests: plant-like frames drawn with cv2, LabelMe files as LabelMe writes them.

LabelMe 5.x writes ``json.dump(data, indent=2, ensure_ascii=False)`` with the keys in the order
below, points as float pairs, ``mask`` as base64 of a PNG made by PIL from a bool array (mode "1")
and ``imageData`` as base64 of the image file (or null when "save image data" is off).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from oringscan.frames import write_frame
from oringscan.synth.exact import RingSpec, Scene, draw_ring

H, W = 2048, 2448
CENTRE = (1224, 1024)
R_OUT, R_IN = 650, 390


def ring_frame(
    seed: int = 0, centre: tuple[int, int] = CENTRE, colour: bool = False, belt: int = 18
) -> np.ndarray:
    """A light mottled ring on a dark belt, like the plant's frames, at exactly ``centre``, R_OUT, R_IN.

    Drawn by ``oringscan.synth.exact`` (exact geometry), so labels placed by these numbers lie on it.
    """
    spec = RingSpec(cx=centre[0], cy=centre[1], outer_a=R_OUT, outer_b=R_OUT, inner_a=R_IN, inner_b=R_IN)
    scene = Scene(
        width=W,
        height=H,
        ring_level=165.0,
        belt_level=float(belt),
        mottle=0.04,
        noise=3.0,
        gradient=0.0,
        lint=0,
        color=colour,
    )
    return draw_ring(spec, scene, seed=seed)


def blank_frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(18 + rng.normal(0, 3, (H, W)), 0, 255).astype(np.uint8)


def mask_b64(mask: np.ndarray, with_newlines: bool = False) -> str:
    """A bool mask as LabelMe stores it: PNG from PIL (mode "1"), base64."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool)).save(buf, format="PNG")
    if with_newlines:  # older LabelMe used base64.encodebytes (a newline every 76 characters)
        return base64.encodebytes(buf.getvalue()).decode("ascii")
    return base64.b64encode(buf.getvalue()).decode("utf-8")


def image_b64(image: np.ndarray) -> str:
    """imageData as LabelMe fills it for a BMP source (re-encoded as JPEG)."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return base64.b64encode(buf.tobytes()).decode("utf-8")


def shape(
    label: str,
    points: list[list[float]],
    shape_type: str = "polygon",
    group_id: int | None = None,
    mask: str | None = None,
) -> dict[str, Any]:
    return {
        "label": label,
        "points": [[float(x), float(y)] for x, y in points],
        "group_id": group_id,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
        "mask": mask,
    }


def write_labelme(
    path: Path,
    shapes: list[dict[str, Any]],
    image_path: str = "x.bmp",
    width: int = W,
    height: int = H,
    image_data: str | None = None,
) -> Path:
    data = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": image_data,
        "imageHeight": height,
        "imageWidth": width,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2)
    return path


def put_frame(root: Path, folder: str, name: str, image: np.ndarray) -> Path:
    path = root / "images" / folder / name
    write_frame(path, image)
    return path


def put_labels(root: Path, folder: str, name: str, shapes: list[dict[str, Any]], **kwargs: Any) -> Path:
    stem = Path(name).stem
    return write_labelme(
        root / "labels" / folder / f"{stem}.json",
        shapes,
        image_path=f"../../images/{folder}/{name}",
        **kwargs,
    )


def draw_defects(image: np.ndarray, polygons: list[list[list[float]]], value: int = 60) -> np.ndarray:
    out = image.copy()
    for poly in polygons:
        cv2.fillPoly(
            out, [np.round(np.array(poly)).astype(np.int32)], value if out.ndim == 2 else (value,) * 3
        )
    return out
