"""Hot spots (``/spots?frame=N``): where to look on a flagged frame, and marking what it is.

Every hot spot (segmented defect, screening tile above the marginal level, fired geometry rule)
is cut at full resolution, largest first, beside the same place on a good part of the type. The
reviewer confirms the machine's defects (class corrected if need be), marks new ones with a class
and a box or polygon, or overrides to good / rework with a reason; the whole frame is one click
(or ``F``) away, and ``J`` / ``K`` go to the next / previous frame of the queue.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import streamlit as st

from oringscan.dashboard import ui
from oringscan.dashboard.drawing import draw_figure, mark_from_selection, picture_uri
from oringscan.dashboard.hotspots import (
    HotSpot,
    find_hotspots,
    marginal_level,
    reference_crop,
    ring_center,
    spot_crop,
)
from oringscan.dashboard.images import ImageRoots, encode_jpeg
from oringscan.dashboard.overlays import GeometrySettings, heat_from_file, ring_geometry
from oringscan.dashboard.page_frame import (
    FRAME_PAGE,
    QUEUE_PAGE,
    _decision_form,
    _history,
    _load_frame,
    frame_id_from_query,
    heatmap_file,
)
from oringscan.db import FrameDetail, FrameFilter
from oringscan.errors import OringscanError
from oringscan.review.shapes import ShapeMark, parse_box, parse_polygon

SPOTS_PAGE = "views/hot_spots.py"
MAX_SPOTS = 12
QUEUE_IDS = "_queue_ids"  # the queue page's current rows, for J / K


@st.cache_data(show_spinner=False, max_entries=4)
def _reference(path: str, mtime: float, _roots: ImageRoots) -> tuple[np.ndarray, Any] | None:
    gray = _roots.read(path)
    return gray, ring_center(gray)


def reference_part(
    store: Any, oring_type: str | None, roots: ImageRoots
) -> tuple[Any, np.ndarray, Any] | None:
    """The newest good frame of the type whose picture can be read: (row, gray, ring centre)."""
    for row in store.reference_candidates(oring_type, limit=10):
        try:
            path = roots.allowed(row.image)
            if not path.is_file():
                continue
            loaded = _reference(str(path), path.stat().st_mtime, roots)
        except OringscanError:
            continue
        if loaded is not None:
            return row, loaded[0], loaded[1]
    return None


@st.cache_data(show_spinner=False, max_entries=8)
def _geometry(image_key: str, mtime: float, _gray: np.ndarray, _detail: FrameDetail) -> Any:
    settings = GeometrySettings.from_run_config(
        ui.store().run_config(_detail.frame.run_id), _detail.frame.oring_type
    )
    return ring_geometry(_gray, settings=settings, stored={m.metric: m.value for m in _detail.measurements})


def hot_spots(detail: FrameDetail, gray: np.ndarray, roots: ImageRoots) -> list[HotSpot]:
    """The frame's hot spots with the pipeline's anomaly map and ring geometry where they help."""
    settings = ui.settings()
    heat_path = heatmap_file(detail, roots)
    heat = None
    if heat_path is not None:
        heat = heat_from_file(heat_path, (gray.shape[0] // 4, gray.shape[1] // 4))
    geometry = None
    if any(m.fired for m in detail.measurements):
        path = roots.allowed(detail.frame.image)
        geometry = _geometry(str(path), path.stat().st_mtime, gray, detail)
    return find_hotspots(
        detail,
        level=marginal_level(detail, settings.marginal_fraction),
        heat=heat,
        geometry=geometry,
        frame_shape=gray.shape[:2],
    )


def _class_options(detail: FrameDetail) -> list[str]:
    allowed = ui.settings().classes
    if allowed:
        return list(allowed)
    return sorted({"defect", *(d.label for d in detail.defects)})


def _marks_key(frame_id: int) -> str:
    return f"s_marks_{frame_id}"


def shapes_from_state(frame_id: int, defects: list[tuple[int, str]]) -> Any:
    """What the page marked, read when the decision is recorded (a form callback)."""

    def shapes_of(decision: str) -> list[ShapeMark]:
        if decision != "defect":
            return []
        state = st.session_state
        marks = [
            ShapeMark(str(state.get(f"s_cls_{frame_id}_{d}") or label), defect_id=d)
            for d, label in defects
            if state.get(f"s_conf_{frame_id}_{d}", True)
        ]
        return marks + [
            ShapeMark(m["label"], m.get("box"), m.get("polygon")) for m in state.get(_marks_key(frame_id), [])
        ]

    return shapes_of


def _add_mark(frame_id: int) -> None:
    """Button callback: the class + box (or polygon) typed below the crops becomes a pending mark."""
    state = st.session_state
    label = str(state.get(f"s_new_cls_{frame_id}") or "")
    try:
        polygon_text = str(state.get(f"s_new_poly_{frame_id}") or "").strip()
        polygon = parse_polygon(polygon_text) if polygon_text else None
        box = None if polygon else parse_box(str(state.get(f"s_new_box_{frame_id}") or ""))
    except OringscanError as exc:
        state["_mark_message"] = (frame_id, ui.md(exc))
        return
    state.setdefault(_marks_key(frame_id), []).append({"label": label, "box": box, "polygon": polygon})
    state["_mark_message"] = None


def _use_spot(frame_id: int, box: tuple[int, int, int, int]) -> None:
    st.session_state[f"s_new_box_{frame_id}"] = ",".join(str(v) for v in box)


def _clear_marks(frame_id: int) -> None:
    st.session_state[_marks_key(frame_id)] = []


def _spot_row(
    detail: FrameDetail, gray: np.ndarray, spot: HotSpot, reference: Any, ring: Any, i: int
) -> None:
    f = detail.frame
    crop_col, ref_col, info = st.columns([1, 1, 1.2])
    crop_col.image(encode_jpeg(spot_crop(gray, spot), 92), width="stretch")
    if reference is not None:
        ref_row, ref_gray, ref_ring = reference
        ref_col.image(
            encode_jpeg(reference_crop(ref_gray, spot, gray.shape[:2], ring, ref_ring), 92), width="stretch"
        )
        ref_col.caption(ui.md(f"same place on good frame #{ref_row.id}"))
    else:
        ref_col.caption("No good frame of this type to compare with yet.")
    x, y, w, h = spot.box
    kind = {"defect": "segmented defect", "screening": "screening heat", "rule": "geometry rule"}[spot.kind]
    info.markdown(f"**{i}. {ui.md(spot.label)}** · {kind}")
    score = f"score {spot.score:.2f}" if spot.kind == "defect" else ""
    info.caption(ui.md(" · ".join(x for x in (score, spot.detail, f"at {x},{y} size {w}x{h} px") if x)))
    if spot.kind == "defect" and spot.defect_id is not None:
        options = _class_options(detail)
        if spot.label not in options:
            options = [spot.label, *options]
        info.checkbox("Confirm (keep its mask)", value=True, key=f"s_conf_{f.id}_{spot.defect_id}")
        info.selectbox(
            "Class", options, index=options.index(spot.label), key=f"s_cls_{f.id}_{spot.defect_id}"
        )
    else:
        info.button(
            "Mark a defect here",
            key=f"s_use_{f.id}_{i}",
            on_click=_use_spot,
            args=(f.id, spot.box),
            icon=":material/crop_free:",
        )


@st.cache_data(show_spinner=False, max_entries=8)
def _picture_uri(frame_id: int, image: str, _gray: np.ndarray) -> str:
    return picture_uri(_gray)


def _use_drawn(frame_id: int, width: int, height: int) -> None:
    """Selection callback: the box (or lasso) just drawn on the frame fills the mark's fields."""
    state = st.session_state
    event = state.get(f"s_draw_{frame_id}") or {}
    mark = mark_from_selection(event.get("selection"), width, height)
    if mark is None:
        return
    state[f"s_new_box_{frame_id}"], state[f"s_new_poly_{frame_id}"] = mark
    state["_mark_message"] = None


