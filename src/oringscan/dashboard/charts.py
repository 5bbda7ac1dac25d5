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


def _verdict_scale() -> alt.Scale:
    return alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values()))


def yield_per_day(df: pd.DataFrame) -> alt.Chart:
    """Lines of first-pass yield (% good of judged parts) per type per day.

    Columns: day, oring_type, yield_pct, good, total."""
    return (
        alt.Chart(df, title="Yield per type per day (% good)")
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
            x=alt.X("oring_type:N", title="type", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("frames:Q", title="frames", stack="zero"),
            color=alt.Color("verdict:N", scale=_verdict_scale(), title="verdict"),
            tooltip=["oring_type:N", "verdict:N", "frames:Q"],
        )
        .properties(height=260)
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


def score_histogram(bins: pd.DataFrame, marginal_fraction: float | None = None) -> alt.LayerChart:
    """Screening score / threshold per verdict on shared bins, the threshold (1.0) as a rule.

    Columns bin_start, bin_end, verdict, frames. Normalised scores put every type's threshold at
    1.0, so one picture shows how close the good parts come to being flagged.
    """
    bars = (
        alt.Chart(bins)
        .mark_bar(opacity=0.85)
        .encode(
            x=alt.X("bin_start:Q", title="screening score / threshold", bin="binned"),
            x2="bin_end:Q",
            y=alt.Y("frames:Q", title="frames", stack="zero"),
            color=alt.Color("verdict:N", scale=_verdict_scale(), title="verdict"),
            tooltip=[
                alt.Tooltip("bin_start:Q", format=".2f", title="from"),
                alt.Tooltip("bin_end:Q", format=".2f", title="to"),
                "verdict:N",
                "frames:Q",
            ],
        )
    )
    lines = pd.DataFrame({"at": [1.0], "what": ["threshold"]})
    if marginal_fraction:
        lines = pd.concat(
            [lines, pd.DataFrame({"at": [marginal_fraction], "what": ["marginal"]})], ignore_index=True
        )
    rules = (
        alt.Chart(lines)
        .mark_rule(strokeDash=[6, 3], size=2, color="#333333")
        .encode(x="at:Q", tooltip=["what:N", alt.Tooltip("at:Q", format=".2f")])
    )
    # "marginal" sits just left of "threshold": write it leftwards so the two never overlap.
    text = alt.Chart(lines).encode(x="at:Q", y=alt.value(10), text="what:N")
    labels = alt.layer(
        text.transform_filter(alt.datum.what == "threshold").mark_text(
            align="left", dx=4, dy=-6, color="#333333"
        ),
        text.transform_filter(alt.datum.what == "marginal").mark_text(
            align="right", dx=-4, dy=-6, color="#333333"
        ),
    )
    return alt.layer(bars, rules, labels).properties(title="Screening scores (dashed: threshold)", height=260)


def override_matrix(df: pd.DataFrame) -> alt.Chart:
    """Per machine verdict, what people decided (newest review); columns verdict, decision, frames."""
    return (
        alt.Chart(df, title="Machine verdict vs. people's decision")
        .mark_bar()
        .encode(
            x=alt.X("verdict:N", title="machine said", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("decision:N"),
            y=alt.Y("frames:Q", title="frames"),
            color=alt.Color(
                "decision:N",
                title="person decided",
                scale=alt.Scale(
                    domain=["good", "defect", "rework"],
                    range=[VERDICT_COLORS["good"], VERDICT_COLORS["defect"], VERDICT_COLORS["rework"]],
                ),
            ),
            tooltip=["verdict:N", "decision:N", "frames:Q"],
        )
        .properties(height=240)
    )


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
            x=alt.X("run:N", title="run", sort=None, axis=alt.Axis(labelAngle=-30)),
            y=alt.Y("frames:Q", title="frames", stack="zero"),
            color=alt.Color("verdict:N", scale=_verdict_scale()),
            tooltip=["run:N", "verdict:N", "frames:Q"],
        )
        .properties(height=240)
    )


def stage_timings(df: pd.DataFrame) -> alt.Chart:
    """Mean milliseconds per stage per run; columns run, stage, mean_ms."""
    return (
        alt.Chart(df, title="Mean time per frame and stage (ms)")
        .mark_bar()
        .encode(
            x=alt.X("run:N", title="run", sort=None, axis=alt.Axis(labelAngle=-30)),
            y=alt.Y("mean_ms:Q", title="ms per frame", stack="zero"),
            color=alt.Color("stage:N", title="stage"),
            tooltip=["run:N", "stage:N", alt.Tooltip("mean_ms:Q", format=".1f")],
        )
        .properties(height=260)
    )
