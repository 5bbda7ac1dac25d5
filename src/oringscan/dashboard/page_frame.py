"""Frame view: the picture with what each stage found, the measurements, and the decision form."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from oringscan.dashboard import auth, ui
from oringscan.dashboard.images import ImageRoots, ImageUnavailable, encode_jpeg
from oringscan.dashboard.overlays import (
    DefectMark,
    GeometrySettings,
    OverlayLayers,
    TileHeat,
    class_color_hex,
    defect_crop,
    render_overlay,
    ring_geometry,
)
from oringscan.db import REVIEW_DECISIONS, FrameDetail, FrameFilter
from oringscan.errors import OringscanError

QUEUE_PAGE = "views/review_queue.py"
FRAME_PAGE = "views/frame_view.py"
SPOTS_PAGE = "views/hot_spots.py"
CROPS_PER_ROW = 4


def frame_id_from_query() -> int | None:
    """The ``?frame=N`` of the address; anything but a positive whole number is refused."""
    raw = st.query_params.get("frame")
    if raw is None or raw == "":
        return None
    text = str(raw).strip().lstrip("#")
    if not text.isdigit() or int(text) <= 0:
        st.error(ui.md(f"frame {raw!r}: not a frame number (the address needs ?frame=<number>)"))
        return None
    return int(text)


def defect_marks(detail: FrameDetail) -> list[DefectMark]:
    return [
        DefectMark(d.label, float(d.score), (d.x, d.y, d.w, d.h), d.mask_rle, d.polygon)
        for d in detail.defects
    ]


def heatmap_file(detail: FrameDetail, roots: ImageRoots) -> Path | None:
    """The pipeline's ``<overlay>_heat.png`` next to the saved overlay, when it exists and is allowed."""
    overlay = detail.frame.overlay_path
    if not overlay:
        return None
    candidate = PurePath(overlay)
    try:
        path = roots.allowed(str(candidate.with_name(candidate.stem + "_heat.png")))
    except OringscanError:
        return None
    return path if path.is_file() else None


@st.cache_data(show_spinner=False, max_entries=8)
def _geometry(image_key: str, mtime: float, frame_id: int, _gray: np.ndarray, _detail: FrameDetail) -> Any:
    # The run's own [roi]/[rework] settings and the stored numbers: the drawing is the measurement.
    settings = GeometrySettings.from_run_config(
        ui.store().run_config(_detail.frame.run_id), _detail.frame.oring_type
    )
    return ring_geometry(_gray, settings=settings, stored={m.metric: m.value for m in _detail.measurements})


def _load_frame(detail: FrameDetail, roots: ImageRoots) -> np.ndarray | None:
    """The gray frame, or None after telling the user (in one line) why it cannot be shown."""
    try:
        return roots.read(detail.frame.image)
    except ImageUnavailable as exc:
        st.warning(ui.md(f"Picture not available: {exc}. The record below is still complete."))
    except OringscanError as exc:  # refused: outside the configured roots
        st.error(ui.md(exc))
    return None


def _picture(detail: FrameDetail, gray: np.ndarray, roots: ImageRoots) -> None:
    toggles = st.columns(4)
    layers = OverlayLayers(
        masks=toggles[0].toggle("Defect masks", value=True, key="f_masks"),
        boxes=toggles[1].toggle("Boxes + scores", value=True, key="f_boxes"),
        heatmap=toggles[2].toggle("Screening heatmap", value=detail.frame.verdict == "suspect", key="f_heat"),
        geometry=toggles[3].toggle("Geometry", value=detail.frame.verdict == "rework", key="f_geometry"),
    )
    geometry = None
    if layers.geometry:
        path = roots.allowed(detail.frame.image)
        geometry = _geometry(str(path), path.stat().st_mtime, detail.frame.id, gray, detail)
    tiles = [TileHeat(t.x, t.y, t.w, t.h, t.score) for t in detail.tiles]
    canvas, notes = render_overlay(
        gray,
        defect_marks(detail),
        layers,
        tiles=tiles,
        threshold=detail.frame.screen_threshold,
        heatmap_file=heatmap_file(detail, roots) if layers.heatmap else None,
        geometry=geometry,
    )
    st.image(
        encode_jpeg(canvas),
        width="stretch",
        caption=ui.md(
            f"{PurePath(detail.frame.image).name}  ({gray.shape[1]}x{gray.shape[0]} px, "
            f"shown at {canvas.shape[1]} px wide)"
        ),
    )
    for note in notes:
        st.caption(f":material/info: {ui.md(note)}")


