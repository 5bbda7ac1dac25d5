"""Run diff: which parts a re-inspection (or another run) judged differently, for the quality engineer."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from oringscan.dashboard import ui

RUNS_LISTED = 200
SUPERSEDED = "the records it re-inspected"


def diff_table(rows: list) -> pd.DataFrame:
    """One line per part: frame ids, verdict before and after, scores, why now, file."""
    return pd.DataFrame(
        {
            "frame": [r.frame_b for r in rows],
            "was frame": [r.frame_a for r in rows],
            "was": [r.verdict_a for r in rows],
            "now": [r.verdict_b for r in rows],
            "score was": [r.score_a for r in rows],
            "score now": [r.score_b for r in rows],
            "why now": [r.reason_b for r in rows],
            "path": [r.path for r in rows],
        },
        columns=["frame", "was frame", "was", "now", "score was", "score now", "why now", "path"],
    )


def render() -> None:
    from oringscan.db.diff import diff_runs

    ui.header(
        "Run diff",
        "Parts two runs judged differently: an archive run against its re-inspection with new models "
        "(`oringscan reinspect`), or any two runs of the same frames.",
    )
    store = ui.store()
    runs = store.runs(limit=RUNS_LISTED)
    if not runs:
        st.info("No runs recorded yet.")
        return
    labels = {
        r.id: f"#{r.id} {r.oring_type or ''} {ui.utc_text(r.started_at)[:16]} {r.command or ''}" for r in runs
    }
    left, right = st.columns(2)
    newer = right.selectbox("Run (newer)", list(labels), format_func=labels.get, key="d_run_b")
    older_choices: list = [SUPERSEDED, *[r for r in labels if r != newer]]
    older = left.selectbox(
        "Compared with",
        older_choices,
        format_func=lambda v: v if v == SUPERSEDED else labels[v],
        key="d_run_a",
    )
    diff = diff_runs(store, None if older == SUPERSEDED else int(older), int(newer))
    a, b, c, d = st.columns(4)
    a.metric("frames (older)", diff.n_a)
    b.metric("frames (newer)", diff.n_b)
    c.metric("parts in both", diff.common)
    d.metric("verdict changed", len(diff.changed))
    if not diff.common:
        st.caption("No part is in both: pick the run a re-inspection superseded, or runs of the same frames.")
        return
    transitions = diff.transitions()
    if transitions:
        st.dataframe(
            pd.DataFrame({"change": list(transitions), "parts": list(transitions.values())}),
            hide_index=True,
        )
    show_all = st.toggle("Show unchanged parts too", value=False, key="d_all")
    rows = diff.rows if show_all else diff.changed
    if rows:
        st.dataframe(diff_table(rows), hide_index=True, width="stretch")
    else:
        st.success("No part changed its verdict.")
