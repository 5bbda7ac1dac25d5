"""Alembic, driven from Python: the migration scripts ship inside the package (no alembic.ini needed).

``InspectionStore.migrate()`` upgrades a database to the newest revision. For developers adding a
revision after changing ``models.py``::

    python -m oringscan.db.migrate revision "add station index"   # autogenerate against a scratch SQLite
"""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path

from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts (``url`` for runs without a connection)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url:
        # ConfigParser interpolation: '%' in a URL (encoded passwords) must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def head_revision() -> str | None:
    """The newest revision shipped with this version of oringscan."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def known_revision(revision: str) -> bool:
    """Whether this version of oringscan ships ``revision`` (a newer database's is unknown)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _autogenerate(message: str) -> None:
    from alembic import command

    from oringscan.db.store import InspectionStore

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{(Path(tmp) / 'scratch.db').as_posix()}"
        InspectionStore(url).dispose()  # at the current head
        command.revision(alembic_config(url), message=message, autogenerate=True)


if __name__ == "__main__":  # pragma: no cover - developer tool
    if len(sys.argv) != 3 or sys.argv[1] != "revision":
        sys.exit('usage: python -m oringscan.db.migrate revision "message"')
    _autogenerate(sys.argv[2])
