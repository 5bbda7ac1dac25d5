"""``InspectionStore``: the one way the pipeline writes and the dashboard reads inspection records.

Any SQLAlchemy URL works; the default is ``sqlite:///<output>/inspections.db``. On SQLite every
connection runs in WAL mode (readers never block the writer) with a busy timeout and foreign keys
on, and write transactions start with ``BEGIN IMMEDIATE`` so two writers queue instead of failing.
The schema is created and upgraded by Alembic (``migrate()``), which the constructor runs.

Opening a store also closes the runs whose process died (``mark_dead_runs``): a run is alive while
its process exists (same host: the pid) or its heartbeat is fresh (another host), else it is shown
``interrupted``. "One record per frame and models" is a unique index (see models.py): a writer that
loses the race gets :class:`AlreadyInspectedError` and treats the frame as already inspected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, create_engine, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from oringscan.db import queries
from oringscan.db.errors import StoreError
from oringscan.db.models import (
    REVIEW_DECISIONS,
    RUN_STATUSES,
    VERDICTS,
    Defect,
    Frame,
    Measurement,
    Review,
    ReviewShape,
    Run,
    Tile,
)
from oringscan.db.queries import (
    DefectRow,
    FrameDetail,
    FrameFilter,
    FrameRow,
    Page,
    ReviewRow,
    RunRow,
    ScoreHistogram,
)
from oringscan.timeutil import as_utc, utc_now
from oringscan.types import InspectionResult

if TYPE_CHECKING:
    from oringscan.review.shapes import ShapeMark

log = logging.getLogger(__name__)

# The plant's full frame (h, w): RLE masks need the frame size; the pipeline passes the real one.
DEFAULT_FRAME_SHAPE = (2048, 2448)
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Serialises concurrent migrations of one PostgreSQL database (any constant shared by all writers).
_PG_MIGRATION_LOCK = 0x0_5EA1_0DB
# A run on another host whose heartbeat is older than this is taken for dead (writers beat every
# frame and at least every 30 s while waiting).
STALE_RUN = timedelta(minutes=10)


class AlreadyInspectedError(StoreError):
    """The database already has a current record of this frame with these models (another process
    recorded it first); the frame counts as already inspected."""

    def __init__(self, message: str, frame_id: int | None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 checks without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC (naive input is taken as UTC): the one time zone stored."""
    if value is None:
        return None
    return as_utc(value)


def now_utc() -> datetime:
    return utc_now()


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<database url>"


def config_fingerprint(config: Any) -> str | None:
    """sha256 of the canonical JSON of a config (dict or pydantic model)."""
    if config is None:
        return None
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _clean_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """JSON-safe copy (see :func:`oringscan.db.queries.to_jsonable`)."""
    return queries.to_jsonable(value)


def mask_rle(mask: np.ndarray, offset: tuple[int, int], height: int, width: int) -> dict[str, Any]:
    """COCO RLE (compressed, JSON-ready) of a mask crop placed at ``offset`` in a height x width frame.

    The same string as ``Instance.rle`` gives, built from the crop's pixel positions instead of a
    dense frame-size mask (5 MB and ~20 ms per defect at 2448x2048).
    """
    from pycocotools import mask as mask_utils

    ys, xs = np.nonzero(mask)
    ys, xs = ys.astype(np.int64) + offset[1], xs.astype(np.int64) + offset[0]
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    positions = np.sort(xs[inside] * height + ys[inside])  # column-major, as COCO counts run
    total = height * width
    if positions.size == 0:
        counts = [total]
    else:
        breaks = np.flatnonzero(np.diff(positions) != 1)
        starts = np.concatenate([positions[:1], positions[breaks + 1]])
        ends = np.concatenate([positions[breaks], positions[-1:]]) + 1
        gaps = starts - np.concatenate([[0], ends[:-1]])
        counts = np.stack([gaps, ends - starts], axis=1).ravel().tolist()
        if ends[-1] < total:
            counts.append(int(total - ends[-1]))
    encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)


