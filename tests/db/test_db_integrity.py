"""Issue 15 in the database: one record per frame and models (schema-backed), run liveness, a
damaged file in one line, and the 0001 -> 0002 migration with data in it. SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.exc import DBAPIError
from support.db_writer import frame_sha

import oringscan.db
from oringscan.db import InspectionStore, StoreError
from oringscan.db.migrate import alembic_config, head_revision
from oringscan.db.models import Base, Frame, Review, Run
from oringscan.db.store import AlreadyInspectedError
from oringscan.testing.results import make_result

WRITER = Path(__file__).resolve().parents[1] / "support" / "db_writer.py"
ROOT = Path(__file__).resolve().parents[2]  # the repository


def _writer(url: str, n_frames: int, fingerprint: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, str(WRITER), url, str(n_frames), fingerprint, "--no-check"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _records(store: InspectionStore) -> dict[str, int]:
    with store.read_session() as s:
        return dict(s.execute(select(Frame.sha256, func.count()).group_by(Frame.sha256)).all())


def test_the_schema_refuses_a_second_current_record(store: InspectionStore) -> None:
    run_id = store.start_run(oring_type="model1", model_fingerprint="fp-1")
    first = store.record_frame(run_id, make_result("defect", sha256="a" * 64, defects=[("cut", 0.9)]))
    with pytest.raises(AlreadyInspectedError) as caught:
        store.record_frame(run_id, make_result("good", sha256="a" * 64))
    assert caught.value.frame_id == first
    # Not even a write that bypasses the application's check gets a duplicate in.
    with pytest.raises(DBAPIError), store.write_session() as s:
        s.add(
            Frame(
                run_id=run_id,
                path="/x.bmp",
                sha256="a" * 64,
                frame_key="a" * 64,
                model_fingerprint="fp-1",
                inspected_at=datetime.now(UTC),
                verdict="good",
                reasons=[],
                timings={},
            )
        )
    # Other models, other content: new records.
    store.record_frame(run_id, make_result(sha256="a" * 64), model_fingerprint="fp-2")
    store.record_frame(run_id, make_result(sha256="b" * 64))
    # --reinspect supersedes: the old record stays (history), the new one is current.
    second = store.record_frame(run_id, make_result("suspect", sha256="a" * 64), replace=True)
    assert store.find_inspected("a" * 64, "fp-1") == second != first
    with store.read_session() as s:
        old = s.get(Frame, first)
        assert old is not None and old.superseded_at is not None and old.n_defects == 1
    assert _records(store)["a" * 64] == 3


@pytest.mark.slow
def test_two_writers_on_the_same_frames_record_each_once(db_url: str) -> None:
    store = InspectionStore(db_url)
    try:
        writers = [_writer(db_url, 16, "fp-race") for _ in range(2)]
        outs = [w.communicate(timeout=180) for w in writers]
        for w, (_, err) in zip(writers, outs, strict=True):
            assert w.returncode == 0, err
        recorded = sum(out.count("recorded") for out, _ in outs)
        skipped = sum(out.count("skipped") for out, _ in outs)
        assert recorded == 16 and skipped == 16
        assert _records(store) == {frame_sha(i): 1 for i in range(16)}
    finally:
        store.dispose()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_whose_process_died_are_interrupted_on_next_open(db_url: str) -> None:
    store = InspectionStore(db_url)
    try:
        alive = store.start_run(oring_type="model1")  # this process: alive
        dead = store.start_run(oring_type="model1")
        store.record_frame(dead, make_result("defect", defects=[("cut", 0.9)], seed=1))
        old = datetime.now(UTC) - timedelta(hours=1)
        far_fresh = store.start_run(oring_type="model1", host="other-station")
        far_stale = store.start_run(oring_type="model1", host="other-station", started_at=old)
        with store.write_session() as s:
            s.execute(update(Run).where(Run.id == dead).values(pid=_dead_pid()))
            s.execute(update(Run).where(Run.id == far_stale).values(heartbeat_at=old))
        reopened = InspectionStore(db_url)  # the next command that opens the database
        status = {r.id: r for r in reopened.runs()}
        assert status[alive].status == "running"
        assert status[far_fresh].status == "running"
        assert status[dead].status == "interrupted" and status[dead].n_defect == 1
        assert status[far_stale].status == "interrupted"
        reopened.heartbeat(far_fresh)
        assert reopened.mark_dead_runs(now=datetime.now(UTC) + timedelta(hours=1)) == [far_fresh]
        reopened.dispose()
    finally:
        store.dispose()


def test_a_damaged_sqlite_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "inspections.db"
    path.write_bytes(b"this is not a database, it was overwritten by a camera export" * 100)
    with pytest.raises(StoreError) as caught:
        InspectionStore(f"sqlite:///{path.as_posix()}")
    message = str(caught.value)
    assert "not a SQLite database, or a damaged one" in message and "\n" not in message
    assert path.read_bytes().startswith(b"this is not a database")  # nothing overwritten


def _fill_at_0001(url: str) -> dict[str, int]:
    """A database at the first landing's schema, with runs, duplicated frames and reviews."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO runs (id, started_at, status, model_fingerprint, n_frames, n_good, "
                    "n_defect, "
                    "n_rework, n_suspect, n_error, n_skipped) VALUES (1, :t, 'running', 'fp', 0,0,0,0,0,0,0)"
                ),
                {"t": now},
            )
            rows = [
                (1, "a" * 64, "defect"),
                (2, "a" * 64, "defect"),
                (3, "b" * 64, "good"),
                (4, None, "error"),
                (5, None, "error"),
            ]
            for frame_id, sha, verdict in rows:
                conn.execute(
                    text(
                        "INSERT INTO frames (id, run_id, path, sha256, inspected_at, verdict, reasons, "
                        "timings, "
                        "n_defects, model_fingerprint) VALUES (:id, 1, :p, :sha, :t, :v, '[]', '{}', 0, 'fp')"
                    ),
                    {
                        "id": frame_id,
                        "p": "/plant/fifo.bmp" if sha is None else f"/plant/{frame_id}.bmp",
                        "sha": sha,
                        "t": now,
                        "v": verdict,
                    },
                )
            conn.execute(
                text(
                    "INSERT INTO reviews (frame_id, operator, decision, created_at) "
                    "VALUES (1, 'anna', 'good', :t)"
                ),
                {"t": now},
            )
    finally:
        engine.dispose()
    return {"frames": 5, "reviews": 1}


