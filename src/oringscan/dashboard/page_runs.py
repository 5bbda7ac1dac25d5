"""Runs: what each batch inspected, how long each stage took, and with which models."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from oringscan.dashboard import charts, ui
from oringscan.db import RunRow

RUNS_SHOWN = 50
PROMOTIONS_SHOWN = 20


def runs_table(runs: list[RunRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [r.id for r in runs],
            "started (UTC)": [ui.utc_text(r.started_at) for r in runs],
            "finished (UTC)": [ui.utc_text(r.finished_at) for r in runs],
            "status": [r.status for r in runs],
            "type": [r.oring_type or "" for r in runs],
            "frames": [r.n_frames for r in runs],
            "good": [r.n_good for r in runs],
            "defect": [r.n_defect for r in runs],
            "rework": [r.n_rework for r in runs],
            "suspect": [r.n_suspect for r in runs],
            "error": [r.n_error for r in runs],
            "skipped": [r.n_skipped for r in runs],
            "mean ms/frame": [None if r.mean_ms is None else round(r.mean_ms, 1) for r in runs],
            "host": [r.host or "" for r in runs],
            "model fingerprint": [r.model_fingerprint or "" for r in runs],
        }
    )


def counts_long(runs: list[RunRow]) -> pd.DataFrame:
    rows = [
        {"run": f"#{r.id} {r.oring_type or ''}".strip(), "verdict": v, "frames": getattr(r, f"n_{v}")}
        for r in runs
        for v in ("good", "defect", "rework", "suspect", "error")
        if getattr(r, f"n_{v}")
    ]
    return pd.DataFrame(rows, columns=["run", "verdict", "frames"])


def timings_table(store: Any, runs: list[RunRow]) -> pd.DataFrame:
    """Per run and stage: frames timed, mean / median / 95th percentile ms (``total`` left out of the bars)."""
    rows = []
    for run in runs:
        for stage, numbers in store.run_timings(run.id).items():
            rows.append(
                {
                    "run": f"#{run.id} {run.oring_type or ''}".strip(),
                    "stage": stage,
                    "frames": int(numbers["n"]),
                    "mean_ms": round(numbers["mean_ms"], 1),
                    "median_ms": round(numbers["median_ms"], 1),
                    "p95_ms": round(numbers["p95_ms"], 1),
                }
            )
    return pd.DataFrame(rows, columns=["run", "stage", "frames", "mean_ms", "median_ms", "p95_ms"])


def promotions_table(store: Any) -> pd.DataFrame:
    """The newest promotions and rollbacks of model versions (``oringscan models promote``)."""
    rows = store.promotions(limit=PROMOTIONS_SHOWN)
    return pd.DataFrame(
        {
            "when (UTC)": [ui.utc_text(r.created_at) for r in rows],
            "type": [r.oring_type for r in rows],
            "action": [r.action for r in rows],
            "from": [r.previous or "newest models" for r in rows],
            "to": [r.version for r in rows],
            "operator": [r.operator or "" for r in rows],
            "reason": [r.reason or "" for r in rows],
        }
    )


def _promotions(store: Any) -> None:
    table = promotions_table(store)
    if table.empty:
        return
    st.subheader("Model versions in use")
    st.caption("Who switched the models that decide parts, and why (oringscan models promote / rollback).")
    st.dataframe(table, hide_index=True, width="stretch")


def render() -> None:
    ui.header("Runs", "Each inspection batch: counts per verdict, time per stage, the models it used.")
    store = ui.store()
    runs = store.runs(limit=RUNS_SHOWN)
    if not runs:
        st.info("No runs recorded yet. Run `oringscan inspect` (or `oringscan demo`) to fill the database.")
        _promotions(store)
        return
    st.dataframe(
        runs_table(runs),
        hide_index=True,
        width="stretch",
        column_config={"run": st.column_config.NumberColumn(format="#%d")},
    )
    if len(runs) == RUNS_SHOWN:
        st.caption(f"The newest {RUNS_SHOWN} runs.")
    st.altair_chart(charts.run_counts(counts_long(runs)), width="stretch")
    _promotions(store)

    labels = {r.id: f"#{r.id} {r.oring_type or ''} {ui.utc_text(r.started_at)[:16]}" for r in runs}
    chosen = st.multiselect(
        "Runs to compare",
        list(labels),
        default=list(labels)[: min(4, len(labels))],
        format_func=labels.get,
        key="r_runs",
    )
    picked = [r for r in runs if r.id in chosen]
    if not picked:
        return
    timings = timings_table(store, picked)
    if timings.empty:
        st.caption("No stage timings recorded for these runs.")
    else:
        left, right = st.columns([1.4, 1])
        stages = timings[timings["stage"] != "total"]
        left.altair_chart(charts.stage_timings(stages), width="stretch")
        right.dataframe(timings, hide_index=True, width="stretch")
    st.subheader("Models and settings")
    for run in picked:
        with st.expander(ui.md(f"{labels[run.id]}  ·  {run.status}"), expanded=len(picked) == 1):
            # Everything from the database is escaped (a command line may hold any characters).
            st.markdown(
                f"**Command:** {ui.md(run.command or '(not recorded)')}  \n**Host:** {ui.md(run.host or '?')}  \n"
                f"**Model fingerprint:** {ui.md(run.model_fingerprint or '?')}  \n"
                f"**Config fingerprint:** {ui.md(run.config_fingerprint or '?')}"
            )
            if run.model_versions:
                st.dataframe(
                    pd.DataFrame(
                        {
                            "part": list(run.model_versions),
                            "version": [str(v) for v in run.model_versions.values()],
                        }
                    ),
                    hide_index=True,
                    width="stretch",
                )
            else:
                st.caption("No model versions recorded.")
