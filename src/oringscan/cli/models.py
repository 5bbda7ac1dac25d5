"""``oringscan models``: the stored versions of a type's models, and which one decides parts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oringscan.cli.common import DB_URL_ENV, AppContext, common_options, model_option
from oringscan.errors import OringscanError

if TYPE_CHECKING:
    from oringscan.db.store import InspectionStore


def snapshot_after_training(app: AppContext, oring_type: str, note: str) -> None:
    """Store the working copy as a model version once all three models exist, and say which
    version decides parts (a retrained model waits for ``models promote`` once one was promoted)."""
    workspace = app.workspace(oring_type)
    if not all(p.is_file() for p in workspace.working_models.files()):
        return  # the type is not complete yet: nothing to version
    versions = workspace.versions
    version = versions.snapshot(note)
    current = versions.current()
    if current is None:
        click.echo(
            f"stored as model version {version.id}; the newest models decide parts until one is promoted"
        )
    elif current != version.id:
        click.echo(
            f"stored as model version {version.id}; {current} still decides parts "
            f"(compare, then: oringscan models promote --model {oring_type} {version.id})"
        )


@click.group("models")
def models_group() -> None:
    """Versions of each type's models: list them, store one, switch the one in use.

    \b
    Every training (train screening / train segmentation / calibrate rework) stores the type's
    three models as a new version under output/<type>/versions/ once all three exist. Until a
    version is promoted the newest models decide parts; after that only the promoted version does,
    and a retrained model is a candidate until you promote it. Every promotion and rollback is
    written to output/<type>/versions/history.jsonl and to the inspection database (--db, else
    ORINGSCAN_DB_URL or the config's db.url, else output/inspections.db when it exists; `models
    history` shows them), and every inspection run records the version that decided its frames
    (oringscan db runs).
    """


def history_db_url(app: AppContext, db_url: str | None) -> str | None:
    """The database a promotion is recorded in: --db, else a configured one (ORINGSCAN_DB_URL,
    [db] url), else the default SQLite file only when it already exists (promoting on a machine
    that never inspected does not create a database)."""
    if db_url:
        return db_url
    if os.environ.get(DB_URL_ENV, "").strip() or app.config.db.url:
        return app.db_url
    from oringscan.db.store import sqlite_path

    default = sqlite_path(app.db_url)
    return app.db_url if default is not None and default.is_file() else None


def _open_history_store(app: AppContext, db_url: str | None) -> InspectionStore | None:
    url = history_db_url(app, db_url)
    if url is None:
        return None
    from oringscan.db.store import InspectionStore

    return InspectionStore(url)  # opened (and migrated) before anything switches: a bad URL changes nothing


def _switch(
    app: AppContext,
    oring_type: str,
    db_url: str | None,
    operator: str,
    reason: str,
    version: str | None = None,
) -> tuple[str | None, str]:
    """Promote (``version``) or roll back, on the file side (current pointer, history.jsonl) and
    in the database when there is one."""
    versions = app.workspace(oring_type).versions
    store = _open_history_store(app, db_url)
    try:
        if version is not None:
            previous, new = versions.promote(version, operator, reason)
        else:
            previous, new = versions.rollback(operator, reason)
        if store is None:
            return previous, new
        from oringscan.db.store import safe_url

        event = versions.history()[-1]  # the line just written: the same reason (rollback fills one in)
        try:
            action = "promote" if version is not None else "rollback"
            store.record_promotion(oring_type, action, new, previous, operator, event.get("reason"))
        except Exception as exc:  # noqa: BLE001 - the switch happened: say so, whatever the database said
            raise OringscanError(
                f"{safe_url(store.url)}: {oring_type} now uses {new} (recorded in versions/history.jsonl) "
                f"but the database did not take the record: {str(exc).splitlines()[0]}"
            ) from None
        return previous, new
    finally:
        if store is not None:
            store.dispose()


@models_group.command("list")
@common_options
@model_option()
def list_command(app: AppContext, oring_type: str) -> None:
    """The stored versions, oldest first; * marks the one in use."""
    versions = app.workspace(oring_type).versions
    current = versions.current()
    stored = versions.stored()
    if not stored:
        click.echo(f"{oring_type}: no stored versions yet (the newest models decide parts)")
        return
    for v in stored:
        mark = "*" if v.id == current else " "
        click.echo(f"{mark} {v.id}  {v.created}  {v.note}")
    if current is None:
        click.echo("(nothing promoted: the newest models decide parts)")


@models_group.command("snapshot")
@common_options
@model_option()
@click.option("--note", default="", help="What this version is (shown by models list).")
def snapshot_command(app: AppContext, oring_type: str, note: str) -> None:
    """Store the type's current models as a new version (nothing new: the newest version)."""
    version = app.workspace(oring_type).versions.snapshot(note or "stored by hand")
    click.echo(f"{oring_type}: {version.id}")


_DB_HELP = (
    "Record it in this database [default: ORINGSCAN_DB_URL, the config's db.url, "
    "else output/inspections.db if it exists]."
)


@models_group.command("promote")
@common_options
@model_option()
@click.argument("version")
@click.option("--operator", default="", help="Who decided (written to the history).")
@click.option("--reason", default="", help="Why (written to the history).")
@click.option("--db", "db_url", default=None, metavar="URL", help=_DB_HELP)
def promote_command(
    app: AppContext, oring_type: str, version: str, operator: str, reason: str, db_url: str | None
) -> None:
    """Make VERSION (e.g. v0002) the models that decide parts from the next frame on."""
    previous, new = _switch(app, oring_type, db_url, operator, reason, version)
    click.echo(f"{oring_type}: {previous or 'newest models'} -> {new}")


@models_group.command("rollback")
@common_options
@model_option()
@click.option("--operator", default="", help="Who decided (written to the history).")
@click.option("--reason", default="", help="Why (written to the history).")
@click.option("--db", "db_url", default=None, metavar="URL", help=_DB_HELP)
def rollback_command(
    app: AppContext, oring_type: str, operator: str, reason: str, db_url: str | None
) -> None:
    """Back to the version that was in use before the current one."""
    previous, new = _switch(app, oring_type, db_url, operator, reason)
    click.echo(f"{oring_type}: {previous} -> {new}")


@models_group.command("history")
@common_options
@model_option()
@click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    help="Read it from this database [default: as promote; none: versions/history.jsonl].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def history_command(app: AppContext, oring_type: str, db_url: str | None, as_json: bool) -> None:
    """Every promotion and rollback of the type's models, newest first: who, when, why."""
    import json

    store = _open_history_store(app, db_url)
    rows: list[dict[str, Any]]
    if store is not None:
        from oringscan.db.store import safe_url

        try:
            rows = [r.to_dict() for r in store.promotions(oring_type, limit=None)]
        finally:
            store.dispose()
        source = safe_url(store.url)
    else:
        events = reversed(app.workspace(oring_type).versions.history())
        rows = [
            {
                "created_at": e.get("at"),
                "action": e.get("action", "promote"),
                "version": e.get("to"),
                "previous": e.get("from"),
                "operator": e.get("operator") or None,
                "reason": e.get("reason") or None,
            }
            for e in events
        ]
        source = "versions/history.jsonl (no database)"
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"{oring_type}: nothing promoted yet ({source})")
        return
    click.echo(f"{oring_type}: from {source}")
    for r in rows:
        who = f" by {r['operator']}" if r.get("operator") else ""
        why = f": {r['reason']}" if r.get("reason") else ""
        click.echo(
            f"  {str(r['created_at'])[:19]}  {r['action']:8s} {r['previous'] or 'newest models'} -> "
            f"{r['version']}{who}{why}"
        )


@click.command("compare")
@common_options
@model_option()
@click.option("--candidate", required=True, metavar="VERSION", help='A stored version (v0003) or "working".')
@click.option(
    "--baseline",
    default=None,
    metavar="VERSION",
    help="What it is compared with [default: the version in use, else the newest models].",
)
@click.option(
    "--split", default="test", show_default=True, help="Preprocess split whose frames are inspected."
)
@click.option(
    "--db", "db_url", default=None, help="Also the frames people reviewed in this database (truth: review)."
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Report folder.")
@click.option("--device", default=None, help="auto, cpu or cuda [default: the config's].")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_command(
    app: AppContext,
    oring_type: str,
    candidate: str,
    baseline: str | None,
    split: str,
    db_url: str | None,
    out_dir: Path | None,
    device: str | None,
    as_json: bool,
) -> None:
    """Inspect the same frames with two model versions and say what changed, before promoting.

    (To compare screening *methods* fitted on the same split, see `oringscan evaluate compare`.)

    \b
    Frames: the split's (truth from the data folders) plus, with --db, every frame a person reviewed
    (truth: the newest review). Writes compare.json, compare.png and compare.html (the metrics, each
    side's confusion and operating point, the frames whose verdict changed with both overlays) to
    output/<type>/evaluation/compare-<baseline>-vs-<candidate>/.
    \b
    Example:
      oringscan compare --model model1 --candidate v0003 --db sqlite:///output/inspections.db
      oringscan models promote --model model1 v0003
    """
    import json

    from oringscan.pipeline.compare import compare_versions

    result = compare_versions(
        app.config,
        app.data_root,
        app.output_root,
        oring_type,
        candidate,
        baseline,
        split=split,
        db_url=db_url,
        out_dir=out_dir,
        device=device,
        progress=not as_json,
    )
    if as_json:
        click.echo(
            json.dumps({k: v for k, v in result.items() if k != "changed"} | {"changed": result["changed"]})
        )
        return
    click.echo(result["summary"])
    for name, m in result["metrics"].items():
        b, c = m["baseline"], m["candidate"]
        shown = "-" if b is None else f"{b:.3f}", "-" if c is None else f"{c:.3f}"
        click.echo(f"  {name:22s} {shown[0]:>7s} -> {shown[1]:>7s}  {m['verdict']}")
    for row in result["changed"][:20]:
        click.echo(f"  {row['change']:7s} {Path(row['image']).name}: {row['baseline']} -> {row['candidate']}")
    click.echo(f"report: {result['html']}")


def register(root: click.Group) -> None:
    root.add_command(models_group)
    root.add_command(compare_command)