class InspectionStore:
    """Inspection records in any SQLAlchemy database; the schema is migrated on open.

    Typical use::

        store = InspectionStore("sqlite:///output/inspections.db")
        run_id = store.start_run(oring_type="model1", model_fingerprint="abc")
        frame_id = store.record_frame(run_id, result)   # one transaction
        store.finish_run(run_id)
    """

    def __init__(self, url: str, *, migrate: bool = True, echo: bool = False) -> None:
        self.url = str(url)
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise StoreError(
                f"{self.url!r}: not a database URL (e.g. sqlite:///output/inspections.db)"
            ) from None
        sqlite_file = sqlite_path(self.url)
        if sqlite_file is not None:
            try:
                sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"{sqlite_file}: cannot create the database folder ({exc.strerror})"
                ) from None
        kwargs: dict[str, Any] = {"echo": echo}
        if parsed.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            raise StoreError(f"{safe_url(self.url)}: no database driver for this URL ({exc})") from None
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        elif self.dialect == "postgresql":
            _configure_postgresql(self.engine)
        # Reads see one snapshot for the whole session (a page and its total agree): SQLite's
        # transactions do that already, PostgreSQL needs REPEATABLE READ (never fails for readers).
        read_engine = self.engine
        if self.dialect == "postgresql":
            read_engine = self.engine.execution_options(isolation_level="REPEATABLE READ")
        self._read = sessionmaker(read_engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(oringscan_write=True), expire_on_commit=False
        )
        if migrate:
            try:
                self.migrate()
            except StoreError:
                raise
            except SQLAlchemyError as exc:
                self.engine.dispose()
                raise StoreError(self._open_problem(exc)) from None
            try:
                self.mark_dead_runs()
            except (SQLAlchemyError, StoreError) as exc:  # a read-only user: the runs just stay as recorded
                log.info("%s: runs not checked for liveness (%s)", safe_url(self.url), _first_line(exc))

    def _open_problem(self, exc: SQLAlchemyError) -> str:
        text = _first_line(exc)
        if (
            self.dialect == "sqlite"
            and isinstance(exc, DatabaseError)
            and ("not a database" in text or "malformed" in text or "corrupt" in text)
        ):
            return (
                f"{safe_url(self.url)}: not a SQLite database, or a damaged one ({text}); restore it from "
                "a backup or move it away to start a new one"
            )
        return f"{safe_url(self.url)}: cannot open the database: {text}"

    def __repr__(self) -> str:
        return f"InspectionStore({safe_url(self.url)!r})"

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> str | None:
        """Create or upgrade the schema to the newest Alembic revision; returns that revision.

        Runs in one write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so
        a pipeline and a dashboard opening a new database at once cannot both create it.
        """
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        from oringscan.db.migrate import alembic_config, head_revision, known_revision

        head = head_revision()
        with self.engine.connect() as conn:  # up to date (the usual case): a read, no write lock
            current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return head
        if current is not None and not known_revision(current):
            raise StoreError(
                f"{safe_url(self.url)}: the database schema (revision {current}) is newer than this "
                f"oringscan knows (head {head}); upgrade oringscan"
            )
        cfg = alembic_config(self.url)
        with self.engine.connect().execution_options(oringscan_write=True) as conn:
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                return MigrationContext.configure(conn).get_current_revision()

    def create_all(self) -> None:
        """Tables straight from the models (no Alembic history): for throwaway databases only."""
        from oringscan.db.models import Base

        Base.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    close = dispose

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only session: one consistent snapshot for everything read inside it.

        A database that fails under the read (damaged file, server gone) is one StoreError line.
        """
        try:
            with self._read() as session, session.begin():
                yield session
        except DatabaseError as exc:
            raise StoreError(self._open_problem(exc)) from None

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """One write transaction: committed as a whole at the end, rolled back on any error."""
        with self._write() as session, session.begin():
            yield session

    # -- writing --------------------------------------------------------------------------------

    def start_run(
        self,
        oring_type: str | None = None,
        *,
        model_fingerprint: str | None = None,
        model_versions: dict[str, Any] | None = None,
        config: Any = None,
        config_fingerprint: str | None = None,
        host: str | None = None,
        command: str | None = None,
        started_at: datetime | None = None,
    ) -> int:
        """A new run record (status ``running``); returns its id."""
        config_json = None
        if config is not None:
            config_json = _jsonable(
                config.model_dump(mode="json") if hasattr(config, "model_dump") else config
            )
        started = utc(started_at) or now_utc()
        run = Run(
            started_at=started,
            heartbeat_at=now_utc(),
            pid=os.getpid() if host is None else None,
            host=host if host is not None else socket.gethostname(),
            oring_type=oring_type,
            command=command,
            status="running",
            config_fingerprint=config_fingerprint or config_fingerprint_of(config_json),
            model_fingerprint=model_fingerprint,
            model_versions=_jsonable(model_versions) if model_versions is not None else None,
            config=config_json,
        )
        with self.write_session() as session:
            session.add(run)
            session.flush()
            return run.id

    def record_frame(
        self,
        run_id: int,
        result: InspectionResult,
        path: Path | str | None = None,
        sha256: str | None = None,
        model_fingerprint: str | None = None,
        frame_shape: tuple[int, int] | None = None,
        *,
        station: str | None = None,
        captured_at: datetime | None = None,
        inspected_at: datetime | None = None,
        mm_per_px: float | None = None,
        frame_key: str | None = None,
        replace: bool = False,
        supersedes: int | None = None,
    ) -> int:
        """Write one frame with its tiles, defects and measurements in ONE transaction; returns its id.

        ``path``/``sha256`` default to the result's; ``model_fingerprint`` to the run's.
        ``frame_shape`` (h, w) sizes the RLE masks (default: the plant's full frame).
        ``mm_per_px`` turns defect areas into mm^2. ``frame_key`` (default: the sha256) is what
        "the same frame" means; with a current record of the same key and model fingerprint this
        raises :class:`AlreadyInspectedError`, unless ``replace`` (--reinspect) supersedes it.
        ``supersedes`` (``oringscan reinspect``): the id of the record this one re-inspects; it is
        marked superseded in the same transaction and linked from the new one. If it is superseded
        already (another attempt got there first) nothing is written: :class:`AlreadyInspectedError`.
        """
        frame = self._frame_from_result(
            result,
            path,
            sha256,
            model_fingerprint,
            frame_shape,
            station,
            captured_at,
            inspected_at,
            mm_per_px,
        )
        frame.frame_key = frame_key or frame.sha256
        try:
            with self.write_session() as session:
                run = session.get(Run, run_id)
                if run is None:
                    raise StoreError(f"run {run_id}: not in the database {safe_url(self.url)}")
                frame.run_id = run.id
                if frame.model_fingerprint is None:
                    frame.model_fingerprint = run.model_fingerprint
                if frame.oring_type is None:
                    frame.oring_type = run.oring_type
                if supersedes is not None:
                    self._supersede(session, frame, supersedes)
                if replace and frame.frame_key is not None:
                    session.execute(
                        update(Frame)
                        .where(*self._current(frame.frame_key, frame.model_fingerprint))
                        .values(superseded_at=now_utc())
                    )
                run.heartbeat_at = now_utc()
                session.add(frame)
                session.flush()
                return frame.id
        except IntegrityError as exc:  # rolled back as a whole; a lost race is "already inspected"
            existing = self.find_inspected(frame.frame_key, frame.model_fingerprint)
            if existing is not None:
                raise AlreadyInspectedError(
                    f"{frame.path}: already inspected with these models (frame {existing})", existing
                ) from None
            raise StoreError(
                f"{frame.path}: not recorded in {safe_url(self.url)}: {_first_line(exc)}"
            ) from exc
        except SQLAlchemyError as exc:  # rolled back as a whole: nothing of this frame was written
            raise StoreError(
                f"{frame.path}: not recorded in {safe_url(self.url)}: {_first_line(exc)}"
            ) from exc

    @staticmethod
    def _supersede(session: Session, frame: Frame, old_id: int) -> None:
        """Mark record ``old_id`` superseded and link ``frame`` to it; refuse a second successor."""
        marked = session.execute(
            update(Frame)
            .where(Frame.id == old_id, Frame.superseded_at.is_(None))
            .values(superseded_at=now_utc())
        )
        if marked.rowcount != 1:
            successor = session.scalar(
                select(Frame.id).where(Frame.supersedes_id == old_id).order_by(Frame.id.desc()).limit(1)
            )
            raise AlreadyInspectedError(
                f"{frame.path}: record {old_id} is already superseded"
                + (f" (by frame {successor})" if successor is not None else ""),
                successor,
            )
        frame.supersedes_id = old_id

    @staticmethod
    def _current(key: str, model_fingerprint: str | None) -> list[Any]:
        return [
            Frame.frame_key == key,
            Frame.superseded_at.is_(None),
            Frame.model_fingerprint.is_(None)
            if model_fingerprint is None
            else Frame.model_fingerprint == model_fingerprint,
        ]

    def _frame_from_result(
        self,
        result: InspectionResult,
        path: Path | str | None,
        sha256: str | None,
        model_fingerprint: str | None,
        frame_shape: tuple[int, int] | None,
        station: str | None,
        captured_at: datetime | None,
        inspected_at: datetime | None,
        mm_per_px: float | None,
    ) -> Frame:
        verdict = str(result.verdict)
        if verdict not in VERDICTS:
            raise StoreError(
                f"{result.image}: unknown verdict {verdict!r} (expected one of {', '.join(VERDICTS)})"
            )
        height, width = frame_shape or DEFAULT_FRAME_SHAPE
        timings = _jsonable(dict(result.timings_ms))
        total_ms = timings.get("total")
        if total_ms is None and timings:
            total_ms = sum(v for v in timings.values() if isinstance(v, int | float))
        screening = result.screening
        frame = Frame(
            path=str(path if path is not None else result.image),
            sha256=sha256 or result.sha256,
            oring_type=result.oring_type,
            station=station,
            captured_at=utc(captured_at),
            inspected_at=utc(inspected_at) or now_utc(),
            verdict=verdict,
            reasons=_jsonable(list(result.reasons)),
            screen_score=None if screening is None else _clean_float(screening.score),
            screen_threshold=None if screening is None else _clean_float(screening.threshold),
            screen_flagged=None if screening is None else bool(screening.flagged),
            screen_marginal=None if screening is None else bool(screening.marginal),
            rework_verdict=None if result.rework is None else str(result.rework.verdict),
            n_defects=len(result.defects),
            max_defect_score=max((_clean_float(d.score) or 0.0 for d in result.defects), default=None),
            timings=timings,
            total_ms=_clean_float(total_ms),
            error=result.error,
            overlay_path=None if result.overlay_path is None else str(result.overlay_path),
            model_fingerprint=model_fingerprint,
            frame_height=height if frame_shape else None,
            frame_width=width if frame_shape else None,
        )
        if screening is not None:
            frame.tiles = [
                Tile(
                    x=t.box.x,
                    y=t.box.y,
                    w=t.box.w,
                    h=t.box.h,
                    score=_clean_float(t.score) or 0.0,
                    flagged=bool(t.flagged),
                )
                for t in screening.tiles
            ]
        frame.defects = [self._defect(inst, height, width, mm_per_px) for inst in result.defects]
        if result.rework is not None:
            frame.measurements = [
                Measurement(
                    metric=c.name,
                    value=_clean_float(c.value),
                    lower=_clean_float(c.lower),
                    upper=_clean_float(c.upper),
                    fired=bool(c.fired),
                    verdict=c.verdict,
                    message=c.message or None,
                    unit=c.unit,
                )
                for c in result.rework.checks
            ]
        return frame

    @staticmethod
    def _defect(inst: Any, height: int, width: int, mm_per_px: float | None) -> Defect:
        x, y, w, h = inst.bbox
        # A mask reaching past the given frame (e.g. no frame_shape for an odd-sized frame) still
        # gets a complete RLE: grow the canvas rather than clip the defect.
        ox, oy = inst.offset
        mh, mw = inst.mask.shape
        height, width = max(height, oy + mh), max(width, ox + mw)
        area = inst.area
        return Defect(
            label=str(inst.label),
            score=_clean_float(inst.score) or 0.0,
            x=int(x),
            y=int(y),
            w=int(w),
            h=int(h),
            area_px=int(area),
            area_mm2=None if mm_per_px is None else float(area) * float(mm_per_px) ** 2,
            mask_rle=mask_rle(inst.mask, inst.offset, height, width) if area else None,
            polygon=_jsonable(inst.polygons()) if area else [],
        )

    def find_inspected(self, sha256: str | None, model_fingerprint: str | None) -> int | None:
        """Id of the current frame record with this content (or frame key) and model fingerprint.

        A rerun skips such frames (unless --reinspect): models unchanged, result unchanged.
        """
        if not sha256:
            return None
        stmt = select(Frame.id).where(*self._current(sha256, model_fingerprint))
        with self.read_session() as session:
            return session.scalar(stmt.order_by(Frame.id.desc()).limit(1))

    def heartbeat(self, run_id: int) -> None:
        """The run's process is alive: refresh its heartbeat (writers call this while they wait)."""
        try:
            with self.write_session() as session:
                session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=now_utc()))
        except SQLAlchemyError as exc:
            raise StoreError(
                f"run {run_id}: heartbeat not written to {safe_url(self.url)}: {_first_line(exc)}"
            ) from None

    def mark_dead_runs(self, *, now: datetime | None = None, stale: timedelta = STALE_RUN) -> list[int]:
        """Close as ``interrupted`` every ``running`` run whose process is gone; returns their ids.

        Same host: the recorded pid no longer exists. Any host: no heartbeat (or start, or frame)
        for ``stale``. Counts are filled from the frame records as ``finish_run`` does.
        """
        now = utc(now) or now_utc()
        host = socket.gethostname()
        with self.read_session() as session:
            running = session.execute(
                select(Run.id, Run.host, Run.pid, Run.heartbeat_at, Run.started_at).where(
                    Run.status == "running"
                )
            ).all()
        dead = []
        for run_id, run_host, pid, beat, started in running:
            if run_host == host and pid is not None:
                if not process_alive(pid):
                    dead.append(run_id)
                continue
            last = max(t for t in (utc(beat), utc(started)) if t is not None)
            if now - last > stale:
                dead.append(run_id)
        for run_id in dead:
            with self.write_session() as session:
                run = session.get(Run, run_id)
                if run is None or run.status != "running":
                    continue  # closed meanwhile by its own process or another reader
                self._close(session, run, "interrupted", None, utc(run.heartbeat_at) or now)
            log.warning("run %s: its process is gone; marked interrupted", run_id)
        return dead

    def finish_run(
        self,
        run_id: int,
        status: str = "done",
        *,
        n_skipped: int | None = None,
        finished_at: datetime | None = None,
    ) -> RunRow:
        """Close a run: end time, status, and its verdict counts taken from the frame records."""
        if status not in RUN_STATUSES:
            raise StoreError(
                f"run {run_id}: unknown status {status!r} (expected one of {', '.join(RUN_STATUSES)})"
            )
        with self.write_session() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise StoreError(f"run {run_id}: not in the database {safe_url(self.url)}")
            self._close(session, run, status, n_skipped, utc(finished_at) or now_utc())
            finished = queries.get_run(session, run_id)
            assert finished is not None
            return finished

    @staticmethod
    def _close(session: Session, run: Run, status: str, n_skipped: int | None, finished_at: datetime) -> None:
        counts = dict(
            session.execute(
                select(Frame.verdict, func.count()).where(Frame.run_id == run.id).group_by(Frame.verdict)
            ).all()
        )
        run.finished_at = finished_at
        run.status = status
        run.n_frames = sum(counts.values())
        for verdict in VERDICTS:
            setattr(run, f"n_{verdict}", counts.get(verdict, 0))
        if n_skipped is not None:
            run.n_skipped = int(n_skipped)
        session.flush()

    def add_review(
        self,
        frame_id: int,
        operator: str,
        decision: str,
        comment: str | None = None,
        *,
        created_at: datetime | None = None,
        user_id: int | None = None,
        shapes: Sequence[ShapeMark] | None = None,
        classes: Sequence[str] | None = None,
    ) -> int:
        """Append an operator's decision (good / defect / rework) about a frame; returns the review id.

        Earlier reviews stay as they were: the newest one is the frame's current decision.
        ``user_id``: the logged-in user (the dashboard passes it; ``operator`` is then their name).
        ``shapes``: what a ``defect`` decision marks (confirmed machine defects, the operator's boxes
        and polygons), written in the same transaction; ``classes``: the labels allowed (the
        config's), None for any. A box outside the frame, an unknown class or a defect of another
        frame is one :class:`ReviewInputError` line and nothing is written.
        """
        from oringscan.review.shapes import ReviewInputError, check_shapes

        decision = (decision or "").strip().lower()
        if decision not in REVIEW_DECISIONS:
            raise StoreError(
                f"frame {frame_id}: decision must be one of {', '.join(REVIEW_DECISIONS)} (got {decision!r})"
            )
        operator = (operator or "").strip()
        if not operator:
            raise StoreError(f"frame {frame_id}: a review needs the operator's name")
        comment = comment.strip() if comment else None
        with self.write_session() as session:
            frame = session.get(Frame, frame_id)
            if frame is None:
                raise StoreError(f"frame {frame_id}: not in the database {safe_url(self.url)}")
            height, width = (
                (frame.frame_height, frame.frame_width)
                if frame.frame_height and frame.frame_width
                else DEFAULT_FRAME_SHAPE
            )
            checked = check_shapes(shapes or [], decision, width, height, classes, frame_id)
            own = {d.id: d for d in session.scalars(select(Defect).where(Defect.frame_id == frame_id))}
            for shape in checked:
                if shape.defect_id is not None and shape.defect_id not in own:
                    raise ReviewInputError(
                        f"frame {frame_id}: defect {shape.defect_id} is not one the machine found on this "
                        f"frame (its defects: {', '.join(map(str, own)) or 'none'})"
                    )
            review = Review(
                frame_id=frame_id,
                operator=operator,
                decision=decision,
                comment=comment or None,
                created_at=utc(created_at) or now_utc(),
                user_id=user_id,
            )
            session.add(review)
            session.flush()
            for shape in checked:
                if shape.defect_id is not None:
                    d = own[shape.defect_id]
                    x, y, w, h = d.x, d.y, d.w, d.h
                else:
                    x, y, w, h = shape.bounds()
                session.add(
                    ReviewShape(
                        review_id=review.id,
                        source=shape.source,
                        kind=shape.kind,
                        label=shape.label,
                        defect_id=shape.defect_id,
                        x=int(x),
                        y=int(y),
                        w=int(w),
                        h=int(h),
                        points=[[float(px), float(py)] for px, py in shape.polygon]
                        if shape.polygon
                        else None,
                    )
                )
            session.flush()
            return review.id

    def reference_candidates(self, oring_type: str | None, limit: int = 20) -> list[FrameRow]:
        """Recent good frames of a type (newest first), for the dashboard's side-by-side crops."""
        with self.read_session() as s:
            return queries.reference_candidates(s, oring_type, limit)

    def reviewed_frame_ids(
        self, since: datetime | None = None, oring_type: str | None = None
    ) -> list[tuple[int, int]]:
        """(frame id, newest review id) of every reviewed frame: what ``export reviews`` writes."""
        with self.read_session() as s:
            return queries.reviewed_frame_ids(s, since, oring_type)

    def record_promotion(
        self,
        oring_type: str,
        action: str,
        version: str,
        previous: str | None,
        operator: str | None = None,
        reason: str | None = None,
        *,
        created_at: datetime | None = None,
    ) -> int:
        """Append one promotion or rollback of a type's models (``oringscan models promote``);
        returns its id. Append-only: the database refuses to change or delete it."""
        from oringscan.db.models import MODEL_CHANGE_ACTIONS, ModelPromotion

        if action not in MODEL_CHANGE_ACTIONS:
            raise StoreError(f"{oring_type}: action must be one of {', '.join(MODEL_CHANGE_ACTIONS)}")
        with self.write_session() as session:
            row = ModelPromotion(
                oring_type=oring_type,
                action=action,
                version=version,
                previous=previous,
                operator=(operator or "").strip() or None,
                reason=(reason or "").strip() or None,
                created_at=utc(created_at) or now_utc(),
                host=socket.gethostname(),
            )
            session.add(row)
            session.flush()
            return row.id

    def promotions(
        self, oring_type: str | None = None, limit: int | None = 100
    ) -> list[queries.PromotionRow]:
        """Promotions and rollbacks of the models, newest first."""
        with self.read_session() as s:
            return queries.list_promotions(s, oring_type, limit)

    # -- reading (thin wrappers over oringscan.db.queries, each in one snapshot) ----------------

    def runs(
        self,
        *,
        oring_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[RunRow]:
        """Runs, newest first; runs whose process died are closed ``interrupted`` first."""
        try:
            self.mark_dead_runs()
        except (SQLAlchemyError, StoreError) as exc:  # read-only user: show them as recorded
            log.info("runs not checked for liveness (%s)", exc)
        with self.read_session() as s:
            return queries.list_runs(
                s, oring_type=oring_type, since=since, until=until, status=status, limit=limit, offset=offset
            )

    def run(self, run_id: int) -> RunRow | None:
        with self.read_session() as s:
            return queries.get_run(s, run_id)

    def run_config(self, run_id: int) -> dict[str, Any] | None:
        """The effective config a run was made with (stored at its start; None if unknown).

        The dashboard redraws ring geometry with the run's own [roi]/[rework] settings, so the
        drawing agrees with the measurements stored for its frames.
        """
        with self.read_session() as s:
            run = s.get(Run, run_id)
            return None if run is None or not isinstance(run.config, dict) else run.config

    def frames(
        self,
        filters: FrameFilter | None = None,
        *,
        order: str = "newest",
        limit: int | None = 100,
        offset: int = 0,
        **filter_kwargs: Any,
    ) -> Page[FrameRow]:
        """Frame records matching ``filters`` (or the same fields as keywords), one page and the total."""
        with self.read_session() as s:
            return queries.list_frames(
                s, _filters(filters, filter_kwargs), order=order, limit=limit, offset=offset
            )

    def review_queue(
        self,
        filters: FrameFilter | None = None,
        *,
        order: str = "newest",
        limit: int = 25,
        offset: int = 0,
        **filter_kwargs: Any,
    ) -> Page[FrameRow]:
        """Frames a person must look at (defect / suspect / rework) and nobody reviewed yet."""
        with self.read_session() as s:
            return queries.review_queue(
                s, _filters(filters, filter_kwargs), order=order, limit=limit, offset=offset
            )

    def frame_detail(self, frame_id: int) -> FrameDetail | None:
        with self.read_session() as s:
            return queries.frame_detail(s, frame_id)

    def reviews(
        self, frame_id: int | None = None, *, limit: int | None = 100, offset: int = 0
    ) -> list[ReviewRow]:
        with self.read_session() as s:
            return queries.list_reviews(s, frame_id, limit=limit, offset=offset)

    def defects(
        self,
        filters: FrameFilter | None = None,
        *,
        label: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        **filter_kwargs: Any,
    ) -> Page[DefectRow]:
        with self.read_session() as s:
            return queries.list_defects(
                s, _filters(filters, filter_kwargs), label=label, limit=limit, offset=offset
            )

    def verdict_counts(self, filters: FrameFilter | None = None, **filter_kwargs: Any) -> dict[str, int]:
        with self.read_session() as s:
            return queries.verdict_counts(s, _filters(filters, filter_kwargs))

    def yield_by_day(
        self, filters: FrameFilter | None = None, **filter_kwargs: Any
    ) -> list[queries.YieldRow]:
        with self.read_session() as s:
            return queries.yield_by_day(s, _filters(filters, filter_kwargs))

    def defects_by_class(
        self, filters: FrameFilter | None = None, *, by_day: bool = True, **filter_kwargs: Any
    ) -> list[queries.DefectClassRow]:
        with self.read_session() as s:
            return queries.defects_by_class(s, _filters(filters, filter_kwargs), by_day=by_day)

    def review_overrides(
        self, filters: FrameFilter | None = None, **filter_kwargs: Any
    ) -> list[queries.OverrideRow]:
        with self.read_session() as s:
            return queries.review_overrides(s, _filters(filters, filter_kwargs))

    def score_histogram(
        self,
        filters: FrameFilter | None = None,
        *,
        bins: int = 30,
        normalized: bool = True,
        **filter_kwargs: Any,
    ) -> ScoreHistogram:
        with self.read_session() as s:
            return queries.score_histogram(
                s, _filters(filters, filter_kwargs), bins=bins, normalized=normalized
            )

    def run_timings(self, run_id: int) -> dict[str, dict[str, float]]:
        with self.read_session() as s:
            return queries.run_timings(s, run_id)

    def stats(self, filters: FrameFilter | None = None, **filter_kwargs: Any) -> queries.Stats:
        """Everything ``oringscan db stats`` shows, in one snapshot."""
        with self.read_session() as s:
            return queries.stats(s, _filters(filters, filter_kwargs))


def config_fingerprint_of(config_json: Any) -> str | None:
    return None if config_json is None else config_fingerprint(config_json)


def _filters(filters: FrameFilter | None, kwargs: dict[str, Any]) -> FrameFilter:
    if filters is not None and kwargs:
        raise TypeError("pass either a FrameFilter or filter keywords, not both")
    return filters if filters is not None else FrameFilter(**kwargs)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _configure_sqlite(engine: Engine) -> None:
    """WAL, busy timeout and foreign keys on every connection; our own BEGIN (IMMEDIATE for writers).

    pysqlite's own transaction handling is switched off (it would BEGIN lazily and never for
    SELECTs), following SQLAlchemy's documented recipe for serializable SQLite transactions.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get("oringscan_write") else "BEGIN"
        )


def _configure_postgresql(engine: Engine) -> None:
    """UTC sessions (day boundaries in the statistics as on SQLite), UTF-8 text."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = getattr(dbapi_connection, "autocommit", None)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET TIME ZONE 'UTC'")
            # Text always comes back as str, even from a SQL_ASCII database.
            cursor.execute("SET client_encoding TO 'UTF8'")
        finally:
            cursor.close()
        if autocommit is False:
            dbapi_connection.commit()


__all__ = ["DEFAULT_FRAME_SHAPE", "AlreadyInspectedError", "InspectionStore", "StoreError", "process_alive"]
