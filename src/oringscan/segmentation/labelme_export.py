"""Predictions as LabelMe JSON, so the plant can correct them in LabelMe and retrain on them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oringscan.preprocess.labelme import labelme_document, polygon_shape
from oringscan.types import Instance


def to_labelme(
    instances: Sequence[Instance], image_path: Path, json_path: Path, height: int, width: int
) -> dict[str, Any]:
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
        description = f"score={inst.score:.3f} (oringscan prediction)"
        group_id = index if len(polys) > 1 else None
        for poly in polys:
            points = [[round(poly[i], 1), round(poly[i + 1], 1)] for i in range(0, len(poly), 2)]
            shapes.append(polygon_shape(inst.label, points, group_id, description))
    return labelme_document(shapes, rel, width, height)


def write_labelme(
    instances: Sequence[Instance], image_path: Path, json_path: Path, height: int, width: int
) -> Path:
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = to_labelme(instances, image_path, json_path, height, width)
    json_path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return json_path
