"""Reading LabelMe JSON as annotators really write it, messy files included.

Every shape becomes shapely geometry in frame pixels, in the COCO convention that LabelMe's
canvas also uses: pixel (col, row) covers ``[col, col+1) x [row, row+1)``. Shapes that share a
``group_id`` are one defect. Anything odd about a file (points outside the image, a
self-intersecting polygon, a shape that cannot be an area...) is repaired or skipped with a
warning that names the file and the shape, so one careless click never stops a data set.
Only problems that make the whole file untrustworthy raise :class:`LabelError`.

Besides the geometry, every instance carries its pixels as the labelling tool fills them
(``cv2.fillPoly`` of the points rounded to the pixel grid: boundary pixels included; a ``mask``
shape's own pixels), which is what the COCO masks are written from, so no labelled pixel is lost.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.affinity import scale as scale_geometry
from shapely.geometry import GeometryCollection, MultiPolygon, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from oringscan.config import ClassesConfig
from oringscan.errors import LabelError

# Shapes LabelMe can draw that enclose no area: a defect drawn with them has no mask to learn.
AREALESS_SHAPES = ("point", "line", "linestrip", "points")
AREA_SHAPES = ("polygon", "rectangle", "circle", "mask", "oriented_rectangle")
# A labelled instance smaller than this (px^2) cannot be rasterised into even one pixel.
MIN_LABEL_AREA = 1.0
CIRCLE_SEGMENTS_PER_QUARTER = 16
# A LabelMe mask is outlined exactly as the union of its rows' pixel runs; a blob has a few hundred.
# Salt-and-pepper noise has tens of thousands and would take GEOS seconds to minutes: refused.
MAX_MASK_RUNS = 5000


Raster = tuple[np.ndarray, int, int]  # bool mask crop, x and y of its top-left pixel in the frame


@dataclass(slots=True)
class LabelInstance:
    """One labelled defect: shapely (Multi)Polygon in frame pixels plus its class and its pixels."""

    geometry: Polygon | MultiPolygon
    class_name: str
    label: str
    group_id: int | str | None
    shape_indices: tuple[int, ...]
    raster: Raster | None = None  # the labelled pixels (clipped to the frame); None: from the geometry

    def pixels(self) -> Raster:
        """The labelled pixels as a crop: ``raster``, or (an instance built by hand) the geometry's
        outlines filled the same way, holes included."""
        if self.raster is not None:
            return self.raster
        polygons = [self.geometry] if isinstance(self.geometry, Polygon) else list(self.geometry.geoms)
        rings = [np.asarray(p.exterior.coords) for p in polygons if not p.is_empty]
        raster = fill_polygons(rings, 1 << 30, 1 << 30)
        return raster if raster is not None else (np.zeros((0, 0), bool), 0, 0)

    @property
    def area(self) -> float:
        return float(self.geometry.area)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """[x, y, w, h] in frame pixels."""
        x0, y0, x1, y1 = self.geometry.bounds
        return (x0, y0, x1 - x0, y1 - y0)

    @property
    def longest_side(self) -> float:
        _, _, w, h = self.bbox
        return max(w, h)


LABELME_VERSION = "5.5.0"


def polygon_shape(
    label: str, points: Sequence[Sequence[float]], group_id: int | None = None, description: str = ""
) -> dict[str, Any]:
    """One polygon shape with LabelMe 5.x's keys in LabelMe's order."""
    return {
        "label": label,
        "points": [[float(x), float(y)] for x, y in points],
        "group_id": group_id,
        "description": description,
        "shape_type": "polygon",
        "flags": {},
        "mask": None,
    }


def labelme_document(
    shapes: list[dict[str, Any]], image_path: str, width: int, height: int
) -> dict[str, Any]:
    """A whole LabelMe 5.x file (``imageData`` null), as LabelMe writes it."""
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }


def fill_polygons(polygons: Sequence[np.ndarray], width: int, height: int) -> Raster | None:
    """``cv2.fillPoly`` of polygons (points rounded to the pixel grid) in a frame of width x height,
    as a crop; None when nothing of them is inside the frame."""
    rounded = [np.round(np.asarray(p, dtype=np.float64)).astype(np.int64) for p in polygons if len(p)]
    if not rounded:
        return None
    allpts = np.concatenate(rounded)
    x0, y0 = (int(v) for v in np.maximum(allpts.min(axis=0), 0))
    x1, y1 = int(min(allpts[:, 0].max(), width - 1)), int(min(allpts[:, 1].max(), height - 1))
    if x1 < x0 or y1 < y0:
        return None
    canvas = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(canvas, [(p - (x0, y0)).astype(np.int32) for p in rounded], 1)
    if not canvas.any():
        return None
    return canvas.view(bool), x0, y0


def union_rasters(rasters: Sequence[Raster]) -> Raster:
    """One crop holding every raster's pixels."""
    x0 = min(r[1] for r in rasters)
    y0 = min(r[2] for r in rasters)
    x1 = max(r[1] + r[0].shape[1] for r in rasters)
    y1 = max(r[2] + r[0].shape[0] for r in rasters)
    out = np.zeros((y1 - y0, x1 - x0), bool)
    for mask, x, y in rasters:
        out[y - y0 : y - y0 + mask.shape[0], x - x0 : x - x0 + mask.shape[1]] |= mask
    return out, x0, y0


