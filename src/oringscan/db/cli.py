"""``oringscan db ...``: look into the inspection record from the shell (a thin shell over the store)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from oringscan.cli.common import AppContext, OneLineErrors, common_options
from oringscan.db.errors import StoreError
from oringscan.db.vocab import FRAME_ORDERS, REVIEW_DECISIONS, VERDICTS

# The store and queries load SQLAlchemy (about a second): they are imported when a command runs, so
# `oringscan db --help` starts at once. Type checkers see the real names; at run time these stand-ins
# (same names, same calls) import them on first use.
if TYPE_CHECKING:
    from oringscan.db.queries import FrameFilter, Stats, to_jsonable
    from oringscan.db.store import InspectionStore, safe_url, sqlite_path
else:

    def InspectionStore(url: str) -> Any:  # noqa: N802 - stands in for the class
        from oringscan.db.store import InspectionStore as _InspectionStore

        return _InspectionStore(url)

    def FrameFilter(**fields: Any) -> Any:  # noqa: N802 - stands in for the dataclass
        from oringscan.db.queries import FrameFilter as _FrameFilter

        return _FrameFilter(**fields)

    def safe_url(url: str) -> str:
        from oringscan.db.store import safe_url as _safe_url

        return _safe_url(url)

    def sqlite_path(url: str) -> Any:
        from oringscan.db.store import sqlite_path as _sqlite_path

        return _sqlite_path(url)

    def to_jsonable(value: Any) -> Any:
        from oringscan.db.queries import to_jsonable as _to_jsonable

        return _to_jsonable(value)


_VERDICT_STYLE = {
    "good": "green",
    "defect": "red",
    "rework": "dark_orange",
    "suspect": "yellow",
    "error": "magenta",
}
_RELATIVE = re.compile(r"^(\d+)\s*([dhm])$")
TABLE_LIMIT = 50


class When(click.ParamType):
    """A time: 2026-03-01, 2026-03-01T14:00, 'today', 'yesterday', or an age such as 7d / 12h / 30m (UTC)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip().lower()
        now = datetime.now(UTC)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if text == "today":
            return midnight
        if text == "yesterday":
            return midnight - timedelta(days=1)
        if text == "now":
            return now
        match = _RELATIVE.match(text)
        if match:
            amount, unit = int(match.group(1)), match.group(2)
            return now - timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: amount})
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(
                f"{value!r} is not a time (use 2026-03-01, 2026-03-01T14:00, today, yesterday, 7d, 12h)",
                param,
                ctx,
            )
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


WHEN = When()


def _open(app: AppContext, db_url: str | None, *, must_exist: bool = True) -> InspectionStore:
    url = db_url or app.db_url
    sqlite_file = sqlite_path(url)
    if must_exist and sqlite_file is not None and not sqlite_file.is_file():
        raise StoreError(
            f"{sqlite_file}: no inspection database here yet (run `oringscan inspect` or pass --db URL)"
        )
    return InspectionStore(url)


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db_url",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL [default: config db.url, else sqlite:///<output>/inspections.db].",
    )(func)


def filter_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--verdict",
            "verdicts",
            multiple=True,
            type=click.Choice(VERDICTS, case_sensitive=False),
            help="Only these verdicts (repeatable).",
        ),
        click.option(
            "--type", "oring_type", default=None, metavar="NAME", help="Only this o-ring type (model1, ...)."
        ),
        click.option("--run", "run_id", type=int, default=None, metavar="ID", help="Only this run."),
        click.option(
            "--since", type=WHEN, default=None, help="Inspected at or after (UTC; 2026-03-01, today, 7d)."
        ),
        click.option("--until", type=WHEN, default=None, help="Inspected before (UTC)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--csv", "as_csv", is_flag=True, help="CSV on stdout (every matching row unless --limit)."
    )(func)
    func = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="One JSON array on stdout (every matching row unless --limit).",
    )(func)
    func = click.option(
        "--offset", type=click.IntRange(min=0), default=0, help="Skip this many rows (paging)."
    )(func)
    return click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=None,
        help=f"At most this many rows [default: {TABLE_LIMIT} in tables, all for --json/--csv; 0: all].",
    )(func)


def _limit(limit: int | None, machine: bool) -> int | None:
    if limit == 0:
        return None
    if limit is None:
        return None if machine else TABLE_LIMIT
    return limit


def _check_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")


def _filters(
    verdicts: tuple[str, ...],
    oring_type: str | None,
    run_id: int | None,
    since: datetime | None,
    until: datetime | None,
) -> FrameFilter:
    return FrameFilter(
        oring_type=oring_type,
        verdict=[v.lower() for v in verdicts] or None,
        run_id=run_id,
        since=since,
        until=until,
    )


