"""Predictions as LabelMe JSON, so the plant can correct them in LabelMe and retrain on them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oringscan.types import Instance

LABELME_VERSION = "5.5.0"


def to_labelme(instances: Sequence[Instance], image_path: Path, json_path: Path, height: int, width: int) -> dict[str, Any]:
    """One polygon shape per outer contour; contours of one instance share a ``group_id``.

    ``imagePath`` is relative to the JSON file, as LabelMe writes it, so the pair can be moved.
    The score goes into ``description`` (LabelMe shows it; the training converter ignores it).
    """
    try:
        rel = Path(os.path.relpath(Path(image_path).resolve(), Path(json_path).resolve().parent)).as_posix()
    except ValueError:  # another drive on Windows
        rel = Path(image_path).resolve().as_posix()
    shapes = []
    for index, inst in enumerate(instances):
        polys = inst.polygons()
        for poly in polys:
            points = [[round(poly[i], 1), round(poly[i + 1], 1)] for i in range(0, len(poly), 2)]
            shapes.append(
                {
                    "label": inst.label,
                    "points": points,
                    "group_id": index if len(polys) > 1 else None,
                    "shape_type": "polygon",
                    "description": f"score={inst.score:.3f} (oringscan prediction)",
                    "flags": {},
                    "mask": None,
                }
            )
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": rel,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }


def write_labelme(instances: Sequence[Instance], image_path: Path, json_path: Path, height: int, width: int) -> Path:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = to_labelme(instances, image_path, json_path, height, width)
    json_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return json_path
