"""The Overview and Runs charts (Altair): pictures first, the numbers beside them in tables.

Each function takes a small, already aggregated DataFrame (the aggregation happens in SQL) and
returns a chart; none of them touches the database.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

VERDICT_COLORS = {
    "good": "#2e9d48",
    "defect": "#d62728",
    "rework": "#ff9f1a",
    "suspect": "#9467bd",
    "error": "#7f7f7f",
}
DECISION_COLORS = {"confirm_defect": "#d62728", "override_good": "#2e9d48", "rework": "#ff9f1a"}


def _verdict_scale() -> alt.Scale:
    return alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values()))


def yield_per_day(df: pd.DataFrame) -> alt.Chart:
    """Lines of first-pass yield (% good) per o-ring type per day; columns day, oring_type, total, good."""
    data = df.assign(yield_pct=100.0 * df["good"] / df["total"].where(df["total"] > 0))
    return (
        alt.Chart(data, title="Yield per type per day (% good)")
        .mark_line(point=True)
        .encode(
            x=alt.X("day:T", title="day"),
            y=alt.Y("yield_pct:Q", title="yield %", scale=alt.Scale(domain=[0, 100])),
            color=alt.Color("oring_type:N", title="type"),
            tooltip=["day:T", "oring_type:N", alt.Tooltip("yield_pct:Q", format=".1f"), "good:Q", "total:Q"],
        )
        .properties(height=260)
    )


def verdict_counts(df: pd.DataFrame) -> alt.Chart:
    """Bars of frames per verdict, split by type; columns oring_type, verdict, frames."""
    return (
        alt.Chart(df, title="Verdicts")
        .mark_bar()
        .encode(
            y=alt.Y("oring_type:N", title="type"),
            x=alt.X("frames:Q", title="frames", stack="zero"),
            color=alt.Color("verdict:N", scale=_verdict_scale(), title="verdict"),
            tooltip=["oring_type:N", "verdict:N", "frames:Q"],
        )
        .properties(height=max(80, 40 * max(1, df["oring_type"].nunique())))
    )


def defects_per_class(df: pd.DataFrame) -> alt.Chart:
    """Stacked bars of defects per class per day; columns day, label, defects."""
    return (
        alt.Chart(df, title="Defects per class per day")
        .mark_bar()
        .encode(
            x=alt.X("day:T", title="day"),
            y=alt.Y("defects:Q", title="defects", stack="zero"),
            color=alt.Color("label:N", title="class"),
            tooltip=["day:T", "label:N", "defects:Q"],
        )
        .properties(height=260)
    )


def score_histogram(scores: pd.DataFrame, thresholds: pd.DataFrame) -> alt.LayerChart:
    """Screening scores per type with each type's threshold as a rule; columns oring_type, score / threshold."""
    bars = (
        alt.Chart(scores)
        .mark_bar(opacity=0.75)
        .encode(
            x=alt.X("score:Q", bin=alt.Bin(maxbins=60), title="screening score"),
            y=alt.Y("count():Q", title="frames", stack=None),
            color=alt.Color("oring_type:N", title="type"),
            tooltip=[alt.Tooltip("count():Q", title="frames"), "oring_type:N"],
        )
    )
    rules = (
        alt.Chart(thresholds)
        .mark_rule(strokeDash=[6, 3], size=2)
        .encode(
            x="threshold:Q",
            color=alt.Color("oring_type:N"),
            tooltip=["oring_type:N", alt.Tooltip("threshold:Q", format=".4g")],
        )
    )
    return alt.layer(bars, rules).properties(title="Screening score histogram (dashed: thresholds)", height=260)


def overrides_per_day(df: pd.DataFrame) -> alt.Chart:
    """Share of reviews that disagreed with the machine, per day; columns day, reviews, overrides."""
    data = df.assign(override_pct=100.0 * df["overrides"] / df["reviews"].where(df["reviews"] > 0))
    return (
        alt.Chart(data, title="Reviews that disagree with the machine (%)")
        .mark_bar(color="#9467bd")
        .encode(
            x=alt.X("day:T", title="day"),
            y=alt.Y("override_pct:Q", title="overrides %", scale=alt.Scale(domain=[0, 100])),
            tooltip=["day:T", "reviews:Q", "overrides:Q", alt.Tooltip("override_pct:Q", format=".1f")],
        )
        .properties(height=220)
    )


def run_counts(df: pd.DataFrame) -> alt.Chart:
    """Frames per verdict per run; columns run, verdict, frames."""
    return (
        alt.Chart(df, title="Frames per run")
        .mark_bar()
        .encode(
            y=alt.Y("run:N", title="run", sort="-x"),
            x=alt.X("frames:Q", title="frames", stack="zero"),
            color=alt.Color("verdict:N", scale=_verdict_scale()),
            tooltip=["run:N", "verdict:N", "frames:Q"],
        )
        .properties(height=max(80, 28 * max(1, df["run"].nunique())))
    )


def stage_timings(df: pd.DataFrame) -> alt.Chart:
    """Mean milliseconds per stage per run; columns run, stage, mean_ms."""
    return (
        alt.Chart(df, title="Mean time per frame and stage (ms)")
        .mark_bar()
        .encode(
            y=alt.Y("run:N", title="run"),
            x=alt.X("mean_ms:Q", title="ms per frame", stack="zero"),
            color=alt.Color("stage:N", title="stage"),
            tooltip=["run:N", "stage:N", alt.Tooltip("mean_ms:Q", format=".1f")],
        )
        .properties(height=max(80, 28 * max(1, df["run"].nunique())))
    )
