"""Review queue: flagged frames (defect, suspect, rework) that no person has decided yet."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import PurePath
from typing import Any

import pandas as pd
import streamlit as st

from oringscan.dashboard import queries, ui
from oringscan.db import REVIEW_VERDICTS, FrameFilter, FrameRow
from oringscan.errors import OringscanError

FRAME_PAGE = "views/frame_view.py"
SPOTS_PAGE = "views/hot_spots.py"  # a frame opens on its hot spots; the whole frame is one click on
ORDERS = {"newest": "Newest first", "worst": "Worst first", "uncertain": "Closest to a threshold"}
THUMB_WIDTH = 120
ROW_HEIGHT = 56
FILTER_KEYS = ("q_types", "q_verdicts", "q_runs", "q_dates", "q_order", "q_reviewed", "q_page")


@dataclass(slots=True)
class QueueQuery:
    """The queue's current filter, as the page's widgets set it."""

    types: list[str]
    verdicts: list[str]
    run_ids: list[int]
    since: date | None = None
    until: date | None = None  # inclusive day
    order: str = "newest"
    include_reviewed: bool = False

    def frame_filter(self) -> FrameFilter:
        return FrameFilter(
            oring_type=self.types or None,
            verdict=self.verdicts or list(REVIEW_VERDICTS),
            run_id=self.run_ids or None,
            since=self.since,
            until=None if self.until is None else self.until + timedelta(days=1),
            reviewed=None if self.include_reviewed else False,
        )


def fetch_page(store: Any, query: QueueQuery, page: int, page_size: int) -> Any:
    """One page of the queue (LIMIT/OFFSET in SQL) and the total."""
    return store.frames(
        query.frame_filter(), order=query.order, limit=page_size, offset=(page - 1) * page_size
    )


def rows_frame(rows: list[FrameRow]) -> pd.DataFrame:
    """The table people read and copy: one line per frame."""
    return pd.DataFrame(
        {
            "frame": [r.id for r in rows],
            "inspected (UTC)": [ui.utc_text(r.inspected_at) for r in rows],
            "type": [r.oring_type or "" for r in rows],
            "verdict": [r.verdict for r in rows],
            "defects": [r.n_defects for r in rows],
            "worst defect score": [r.max_defect_score for r in rows],
            "screening / threshold": [
                None
                if r.screen_score is None or not r.screen_threshold
                else r.screen_score / r.screen_threshold
                for r in rows
            ],
            "reasons": ["; ".join(str(x) for x in r.reasons) for r in rows],
            "image": [PurePath(r.image).name for r in rows],
            "run": [r.run_id for r in rows],
            "reviewed as": [r.review_decision or "" for r in rows],
        }
    )


@st.cache_data(show_spinner=False, max_entries=2000)
def _thumb(path: str, mtime: float, _roots: Any) -> str | None:
    import base64

    from oringscan.dashboard.hotspots import thumbnail
    from oringscan.dashboard.images import encode_jpeg

    try:
        gray = _roots.read(path)
    except OringscanError:
        return None
    return (
        "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(thumbnail(gray, THUMB_WIDTH), 80)).decode()
    )


def thumbnails(rows: list[FrameRow], roots: Any) -> list[str | None]:
    """Small JPEGs of the page's frames (data URLs), cached per file and modification time."""
    out: list[str | None] = []
    for r in rows:
        try:
            path = roots.allowed(r.image)
            out.append(_thumb(str(path), path.stat().st_mtime, roots) if path.is_file() else None)
        except (OringscanError, OSError):
            out.append(None)
    return out


def queue_csv(store: Any, query: QueueQuery) -> bytes:
    """Every frame of the current filter as CSV (full image paths; the page shows file names)."""
    rows = store.frames(query.frame_filter(), order=query.order, limit=None).items
    table = rows_frame(rows)
    table["image"] = [r.image for r in rows]
    table["screening score"] = [r.screen_score for r in rows]
    table["threshold"] = [r.screen_threshold for r in rows]
    table["reviewed by"] = [r.review_operator or "" for r in rows]
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8")


def _run_label(run: Any) -> str:
    started = ui.utc_text(run.started_at)[:16]
    return f"#{run.id} {run.oring_type or ''} {started}".strip()