def _shape_raster(
    shape: dict[str, Any], geometry: BaseGeometry, factor: float, width: int, height: int
) -> Raster | None:
    """The pixels a shape labels, as the labelling tool fills them (``geometry``: in frame pixels)."""
    kind = shape.get("shape_type") or "polygon"
    if kind == "mask":
        mask = _decode_mask(shape)
        ox, oy = (int(round(v * factor)) for v in _points(shape)[0])
        if factor != 1.0:
            size = (max(1, int(round(mask.shape[1] * factor))), max(1, int(round(mask.shape[0] * factor))))
            mask = (
                cv2.resize(
                    mask.view(np.uint8),
                    size,
                    interpolation=cv2.INTER_NEAREST if factor > 1 else cv2.INTER_AREA,
                )
                > 0
            )
        x0, y0 = max(ox, 0), max(oy, 0)
        x1, y1 = min(ox + mask.shape[1], width), min(oy + mask.shape[0], height)
        if x1 <= x0 or y1 <= y0:
            return None
        crop = np.ascontiguousarray(mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
        return (crop, x0, y0) if crop.any() else None
    if kind == "rectangle":
        pts = np.asarray(_points(shape)) * factor
        (ax, ay), (bx, by) = pts.min(axis=0), pts.max(axis=0)
        return fill_polygons([np.array([[ax, ay], [bx, ay], [bx, by], [ax, by]])], width, height)
    if kind == "circle":
        parts = [geometry] if isinstance(geometry, Polygon) else list(getattr(geometry, "geoms", []))
        return fill_polygons([np.asarray(p.exterior.coords) for p in parts if not p.is_empty], width, height)
    return fill_polygons([np.asarray(_points(shape)) * factor], width, height)


def read_labelme(json_path: Path | str) -> dict[str, Any]:
    """Parse a LabelMe file; raise LabelError (one line, naming the file) if it cannot be trusted."""
    json_path = Path(json_path)
    try:
        raw = json_path.read_bytes()
    except OSError as exc:
        raise LabelError(json_path, f"cannot read label file: {exc.strerror or exc}") from None
    if not raw.strip():
        raise LabelError(json_path, "empty label file (0 bytes of JSON)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelError(json_path, f"not UTF-8 text (byte {exc.start}); LabelMe writes UTF-8 JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelError(
            json_path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise LabelError(
            json_path, "JSON nested too deeply to be a LabelMe file (thousands of levels)"
        ) from None
    if not isinstance(data, dict):
        raise LabelError(
            json_path, f"not a LabelMe file: top level is a JSON {type(data).__name__}, not an object"
        )
    shapes = data.get("shapes")
    if shapes is None:
        raise LabelError(json_path, "not a LabelMe file: no 'shapes' list")
    if not isinstance(shapes, list):
        raise LabelError(json_path, f"not a LabelMe file: 'shapes' is a {type(shapes).__name__}, not a list")
    return data


def label_scale(
    data: dict[str, Any], image_shape: tuple[int, int], json_path: Path, image_name: str
) -> tuple[float, list[str]]:
    """Factor from the JSON's pixel grid to the frame's, and a note when it is not 1.

    Labels drawn on a 2x2-binned frame are scaled by exactly 2 (and vice versa); any other
    mismatch means the labels belong to a different picture, so the file is refused.
    """
    height, width = image_shape
    json_w, json_h = data.get("imageWidth"), data.get("imageHeight")
    if not _is_number(json_w) or not _is_number(json_h):
        return 1.0, [
            f"{json_path}: no imageWidth/imageHeight; assuming the labels match {image_name} ({width}x{height})"
        ]
    json_w, json_h = int(json_w), int(json_h)
    if (json_w, json_h) == (width, height):
        return 1.0, []
    for factor in (2.0, 0.5):
        if (json_w * factor, json_h * factor) == (width, height):
            return factor, [
                f"{json_path}: labels were drawn on a {json_w}x{json_h} image but {image_name} is "
                f"{width}x{height} (exactly {factor:g}x); points scaled by {factor:g}"
            ]
    raise LabelError(
        json_path,
        f"says the image is {json_w}x{json_h} but {image_name} is {width}x{height} (not a 2x binning): "
        "these labels belong to another picture; frame skipped",
    )


def load_instances(
    json_path: Path | str,
    image_shape: tuple[int, int],
    classes: ClassesConfig,
    *,
    image_name: str | None = None,
) -> tuple[list[LabelInstance], list[str]]:
    """The defects a LabelMe file describes, in the frame's pixels, and what had to be fixed.

    ``image_shape`` is (height, width) of the frame as loaded. Raises :class:`LabelError` only for a
    file that cannot be used at all (unreadable, not LabelMe, or labels for a different image
    size); every shape-level problem is a warning naming the file and the shape, and the shape is
    repaired or skipped.
    """
    json_path = Path(json_path)
    data = read_labelme(json_path)
    warnings: list[str] = []
    factor, notes = label_scale(data, image_shape, json_path, image_name or "the image")
    warnings.extend(notes)
    image_path = data.get("imagePath")
    if image_name and isinstance(image_path, str) and image_path:
        named = PureWindowsPath(image_path).stem  # LabelMe on Windows writes backslashes
        if named.lower() != PureWindowsPath(image_name).stem.lower():
            warnings.append(
                f"{json_path}: imagePath names {PureWindowsPath(image_path).name!r}, not {image_name}; "
                "the labels are used for the frame with the label file's name (renamed or copied file?)"
            )
    image_data = data.get("imageData")
    if isinstance(image_data, str) and image_data:
        warnings.append(
            f"{json_path}: imageData holds an embedded image ({len(image_data) // 1024} kB of base64); "
            "it is ignored and the image file is used"
        )
    height, width = image_shape
    frame_box = box(0, 0, width, height)

    pieces: list[tuple[int, str, str, int | str | None, Polygon | MultiPolygon]] = []
    rasters: dict[int, Raster] = {}
    for index, shape in enumerate(data["shapes"]):
        where = _describe_shape(index, shape)
        try:
            geometry, note = _shape_geometry(shape)
        except _ShapeProblem as problem:
            warnings.append(f"{json_path}: {where}: {problem}; shape skipped")
            continue
        if note:
            warnings.append(f"{json_path}: {where}: {note}")
        if factor != 1.0:
            geometry = scale_geometry(geometry, factor, factor, origin=(0, 0))
        raster = _shape_raster(shape, geometry, factor, width, height)
        if not frame_box.contains(geometry):
            outside = _points_outside(shape, factor, width, height)
            geometry = _polygonal(geometry.intersection(frame_box))
            if geometry.is_empty or geometry.area < MIN_LABEL_AREA:
                warnings.append(
                    f"{json_path}: {where}: lies outside the {width}x{height} image; shape skipped"
                )
                continue
            what = f"{outside} point(s)" if outside else "part of the shape"
            warnings.append(
                f"{json_path}: {where}: {what} outside the {width}x{height} image; clipped to the frame"
            )
        label = shape["label"]
        class_name = classes.class_for(label)
        if class_name is None:
            warnings.append(
                f"{json_path}: {where}: label {label!r} maps to no class (classes.label_map, "
                "classes.default_class); shape skipped"
            )
            continue
        group_id = shape.get("group_id")
        if isinstance(group_id, bool) or (group_id is not None and not isinstance(group_id, int | str)):
            warnings.append(
                f"{json_path}: {where}: group_id {group_id!r} is not an integer; shape kept on its own"
            )
            group_id = None
        pieces.append((index, label, class_name, group_id, geometry))
        if raster is not None:
            rasters[index] = raster

    instances = _merge_groups(pieces, json_path, warnings)
    for inst in instances:
        own = [rasters[i] for i in inst.shape_indices if i in rasters]
        inst.raster = union_rasters(own) if own else None
    return instances, warnings


# --- shapes -----------------------------------------------------------------------------------


class _ShapeProblem(Exception):
    """A shape that cannot become an area (the message says why)."""


def _describe_shape(index: int, shape: Any) -> str:
    if isinstance(shape, dict):
        label = shape.get("label")
        kind = shape.get("shape_type") or "polygon"
        return f"shape {index} ({label!r}, {kind})"
    return f"shape {index}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _points(shape: dict[str, Any]) -> list[tuple[float, float]]:
    points = shape.get("points")
    if not isinstance(points, list):
        raise _ShapeProblem("'points' is missing or not a list")
    out = []
    for p in points:
        if not (isinstance(p, list | tuple) and len(p) == 2 and _is_number(p[0]) and _is_number(p[1])):
            raise _ShapeProblem(f"point {p!r} is not an [x, y] pair of numbers")
        out.append((float(p[0]), float(p[1])))
    return out


def _shape_geometry(shape: Any) -> tuple[Polygon | MultiPolygon, str | None]:
    """Geometry of one LabelMe shape in its own (JSON) pixels, and a note if it was repaired."""
    if not isinstance(shape, dict):
        raise _ShapeProblem(f"is a JSON {type(shape).__name__}, not a shape object")
    label = shape.get("label")
    if not isinstance(label, str) or not label.strip():
        raise _ShapeProblem("has no label")
    kind = shape.get("shape_type") or "polygon"  # LabelMe reads a missing shape_type as polygon
    if not isinstance(kind, str):
        raise _ShapeProblem(f"shape_type {kind!r} is not a string")
    if kind in AREALESS_SHAPES:
        raise _ShapeProblem(f"a {kind!r} encloses no area, so it cannot be a defect mask (draw a polygon)")
    if kind not in AREA_SHAPES:
        raise _ShapeProblem(f"unknown shape_type {kind!r} (oringscan reads {', '.join(AREA_SHAPES)})")
    points = _points(shape)
    note = None
    if kind in ("polygon", "oriented_rectangle"):
        if len(points) < 3:
            raise _ShapeProblem(f"a polygon needs at least 3 points, this one has {len(points)}")
        geometry: BaseGeometry = Polygon(points)
        if not geometry.is_valid:
            reason = shapely.is_valid_reason(geometry)
            geometry = _polygonal(shapely.make_valid(geometry))
            note = f"invalid polygon ({reason}) repaired with make_valid"
    elif kind == "rectangle":
        if len(points) < 2:
            raise _ShapeProblem(f"a rectangle needs 2 corner points, this one has {len(points)}")
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        geometry = box(min(xs), min(ys), max(xs), max(ys))
        if len(points) != 2:
            note = f"rectangle with {len(points)} points read as their bounding box"
    elif kind == "circle":
        if len(points) != 2:
            raise _ShapeProblem(f"a circle needs 2 points (centre, rim), this one has {len(points)}")
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        geometry = (
            Point(cx, cy).buffer(radius, quad_segs=CIRCLE_SEGMENTS_PER_QUARTER) if radius > 0 else Polygon()
        )
    else:  # mask
        geometry = _mask_geometry(shape, points)
    geometry = _polygonal(geometry)
    if geometry.is_empty or geometry.area < MIN_LABEL_AREA:
        raise _ShapeProblem(f"encloses {geometry.area:.2f} px^2, less than one pixel")
    return geometry, note


def _mask_geometry(shape: dict[str, Any], points: Sequence[tuple[float, float]]) -> BaseGeometry:
    """LabelMe 5.x 'mask': a base64 PNG of the shape's box, placed at the first point."""
    if not points:
        raise _ShapeProblem("shape_type 'mask' without the point that places it")
    mask = _decode_mask(shape)
    ox, oy = (int(round(v)) for v in points[0])
    return mask_to_geometry(mask, (ox, oy))


def _decode_mask(shape: dict[str, Any]) -> np.ndarray:
    """The bool pixels of a LabelMe 'mask' shape's base64 PNG."""
    encoded = shape.get("mask")
    if not isinstance(encoded, str) or not encoded:
        raise _ShapeProblem("shape_type 'mask' without a base64 'mask' PNG")
    try:
        png = base64.b64decode(encoded)
    except (binascii.Error, ValueError):
        raise _ShapeProblem("'mask' is not valid base64") from None
    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise _ShapeProblem("'mask' is not a PNG image")
    if decoded.ndim == 3:
        decoded = decoded[..., :3].max(axis=2) if decoded.shape[2] >= 3 else decoded[..., 0]
    mask = decoded > 0
    runs = int(np.count_nonzero(np.diff(np.pad(mask, ((0, 0), (1, 0))).astype(np.int8), axis=1) == 1))
    if runs > MAX_MASK_RUNS:
        raise _ShapeProblem(
            f"'mask' is speckle, not a defect outline ({runs} separate pixel runs, more than {MAX_MASK_RUNS})"
        )
    return mask


def mask_to_geometry(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Polygon | MultiPolygon:
    """Exact pixel-edge outline of a boolean mask (holes kept), shifted by ``offset`` (x, y).

    Built as the union of each row's runs, so no pixel is gained or lost (contour tracing through
    pixel centres would shave half a pixel all round, a lot for a 3-pixel pit).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return Polygon()
    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    changes = np.diff(padded, axis=1)
    starts_r, starts_c = np.nonzero(changes == 1)
    ends_r, ends_c = np.nonzero(changes == -1)
    # nonzero is row-major, so starts and ends pair up in order.
    ox, oy = offset
    boxes = shapely.box(starts_c + ox, starts_r + oy, ends_c + ox, starts_r + oy + 1)
    merged = shapely.union_all(boxes)
    return _polygonal(shapely.simplify(merged, 0))


def _polygonal(geometry: BaseGeometry) -> Polygon | MultiPolygon:
    """Only the area-bearing parts of a geometry (make_valid/intersections can add lines/points)."""
    if isinstance(geometry, Polygon | MultiPolygon):
        return geometry
    if isinstance(geometry, GeometryCollection):
        polys: list[Polygon] = []
        for part in geometry.geoms:
            part = _polygonal(part)
            if isinstance(part, Polygon) and not part.is_empty:
                polys.append(part)
            elif isinstance(part, MultiPolygon):
                polys.extend(part.geoms)
        if not polys:
            return Polygon()
        return polys[0] if len(polys) == 1 else MultiPolygon(polys)
    return Polygon()


def _points_outside(shape: dict[str, Any], factor: float, width: int, height: int) -> int:
    points = shape.get("points") or []
    return sum(1 for x, y in points if not (0 <= x * factor <= width and 0 <= y * factor <= height))


def _merge_groups(
    pieces: list[tuple[int, str, str, int | str | None, Polygon | MultiPolygon]],
    json_path: Path,
    warnings: list[str],
) -> list[LabelInstance]:
    """One instance per shape, except shapes sharing a group_id, which are one instance."""
    order: list[Any] = []
    groups: dict[Any, list[tuple[int, str, str, int | str | None, Polygon | MultiPolygon]]] = {}
    for piece in pieces:
        key = ("group", piece[3]) if piece[3] is not None else ("shape", piece[0])
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(piece)
    instances = []
    for key in order:
        members = groups[key]
        if len(members) == 1:
            index, label, class_name, group_id, geometry = members[0]
            instances.append(LabelInstance(geometry, class_name, label, group_id, (index,)))
            continue
        classes = {m[2] for m in members}
        largest = max(members, key=lambda m: m[4].area)
        if len(classes) > 1:
            warnings.append(
                f"{json_path}: shapes {[m[0] for m in members]} share group_id {key[1]!r} but map to classes "
                f"{sorted(classes)}; the group takes its largest shape's class {largest[2]!r}"
            )
        geometry = _polygonal(shapely.union_all([m[4] for m in members]))
        instances.append(
            LabelInstance(geometry, largest[2], largest[1], key[1], tuple(m[0] for m in members))
        )
    return instances
