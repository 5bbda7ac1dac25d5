"""``oringscan inspect``, ``oringscan watch``, ``oringscan demo`` and ``oringscan evaluate pipeline``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from oringscan.cli.common import (
    EXIT_CODES_HELP,
    AppContext,
    InputErrorStop,
    OneLineErrors,
    check_inputs,
    common_options,
    exit_for_input_errors,
    model_option,
    set_threads,
    strict_option,
)


def open_store(url: str) -> Any:
    """The inspection database (created and migrated on first use)."""
    from oringscan.db import InspectionStore

    return InspectionStore(url)


def engine_options(func: Any) -> Any:
    """--engine, --ray-address, --actors (inspect, reinspect): where the frames are inspected."""
    func = click.option(
        "--actors",
        type=click.IntRange(min=1),
        default=None,
        help="--engine ray: inspection workers, each holding the models (a GPU each when there are) "
        "[default: 1].",
    )(func)
    func = click.option(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="--engine ray: an existing Ray cluster (ray://head:10001, auto) [default: start a local Ray].",
    )(func)
    return click.option(
        "--engine",
        type=click.Choice(["in-process", "ray"]),
        default="in-process",
        show_default=True,
        help="Where frames are inspected: this process, or Ray tasks and actors "
        '(pip install "oringscan[ray]").',
    )(func)


@click.command("inspect", epilog=EXIT_CODES_HELP)
@common_options
@model_option()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL of the inspection database [default: sqlite:///<output>/inspections.db].",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON array (one object per frame) on stdout."
)
@click.option(
    "--save-vis/--no-save-vis",
    "save_vis",
    default=None,
    help="Overlay pictures of every non-good frame under <output>/<model>/inspections/run-<id>_<time>/ "
    "[default: pipeline.save_overlays, on].",
)
@click.option(
    "--reinspect", is_flag=True, help="Inspect frames again even if the database has them with these models."
)
@click.option("--station", default=None, help="Station name stored with every frame.")
@click.option("--device", default=None, help="auto, cpu or cuda [default: from the config].")
@click.option("--no-progress", is_flag=True, help="No progress bar (logs, CI).")
@engine_options
@strict_option
def inspect_command(
    app: AppContext,
    oring_type: str,
    paths: tuple[Path, ...],
    db_url: str | None,
    as_json: bool,
    save_vis: bool | None,
    reinspect: bool,
    station: str | None,
    device: str | None,
    no_progress: bool,
    strict: bool = False,
    engine: str = "in-process",
    ray_address: str | None = None,
    actors: int | None = None,
) -> None:
    """Inspect frames (files, folders, globs) and record one verdict per frame.

    \b
    Per frame: ring ROI -> tiles -> PatchCore screening of every ring tile -> Mask R-CNN on the
    flagged tiles only -> rework rules on the ring geometry -> one verdict:
      good     nothing found
      defect   segmentation found a defect (or the geometry shows missing material)
      rework   the geometry is outside the rework limits (rules file)
      suspect  screening flagged it but nothing was confirmed, or its score is marginal: a person looks
      error    the frame could not be inspected (unreadable, wrong format, no ring...); reason recorded
    Frames already in the database with the same content and models are skipped (--reinspect to redo).
    A broken file becomes an error record and the batch goes on.

    \b
    Examples:
      oringscan inspect --model model1 frames/
      oringscan inspect --model model1 "line 3/*.bmp" --json > verdicts.json
      oringscan inspect --model model2 frames/ --db postgresql+psycopg://user@host/plant
    """
    from rich.console import Console

    from oringscan.pipeline.batch import inspect_paths
    from oringscan.pipeline.inspector import Inspector
    from oringscan.pipeline.report import print_summary, results_json

    check_inputs(paths, strict)
    set_threads(None)
    url = db_url or app.db_url
    if engine == "ray":  # oringscan.pipeline.ray_engine: frames as Ray tasks, models in actors
        from oringscan.pipeline.ray_engine import RayOptions, inspect_paths_ray, require_ray

        require_ray()
        store = open_store(url)
        summary = inspect_paths_ray(
            app.config,
            app.output_root,
            oring_type,
            list(paths),
            store,
            options=RayOptions(address=ray_address, actors=actors or 1),
            device=device,
            reinspect=reinspect,
            save_overlays=save_vis,
            station=station,
            on_result=_stop_at_error if strict else None,
            progress=not no_progress,
        )
        console = Console(stderr=as_json)
        print_summary(summary, console, db_url=url)
        if as_json:
            click.echo(results_json(summary.results))
        exit_for_input_errors(summary.n_errors, len(summary.results) + len(summary.missing_inputs))
        return
    inspector = Inspector.load(app.config, app.output_root, oring_type, device=device)
    store = open_store(url)
    summary = inspect_paths(
        inspector,
        list(paths),
        store,
        output_root=app.output_root,
        reinspect=reinspect,
        save_overlays=save_vis,
        progress=not no_progress,
        station=station,
        on_result=_stop_at_error if strict else None,
    )
    console = Console(stderr=as_json)
    print_summary(summary, console, db_url=url)
    if inspector.segmentation_notice:  # why no part was called defect by segmentation
        console.print(
            f"note: {inspector.segmentation_notice}: flagged parts went to suspect",
            markup=False,
            soft_wrap=True,
        )
    if as_json:
        click.echo(results_json(summary.results))
    exit_for_input_errors(summary.n_errors, len(summary.results) + len(summary.missing_inputs))


def _stop_at_error(result: Any) -> None:
    """--strict: the first error record ends the batch (it is recorded; the run is closed failed)."""
    if str(result.verdict) == "error":
        raise InputErrorStop(f"{result.image}: {result.error or '; '.join(result.reasons) or 'error'}")


@click.command("watch", epilog=EXIT_CODES_HELP)
@common_options
@model_option()
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--db", "db_url", default=None, metavar="URL", help="SQLAlchemy URL [default: <output>/inspections.db]."
)
@click.option(
    "--poll",
    "poll_s",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between folder scans.",
)
@click.option(
    "--stable-polls",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="A file is complete when its size did not change for this many scans (and it decodes).",
)
@click.option(
    "--save-vis/--no-save-vis", "save_vis", default=None, help="Overlays of non-good frames [default: on]."
)
@click.option("--reinspect", is_flag=True, help="Inspect files already in the database again.")
@click.option("--station", default=None, help="Station name stored with every frame.")
@click.option("--device", default=None, help="auto, cpu or cuda [default: from the config].")
@strict_option
def watch_command(
    app: AppContext,
    oring_type: str,
    folder: Path,
    db_url: str | None,
    poll_s: float,
    stable_polls: int,
    save_vis: bool | None,
    reinspect: bool,
    station: str | None,
    device: str | None,
    strict: bool = False,
) -> None:
    """Inspect frames as the camera software writes them into FOLDER, until Ctrl-C.

    A file is taken once it is complete (size stable across scans and decodable); files already
    there when the watcher starts are inspected too, unless the database has them already.
    Prints one line per frame; Ctrl-C or SIGTERM stops it after the current frame.

    \b
    Example:
      oringscan watch D:/camera/station3 --model model1 --station st3
    """
    from oringscan.pipeline.batch import FrameRecorder, run_folder_name, start_run
    from oringscan.pipeline.batch import _finish_run as finish_run
    from oringscan.pipeline.inspector import Inspector
    from oringscan.pipeline.report import print_summary, result_line
    from oringscan.pipeline.watch import watch_folder

    set_threads(None)
    url = db_url or app.db_url
    inspector = Inspector.load(app.config, app.output_root, oring_type, device=device)
    store = open_store(url)
    run_id = start_run(store, inspector, kind="watch", note=str(folder))
    overlay_dir = app.workspace(oring_type).overlays_dir(run_folder_name(run_id))
    recorder = FrameRecorder(
        inspector,
        store,
        run_id,
        reinspect=reinspect,
        save_overlays=save_vis,
        overlay_dir=overlay_dir,
        station=station,
    )
    from oringscan.db.store import safe_url  # a PostgreSQL password never reaches the terminal

    click.echo(
        f"watching {folder} for {oring_type} frames (Ctrl-C to stop); records go to {safe_url(url)}", err=True
    )
    stop = threading.Event()
    # A service manager stops the watcher with SIGTERM: finish the current frame, close the run.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    first_error: list[str] = []

    def on_result(result: Any) -> None:
        click.echo(result_line(result))
        if strict and str(result.verdict) == "error" and not first_error:
            first_error.append(f"{result.image}: {result.error or '; '.join(result.reasons) or 'error'}")
            stop.set()  # --strict: finish this frame, close the run, exit 1

    summary = watch_folder(
        recorder, folder, poll_s=poll_s, stable_polls=stable_polls, stop=stop, on_result=on_result
    )
    finish_run(store, run_id, summary)
    print_summary(summary, db_url=url)
    if first_error:
        raise InputErrorStop(first_error[0])
    exit_for_input_errors(summary.n_errors, len(summary.results))


@click.command("demo")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("oringscan-demo"),
    show_default=True,
    help="Where the synthetic data, models and database go.",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0.2),
    default=None,
    help="Cap the segmentation training at this many wall minutes (default: no cap; the demo trains "
    "a fixed schedule, so a seed gives the same model on any machine; a cap makes it depend on speed).",
)
@click.option("--seed", type=int, default=42, show_default=True)
def demo_command(workdir: Path, minutes: float | None, seed: int) -> None:
    """The whole job end to end on synthetic frames, in about 5 minutes on 2 idle CPU cores.

    \b
    Synthesises a small data set, preprocesses it into tiles, fits the screening model, trains the
    segmentation model (a fixed schedule that fine-tunes the synthetic starting model shipped with
    oringscan, as `train segmentation --init-from synthetic` does), calibrates it and the rework
    rules, inspects a fresh batch of "line" frames (80% good) into a database, prints the summary
    and the dashboard command.
    """
    from oringscan.pipeline.demo import run_demo

    set_threads(None)
    run_demo(workdir, minutes=minutes, seed=seed)


@click.command("pipeline", epilog=EXIT_CODES_HELP)
@common_options
@model_option()
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train"]),
    default="test",
    show_default=True,
    help="Which preprocess split's frames to inspect (plus every rework frame).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the report and plots go [default: <output>/<model>/evaluation/pipeline].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--device", default=None, help="auto, cpu or cuda.")
def evaluate_pipeline_command(
    app: AppContext,
    oring_type: str,
    split: str,
    out_dir: Path | None,
    as_json: bool,
    device: str | None,
) -> None:
    """Part-level confusion matrix good / defect / rework of the whole pipeline on the test split.

    \b
    Recall = defect (or rework) parts not passed as good; false-reject rate = good parts not passed.
    Writes report.json and PNG plots (confusion matrix, screening score histogram).
    """
    import json

    from oringscan.pipeline.evaluate import evaluate_pipeline, print_evaluation
    from oringscan.pipeline.inspector import Inspector

    set_threads(None)
    inspector = Inspector.load(app.config, app.output_root, oring_type, device=device)
    report = evaluate_pipeline(inspector, app.data_root, app.output_root, split=split, out_dir=out_dir)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        print_evaluation(report, err=True)
    else:
        print_evaluation(report)
    confusion = report.get("confusion", {})
    exit_for_input_errors(
        sum(row.get("error", 0) for row in confusion.values()),
        sum(sum(row.values()) for row in confusion.values()),
    )


def register(root: click.Group) -> None:
    root.add_command(inspect_command, "inspect")
    root.add_command(watch_command, "watch")
    root.add_command(demo_command, "demo")
    evaluate = root.commands.get("evaluate")
    if not isinstance(evaluate, click.Group):  # pragma: no cover - cli/main.py always makes the group
        evaluate = click.Group("evaluate", cls=OneLineErrors, help="Evaluate a stage on the test split.")
        root.add_command(evaluate)
    evaluate.add_command(evaluate_pipeline_command, "pipeline")
