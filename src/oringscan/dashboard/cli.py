"""`oringscan dashboard`: the review pages in the browser."""

from __future__ import annotations

import click

from oringscan.cli.common import AppContext, common_options


@click.command("dashboard")
@common_options
@click.option(
    "--db",
    "db_url",
    default=None,
    metavar="URL",
    help="Database URL (default: db.url, else sqlite:///<output>/inspections.db).",
)
@click.option(
    "--host",
    default=None,
    metavar="ADDRESS",
    help="Address to bind (default: dashboard.host, 127.0.0.1 = this machine only).",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: dashboard.port, 8501)."
)
def dashboard_command(app: AppContext, db_url: str | None, host: str | None, port: int | None) -> None:
    """Review flagged parts, record decisions, and watch the line's statistics.

    \b
    Pages: Review queue (defect / suspect / rework frames nobody has reviewed),
    Frame view (overlays, defect crops, measurements, decision form),
    Overview (yield, verdicts, defect classes, scores, overrides), Runs.
    Images are shown only from dashboard.image_roots, --data and --output.

    \b
    Examples:
      oringscan dashboard                                  # output/inspections.db on 127.0.0.1:8501
      oringscan dashboard --db sqlite:///D:/line3/inspections.db --port 8600
      oringscan dashboard --host 0.0.0.0                   # reachable from the plant network

    \b
    Users log in ([dashboard] require_login, on by default): create them first with
      oringscan users add anna --role operator   (engineer: may also change settings)
    Only on 127.0.0.1 may login be switched off (require_login = false).
    """
    from oringscan.dashboard.server import check_database_url, check_login_setup, launch
    from oringscan.dashboard.settings import DashboardSettings
    from oringscan.db import safe_url

    settings = DashboardSettings.from_config(app.config, db_url or app.db_url, app.data_root, app.output_root)
    host = host or app.config.dashboard.host
    port = port or app.config.dashboard.port
    check_database_url(settings.db_url)
    check_login_setup(settings, host)
    click.echo(
        f"oringscan dashboard: http://{host}:{port}  (database {safe_url(settings.db_url)}; Ctrl+C stops)"
    )
    launch(settings, host=host, port=port)


def register(root: click.Group) -> None:
    root.add_command(dashboard_command)
