"""Drawing a new defect's box (or lasso polygon) with the mouse on the frame, in the hot-spots page.

The frame is shown in a Plotly figure whose axes are frame pixels, so Streamlit's selection event
(``st.plotly_chart(..., on_select=..., selection_mode=("box", "lasso"))``) hands back the drawn
shape in the same coordinates the review stores. :func:`mark_from_selection` turns that event into
the page's "X,Y,W,H" / "x1,y1 x2,y2 ..." fields, clipped to the frame, so a drawn mark goes through
exactly the checks a typed one does. Plotly is imported only when a page draws.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# Width in px of the picture sent to the browser: the whole 2448 px frame would be several MB per
# page; the box still comes back in frame pixels (the axes are frame pixels).
DRAW_WIDTH = 1024
DRAW_HEIGHT_PX = 460


def picture_uri(gray: np.ndarray, max_width: int = DRAW_WIDTH) -> str:
    """The frame as a JPEG data URI, at most ``max_width`` px wide."""
    import cv2

    from oringscan.dashboard.images import encode_jpeg

    height, width = gray.shape[:2]
    if width > max_width:
        gray = cv2.resize(
            gray, (max_width, max(1, round(height * max_width / width))), interpolation=cv2.INTER_AREA
        )
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(gray, 85)).decode("ascii")


def draw_figure(
    picture: str,
    width: int,
    height: int,
    machine: Iterable[tuple[int, int, int, int]] = (),
    pending: Iterable[tuple[int, int, int, int]] = (),
) -> Any:
    """A Plotly figure of the frame (axes in frame px, y down) in box-select mode: the machine's
    defects outlined red, the pending marks yellow."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_layout_image(
        source=picture,
        xref="x",
        yref="y",
        x=0,
        y=0,
        sizex=width,
        sizey=height,
        sizing="stretch",
        layer="below",
    )
    # Two invisible corner points: box / lasso selection needs a trace that can be selected.
    fig.add_trace(
        go.Scatter(x=[0, width], y=[0, height], mode="markers", marker={"opacity": 0}, hoverinfo="skip")
    )
    for boxes, color in ((machine, "#e0312b"), (pending, "#f2c200")):
        for x, y, w, h in boxes:
            fig.add_shape(type="rect", x0=x, y0=y, x1=x + w, y1=y + h, line={"color": color, "width": 2})
    fig.update_xaxes(range=[0, width], visible=False, constrain="domain")
    fig.update_yaxes(range=[height, 0], visible=False, scaleanchor="x", constrain="domain")
    fig.update_layout(
        dragmode="select",
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        height=DRAW_HEIGHT_PX,
        showlegend=False,
        newselection={"line": {"color": "#00b7ff", "width": 2}},
    )
    return fig


def _clip(value: float, high: int) -> float:
    return min(max(float(value), 0.0), float(high))


def mark_from_selection(
    selection: Mapping[str, Any] | None, width: int, height: int
) -> tuple[str, str] | None:
    """("X,Y,W,H", "") for the newest box drawn, ("", "x1,y1 x2,y2 ...") for a lasso, clipped to
    the frame (whole pixels covering the box); None when nothing usable was drawn."""
    if not selection:
        return None
    boxes = list(selection.get("box") or [])
    lassos = list(selection.get("lasso") or [])
    if boxes:
        drawn = boxes[-1]
        xs = [_clip(v, width) for v in drawn.get("x") or []]
        ys = [_clip(v, height) for v in drawn.get("y") or []]
        if len(xs) < 2 or len(ys) < 2:
            return None
        x0, y0 = math.floor(min(xs)), math.floor(min(ys))
        x1, y1 = min(math.ceil(max(xs)), width), min(math.ceil(max(ys)), height)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return None
        return f"{x0},{y0},{x1 - x0},{y1 - y0}", ""
    if lassos:
        drawn = lassos[-1]
        points = [
            (round(_clip(x, width), 1), round(_clip(y, height), 1))
            for x, y in zip(drawn.get("x") or [], drawn.get("y") or [], strict=False)
        ]
        if len(set(points)) < 3:
            return None
        return "", " ".join(f"{x:g},{y:g}" for x, y in points)
    return None