def _draw(detail: FrameDetail, gray: np.ndarray) -> None:
    """The frame to draw a new defect's box on with the mouse (or a polygon with the lasso)."""
    f = detail.frame
    height, width = gray.shape[:2]
    pending = [
        ShapeMark(m["label"], m.get("box"), m.get("polygon")).bounds()
        for m in st.session_state.get(_marks_key(f.id), [])
    ]
    figure = draw_figure(
        _picture_uri(f.id, f.image, gray),
        width,
        height,
        machine=[(d.x, d.y, d.w, d.h) for d in detail.defects],
        pending=pending,
    )
    st.plotly_chart(
        figure,
        key=f"s_draw_{f.id}",
        on_select=functools.partial(_use_drawn, f.id, width, height),
        selection_mode=("box", "lasso"),
        config={"scrollZoom": True, "displaylogo": False, "modeBarButtonsToRemove": ["toImage"]},
    )
    st.caption(
        "Drag a box on the frame (the lasso in the chart's toolbar draws a polygon; the wheel zooms): "
        "the fields below fill in, then Add mark. Red: the machine's defects; yellow: pending marks."
    )


def _new_marks(detail: FrameDetail, gray: np.ndarray | None = None) -> None:
    f = detail.frame
    st.subheader("Mark a defect the machine missed")
    if gray is not None:
        _draw(detail, gray)
    c1, c2, c3 = st.columns([1, 1, 1.4])
    c1.selectbox("New defect class", _class_options(detail), key=f"s_new_cls_{f.id}")
    c2.text_input("Box X,Y,W,H (frame px)", key=f"s_new_box_{f.id}", placeholder="812,455,30,24")
    c3.text_input("or polygon x1,y1 x2,y2 ...", key=f"s_new_poly_{f.id}", placeholder="10,10 40,12 30,35")
    add, clear = st.columns([1, 1])
    add.button("Add mark", key=f"s_add_{f.id}", on_click=_add_mark, args=(f.id,), icon=":material/add_box:")
    pending = st.session_state.get(_marks_key(f.id), [])
    if pending:
        clear.button("Clear marks", key=f"s_clear_{f.id}", on_click=_clear_marks, args=(f.id,))
        for m in pending:
            where = (
                "polygon " + " ".join(f"{x:g},{y:g}" for x, y in m["polygon"])
                if m.get("polygon")
                else "box " + ",".join(str(v) for v in m["box"])
            )
            st.caption(ui.md(f"pending: {m['label']} {where}"))
        st.caption("Pending marks are recorded with a Confirm defect decision.")
    message = st.session_state.get("_mark_message")
    if message and message[0] == f.id:
        st.error(message[1])


