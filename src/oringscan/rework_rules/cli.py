"""``oringscan calibrate rework`` and ``oringscan measure``: thin shells over the rework API."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich import box
from rich.console import Console
from rich.table import Table

from oringscan.cli.common import (
    EXIT_CODES_HELP,
    AppContext,
    InputErrorStop,
    check_inputs,
    common_options,
    exit_for_input_errors,
    model_option,
    strict_option,
)
from oringscan.rework_rules.metrics import ALL_METRICS, METRICS, MM_METRICS

if TYPE_CHECKING:  # measuring loads SciPy and OpenCV: imported inside the commands, not for --help
    from oringscan.rework_rules.calibrate import CalibrationReport
    from oringscan.types import ReworkResult

_STYLE = {"pass": "green", "rework": "dark_orange", "defect": "red", "error": "magenta"}


def _metrics_help() -> str:
    return "\n".join(f"  {name:22s} {info.description}" for name, info in METRICS.items())


@click.command(
    "rework",
    epilog="\b\nMetrics (rules may name any of them; *_mm twins exist when the type has mm_per_px):\n"
    + _metrics_help()
    + "\n\n"
    + EXIT_CODES_HELP,
)
@model_option()
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Rules file to write [default: config rework.rules_file, else output/<model>/rework_rules.toml].",
)
@click.option(
    "--k-sigma",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Limits at mean +/- k std of the good frames, k as given [default: config rework.k_sigma; unset: one "
    "common k chosen for rework's share of [pipeline] false_reject_budget].",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@common_options
def calibrate_rework(
    app: AppContext, oring_type: str, rules_path: Path | None, k_sigma: float | None, dry_run: bool
) -> None:
    """Derive rework limits from the good frames of the training split.

    Measures every good frame of the training split (output/<model>/annotations/train.json; all
    frames of the type's good folder when there is no split yet), sets each limit at
    mean +/- k standard deviations, writes the rules file and shows what changed. Rules you edited
    by hand or marked source = "manual" are kept; the table says what calibration would have set.
    By default one k for all rules is chosen so that the whole rule set sends at most rework's
    share of the line's false-reject budget of unseen good parts to rework; the expected share and
    its interval are printed per rule and for the whole set, and it says so when the frames are
    too few to support the target.
    """
    from oringscan.rework_rules.calibrate import calibrate_rules, rules_path_for

    config = app.config
    if k_sigma is not None:
        config.rework.k_sigma = k_sigma
    path = rules_path or rules_path_for(config, app.output_root, oring_type)
    report = calibrate_rules(config, app.data_root, app.output_root, oring_type, path, write=not dry_run)
    _print_calibration(report, dry_run)
    if not dry_run:
        from oringscan.cli.models import snapshot_after_training

        snapshot_after_training(app, oring_type, "calibrate rework")
    exit_for_input_errors(len(report.skipped))  # good frames that could not be measured


def _span(limits: tuple[float | None, float | None] | None) -> str:
    if limits is None:
        return ""
    lo, up = limits
    return f"{'' if lo is None else f'{lo:.6g}'} .. {'' if up is None else f'{up:.6g}'}"


def _limit_change(old: tuple | None, new: tuple | None, i: int) -> str:
    a = None if old is None else old[i]
    b = None if new is None else new[i]
    if a == b:
        return "" if a is None else f"{a:.6g}"
    return f"{'-' if a is None else f'{a:.6g}'} -> {'-' if b is None else f'{b:.6g}'}"


def _print_calibration(report: CalibrationReport, dry_run: bool) -> None:
    from oringscan.rework_rules.calibrate import rate_lines

    console = Console()
    console.print(f"Calibrated from {report.source}; {report.frames_used} measured.")
    for path, reason in report.skipped:
        console.print(f"  [yellow]skipped[/] {path}: {reason}", highlight=False)
    table = Table(title=f"rules: {report.rules_path}", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("metric", "verdict", "change", "lower", "upper"):
        table.add_column(col, no_wrap=True)
    styles = {
        "added": "green",
        "updated": "cyan",
        "removed": "red",
        "kept-manual": "yellow",
        "kept-hand-edited": "yellow",
    }
    for c in report.changes:
        lower = _limit_change(c.old, c.new, 0)
        upper = _limit_change(c.old, c.new, 1)
        table.add_row(c.metric, c.verdict, f"[{styles.get(c.change, 'white')}]{c.change}[/]", lower, upper)
    console.print(table)
    rates = report.rates
    if rates is not None:
        calibrated = {
            (c.metric, c.verdict) for c in report.changes if c.change in ("added", "updated", "unchanged")
        }
        shares = Table(
            title="unseen good parts each calibrated rule sends to rework",
            box=box.SIMPLE_HEAD,
            title_justify="left",
        )
        for col in ("metric", "expected", f"{rates.confidence:.0%} interval", "held-out flagged"):
            shares.add_column(col, no_wrap=True, justify="left" if col == "metric" else "right")
        for r in rates.rules:
            if (r.metric, r.verdict) in calibrated:
                shares.add_row(
                    r.metric, f"{r.expected:.2%}", f"{r.low:.1%} - {r.high:.1%}", f"{r.loo_flagged}/{rates.n}"
                )
        console.print(shares)
        for line in rate_lines(rates):
            console.print(f"  {line}", highlight=False)
        for frame, why in rates.outliers:
            console.print(f"  [yellow]left out[/] {frame}: {why}", highlight=False)
    for c in report.changes:
        if c.note:
            console.print(f"  [yellow]{c.metric}[/] ({c.verdict}): {c.note}", highlight=False)
    if report.kept_edits:
        console.print(f"[yellow]{len(report.kept_edits)} hand-edited/manual rule(s) kept.[/]")
    if dry_run:
        console.print("Dry run: nothing written.")
    elif report.written:
        console.print(f"Wrote {report.rules_path}")


@click.command(
    "measure",
    epilog="\b\nMetrics (px; *_mm twins when the type has mm_per_px):\n"
    + _metrics_help()
    + "\n\n"
    + EXIT_CODES_HELP,
)
@model_option()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout, one object per frame.")
@click.option("--save-vis", is_flag=True, help="Save a picture per frame to output/<model>/measurements/.")
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Rules file [default: config rework.rules_file, else output/<model>/rework_rules.toml].",
)
@click.option(
    "--no-rules",
    is_flag=True,
    help="Measure only (no limits; verdict pass unless the ring cannot be measured).",
)
@common_options
@strict_option
def measure(
    app: AppContext,
    oring_type: str,
    images: tuple[Path, ...],
    as_json: bool,
    save_vis: bool,
    rules_path: Path | None,
    no_rules: bool,
    strict: bool = False,
) -> None:
    """Measure ring geometry of IMAGES (files, folders or globs) against the rework rules.

    \b
    Each frame gets every metric with its limits, the verdict (pass / rework / defect / error)
    and the reasons. A frame that cannot be read or has no measurable ring gets verdict error
    with the reason; the batch goes on.
    \b
    --json prints: [{"image", "verdict", "reasons", "metrics": {name: value}, "fired": [names]}]
    """
    from tqdm import tqdm

    from oringscan.errors import FrameError
    from oringscan.frames import iter_image_files, read_frame, write_frame
    from oringscan.rework_rules.calibrate import rules_path_for
    from oringscan.rework_rules.checker import ReworkChecker, ReworkReport
    from oringscan.rework_rules.rules import RulesFile
    from oringscan.rework_rules.vis import draw_measurement
    from oringscan.types import ReworkResult, ReworkVerdict

    check_inputs(images, strict)
    config = app.config
    mm_per_px = config.oring_type(oring_type).mm_per_px
    if no_rules:
        checker = ReworkChecker(RulesFile(), None, mm_per_px, config.rework, config.roi)
    else:
        path = rules_path or rules_path_for(config, app.output_root, oring_type)
        checker = ReworkChecker.load(path, mm_per_px, config.rework, config.roi)
    paths = iter_image_files(list(images), config.frame)
    vis_dir = app.workspace(oring_type).measurements_dir
    console = Console()
    out = []
    for path in tqdm(paths, desc="measuring", unit="frame", disable=len(paths) < 2, file=sys.stderr):
        try:
            frame = read_frame(path, config.frame)
        except FrameError as exc:
            result = ReworkResult(ReworkVerdict.ERROR, [exc.problem])
            report, gray = ReworkReport(result), None
        else:
            gray = frame.image
            report = checker.inspect(gray)
        item = _as_json(path, report.result)
        if save_vis and gray is not None:
            vis_path = vis_dir / f"{path.stem}_rework.png"
            write_frame(vis_path, draw_measurement(gray, report, path.name))
            item["vis"] = str(vis_path)
        out.append(item)
        if not as_json:
            _print_frame(console, path, report.result, item.get("vis"))
        if strict and item["verdict"] == "error":
            raise InputErrorStop(f"{path}: {'; '.join(item['reasons']) or 'error'}")
    if as_json:
        click.echo(json.dumps(out, indent=2))
    elif len(out) > 1:
        counts: dict[str, int] = {}
        for item in out:
            counts[item["verdict"]] = counts.get(item["verdict"], 0) + 1
        console.print("Summary: " + ", ".join(f"[{_STYLE[k]}]{v} {k}[/]" for k, v in sorted(counts.items())))
    exit_for_input_errors(sum(item["verdict"] == "error" for item in out), len(out))


def _json_value(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 4)


def _as_json(path: Path, result: ReworkResult) -> dict:
    return {
        "image": str(path),
        "verdict": str(result.verdict),
        "reasons": list(result.reasons),
        "metrics": {c.name: _json_value(c.value) for c in result.checks},
        "fired": result.fired,
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.6g}" if abs(value) < 1e5 else f"{value:.0f}"


def _print_frame(console: Console, path: Path, result: ReworkResult, vis: str | None) -> None:
    verdict = str(result.verdict)
    table = Table(title=f"{path.name}: [{_STYLE[verdict]}]{verdict.upper()}[/]", title_justify="left")
    for col, just in (
        ("metric", "left"),
        ("value", "right"),
        ("unit", "left"),
        ("lower", "right"),
        ("upper", "right"),
        ("", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    ruled = {c.name for c in result.checks if c.lower is not None or c.upper is not None}
    for c in result.checks:
        # Millimetre twins only when a rule uses them (JSON always has all of them).
        if c.name in MM_METRICS and c.name not in ruled:
            continue
        if c.fired:
            status = f"[{_STYLE.get(c.verdict or 'rework', 'red')}]{c.verdict}[/]"
        elif c.name in ruled:
            status = "[green]ok[/]"
        else:
            status = "[dim]-[/]"
        name = c.name if c.name in ALL_METRICS else f"{c.name} (unknown)"
        table.add_row(name, _fmt(c.value), c.unit, _fmt(c.lower), _fmt(c.upper), status)
    console.print(table)
    for reason in result.reasons:
        console.print(f"  [{_STYLE[verdict]}]-[/] {reason}", highlight=False)
    if vis:
        console.print(f"  picture: {vis}", highlight=False)


def register(root: click.Group) -> None:
    root.commands["calibrate"].add_command(calibrate_rework, "rework")  # type: ignore[attr-defined]
    root.add_command(measure)