def _saved_overlay(detail: FrameDetail, roots: ImageRoots) -> None:
    """The picture the pipeline saved at inspection time (its own drawing, with the verdict header)."""
    if not detail.frame.overlay_path:
        return
    with st.expander("Overlay saved at inspection time"):
        try:
            st.image(encode_jpeg(roots.read(detail.frame.overlay_path, color=True)), width="stretch")
        except OringscanError as exc:
            st.caption(ui.md(exc))


def _crops(detail: FrameDetail, gray: np.ndarray | None) -> None:
    if not detail.defects:
        return
    st.subheader(f"Defects ({len(detail.defects)})")
    marks = defect_marks(detail)
    if gray is not None:
        for start in range(0, len(marks), CROPS_PER_ROW):
            cols = st.columns(CROPS_PER_ROW)
            for col, mark, row in zip(
                cols, marks[start : start + CROPS_PER_ROW], detail.defects[start:], strict=False
            ):
                crop = defect_crop(gray, mark)
                col.image(
                    encode_jpeg(crop, 92),
                    caption=ui.md(
                        f"{mark.label} {mark.score:.2f} · {row.area_px} px² · at ({row.x}, {row.y})"
                    ),
                )
    table = pd.DataFrame(
        {
            "class": [d.label for d in detail.defects],
            "score": [round(d.score, 3) for d in detail.defects],
            "x": [d.x for d in detail.defects],
            "y": [d.y for d in detail.defects],
            "w": [d.w for d in detail.defects],
            "h": [d.h for d in detail.defects],
            "area px²": [d.area_px for d in detail.defects],
            "area mm²": [None if d.area_mm2 is None else round(d.area_mm2, 4) for d in detail.defects],
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "class": st.column_config.TextColumn(
                help="colours: "
                + ", ".join(f"{lbl} {class_color_hex(lbl)}" for lbl in sorted(set(table["class"])))
            )
        },
    )


def measurement_table(detail: FrameDetail) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "metric": [m.metric for m in detail.measurements],
            "value": pd.to_numeric([m.value for m in detail.measurements], errors="coerce"),
            "unit": [m.unit or "" for m in detail.measurements],
            "lower limit": pd.to_numeric([m.lower for m in detail.measurements], errors="coerce"),
            "upper limit": pd.to_numeric([m.upper for m in detail.measurements], errors="coerce"),
            "fired": ["FIRED" if m.fired else "" for m in detail.measurements],
            "if fired": [m.verdict or "" for m in detail.measurements],
            "message": [m.message or "" for m in detail.measurements],
        }
    )


def _measurements(detail: FrameDetail) -> None:
    st.subheader("Geometry against its limits")
    if not detail.measurements:
        st.caption("No measurements stored for this frame (the rework rules did not run).")
        return
    table = measurement_table(detail)
    fired = table["fired"] == "FIRED"
    styled = table.style.apply(
        lambda row: ["background-color: #ffe3c2" if fired[row.name] else "" for _ in row], axis=1
    )
    styled = styled.format({"value": "{:.4g}", "lower limit": "{:.4g}", "upper limit": "{:.4g}"}, na_rep="")
    st.dataframe(styled, hide_index=True, width="stretch")
    names = [m.metric for m in detail.measurements if m.fired]
    st.caption(ui.md(f"Fired rules: {', '.join(names)}") if names else "No rule fired.")


def segmentation_notice(detail: FrameDetail) -> str:
    """Why the run's segmenter called no defect ("" when it was allowed to), from the run's models."""
    versions = getattr(detail.run, "model_versions", None) or {}
    seg = versions.get("segmentation") if isinstance(versions, dict) else None
    if isinstance(seg, dict) and seg.get("qualified") is False:
        why = seg.get("decides") or "segmentation model not qualified"
        return f"{why}: in this run segmentation called no defect; flagged parts went to suspect."
    return ""


