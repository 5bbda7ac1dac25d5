"""``oringscan users ...``: who may log in to the dashboard (a thin shell over oringscan.db.users)."""

from __future__ import annotations

import sys
from typing import Any

import click

from oringscan.cli.common import AppContext, OneLineErrors, common_options
from oringscan.errors import OringscanError

ROLES = ("operator", "engineer")


def _store(app: AppContext, db_url: str | None) -> Any:
    from oringscan.db.store import InspectionStore

    return InspectionStore(db_url or app.db_url)


def _password(password_stdin: bool) -> str:
    """From stdin (scripts: the first line) or a hidden prompt asked twice."""
    if password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise OringscanError(
                "--password-stdin: nothing on stdin (pipe the password in: echo ... | oringscan users add)"
            )
        return line.rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _db_option(func: Any) -> Any:
    return click.option(
        "--db",
        "db_url",
        default=None,
        metavar="URL",
        help="SQLAlchemy URL [default: config db.url, else sqlite:///<output>/inspections.db].",
    )(func)


@click.group("users", cls=OneLineErrors)
def users_group() -> None:
    """Dashboard users: operators record decisions, engineers may also change settings.

    \b
    Examples:
      oringscan users add anna --role operator                 # asks for the password twice
      printf '%s\\n' "$PW" | oringscan users add ci --role engineer --password-stdin
      oringscan users list
    """


@users_group.command("add")
@_db_option
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    required=True,
    help="operator (review) or engineer (review + settings).",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from stdin's first line (for scripts)."
)
@common_options
def add_command(app: AppContext, db_url: str | None, name: str, role: str, password_stdin: bool) -> None:
    """Create a user who can log in to the dashboard."""
    from oringscan.db.users import add_user

    store = _store(app, db_url)
    user = add_user(store, name, role, _password(password_stdin))
    click.echo(f"user {user.name} ({user.role}) added")


@users_group.command("passwd")
@_db_option
@click.argument("name")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from stdin's first line (for scripts)."
)
@common_options
def passwd_command(app: AppContext, db_url: str | None, name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    from oringscan.db.users import set_password

    set_password(_store(app, db_url), name, _password(password_stdin))
    click.echo(f"password of {name} changed")


@users_group.command("disable")
@_db_option
@click.argument("name")
@click.option("--enable", is_flag=True, help="Enable the user again.")
@common_options
def disable_command(app: AppContext, db_url: str | None, name: str, enable: bool) -> None:
    """Stop a user from logging in (their reviews stay theirs)."""
    from oringscan.db.users import set_disabled

    set_disabled(_store(app, db_url), name, not enable)
    click.echo(f"user {name} {'enabled' if enable else 'disabled'}")


@users_group.command("list")
@_db_option
@common_options
def list_command(app: AppContext, db_url: str | None) -> None:
    """The users, their roles, and whether they may log in."""
    from oringscan.db.users import list_users

    users = list_users(_store(app, db_url))
    if not users:
        click.echo("no users yet: oringscan users add NAME --role operator|engineer")
    for user in users:
        state = " (disabled)" if user.disabled else ""
        click.echo(f"{user.name}\t{user.role}{state}\tsince {user.created_at:%Y-%m-%d}")


def register(root: click.Group) -> None:
    root.add_command(users_group)
