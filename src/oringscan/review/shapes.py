"""What a review marks on a frame: confirmed machine defects and the operator's boxes / polygons.

Light on purpose (no SQLAlchemy, no OpenCV): the CLI parses ``--box``/``--polygon`` with it before
opening the database, and the store validates with it inside the review's transaction, so a box
outside the frame or an unknown class is one line and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from oringscan.db.errors import StoreError


class ReviewInputError(StoreError):
    """A review's shape that cannot be recorded (bad numbers, outside the frame, unknown class)."""


@dataclass(frozen=True, slots=True)
class ShapeMark:
    """One defect a review marks.

    ``defect_id``: a machine defect the operator confirms (its mask is kept; ``label`` may correct
    its class). Otherwise the operator's own mark: ``polygon`` (vertices in frame pixels) or
    ``box`` (x, y, w, h in frame pixels).
    """

    label: str
    box: tuple[int, int, int, int] | None = None
    polygon: tuple[tuple[float, float], ...] | None = None
    defect_id: int | None = None

    @property
    def source(self) -> str:
        return "machine" if self.defect_id is not None else "operator"

    @property
    def kind(self) -> str:
        if self.defect_id is not None:
            return "mask"
        return "polygon" if self.polygon else "box"

    def bounds(self) -> tuple[int, int, int, int]:
        """x, y, w, h: the box, or the polygon's bounding box (whole pixels covering it)."""
        if self.polygon:
            xs = [p[0] for p in self.polygon]
            ys = [p[1] for p in self.polygon]
            x0, y0 = int(min(xs)), int(min(ys))
            return x0, y0, max(1, int(-(-max(xs) // 1)) - x0), max(1, int(-(-max(ys) // 1)) - y0)
        if self.box is None:
            raise ReviewInputError(f"{self.label}: a shape needs a box, a polygon or a machine defect")
        return self.box


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"X,Y,W,H"`` (frame pixels, whole numbers, W and H positive) as a tuple."""
    parts = [p.strip() for p in str(text).replace(";", ",").split(",")]
    try:
        values = [int(float(p)) for p in parts]
    except ValueError:
        values = []
    if len(parts) != 4 or len(values) != 4:
        raise ReviewInputError(f"box {text!r}: expected X,Y,W,H (four numbers in frame pixels)")
    x, y, w, h = values
    if w <= 0 or h <= 0:
        raise ReviewInputError(f"box {text!r}: width and height must be positive")
    return x, y, w, h


def parse_polygon(text: str) -> tuple[tuple[float, float], ...]:
    """``"x1,y1 x2,y2 x3,y3 ..."`` (at least three vertices, frame pixels) as a tuple of points."""
    points = []
    for token in str(text).split():
        pair = token.split(",")
        try:
            if len(pair) != 2:
                raise ValueError
            points.append((float(pair[0]), float(pair[1])))
        except ValueError:
            raise ReviewInputError(
                f"polygon {text!r}: {token!r} is not a vertex (expected x,y pairs separated by spaces)"
            ) from None
    if len(points) < 3:
        raise ReviewInputError(f"polygon {text!r}: needs at least three vertices (x1,y1 x2,y2 x3,y3)")
    return tuple(points)


def known_labels(classes: Any) -> list[str]:
    """The labels a reviewer may use: the config's class names and the label map's keys."""
    names = list(getattr(classes, "names", None) or [])
    names += [k for k in (getattr(classes, "label_map", None) or {}) if k not in names]
    return names


def canonical_label(label: str, allowed: Sequence[str] | None, where: str) -> str:
    """The label as the config spells it; an unknown one is one line listing the known ones."""
    text = " ".join(str(label or "").split())
    if not text:
        raise ReviewInputError(f"{where}: a marked defect needs a class")
    if allowed is None:
        return text
    for name in allowed:
        if name.lower() == text.lower():
            return name
    raise ReviewInputError(
        f"{where}: unknown class {text!r}; the config's classes are {', '.join(allowed) or '(none)'}"
    )


def check_shape(
    shape: ShapeMark, width: int, height: int, allowed: Sequence[str] | None, where: str
) -> ShapeMark:
    """The shape with its label made canonical, or ReviewInputError when it cannot be recorded."""
    label = canonical_label(shape.label, allowed, where)
    if shape.defect_id is None:
        if shape.polygon:
            outside = [p for p in shape.polygon if not (0 <= p[0] <= width and 0 <= p[1] <= height)]
            if outside:
                x, y = outside[0]
                raise ReviewInputError(
                    f"{where}: polygon vertex {x:g},{y:g} lies outside the frame ({width}x{height} px)"
                )
        else:
            x, y, w, h = shape.bounds()
            if x < 0 or y < 0 or x + w > width or y + h > height:
                raise ReviewInputError(
                    f"{where}: box {x},{y},{w},{h} reaches outside the frame ({width}x{height} px)"
                )
    return ShapeMark(label, shape.box, shape.polygon, shape.defect_id)


def check_shapes(
    shapes: Iterable[ShapeMark],
    decision: str,
    width: int,
    height: int,
    allowed: Sequence[str] | None,
    frame_id: int,
) -> list[ShapeMark]:
    """Every shape checked; shapes only go with a ``defect`` decision (good has none to mark)."""
    shapes = list(shapes)
    if shapes and decision != "defect":
        raise ReviewInputError(
            f"frame {frame_id}: marked defects go with --decision defect, not {decision!r} "
            "(a good or rework override takes a reason: --comment)"
        )
    return [check_shape(s, width, height, allowed, f"frame {frame_id}") for s in shapes]