def neighbours(store: Any, frame_id: int) -> tuple[int | None, int | None]:
    """Previous and next frame: along the queue page's rows when it was open, else the newest waiting."""
    ids = [int(i) for i in st.session_state.get(QUEUE_IDS, [])]
    if frame_id in ids:
        k = ids.index(frame_id)
        return (ids[k - 1] if k > 0 else None), (ids[k + 1] if k + 1 < len(ids) else None)
    page = store.review_queue(FrameFilter(), order="newest", limit=2)
    return None, next((row.id for row in page.items if row.id != frame_id), None)


def _go(page: str, frame_id: int) -> None:
    st.switch_page(page, query_params={"frame": str(frame_id)})


def _navigation(store: Any, frame_id: int) -> None:
    previous, following = neighbours(store, frame_id)
    cols = st.columns([1.2, 1, 1, 1])
    cols[0].page_link(QUEUE_PAGE, label="Back to the review queue", icon=":material/arrow_back:")
    if cols[1].button("Whole frame", key="s_whole", shortcut="F", icon=":material/fullscreen:"):
        _go(FRAME_PAGE, frame_id)
    if cols[2].button(
        "Previous", key="s_prev", shortcut="K", disabled=previous is None, icon=":material/arrow_upward:"
    ):
        _go(SPOTS_PAGE, previous)  # type: ignore[arg-type]
    if cols[3].button(
        "Next", key="s_next", shortcut="J", disabled=following is None, icon=":material/arrow_downward:"
    ):
        _go(SPOTS_PAGE, following)  # type: ignore[arg-type]


def render() -> None:
    store = ui.store()
    frame_id = frame_id_from_query()
    detail = None if frame_id is None else store.frame_detail(frame_id)
    if detail is None:
        ui.header("Hot spots")
        if frame_id is not None:
            st.error(ui.md(f"frame {frame_id}: not in the database {ui.safe_url(ui.settings().db_url)}"))
        st.page_link(QUEUE_PAGE, label="Pick a frame in the review queue", icon=":material/checklist:")
        return
    f = detail.frame
    ui.header(
        f"Frame #{f.id}: {f.verdict}",
        f"hot spots · {f.image} · {f.oring_type or 'unknown type'} · run #{f.run_id}",
    )
    _navigation(store, f.id)
    roots = ui.image_roots()
    left, right = st.columns([2.2, 1])
    with left:
        gray = _load_frame(detail, roots)
        spots = hot_spots(detail, gray, roots) if gray is not None else []
        if gray is not None:
            st.subheader(f"Hot spots ({len(spots)}), largest first")
            if not spots:
                st.caption(
                    "Nothing above the marginal level, no defect, no fired rule: see the whole frame (F)."
                )
            reference = reference_part(store, f.oring_type, roots)
            ring = ring_center(gray) if reference is not None else None
            st.caption(
                "Left: this frame at full resolution. Middle: the same place on a good part of the type."
            )
            for i, spot in enumerate(spots[:MAX_SPOTS], start=1):
                _spot_row(detail, gray, spot, reference, ring, i)
            if len(spots) > MAX_SPOTS:
                st.caption(
                    f"{len(spots) - MAX_SPOTS} smaller hot spot(s) not shown: see the whole frame (F)."
                )
        _new_marks(detail, gray)
    with right:
        st.markdown(f"### {ui.verdict_badge(f.verdict)}  machine verdict")
        for reason in f.reasons or ["(none recorded)"]:
            st.markdown(f"- {ui.md(reason)}")
        defects = [(d.id, d.label) for d in detail.defects]
        _decision_form(store, detail, shapes_from_state(f.id, defects))
        _history(detail)


__all__ = ["SPOTS_PAGE", "hot_spots", "neighbours", "reference_part", "render", "shapes_from_state"]