def render() -> None:
    ui.header(
        "Review queue", "Frames the machine flagged (defect, suspect, rework) that nobody has decided yet."
    )
    store = ui.store()
    settings = ui.settings()
    with store.read_session() as session:
        types = queries.known_types(session)
        span = queries.inspected_span(session)
    runs = store.runs(limit=500)
    run_labels = {r.id: _run_label(r) for r in runs}

    ui.keep_widget_state(*FILTER_KEYS)
    c1, c2, c3, c4, c5 = st.columns([1.2, 1.4, 1.6, 1.6, 1.0])
    chosen_types = c1.multiselect("Type", types, key="q_types", placeholder="all types")
    chosen_verdicts = c2.multiselect(
        "Verdict", list(REVIEW_VERDICTS), key="q_verdicts", placeholder="defect, suspect, rework"
    )
    chosen_runs = c3.multiselect(
        "Run",
        list(run_labels),
        format_func=lambda i: run_labels.get(i, f"#{i}"),
        key="q_runs",
        placeholder="all runs",
    )
    empty_range = (
        {} if "q_dates" in st.session_state else {"value": ()}
    )  # a kept value must not meet a default
    dates: Any = c4.date_input(
        "Inspected (UTC days)",
        key="q_dates",
        min_value=span[0] if span else None,
        max_value=span[1] if span else None,
        **empty_range,
    )
    order = c5.radio("Order", list(ORDERS), format_func=ORDERS.get, key="q_order", horizontal=False)
    include_reviewed = st.toggle("Show reviewed frames too", key="q_reviewed")
    since = until = None
    if isinstance(dates, tuple | list) and dates:
        since, until = dates[0], dates[-1]
    query = QueueQuery(
        chosen_types, chosen_verdicts, chosen_runs, since, until, order or "newest", include_reviewed
    )

    page_size = settings.page_size
    signature = repr(query)
    if st.session_state.get("_q_signature") != signature:  # a new filter starts at its first page
        st.session_state["_q_signature"] = signature
        st.session_state["q_page"] = 1
        st.session_state["_q_reset_open"] = True  # "Open frame" starts at the new first row
    requested = int(st.session_state.get("q_page") or 1)
    result = fetch_page(store, query, requested, page_size)
    total = result.total
    pages = max(1, -(-total // page_size))
    if requested > pages:
        st.session_state["q_page"] = pages
        result = fetch_page(store, query, pages, page_size)
    top = st.columns([2, 1, 1])
    top[0].metric("Frames waiting for a person" if not include_reviewed else "Flagged frames", f"{total:,}")
    top[1].number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="q_page")
    with top[2]:
        st.write("")
        st.download_button(
            "Export CSV of this filter",
            data=lambda: queue_csv(store, query),
            file_name="review_queue.csv",
            mime="text/csv",
            on_click="ignore",
            icon=":material/download:",
            disabled=total == 0,
        )
    ui.remember_widget_state(*FILTER_KEYS)

    if total == 0:
        if span is None:
            st.info(
                "The database has no inspections yet. "
                "Run `oringscan inspect` (or `oringscan demo`) to fill it."
            )
        else:
            st.success("Nothing waiting: every flagged frame matching this filter has been reviewed.")
        return

    table = rows_frame(result.items)
    st.session_state["_queue_ids"] = table["frame"].tolist()  # J / K on the hot-spot view follow these
    shown = table.copy()
    shown.insert(1, "picture", thumbnails(result.items, ui.image_roots()))
    event = st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        row_height=ROW_HEIGHT,  # room for the thumbnail
        height=min(ROW_HEIGHT * len(table) + 38, 1400),  # the whole page of rows, no inner scrolling
        on_select="rerun",
        selection_mode="single-row",
        key="queue_table",
        column_config={
            "frame": st.column_config.NumberColumn(
                "frame", format="%d", help="Select a row to open the frame"
            ),
            "worst defect score": st.column_config.ProgressColumn(
                "worst defect score", min_value=0.0, max_value=1.0, format="%.2f"
            ),
            "screening / threshold": st.column_config.NumberColumn(
                format="%.2f", help="1.00 = at the screening threshold"
            ),
            "run": st.column_config.NumberColumn(format="#%d"),
            "picture": st.column_config.ImageColumn("picture", width="small"),
        },
    )
    st.caption(
        f"Frames {result.offset + 1}-{result.offset + len(result.items)} of {total:,}. "
        "Select a row to open it."
    )
    selected = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if selected:
        st.switch_page(SPOTS_PAGE, query_params={"frame": str(int(table.iloc[selected[0]]["frame"]))})

    ids = table["frame"].tolist()
    if st.session_state.pop("_q_reset_open", False) or st.session_state.get("q_open") not in ids:
        st.session_state["q_open"] = ids[0]
    pick, go = st.columns([3, 1])
    chosen = pick.selectbox(
        "Open frame",
        ids,
        key="q_open",
        format_func=lambda i: (
            f"#{i}  {table.loc[table['frame'] == i, 'verdict'].iat[0]}  "
            f"{table.loc[table['frame'] == i, 'image'].iat[0]}"
        ),
    )
    with go:
        st.write("")
        if st.button(
            "Open frame", key="q_open_button", type="primary", icon=":material/open_in_new:", shortcut="O"
        ):
            st.switch_page(SPOTS_PAGE, query_params={"frame": str(int(chosen))})
