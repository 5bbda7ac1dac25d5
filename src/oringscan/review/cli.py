"""``oringscan export reviews``: reviewed frames into the data set (a thin shell over review.export)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from oringscan.cli.common import AppContext, OneLineErrors, common_options, exit_for_input_errors
from oringscan.db.cli import WHEN, db_option


@click.group(name="export", cls=OneLineErrors)
def export_group() -> None:
    """Export what the line produced into files other tools take (reviewed frames, models)."""


@export_group.command("reviews")
@db_option
@click.option("--since", type=WHEN, default=None, help="Only frames whose newest review is this recent.")
@click.option("--model", "oring_type", default=None, metavar="NAME", help="Only this o-ring type.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reviewed frame, as a list.")
@common_options
def export_reviews_command(
    app: AppContext, db_url: str | None, since: datetime | None, oring_type: str | None, as_json: bool
) -> None:
    """Every reviewed frame into the data set (--data), ready for `preprocess` and `train`.

    \b
    The image goes into its type's good / defect / rework folder by the newest decision, with a
    LabelMe file beside it under labels/: the confirmed machine masks and the operator's boxes and
    polygons (a good or rework frame: no shapes). A rerun adds nothing twice; frames already in the
    data set are not copied again; <data>/reviews_manifest.json says which file came from which
    review. A frame whose picture is gone is reported and skipped (exit 3), the rest is exported.
      oringscan export reviews --db sqlite:///output/inspections.db --data dataset --since 7d
      oringscan preprocess --model model1 && oringscan train segmentation --model model1
    """
    from oringscan.db.cli import _open
    from oringscan.review.export import export_reviews

    store = _open(app, db_url)
    roots = [*app.config.dashboard.image_roots, app.data_root, app.output_root]
    report = export_reviews(
        store,
        app.data_root,
        app.config,
        since=since,
        oring_type=oring_type,
        image_roots=[Path(r) for r in roots],
    )
    if as_json:
        from oringscan.review.export import entry_dict

        click.echo(json.dumps([entry_dict(e) for e in report.entries], indent=2))
    else:
        for e in report.entries:
            if e.status in ("written", "updated"):
                click.echo(
                    f"{e.status}: frame {e.frame_id} review {e.review_id} {e.decision} -> {e.image}"
                    f" ({e.shapes} shape(s))" + (f"; {e.reason}" if e.reason else "")
                )
            elif e.status == "in data set":
                click.echo(f"frame {e.frame_id}: {e.reason}")
        for e in report.skipped:
            click.echo(f"skipped: {e.reason}", err=True)
        click.echo(f"{report.summary()} -> {app.data_root}")
    exit_for_input_errors(len(report.skipped), len(report.entries))


def register(root: click.Group) -> None:
    existing = root.commands.get("export")
    if isinstance(existing, click.Group):  # another part made the group first: add to it
        existing.add_command(export_reviews_command)
    else:
        root.add_command(export_group)
