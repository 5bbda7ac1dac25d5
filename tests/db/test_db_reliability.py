"""Reliability of the inspection record, on SQLite and PostgreSQL, with real processes.

- a reader is never blocked by, and never sees a part of, a frame being written;
- a batch killed with SIGKILL halfway and then rerun leaves every frame recorded exactly once;
- several processes opening a new database at once migrate it once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support.db_writer import TILES_PER_FRAME, frame_sha

from oringscan.db import InspectionStore
from oringscan.db.models import Defect, Frame, Tile
from oringscan.testing.results import make_result

WRITER = Path(__file__).resolve().parents[1] / "support" / "db_writer.py"
ROOT = Path(__file__).resolve().parents[2]  # the repository


def _writer(
    url: str, n_frames: int, fingerprint: str, slow_commit: float = 0.0, stall_at: int | None = None
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, str(WRITER), url, str(n_frames), fingerprint]
    if slow_commit:
        cmd += ["--slow-commit", str(slow_commit)]
    if stall_at is not None:
        cmd += ["--stall-at", str(stall_at)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _frame_integrity(store: InspectionStore) -> list[tuple[str, int, int, int]]:
    """(sha256, records, tiles, defects) for every recorded frame content."""
    with store.read_session() as s:
        tiles = select(Tile.frame_id, func.count(Tile.id).label("n")).group_by(Tile.frame_id).subquery()
        rows = s.execute(
            select(Frame.id, Frame.sha256, Frame.verdict, func.coalesce(tiles.c.n, 0)).outerjoin(
                tiles, tiles.c.frame_id == Frame.id
            )
        ).all()
        defects = dict(
            s.execute(select(Defect.frame_id, func.count(Defect.id)).group_by(Defect.frame_id)).all()
        )
    by_sha: dict[str, list[tuple[int, int, int]]] = {}
    for frame_id, sha, verdict, n_tiles in rows:
        by_sha.setdefault(sha, []).append(
            (n_tiles, defects.get(frame_id, 0), 2 if verdict == "defect" else 0)
        )
    out = []
    for sha, records in by_sha.items():
        for n_tiles, n_defects, expected_defects in records:
            assert n_tiles == TILES_PER_FRAME, f"frame {sha[-4:]} has {n_tiles} of {TILES_PER_FRAME} tiles"
            assert n_defects == expected_defects, (
                f"frame {sha[-4:]} has {n_defects} of {expected_defects} defects"
            )
        out.append((sha, len(records), TILES_PER_FRAME, expected_defects))
    return out


def test_a_reader_reads_while_a_write_transaction_is_open(store: InspectionStore) -> None:
    """Readers and the writer never wait for each other, and a reader sees whole frames only (SQLite: WAL)."""
    run_id = store.start_run(oring_type="model1")
    store.record_frame(run_id, make_result("good", seed=1))
    if store.dialect == "sqlite":
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    reader = InspectionStore(store.url)
    try:
        with store.write_session() as writing:
            writing.add(
                Frame(
                    run_id=run_id,
                    path="/plant/half.bmp",
                    inspected_at=datetime.now(UTC),
                    verdict="defect",
                    reasons=[],
                    timings={},
                )
            )
            writing.flush()  # rows written, transaction still open and holding the write lock
            start = time.perf_counter()
            page = reader.frames()
            assert reader.review_queue().total == 0
            assert reader.stats().n_frames == 1
            elapsed = time.perf_counter() - start
            assert page.total == 1 and page.items[0].verdict == "good"
            assert elapsed < 5.0, f"reader waited {elapsed:.1f}s for the writer"
        assert reader.frames().total == 2  # committed now
        # And the other way round: a reader holding its snapshot open does not stall the line.
        with reader.read_session() as snapshot:
            assert snapshot.scalar(select(func.count(Frame.id))) == 2
            start = time.perf_counter()
            store.record_frame(run_id, make_result("defect", defects=[("cut", 0.9)], seed=2))
            assert time.perf_counter() - start < 5.0
            assert snapshot.scalar(select(func.count(Frame.id))) == 2  # still its own consistent view
        assert reader.frames().total == 3
    finally:
        reader.dispose()


def test_readers_never_see_half_a_frame_while_a_batch_writes(db_url: str) -> None:
    store = InspectionStore(db_url)
    writer = _writer(db_url, 24, "fp-read", slow_commit=0.01)
    seen_totals = []
    try:
        while writer.poll() is None:
            _frame_integrity(store)  # every visible frame is complete
            seen_totals.append(store.frames(limit=5).total)
            time.sleep(0.02)
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        assert seen_totals == sorted(seen_totals)
        integrity = _frame_integrity(store)
        assert len(integrity) == 24 and all(n == 1 for _, n, _, _ in integrity)
        assert len(set(seen_totals)) > 1, "the reader never overlapped the writer"
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        store.dispose()


@pytest.mark.slow
def test_sigkill_halfway_then_rerun_records_every_frame_once(db_url: str) -> None:
    n_frames = 30
    store = InspectionStore(db_url)
    try:
        writer = _writer(db_url, n_frames, "fp-kill", stall_at=n_frames // 2)
        assert writer.stdout is not None
        for line in writer.stdout:
            if line.startswith("in-transaction"):
                writer.send_signal(signal.SIGKILL)  # frame N/2's rows are written, not committed
                break
        writer.wait(timeout=60)
        writer.stdout.close()
        writer.stderr.close()
        assert writer.returncode == -signal.SIGKILL
        halfway = _frame_integrity(store)
        assert len(halfway) == n_frames // 2, "the half-written frame must not be there"
        assert all(n == 1 for _, n, _, _ in halfway)

        rerun = _writer(db_url, n_frames, "fp-kill")
        out, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
        assert out.count("skipped") == len(halfway)
        assert out.count("recorded") == n_frames - len(halfway)

        final = _frame_integrity(store)
        assert sorted(sha for sha, _, _, _ in final) == sorted(frame_sha(i) for i in range(n_frames))
        assert all(n == 1 for _, n, _, _ in final), "a frame was recorded twice"
        runs = sorted(store.runs(), key=lambda r: r.id)
        assert [r.status for r in runs] == ["interrupted", "done"]  # its process died: shown interrupted
        assert runs[1].n_skipped == len(halfway) and runs[1].n_frames == n_frames - len(halfway)
    finally:
        store.dispose()


def test_concurrent_first_opens_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []
    stores: list[InspectionStore] = []

    def open_store() -> None:
        try:
            stores.append(InspectionStore(db_url))
        except BaseException as exc:  # noqa: BLE001 - collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        run_id = stores[0].start_run(oring_type="model1")
        stores[1].record_frame(run_id, make_result("good"))
        assert stores[2].frames().total == 1
    finally:
        for s in stores:
            s.dispose()
