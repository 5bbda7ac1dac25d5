"""``oringscan reinspect``: inspect recorded frames again with the current models (a thin shell over
:func:`oringscan.pipeline.reinspect.reinspect`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from oringscan.cli.common import (
    EXIT_CODES_HELP,
    AppContext,
    common_options,
    exit_for_input_errors,
    set_threads,
)
from oringscan.db.cli import WHEN
from oringscan.pipeline.cli import engine_options


@click.command("reinspect", epilog=EXIT_CODES_HELP)
@common_options
@click.option(
    "--model", "types", multiple=True, metavar="NAME", help="O-ring type(s) to select [default: all]."
)
@click.option("--station", "stations", multiple=True, help="Station(s) to select.")
@click.option("--since", type=WHEN, default=None, help="Inspected at or after (2026-03-01, 7d, today...).")
@click.option("--until", type=WHEN, default=None, help="Inspected before.")
@click.option(
    "--verdict",
    "verdicts",
    multiple=True,
    type=click.Choice(["good", "defect", "rework", "suspect", "error"]),
    help="Verdict(s) to select.",
)
@click.option("--run", "run_ids", multiple=True, type=click.IntRange(min=1), help="Run id(s) to select.")
@click.option(
    "--fingerprint",
    "fingerprints",
    multiple=True,
    metavar="FP",
    help="Model fingerprint(s) the records were made with (a prefix is enough; see `oringscan db runs`).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="At most this many frames (oldest first)."
)
@click.option("--force", is_flag=True, help="Also frames already recorded with the current models.")
@click.option("--dry-run", is_flag=True, help="Only say what would be re-inspected.")
@click.option(
    "--db", "db_url", default=None, metavar="URL", help="SQLAlchemy URL [default: from the config]."
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object on stdout: the report and every result."
)
@click.option(
    "--save-vis/--no-save-vis", "save_vis", default=None, help="Overlays of non-good frames [default: on]."
)
@click.option("--device", default=None, help="auto, cpu or cuda [default: from the config].")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs, CI).")
@engine_options
def reinspect_command(
    app: AppContext,
    types: tuple[str, ...],
    stations: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    verdicts: tuple[str, ...],
    run_ids: tuple[int, ...],
    fingerprints: tuple[str, ...],
    limit: int | None,
    force: bool,
    dry_run: bool,
    db_url: str | None,
    as_json: bool,
    save_vis: bool | None,
    device: str | None,
    no_progress: bool,
    engine: str = "in-process",
    ray_address: str | None = None,
    actors: int | None = None,
) -> None:
    """Inspect recorded frames again with the models in use now; new records supersede the old.

    \b
    Selects current records (type, station, time, verdict, run, model fingerprint), reads each
    record's file again and writes a new record linked to the one it supersedes (one run per
    o-ring type). A file that is gone, or holds another frame now, is reported and left alone
    (exit 3); frames already recorded with the current models are skipped (--force: redo them).
    Then: oringscan db diff RUN (printed at the end) lists the parts whose verdict changed.

    \b
    Examples:
      oringscan reinspect --model model1 --since 2026-10-01 --until 2026-11-01
      oringscan reinspect --verdict suspect --station st3 --engine ray --actors 2
      oringscan reinspect --run 12 --dry-run
    """
    from rich.console import Console

    from oringscan.db.cli import _open
    from oringscan.db.store import safe_url
    from oringscan.pipeline.ray_engine import RayOptions, require_ray
    from oringscan.pipeline.reinspect import Selection, reinspect, select_frames

    if engine == "ray":
        require_ray()
    selection = Selection(
        oring_types=types,
        stations=stations,
        since=since,
        until=until,
        verdicts=verdicts,
        run_ids=run_ids,
        model_fingerprints=fingerprints,
        limit=limit,
    )
    url = db_url or app.db_url
    store = _open(app, db_url)
    console = Console(stderr=as_json)
    if dry_run:
        rows = select_frames(store, selection)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.oring_type or "?"] = counts.get(row.oring_type or "?", 0) + 1
        if as_json:
            click.echo(json.dumps({"selected": len(rows), "by_type": counts, "frames": [r.id for r in rows]}))
        else:
            detail = ", ".join(f"{t} {n}" for t, n in counts.items())
            console.print(
                f"would re-inspect {len(rows)} frame(s){': ' + detail if detail else ''}", markup=False
            )
        return
    set_threads(None)
    report = reinspect(
        store,
        app.config,
        app.output_root,
        selection,
        engine=engine,
        ray_options=RayOptions(address=ray_address, actors=actors or 1),
        device=device,
        save_overlays=save_vis,
        force=force,
        progress=not no_progress,
    )
    _print_report(report, console, safe_url(url))
    if as_json:
        from oringscan.pipeline.report import results_json

        doc: dict[str, Any] = report.to_json()
        doc["results"] = json.loads(results_json(report.results))
        click.echo(json.dumps(doc, indent=2))
    n_errors = (
        sum(1 for r in report.results if str(r.verdict) == "error") + len(report.gone) + len(report.changed)
    )
    exit_for_input_errors(n_errors, report.selected)


def _print_report(report: Any, console: Any, url: str) -> None:
    from oringscan.pipeline.report import print_summary

    for summary in report.summaries:
        print_summary(summary, console, db_url=url)
    lines = [f"selected {report.selected} frame(s); re-inspected {len(report.results)}"]
    for label, rows in (
        ("file gone", report.gone),
        ("file holds another frame now", report.changed),
        ("already recorded with the current models (--force to redo)", report.up_to_date),
        ("already re-inspected by another run", report.already_superseded),
        ("no o-ring type recorded", report.untyped),
    ):
        if rows:
            shown = ", ".join(f"{r.path} (frame {r.id})" for r in rows[:5])
            more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
            lines.append(f"{label}: {len(rows)}: {shown}{more}")
    for run_id in report.run_ids:
        lines.append(f"what changed: oringscan db diff {run_id}")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def register(root: click.Group) -> None:
    root.add_command(reinspect_command, "reinspect")