def _console() -> Console:
    """Rich console; piped output gets a wide page instead of rich's 80 columns."""
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=False, width=200)
    return console


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False))


def _emit_csv(rows: Iterable[dict[str, Any]], columns: list[str] | None = None) -> None:
    rows = list(rows)
    columns = columns or (list(rows[0]) if rows else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in to_jsonable(row).items()}
        )
    click.echo(buffer.getvalue(), nl=False)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _verdict(value: str) -> str:
    return f"[{_VERDICT_STYLE.get(value, 'white')}]{value}[/]"


def _footer(console: Console, shown: int, total: int, offset: int) -> None:
    if total > shown:
        console.print(
            f"[dim]rows {offset + 1}-{offset + shown} of {total}; more with --offset {offset + shown} "
            f"or --limit 0[/]"
        )


@click.group("db", cls=OneLineErrors)
def db_group() -> None:
    """Query the inspection database: runs, frames, defects, statistics, reviews.

    \b
    Examples:
      oringscan db runs
      oringscan db frames --verdict defect --verdict suspect --since today
      oringscan db frames --type model1 --json > frames.json
      oringscan db defects --since 7d --csv > defects.csv
      oringscan db stats --type model2 --since 2026-03-01
      oringscan db show 42
      oringscan db review 42 --decision good --operator anna --comment "lint, not a cut"
    The database is --db URL, else db.url from --config, else sqlite:///<output>/inspections.db.
    """


@db_group.command("runs")
@db_option
@click.option("--type", "oring_type", default=None, metavar="NAME", help="Only runs of this o-ring type.")
@click.option("--since", type=WHEN, default=None, help="Started at or after (UTC).")
@click.option("--until", type=WHEN, default=None, help="Started before (UTC).")
@output_options
@common_options
def runs_command(
    app: AppContext,
    db_url: str | None,
    oring_type: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int | None,
    offset: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Inspection runs, newest first: when, where, which models, verdict counts, time per frame."""
    _check_format(as_json, as_csv)
    store = _open(app, db_url)
    rows = store.runs(
        oring_type=oring_type, since=since, until=until, limit=_limit(limit, as_json or as_csv), offset=offset
    )
    if as_json:
        return _emit_json([{**r.to_dict(), "seconds": r.seconds} for r in rows])
    if as_csv:
        return _emit_csv([{**r.to_dict(), "seconds": r.seconds} for r in rows])
    table = Table(title=f"Runs in {safe_url(store.url)}", box=box.SIMPLE_HEAVY)
    for col in (
        "run",
        "started (UTC)",
        "type",
        "status",
        "frames",
        "good",
        "defect",
        "rework",
        "suspect",
        "error",
        "skipped",
        "ms/frame",
        "host",
        "models",
    ):
        table.add_column(
            col,
            justify="right" if col not in ("started (UTC)", "type", "status", "host", "models") else "left",
            no_wrap=True,
        )
    for r in rows:
        status = {"done": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}.get(
            r.status, "white"
        )
        table.add_row(
            str(r.id),
            _when(r.started_at),
            r.oring_type or "",
            f"[{status}]{r.status}[/]",
            str(r.n_frames),
            str(r.n_good),
            str(r.n_defect),
            str(r.n_rework),
            str(r.n_suspect),
            str(r.n_error),
            str(r.n_skipped),
            _num(r.mean_ms, 0),
            r.host or "",
            (r.model_fingerprint or "")[:12],
        )
    console = _console()
    console.print(table if rows else "[dim]no runs recorded[/]")


@db_group.command("frames")
@db_option
@filter_options
@click.option("--unreviewed", is_flag=True, help="Only frames nobody has reviewed yet.")
@click.option(
    "--order",
    type=click.Choice(FRAME_ORDERS),
    default="newest",
    show_default=True,
    help="worst: defects first, then rework, suspect; by defect score and screening score.",
)
@output_options
@common_options
def frames_command(
    app: AppContext,
    db_url: str | None,
    verdicts: tuple[str, ...],
    oring_type: str | None,
    run_id: int | None,
    since: datetime | None,
    until: datetime | None,
    unreviewed: bool,
    order: str,
    limit: int | None,
    offset: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Frame records: image, verdict, screening score, defects, time, newest review."""
    _check_format(as_json, as_csv)
    store = _open(app, db_url)
    filters = _filters(verdicts, oring_type, run_id, since, until)
    if unreviewed:
        filters.reviewed = False
    page = store.frames(filters, order=order, limit=_limit(limit, as_json or as_csv), offset=offset)
    if as_json:
        return _emit_json([r.to_dict() for r in page])
    if as_csv:
        return _emit_csv([r.to_dict() for r in page])
    table = Table(title=f"Frames ({page.total} matching)", box=box.SIMPLE_HEAVY)
    for col, justify in (
        ("id", "right"),
        ("run", "right"),
        ("inspected (UTC)", "left"),
        ("type", "left"),
        ("verdict", "left"),
        ("score/thr", "right"),
        ("defects", "right"),
        ("ms", "right"),
        ("review", "left"),
        ("image", "left"),
        ("reasons", "left"),
    ):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col not in ("image", "reasons"))
    for r in page:
        ratio = (
            None if r.screen_score is None or not r.screen_threshold else r.screen_score / r.screen_threshold
        )
        review = "" if r.review_decision is None else f"{r.review_decision} ({r.review_operator})"
        table.add_row(
            str(r.id),
            str(r.run_id),
            _when(r.inspected_at),
            r.oring_type or "",
            _verdict(r.verdict),
            _num(ratio, 2),
            str(r.n_defects),
            _num(r.total_ms, 0),
            review,
            r.image,
            r.error or "; ".join(str(x) for x in r.reasons),
        )
    console = _console()
    console.print(table if page.items else "[dim]no frames match[/]")
    _footer(console, len(page.items), page.total, offset)


