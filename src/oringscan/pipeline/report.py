"""What people read after a batch: a summary table (rich) and the JSON array for scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from oringscan.pipeline.batch import BatchSummary
from oringscan.types import InspectionResult, Verdict

VERDICT_STYLES = {
    "good": "green",
    "defect": "bold red",
    "rework": "yellow",
    "suspect": "magenta",
    "error": "dim",
}
STAGES = (
    "read",
    "normalize",
    "roi",
    "tiles",
    "screening",
    "segmentation",
    "rework",
    "overlay",
    "db",
    "total",
)


def results_json(results: list[InspectionResult]) -> str:
    """One JSON array, one object per frame (image, verdict, reasons, screen_score, defects, rework, timings_ms)."""
    return json.dumps([r.to_json() for r in results], indent=2)


def summary_tables(summary: BatchSummary, max_listed: int = 15) -> list[Table]:
    """Counts per verdict with time per stage, then the non-good frames with their first reason."""
    counts = Table(
        title=f"oringscan {summary.kind}: {summary.oring_type} (run {summary.run_id})", title_justify="left"
    )
    counts.add_column("verdict")
    counts.add_column("frames", justify="right")
    counts.add_column("share", justify="right")
    total = len(summary.results)
    for verdict, n in summary.counts.items():
        share = f"{100 * n / total:.0f}%" if total else "-"
        counts.add_row(f"[{VERDICT_STYLES[verdict]}]{verdict}[/]", str(n), share)
    if summary.skipped:
        counts.add_row("skipped (already inspected)", str(len(summary.skipped)), "")
    counts.add_section()
    if summary.kind == "inspect":  # a watcher's wall time is mostly waiting for the camera
        counts.add_row("frames/s", f"{summary.frames_per_s:.2f}", "")
    timings = summary.mean_timings()
    for stage in STAGES:
        if stage in timings:
            counts.add_row(f"  {stage} ms/frame", f"{timings[stage]:.0f}", "")
    tables = [counts]
    flagged = [r for r in summary.results if r.verdict is not Verdict.GOOD]
    if flagged:
        listing = Table(title="frames that need attention", title_justify="left")
        listing.add_column("verdict")
        listing.add_column("frame")
        listing.add_column("why")
        for r in flagged[:max_listed]:
            listing.add_row(
                f"[{VERDICT_STYLES[str(r.verdict)]}]{r.verdict}[/]",
                Text(Path(r.image).name),  # plain text: a file name may hold "[/]" or "[red]"
                Text(r.reasons[0] if r.reasons else ""),
            )
        if len(flagged) > max_listed:
            listing.caption = f"... and {len(flagged) - max_listed} more (see the dashboard)"
        tables.append(listing)
    return tables


def print_summary(summary: BatchSummary, console: Console | None = None, db_url: str | None = None) -> None:
    console = console or Console()
    for table in summary_tables(summary):
        console.print(table)
    if db_url:
        from oringscan.db.store import safe_url  # a PostgreSQL password never reaches the terminal

        console.print(f"database: {safe_url(db_url)}", soft_wrap=True, markup=False)
    if summary.overlay_dir is not None and summary.overlay_dir.is_dir():
        console.print(f"overlays: {summary.overlay_dir}", soft_wrap=True, markup=False)


def result_line(result: InspectionResult) -> str:
    """One line per frame for the watcher's log."""
    why = f"  ({result.reasons[0]})" if result.reasons else ""
    score = "" if result.screen_score is None else f"  screen {result.screen_score:.4g}"
    return f"{result.verdict!s:8} {result.image}{score}{why}"


def to_plain(value: Any) -> Any:
    """JSON-ready copy of nested dicts/lists (paths to str)."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
