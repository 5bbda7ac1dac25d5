"""Overview: yield, verdicts, defect classes, screening scores and how often people overrule the machine."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import streamlit as st

from oringscan.dashboard import charts, queries, ui
from oringscan.db import FrameFilter, Stats

FILTER_KEYS = ("o_types", "o_dates")


def yield_table(stats: Stats) -> pd.DataFrame:
    rows = stats.yield_by_day
    return pd.DataFrame(
        {
            "day": pd.to_datetime([r.day for r in rows]),
            "oring_type": [r.oring_type or "?" for r in rows],
            "yield_pct": [None if r.yield_rate is None else round(100 * r.yield_rate, 2) for r in rows],
            "total": [r.total for r in rows],
            "good": [r.good for r in rows],
            "defect": [r.defect for r in rows],
            "rework": [r.rework for r in rows],
            "suspect": [r.suspect for r in rows],
            "error": [r.error for r in rows],
        }
    )


def verdict_table(stats: Stats) -> pd.DataFrame:
    """Frames per type and verdict (summed over the days)."""
    table = yield_table(stats)
    if table.empty:
        return pd.DataFrame(columns=["oring_type", "verdict", "frames"])
    long = table.melt(
        id_vars=["oring_type"],
        value_vars=["good", "defect", "rework", "suspect", "error"],
        var_name="verdict",
        value_name="frames",
    )
    return long.groupby(["oring_type", "verdict"], as_index=False)["frames"].sum()


def defect_table(stats: Stats) -> pd.DataFrame:
    rows = stats.defects_by_class
    table = pd.DataFrame(
        {
            "day": pd.to_datetime([r.day for r in rows]),
            "oring_type": [r.oring_type or "?" for r in rows],
            "label": [r.label for r in rows],
            "defects": [r.defects for r in rows],
            "frames": [r.frames for r in rows],
        }
    )
    return table


def histogram_table(hist: Any) -> pd.DataFrame:
    rows = []
    for verdict, counts in hist.counts.items():
        for i, n in enumerate(counts):
            if n:
                rows.append(
                    {
                        "bin_start": hist.edges[i],
                        "bin_end": hist.edges[i + 1],
                        "verdict": verdict,
                        "frames": n,
                    }
                )
    return pd.DataFrame(rows, columns=["bin_start", "bin_end", "verdict", "frames"])


def override_rate(stats: Stats) -> tuple[int, int]:
    """(overrides, decided hard verdicts): how often a person changed a good/defect/rework verdict."""
    hard = sum(o.frames for o in stats.review_overrides if o.verdict != "suspect")
    return stats.n_overridden, hard


def _chart_with_numbers(chart: Any, table: pd.DataFrame, name: str) -> None:
    pic, numbers = st.tabs(["Chart", "Numbers"])
    with pic:
        st.altair_chart(chart, width="stretch")
    with numbers:
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button(
            f"CSV: {name}",
            table.to_csv(index=False).encode("utf-8"),
            file_name=f"{name}.csv",
            mime="text/csv",
            on_click="ignore",
            key=f"csv_{name}",
        )


def render() -> None:
    ui.header("Overview", "The line at a glance. Days are UTC days of inspection.")
    store = ui.store()
    with store.read_session() as session:
        types = queries.known_types(session)
        span = queries.inspected_span(session)
    if span is None:
        st.info(
            "The database has no inspections yet. Run `oringscan inspect` (or `oringscan demo`) to fill it."
        )
        return
    ui.keep_widget_state(*FILTER_KEYS)
    c1, c2 = st.columns([1, 1])
    chosen_types = c1.multiselect("Type", types, key="o_types", placeholder="all types")
    empty_range = (
        {} if "o_dates" in st.session_state else {"value": ()}
    )  # a kept value must not meet a default
    dates: Any = c2.date_input(
        "Days (UTC)", min_value=span[0], max_value=span[1], key="o_dates", **empty_range
    )
    ui.remember_widget_state(*FILTER_KEYS)
    since = until = None
    if isinstance(dates, tuple | list) and dates:
        since, until = dates[0], dates[-1] + timedelta(days=1)
    filters = FrameFilter(oring_type=chosen_types or None, since=since, until=until)

    stats = store.stats(filters)
    hist = store.score_histogram(filters, bins=40, normalized=True)
    with store.read_session() as session:
        per_day = queries.overrides_by_day(session, filters)

    judged = stats.n_frames - stats.verdicts.get("error", 0)
    overrides, hard = override_rate(stats)
    m = st.columns(6)
    m[0].metric("Frames", f"{stats.n_frames:,}")
    m[1].metric(
        "Yield (good / judged)",
        "n/a" if judged <= 0 else f"{100 * stats.verdicts.get('good', 0) / judged:.1f} %",
    )
    m[2].metric("Defect", f"{stats.verdicts.get('defect', 0):,}")
    m[3].metric("Rework", f"{stats.verdicts.get('rework', 0):,}")
    m[4].metric(
        "Suspect / error", f"{stats.verdicts.get('suspect', 0):,} / {stats.verdicts.get('error', 0):,}"
    )
    m[5].metric(
        "Overridden by people",
        "n/a" if hard == 0 else f"{100 * overrides / hard:.1f} %",
        help=f"{overrides} of {hard} reviewed good/defect/rework verdicts were changed by a person",
    )

    left, right = st.columns(2)
    with left:
        table = yield_table(stats)
        _chart_with_numbers(charts.yield_per_day(table), table, "yield_per_day")
    with right:
        table = verdict_table(stats)
        _chart_with_numbers(charts.verdict_counts(table), table, "verdict_counts")
    left, right = st.columns(2)
    with left:
        table = defect_table(stats)
        if table.empty:
            st.caption("No defects recorded in this selection.")
        else:
            _chart_with_numbers(charts.defects_per_class(table), table, "defects_per_class")
    with right:
        table = histogram_table(hist)
        if table.empty:
            st.caption("No screening scores recorded in this selection.")
        else:
            _chart_with_numbers(
                charts.score_histogram(table, ui.settings().marginal_fraction), table, "score_histogram"
            )
            st.caption(
                ui.md("Thresholds: " + ", ".join(f"{t} {v:.4g}" for t, v in sorted(hist.thresholds.items())))
            )
    st.subheader("Reviews")
    if not stats.review_overrides:
        st.caption("No frame has been reviewed in this selection yet.")
        return
    left, right = st.columns(2)
    with left:
        table = pd.DataFrame(
            [
                {"verdict": o.verdict, "decision": o.decision, "frames": o.frames, "oring_type": o.oring_type}
                for o in stats.review_overrides
            ]
        )
        matrix = table.groupby(["verdict", "decision"], as_index=False)["frames"].sum()
        _chart_with_numbers(charts.override_matrix(matrix), table, "review_decisions")
    with right:
        table = pd.DataFrame(
            {
                "day": pd.to_datetime([d.day for d in per_day]),
                "reviews": [d.reviews for d in per_day],
                "overrides": [d.overrides for d in per_day],
            }
        )
        _chart_with_numbers(charts.overrides_per_day(table), table, "overrides_per_day")