@db_group.command("defects")
@db_option
@filter_options
@click.option("--label", default=None, metavar="CLASS", help="Only this defect class.")
@output_options
@common_options
def defects_command(
    app: AppContext,
    db_url: str | None,
    verdicts: tuple[str, ...],
    oring_type: str | None,
    run_id: int | None,
    since: datetime | None,
    until: datetime | None,
    label: str | None,
    limit: int | None,
    offset: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Every segmented defect: class, score, box and area, with its frame."""
    _check_format(as_json, as_csv)
    store = _open(app, db_url)
    page = store.defects(
        _filters(verdicts, oring_type, run_id, since, until),
        label=label,
        limit=_limit(limit, as_json or as_csv),
        offset=offset,
    )
    columns = [
        "id",
        "frame_id",
        "run_id",
        "image",
        "oring_type",
        "verdict",
        "inspected_at",
        "label",
        "score",
        "x",
        "y",
        "w",
        "h",
        "area_px",
        "area_mm2",
    ]
    if as_json:
        return _emit_json([{k: r.to_dict()[k] for k in columns} for r in page])
    if as_csv:
        return _emit_csv([r.to_dict() for r in page], columns)
    table = Table(title=f"Defects ({page.total} matching)", box=box.SIMPLE_HEAVY)
    for col in (
        "frame",
        "inspected (UTC)",
        "type",
        "class",
        "score",
        "box x,y,w,h",
        "area px",
        "area mm²",
        "image",
    ):
        table.add_column(col, overflow="fold", no_wrap=col != "image")
    for r in page:
        table.add_row(
            str(r.frame_id),
            _when(r.inspected_at),
            r.oring_type or "",
            r.label,
            _num(r.score, 2),
            f"{r.x},{r.y},{r.w},{r.h}",
            str(r.area_px),
            _num(r.area_mm2, 3),
            r.image or "",
        )
    console = _console()
    console.print(table if page.items else "[dim]no defects match[/]")
    _footer(console, len(page.items), page.total, offset)


@db_group.command("stats")
@db_option
@filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="Yield per type per day as CSV on stdout.")
@common_options
def stats_command(
    app: AppContext,
    db_url: str | None,
    verdicts: tuple[str, ...],
    oring_type: str | None,
    run_id: int | None,
    since: datetime | None,
    until: datetime | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Yield per type per day, defects per class, and how often reviewers overrode the machine."""
    _check_format(as_json, as_csv)
    store = _open(app, db_url)
    stats = store.stats(_filters(verdicts, oring_type, run_id, since, until))
    if as_json:
        return _emit_json(stats.to_dict())
    if as_csv:
        return _emit_csv(
            [r.to_dict() for r in stats.yield_by_day],
            ["day", "oring_type", "total", "good", "defect", "rework", "suspect", "error", "yield"],
        )
    _print_stats(stats)


def _print_stats(stats: Stats) -> None:
    console = _console()
    if not stats.n_frames:
        console.print("[dim]no frames match[/]")
        return
    parts = ", ".join(f"{_verdict(v)} {n}" for v, n in stats.verdicts.items() if n)
    console.print(
        f"[bold]{stats.n_frames}[/] frames: {parts}; {stats.n_reviewed} reviewed, "
        f"{stats.n_overridden} machine verdicts overridden"
    )
    table = Table(
        title="Yield per type per day (UTC; yield = good / frames with a verdict)", box=box.SIMPLE_HEAVY
    )
    for col in ("day", "type", "frames", "good", "defect", "rework", "suspect", "error", "yield"):
        table.add_column(col, justify="left" if col in ("day", "type") else "right")
    for r in stats.yield_by_day:
        rate = "" if r.yield_rate is None else f"{100 * r.yield_rate:.1f}%"
        table.add_row(
            r.day,
            r.oring_type or "",
            str(r.total),
            str(r.good),
            str(r.defect),
            str(r.rework),
            str(r.suspect),
            str(r.error),
            rate,
        )
    console.print(table)
    per_class: dict[tuple[str | None, str], list[int]] = {}
    for r in stats.defects_by_class:
        totals = per_class.setdefault((r.oring_type, r.label), [0, 0])
        totals[0] += r.defects
        totals[1] += r.frames
    if per_class:
        table = Table(title="Defects per class", box=box.SIMPLE_HEAVY)
        for col in ("type", "class", "defects", "frames"):
            table.add_column(col, justify="left" if col in ("type", "class") else "right")
        for (oring_type, label), (n, frames) in sorted(
            per_class.items(), key=lambda kv: (str(kv[0][0]), -kv[1][0])
        ):
            table.add_row(oring_type or "", label, str(n), str(frames))
        console.print(table)
    if stats.review_overrides:
        table = Table(title="Reviews: machine verdict vs newest operator decision", box=box.SIMPLE_HEAVY)
        for col in ("type", "machine", "operator", "frames", ""):
            table.add_column(col, justify="right" if col == "frames" else "left")
        for r in stats.review_overrides:
            note = "" if not r.changed else ("resolved" if r.verdict == "suspect" else "[bold]override[/]")
            table.add_row(r.oring_type or "", _verdict(r.verdict), _verdict(r.decision), str(r.frames), note)
        console.print(table)


@db_group.command("show")
@db_option
@click.argument("frame_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Everything about the frame as one JSON object.")
@common_options
def show_command(app: AppContext, db_url: str | None, frame_id: int, as_json: bool) -> None:
    """One frame: verdict and reasons, tiles, defects, rework measurements, timings, review history."""
    store = _open(app, db_url)
    detail = store.frame_detail(frame_id)
    if detail is None:
        raise StoreError(f"frame {frame_id}: not in the database {safe_url(store.url)}")
    if as_json:
        return _emit_json(detail.to_dict())
    f = detail.frame
    console = _console()
    console.print(
        f"[bold]frame {f.id}[/] (run {f.run_id}, {f.oring_type or '?'}) {_verdict(f.verdict)}  {f.image}"
    )
    console.print(
        f"inspected {_when(f.inspected_at)} UTC; screening {_num(f.screen_score, 4)} "
        f"(threshold {_num(f.screen_threshold, 4)}); reasons: {'; '.join(map(str, f.reasons)) or '-'}"
    )
    if f.error:
        console.print(f"[magenta]error:[/] {f.error}")
    if f.overlay_path:
        console.print(f"overlay: {f.overlay_path}")
    if detail.defects:
        table = Table(title="Defects", box=box.SIMPLE_HEAVY)
        for col in ("class", "score", "box x,y,w,h", "area px", "area mm²"):
            table.add_column(col)
        for d in detail.defects:
            table.add_row(
                d.label, _num(d.score, 2), f"{d.x},{d.y},{d.w},{d.h}", str(d.area_px), _num(d.area_mm2)
            )
        console.print(table)
    if detail.measurements:
        table = Table(title="Rework measurements", box=box.SIMPLE_HEAVY)
        for col in ("metric", "value", "lower", "upper", "unit", "fired"):
            table.add_column(col)
        for m in detail.measurements:
            table.add_row(
                m.metric,
                _num(m.value, 4),
                _num(m.lower, 4),
                _num(m.upper, 4),
                m.unit or "",
                "[red]yes[/]" if m.fired else "",
            )
        console.print(table)
    if detail.timings:
        console.print(
            "timings ms: "
            + ", ".join(f"{k} {v:.0f}" for k, v in detail.timings.items() if isinstance(v, int | float))
        )
    if detail.reviews:
        table = Table(title="Reviews (oldest first)", box=box.SIMPLE_HEAVY)
        for col in ("when (UTC)", "operator", "decision", "comment", "marked"):
            table.add_column(col)
        for r in detail.reviews:
            marked = "; ".join(
                f"{m.label} {'defect ' + str(m.defect_id) if m.defect_id else m.kind} {m.x},{m.y},{m.w},{m.h}"
                for m in r.shapes
            )
            table.add_row(_when(r.created_at), r.operator, _verdict(r.decision), r.comment or "", marked)
        console.print(table)
    else:
        console.print("[dim]not reviewed yet[/]")


@db_group.command("review")
@db_option
@click.argument("frame_id", type=int)
@click.option(
    "--decision",
    required=True,
    type=click.Choice(REVIEW_DECISIONS, case_sensitive=False),
    help="What the part really is.",
)
@click.option(
    "--operator", required=True, envvar="ORINGSCAN_OPERATOR", help="Who decided. Env: ORINGSCAN_OPERATOR."
)
@click.option("--comment", default=None, help="Why (optional; the reason of a good / rework override).")
@click.option(
    "--label", default=None, help="Class of the defect marked with --box / --polygon (config classes)."
)
@click.option("--box", default=None, metavar="X,Y,W,H", help="Mark a defect: its box in frame pixels.")
@click.option(
    "--polygon", default=None, metavar='"x1,y1 x2,y2 ..."', help="Mark a defect: its outline in frame pixels."
)
@click.option(
    "--confirm",
    "confirms",
    multiple=True,
    metavar="DEFECT[:CLASS]",
    help="Confirm a machine defect (id from `db show`), mask kept; :CLASS corrects its class. Repeatable.",
)
@common_options
def review_command(
    app: AppContext,
    db_url: str | None,
    frame_id: int,
    decision: str,
    operator: str,
    comment: str | None,
    label: str | None,
    box: str | None,
    polygon: str | None,
    confirms: tuple[str, ...],
) -> None:
    """Record an operator's decision about a frame (earlier reviews are kept as history).

    \b
    A defect decision may say what and where (the review then becomes training data through
    `oringscan export reviews`):
      oringscan db review 42 --decision defect --label hole --box 812,455,30,24 --operator anna
      oringscan db review 42 --decision defect --confirm 17 --confirm 18:scratch --operator anna
    Without marks a defect decision confirms every defect the machine found.
    """
    from oringscan.review.shapes import ReviewInputError, ShapeMark, known_labels, parse_box, parse_polygon

    shapes = []
    for item in confirms:
        ident, _, relabel = item.partition(":")
        if not ident.strip().isdigit():
            raise ReviewInputError(
                f"--confirm {item!r}: expected a defect id, optionally :CLASS (e.g. 17:pit)"
            )
        shapes.append((int(ident), relabel.strip() or None))
    marks: list[ShapeMark] = []
    if box is not None or polygon is not None:
        if not label:
            raise ReviewInputError("--box / --polygon need --label CLASS (the config's classes)")
        points = parse_polygon(polygon) if polygon is not None else None
        marks.append(ShapeMark(label, parse_box(box) if box is not None else None, points))
    elif label:
        raise ReviewInputError("--label names the class of a --box or --polygon; give one of them too")
    store = _open(app, db_url)
    if shapes:
        detail = store.frame_detail(frame_id)
        if detail is None:
            raise StoreError(f"frame {frame_id}: not in the database {safe_url(store.url)}")
        labels = {d.id: d.label for d in detail.defects}
        marks = [
            ShapeMark(relabel or labels.get(ident, "?"), defect_id=ident) for ident, relabel in shapes
        ] + marks
    review_id = store.add_review(
        frame_id, operator, decision, comment, shapes=marks, classes=known_labels(app.config.classes)
    )
    history = store.reviews(frame_id)
    marked = f", {len(marks)} defect(s) marked" if marks else ""
    click.echo(
        f"review {review_id}: frame {frame_id} -> {decision.lower()} by {operator.strip()}{marked} "
        f"({len(history)} review(s) of this frame)"
    )


@db_group.command("migrate")
@db_option
@common_options
def migrate_command(app: AppContext, db_url: str | None) -> None:
    """Create the database or upgrade its schema to this version of oringscan."""
    store = _open(app, db_url, must_exist=False)
    click.echo(f"{safe_url(store.url)}: schema at revision {store.migrate()}")


def register(root: click.Group) -> None:
    from oringscan.db import users_cli

    root.add_command(db_group)
    users_cli.register(root)
    from oringscan.db.diff_cli import diff_command  # oringscan db diff (re-inspection, issue 14)

    db_group.add_command(diff_command)