def _summary(detail: FrameDetail) -> None:
    f = detail.frame
    st.markdown(f"### {ui.verdict_badge(f.verdict)}  machine verdict")
    if f.review_decision:
        st.markdown(
            f"Current decision: {ui.verdict_badge(f.review_decision)} by **{ui.md(f.review_operator)}** "
            f"({ui.utc_text(f.reviewed_at)} UTC)"
        )
    st.markdown("**Reasons**")
    for reason in f.reasons or ["(none recorded)"]:
        st.markdown(f"- {ui.md(reason)}")
    notice = segmentation_notice(detail)
    if notice:
        st.warning(ui.md(notice), icon=":material/block:")
    if f.error:
        st.error(ui.md(f.error))
    if f.screen_score is not None:
        ratio = f.screen_score / f.screen_threshold if f.screen_threshold else None
        flags = [
            x for x, on in (("flagged", detail.screen_flagged), ("marginal", detail.screen_marginal)) if on
        ]
        st.metric(
            "Screening score",
            f"{f.screen_score:.4g}",
            delta=None if ratio is None else f"{ratio:.2f} x threshold {f.screen_threshold:.4g}",
            delta_color="inverse" if ratio is not None and ratio >= 1 else "off",
        )
        if flags:
            st.caption("screening: " + ", ".join(flags))
    facts = {
        "type": f.oring_type,
        "station": f.station,
        "run": f"#{f.run_id}",
        "inspected (UTC)": ui.utc_text(f.inspected_at),
        "rework rules": detail.rework_verdict,
        "time (ms)": None if f.total_ms is None else f"{f.total_ms:.0f}",
        "image": f.image,
        "sha256": f.sha256,
    }
    st.dataframe(
        pd.DataFrame({"": list(facts), "value": ["" if v is None else str(v) for v in facts.values()]}),
        hide_index=True,
        width="stretch",
    )


def _default_decision(verdict: str) -> str:
    return verdict if verdict in REVIEW_DECISIONS else "defect"


def _record_decision(store: Any, frame_id: int, shapes_of: Callable[[str], list[Any]] | None = None) -> None:
    """Form callback (runs before the page is drawn again): append the review, or say what is missing.

    With login the decision is the logged-in user's (name and id); the typed name exists only
    when the plant switched login off (loopback). ``shapes_of(decision)``: what the hot-spot view
    marked (confirmed machine defects, the operator's boxes / polygons), recorded with a defect.
    """
    state = st.session_state
    user = auth.current_user()
    if auth.login_required():
        if user is None or not user.may("review"):
            state["_decision_message"] = (
                frame_id,
                "error",
                "Log in as an operator or engineer to record decisions.",
            )
            return
        operator, user_id = user.name, user.id
    else:
        operator, user_id = str(state.get("f_operator") or "").strip(), None
    decision = str(state.get(f"f_decision_{frame_id}") or "")
    comment = str(state.get(f"f_comment_{frame_id}") or "").strip() or None
    if not operator:
        state["_decision_message"] = (frame_id, "error", "Enter your name before recording a decision.")
        return
    try:
        shapes = shapes_of(decision) if shapes_of is not None else []
        review_id = store.add_review(
            frame_id,
            operator,
            decision,
            comment,
            user_id=user_id,
            shapes=shapes,
            classes=ui.settings().classes,
        )
    except OringscanError as exc:
        state["_decision_message"] = (frame_id, "error", ui.md(exc))
        return
    state["_operator"] = operator
    state[f"f_comment_{frame_id}"] = ""
    state.pop(f"s_marks_{frame_id}", None)  # the hot-spot view's pending marks are recorded now
    label = ui.DECISION_LABELS.get(decision, decision)
    marked = f", {len(shapes)} defect(s) marked" if shapes else ""
    state["_decision_message"] = (
        frame_id,
        "success",
        f"Recorded: {label} by {ui.md(operator)} (review #{review_id}{marked}).",
    )


