"""Database test helpers: real InspectionResults, and one fixture over SQLite and PostgreSQL.

Test modules load the fixtures with ``pytest_plugins = ("conftest_db",)``. PostgreSQL runs when
ORINGSCAN_TEST_PG_URL names a server (``.ci/run`` starts one); each test session gets a fresh
database and each test a fresh schema in it, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from oringscan.db import InspectionStore

PG_URL_ENV = "ORINGSCAN_TEST_PG_URL"
BACKENDS = ("sqlite", "postgresql")


def pg_admin_url() -> str | None:
    return os.environ.get(PG_URL_ENV) or None


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test session (None without a server)."""
    admin = pg_admin_url()
    if admin is None:
        yield None
        return
    name = f"oringscan_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(
                text(
                    f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
                )
            )
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Any, pg_database: str | None) -> Iterator[str]:
    """An empty database: a SQLite file under a path with a space, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        folder = tmp_path / "plant db"
        yield f"sqlite:///{(folder / 'inspections.db').as_posix()}"
        return
    if pg_database is None:
        pytest.skip(f"PostgreSQL tests need a server: set {PG_URL_ENV} (.ci/run starts one)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(pg_database).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[InspectionStore]:
    opened = InspectionStore(db_url)
    try:
        yield opened
    finally:
        opened.dispose()
