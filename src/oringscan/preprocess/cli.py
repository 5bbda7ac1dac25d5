"""``oringscan preprocess``: a thin shell over :func:`oringscan.preprocess.preprocess_all`."""

from __future__ import annotations

from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from oringscan.cli.common import (
    EXIT_CODES_HELP,
    AppContext,
    common_options,
    exit_for_input_errors,
    model_option,
    require_paths,
)
from oringscan.errors import path_text

# The runner loads OpenCV, Shapely and NumPy: imported inside the functions, not for --help.

MAX_LISTED = 10


@click.command("preprocess", epilog=EXIT_CODES_HELP)
@common_options
@model_option(required=False, help_text="O-ring type to preprocess (default: every type in the config).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes, one frame each at a time (default: preprocess.workers from the config, 2).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs and CI).")
def preprocess_command(
    app: AppContext, oring_type: str | None, workers: int | None, no_progress: bool
) -> None:
    """Cut frames into 640 px ring tiles and write COCO train/val/test files.

    \b
    Reads, per o-ring type (folders from the config's [types] section):
      <data>/images/<good_folder>/*.bmp     good frames (no label file, or one with no shapes)
      <data>/images/<defect_folder>/*.bmp   defect frames
      <data>/labels/<folder>/<name>.json    LabelMe labels, same name as the frame
    Writes, replacing the previous run's tiles:
      <output>/<model>/annotations/{train,val,test}.json   COCO, one image per tile
      <output>/<model>/images/{train,val,test}/            the tiles
      <output>/<model>/dataset_summary.json                counts, size histogram, skipped files
    Frames are split by source frame (stratified good/defect, seeded), so no frame's tiles are in
    two splits. Broken files are listed with their reason and the rest converts.

    \b
    Examples:
      oringscan preprocess                       # all types
      oringscan preprocess --model model1 --data "F:\\standard elastomers\\Original Data"
    """
    from oringscan.preprocess.runner import preprocess_all

    require_paths(app.data_root)
    summaries = preprocess_all(
        app.config,
        app.data_root,
        app.output_root,
        oring_type=oring_type,
        progress=not no_progress,
        workers=workers,
    )
    console = Console()
    console.print(f"data: {path_text(app.data_root)}", markup=False, highlight=False, soft_wrap=True)
    console.print(summary_table(summaries))
    failed = []
    for name, summary in summaries.items():
        if "error" in summary:
            failed.append(name)
            console.print(
                f"{name}: {summary['error']}", style="red", markup=False, highlight=False, soft_wrap=True
            )
            continue
        _print_problems(console, name, summary)
        console.print(
            f"{name}: {summary['instances']['slivers_dropped']} sliver(s) below preprocess.min_instance_area dropped; "
            f"summary in {path_text(app.workspace(name).dataset_summary)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if failed:
        raise click.ClickException(f"preprocessing failed for {', '.join(failed)}")
    # Skipped files (unreadable frame, broken label) are listed above; the rest was converted.
    exit_for_input_errors(sum(len(s.get("skipped", [])) for s in summaries.values()))


def summary_table(summaries: dict[str, dict[str, Any]]) -> Table:
    from oringscan.preprocess.split import SPLITS

    table = Table(
        title="Preprocessing",
        caption="frames: used/found; train/val/test: tiles per split",
        box=box.SIMPLE_HEAD,
    )
    for column in ("type", "frames", "skipped", *SPLITS, "defects", "warnings"):
        table.add_column(column, justify="left" if column == "type" else "right", min_width=len(column))
    for name, s in summaries.items():
        if "error" in s:
            table.add_row(name, "error", *[""] * (len(table.columns) - 2))
            continue
        frames, tiles, inst = s["frames"], s["tiles"], s["instances"]
        table.add_row(
            name,
            f"{frames['used']}/{frames['found']}",
            str(len(s["skipped"])),
            *(str(tiles["per_split"][sp]) for sp in SPLITS),
            str(inst["labelled"]),
            str(len(s["warnings"])),
        )
    return table


def _print_problems(console: Console, name: str, summary: dict[str, Any]) -> None:
    from oringscan.preprocess.runner import SUMMARY_FILE

    for title, items in (
        ("skipped", [f"{i['file']}: {i['reason']}" for i in summary["skipped"]]),
        ("warnings", summary["warnings"]),
    ):
        if not items:
            continue
        console.print(f"{name}: {len(items)} {title}", style="bold", markup=False, highlight=False)
        for line in items[:MAX_LISTED]:
            console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        if len(items) > MAX_LISTED:
            console.print(
                f"  ... and {len(items) - MAX_LISTED} more in {SUMMARY_FILE}", markup=False, highlight=False
            )


def register(root: click.Group) -> None:
    root.add_command(preprocess_command)