def _decision_form(
    store: Any, detail: FrameDetail, shapes_of: Callable[[str], list[Any]] | None = None
) -> None:
    f = detail.frame
    st.subheader("Decision")
    user = auth.current_user()
    if auth.login_required() and (user is None or not user.may("review")):
        st.caption("Log in to record a decision.")
        return
    if not auth.login_required() and "f_operator" not in st.session_state:
        st.session_state["f_operator"] = st.session_state.get("_operator", "")
    with st.form("decision", clear_on_submit=False, border=True):
        options = list(REVIEW_DECISIONS)
        st.radio(
            "Decision",
            options,
            index=options.index(_default_decision(f.verdict)),
            format_func=ui.DECISION_LABELS.get,
            horizontal=True,
            key=f"f_decision_{f.id}",
        )
        if user is not None:
            st.caption(f"Recorded as **{ui.md(user.name)}** ({user.role})")
        else:
            st.text_input("Operator name", max_chars=128, key="f_operator")
        st.text_area(
            "Comment",
            key=f"f_comment_{f.id}",
            height=80,
            placeholder="what you saw (optional); for a good / rework override: the reason",
        )
        st.form_submit_button(
            "Record decision",
            type="primary",
            icon=":material/gavel:",
            on_click=_record_decision,
            args=(store, f.id, shapes_of),
        )
    message = st.session_state.get("_decision_message")
    if message and message[0] == f.id:
        (st.success if message[1] == "success" else st.error)(message[2])  # escaped when composed


def _history(detail: FrameDetail) -> None:
    st.subheader("History")
    if not detail.reviews:
        st.caption("No decisions yet.")
        return
    newest_first = list(reversed(detail.reviews))
    st.dataframe(
        pd.DataFrame(
            {
                "time (UTC)": [ui.utc_text(r.created_at) for r in newest_first],
                "operator": [r.operator for r in newest_first],
                "decision": [r.decision for r in newest_first],
                "comment": [r.comment or "" for r in newest_first],
                "marked": [
                    "; ".join(f"{m.label} ({'machine' if m.defect_id else m.kind})" for m in r.shapes)
                    for r in newest_first
                ],
                "review": [r.id for r in newest_first],
            }
        ),
        hide_index=True,
        width="stretch",
    )
    st.caption("Decisions are appended, never changed: the newest one counts.")


def _next_in_queue(store: Any, current: int) -> int | None:
    page = store.review_queue(FrameFilter(), order="newest", limit=2)
    return next((row.id for row in page.items if row.id != current), None)


def _navigation(store: Any, frame_id: int) -> None:
    back, spots, nxt = st.columns([1, 1, 1])
    back.page_link(QUEUE_PAGE, label="Back to the review queue", icon=":material/arrow_back:")
    spots.page_link(
        SPOTS_PAGE,
        label="Hot spots",
        icon=":material/center_focus_strong:",
        query_params={"frame": str(frame_id)},
    )
    following = _next_in_queue(store, frame_id)
    if following is not None:
        nxt.page_link(
            FRAME_PAGE,
            label=f"Next waiting frame #{following}",
            icon=":material/arrow_forward:",
            query_params={"frame": str(following)},
        )


def _pick_frame(store: Any) -> None:
    st.info("Pick a frame in the review queue, or enter its number.")
    number = st.number_input("Frame number", min_value=1, step=1, value=None, key="f_pick")
    if number is not None:
        st.query_params["frame"] = str(int(number))
        st.rerun()
    first = _next_in_queue(store, -1)
    if first is not None:
        st.page_link(
            FRAME_PAGE, label=f"Open the newest waiting frame (#{first})", query_params={"frame": str(first)}
        )


def render() -> None:
    store = ui.store()
    frame_id = frame_id_from_query()
    if frame_id is None:
        ui.header("Frame view")
        _pick_frame(store)
        return
    detail = store.frame_detail(frame_id)
    if detail is None:
        ui.header("Frame view")
        st.error(ui.md(f"frame {frame_id}: not in the database {ui.safe_url(ui.settings().db_url)}"))
        _pick_frame(store)
        return
    f = detail.frame
    ui.header(
        f"Frame #{f.id}: {f.verdict}", f"{f.image}  ·  {f.oring_type or 'unknown type'}  ·  run #{f.run_id}"
    )
    _navigation(store, frame_id)
    roots = ui.image_roots()
    left, right = st.columns([3, 1.3])
    with left:
        gray = _load_frame(detail, roots)
        if gray is not None:
            _picture(detail, gray, roots)
        _saved_overlay(detail, roots)
    with right:
        _summary(detail)
    _crops(detail, gray)
    lower_left, lower_right = st.columns([1.6, 1])
    with lower_left:
        _measurements(detail)
        if detail.timings:
            st.caption(
                ui.md(
                    "Stage times (ms): "
                    + ", ".join(
                        f"{k} {v:.0f}" for k, v in detail.timings.items() if isinstance(v, int | float)
                    )
                )
            )
    with lower_right:
        _decision_form(store, detail)
        _history(detail)
