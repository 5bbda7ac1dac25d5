"""Labelled defects cut to tiles, and COCO files written from them.

A defect that crosses a tile border is clipped with shapely, so each tile gets the valid part it
really contains; cut-off parts smaller than ``min_instance_area`` are slivers (dropped and
counted), while a defect that lies wholly inside a tile is kept however small it is: tiny pits
are real defects. COCO polygons cannot have holes, so a part with a hole is split into hole-free
pieces whose union is exactly the part (pycocotools merges them back into one mask).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.affinity import translate
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from oringscan.preprocess.labelme import LabelInstance
from oringscan.types import TileBox

COORD_DECIMALS = 2
# An instance counts as "wholly inside" a tile when the clip keeps this fraction of its area.
WHOLE_FRACTION = 1.0 - 1e-6


@dataclass(slots=True)
class TileAnnotations:
    """What the labelled defects leave in one tile (annotation dicts lack ``id``/``image_id``)."""

    annotations: list[dict[str, Any]]
    slivers: int


def polygon_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The polygons of a geometry, with holes cut open so each is a plain COCO polygon."""
    if geometry.is_empty:
        return []
    if isinstance(geometry, Polygon):
        return _without_holes(geometry)
    if hasattr(geometry, "geoms"):
        return [p for part in geometry.geoms for p in polygon_parts(part)]
    return []


def _without_holes(polygon: Polygon, depth: int = 0) -> list[Polygon]:
    """Split a polygon through its first hole (left/right halves) until no piece has a hole."""
    if not polygon.interiors:
        return [polygon]
    if depth > 64:  # pathological input: keep the outline rather than loop
        return [Polygon(polygon.exterior)]
    hx0, _, hx1, _ = polygon.interiors[0].bounds
    cut = (hx0 + hx1) / 2
    x0, y0, x1, y1 = polygon.bounds
    halves = [polygon.intersection(box(x0 - 1, y0 - 1, cut, y1 + 1)), polygon.intersection(box(cut, y0 - 1, x1 + 1, y1 + 1))]
    out: list[Polygon] = []
    for half in halves:
        for part in getattr(half, "geoms", [half]):
            if isinstance(part, Polygon) and not part.is_empty and part.area > 0:
                out.extend(_without_holes(part, depth + 1))
    return out


def coco_polygon(polygon: Polygon) -> list[float]:
    """Flat [x0, y0, x1, y1, ...] of a hole-free polygon's outline (closing point dropped)."""
    coords = list(polygon.exterior.coords)[:-1]
    return [round(float(v), COORD_DECIMALS) for xy in coords for v in xy]


def clip_instance(
    instance: LabelInstance, tile: TileBox, category_id: int, min_area: float, frame_instance: int
) -> tuple[dict[str, Any] | None, bool]:
    """One instance's annotation in one tile (tile pixels), or None; the flag says "sliver dropped"."""
    tile_geom = box(tile.x, tile.y, tile.x2, tile.y2)
    if not instance.geometry.intersects(tile_geom):
        return None, False
    clipped = instance.geometry.intersection(tile_geom)
    whole = clipped.area >= instance.area * WHOLE_FRACTION
    polygons = [p for p in polygon_parts(clipped) if p.area > 0]
    if not whole:
        polygons = [p for p in polygons if p.area >= min_area]
    polygons = [p for p in polygons if len(p.exterior.coords) >= 4]
    if not polygons:
        return None, clipped.area > 0
    kept = translate(shapely.union_all(polygons), -tile.x, -tile.y)
    pieces = [translate(p, -tile.x, -tile.y) for p in polygons]
    x0, y0, x1, y1 = kept.bounds
    annotation = {
        "category_id": category_id,
        "segmentation": [coco_polygon(p) for p in pieces],
        "area": round(float(kept.area), COORD_DECIMALS),
        "bbox": [round(x0, COORD_DECIMALS), round(y0, COORD_DECIMALS), round(x1 - x0, COORD_DECIMALS), round(y1 - y0, COORD_DECIMALS)],
        "iscrowd": 0,
        "label": instance.label,
        "frame_instance": frame_instance,
        "truncated": not whole,
    }
    return annotation, False


def tile_annotations(
    instances: Sequence[LabelInstance], tile: TileBox, category_ids: dict[str, int], min_area: float
) -> TileAnnotations:
    """Annotations of every instance that reaches into ``tile``, in tile pixels."""
    annotations: list[dict[str, Any]] = []
    slivers = 0
    for k, instance in enumerate(instances):
        annotation, sliver = clip_instance(instance, tile, category_ids[instance.class_name], min_area, k)
        slivers += sliver
        if annotation is not None:
            annotations.append(annotation)
    return TileAnnotations(annotations, slivers)


def categories(class_names: Iterable[str]) -> list[dict[str, Any]]:
    return [{"id": i, "name": name, "supercategory": "defect"} for i, name in enumerate(class_names, start=1)]


def coco_document(
    images: list[dict[str, Any]], annotations: list[dict[str, Any]], class_names: Sequence[str], info: dict[str, Any]
) -> dict[str, Any]:
    return {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(class_names),
    }


def write_json_atomic(path: Path, data: Any, indent: int | None = None) -> None:
    """Write JSON via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    separators = (",", ":") if indent is None else None
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=indent, separators=separators, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, path)
