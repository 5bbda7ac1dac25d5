"""``oringscan db diff RUN_A [RUN_B]``: the parts whose verdict changed between two runs.

Registered into the ``db`` group by ``oringscan.db.cli.register`` (so ``oringscan db --help`` lists
it without importing SQLAlchemy: the query module is imported when the command runs).
"""

from __future__ import annotations

import json

import click

from oringscan.cli.common import AppContext, common_options


@click.command("diff")
@common_options
@click.argument("run_a", type=click.IntRange(min=1))
@click.argument("run_b", type=click.IntRange(min=1), required=False)
@click.option(
    "--db", "db_url", default=None, metavar="URL", help="SQLAlchemy URL [default: from the config]."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout (counts, changed parts).")
@click.option("--all", "show_all", is_flag=True, help="List every part in both runs, not only the changed.")
def diff_command(
    app: AppContext, run_a: int, run_b: int | None, db_url: str | None, as_json: bool, show_all: bool
) -> None:
    """Parts whose verdict changed between RUN_A and RUN_B (matched on the frame's content).

    \b
    With one run (a re-inspection): each of its records against the record it superseded.
    Examples:
      oringscan db diff 12 31          # last month's run 12 against its re-inspection, run 31
      oringscan db diff 31 --json      # run 31's records against the ones they replaced
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from oringscan.db.cli import _open
    from oringscan.db.diff import diff_runs

    old, new = (None, run_a) if run_b is None else (run_a, run_b)
    store = _open(app, db_url)
    try:
        diff = diff_runs(store, old, new)
    finally:
        store.dispose()
    if as_json:
        doc = diff.to_dict()
        if show_all:
            doc["parts"] = [r.to_dict() for r in diff.rows]
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    console = Console()
    side_a = f"run {old}" if old is not None else "superseded records"
    console.print(
        f"{side_a}: {diff.n_a} frames · run {new}: {diff.n_b} frames · in both: {diff.common} · "
        f"verdict changed: {len(diff.changed)}",
        markup=False,
        soft_wrap=True,
    )
    for transition, count in diff.transitions().items():
        console.print(f"  {transition}: {count}", markup=False)
    rows = diff.rows if show_all else diff.changed
    if not rows:
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("frame", "was", "now", "score was", "score now", "why now", "path"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            f"{r.frame_a} -> {r.frame_b}",
            r.verdict_a,
            r.verdict_b,
            "" if r.score_a is None else f"{r.score_a:.4g}",
            "" if r.score_b is None else f"{r.score_b:.4g}",
            Text(r.reason_b),  # text from the database: never rich markup
            Text(r.path),
        )
    console.print(table)