MIGRATIONS = Path(oringscan.db.__file__).parent / "migrations" / "versions"


def test_migration_from_the_first_schema_with_data(db_url: str) -> None:
    before = _fill_at_0001(db_url)
    store = InspectionStore(db_url)  # opening migrates to head
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            newest = sorted(p.name[:4] for p in MIGRATIONS.glob("0*.py"))[-1]  # the last file is the head
            assert context.get_current_revision() == head_revision() == newest
            assert compare_metadata(context, Base.metadata) == []
        with store.read_session() as s:
            frames = {f.id: f for f in s.scalars(select(Frame))}
            assert len(frames) == before["frames"]
            assert frames[1].superseded_at is not None and frames[2].superseded_at is None  # newest stays
            assert frames[4].superseded_at is not None and frames[5].superseded_at is None  # same FIFO twice
            assert frames[3].frame_key == "b" * 64 and frames[4].frame_key == frames[5].frame_key
            assert s.scalar(select(func.count(Review.id))) == before["reviews"]
        assert store.find_inspected("a" * 64, "fp") == 2
        # The append-only guard survived the table copy.
        with pytest.raises(DBAPIError), store.write_session() as s:
            s.execute(update(Review).values(decision="defect"))
        # The schema's rule holds on migrated data too.
        with pytest.raises(AlreadyInspectedError):
            store.record_frame(1, make_result(sha256="b" * 64), model_fingerprint="fp")
        # The old run has no pid and its start is fresh: still running until it goes stale.
        assert store.run(1).status == "running"
        assert store.mark_dead_runs(now=datetime.now(UTC) + timedelta(hours=1)) == [1]
    finally:
        store.dispose()


def test_sigterm_closes_a_run_as_interrupted(tmp_path: Path) -> None:
    """A process stopped with SIGTERM inside inspect_paths' handler closes its run itself."""
    url = f"sqlite:///{(tmp_path / 'i.db').as_posix()}"
    script = (
        "import sys, time\n"
        "from oringscan.db import InspectionStore\n"
        "from oringscan.pipeline.batch import sigterm_as_interrupt, Terminated\n"
        f"store = InspectionStore({url!r})\n"
        "run = store.start_run(oring_type='model1')\n"
        "try:\n"
        "    with sigterm_as_interrupt():\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "except Terminated:\n"
        "    store.finish_run(run, status='interrupted')\n"
        "    sys.exit(143)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    proc.stdout.close()
    store = InspectionStore(url)
    assert [r.status for r in store.runs()] == ["interrupted"]
    store.dispose()
