"""Test-wide settings and the fixtures more than one part's tests use.

Settings: offline, pinned thread counts, no stray model caches. Fixtures: ``db_url``/``store``
(an empty database, SQLite and PostgreSQL), ``small_dataset``/``small_dataset_both_types``
(synthetic frames, once per session) and ``tiny_models`` (real tiny models, once per session).
Plain helpers that tests import live in ``tests/support`` (importable as ``support``: pytest's
``pythonpath`` setting) and, where benchmarks need them too, in ``oringscan.testing``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORINGSCAN_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("ORINGSCAN_TEST_THREADS", "2"))
os.environ.setdefault("MPLBACKEND", "Agg")

import cv2  # noqa: E402

cv2.setNumThreads(int(os.environ.get("ORINGSCAN_TEST_THREADS", "2")))

try:  # torch is heavy: pin it only if installed
    import torch  # noqa: E402

    torch.set_num_threads(int(os.environ.get("ORINGSCAN_TEST_THREADS", "2")))
except ImportError:  # pragma: no cover
    pass


import logging  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from support.pipeline import TinyModels, build_tiny_models  # noqa: E402
from support.synthdata import make_small_dataset  # noqa: E402

from oringscan.db import InspectionStore  # noqa: E402


@pytest.fixture(autouse=True)
def _oringscan_logs_reach_caplog():
    """CLI tests call setup_logging(), which stops propagation; caplog listens at the root."""
    logger = logging.getLogger("oringscan")
    propagate, handlers, level = logger.propagate, list(logger.handlers), logger.level
    logger.propagate = True
    logger.handlers[:] = []
    yield
    logger.propagate = propagate
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest leaves ``sys.modules['__main__']`` pointing at the app script; a later
    spawn-based process pool (preprocess workers) would then re-run the dashboard in each child."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


# --- databases: SQLite always, PostgreSQL when ORINGSCAN_TEST_PG_URL names a server -----------------
# (.ci/run starts one); each test session gets a fresh database and each test a fresh schema in it,
# dropped afterwards.
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
                    f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                    "LC_COLLATE 'C' LC_CTYPE 'C'"
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


# --- synthetic data sets (oringscan.synth), rendered once per session -------------------------------
@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model1 only: 4 good, 3 defect, 2 rework frames (seed 0). Treat as read-only."""
    return make_small_dataset(tmp_path_factory.mktemp("synth_small"))


@pytest.fixture(scope="session")
def small_dataset_both_types(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model1 and model2: 4 good, 3 defect, 2 rework frames each (seed 0). Treat as read-only."""
    return make_small_dataset(tmp_path_factory.mktemp("synth_both"), types=("model1", "model2"))


# --- tiny real models (support/pipeline.py), trained once per session -------------------------------
@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Real tiny models for model1 (synth, preprocess, screening, segmentation, rework). Read-only."""
    return build_tiny_models(tmp_path_factory.mktemp("pipeline models"))
