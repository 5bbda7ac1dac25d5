"""The inspection record: runs, frames and what each stage found, plus the operators' reviews.

One frame record is written in one transaction with its tiles, defects and measurements, so a
reader (the dashboard) never sees half a frame. Reviews are append-only (the store has no update
path and the database refuses UPDATE/DELETE on them), so a decision's history is never lost.

Timestamps are stored in UTC. Indexes follow the dashboard's queries: the review queue (verdict,
type, time, not yet reviewed), per-run listings, the rerun check (sha256 + model fingerprint).

"One record per frame and models" is a rule of the schema, not only of the application: a unique
index on (frame_key, model_fingerprint) over the *current* records (``superseded_at IS NULL``), so
two processes inspecting the same frames cannot both record them; ``--reinspect`` marks the old
record superseded in the same transaction that writes the new one. Runs carry host, pid and a
heartbeat so one whose process died can be shown ``interrupted``. Users (operators, engineers)
log in to the dashboard; their password hashes live in ``users``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from oringscan.db.vocab import REVIEW_DECISIONS, VERDICTS

# Stable constraint names: Alembic (and SQLite batch migrations) need names to alter constraints.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# VERDICTS and REVIEW_DECISIONS live in vocab.py (no SQLAlchemy) so `oringscan db --help` starts fast.
RUN_STATUSES = ("running", "done", "interrupted", "failed")
# Who may do what on the dashboard: operators review, engineers also change settings and users.
USER_ROLES = ("operator", "engineer")
# Verdicts a person must look at: the review queue.
REVIEW_VERDICTS = ("defect", "suspect", "rework")


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Run(Base):
    """One batch (``oringscan inspect``), watch session or demo: what ran, where, with which models."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    host: Mapped[str | None] = mapped_column(String(255))
    oring_type: Mapped[str | None] = mapped_column(String(64))
    command: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="running")
    config_fingerprint: Mapped[str | None] = mapped_column(String(64))
    model_fingerprint: Mapped[str | None] = mapped_column(String(64))
    model_versions: Mapped[dict[str, Any] | None]
    config: Mapped[dict[str, Any] | None]
    # Filled by finish_run from the frame records (so they are right even after a crash + rerun).
    n_frames: Mapped[int] = mapped_column(Integer, default=0)
    n_good: Mapped[int] = mapped_column(Integer, default=0)
    n_defect: Mapped[int] = mapped_column(Integer, default=0)
    n_rework: Mapped[int] = mapped_column(Integer, default=0)
    n_suspect: Mapped[int] = mapped_column(Integer, default=0)
    n_error: Mapped[int] = mapped_column(Integer, default=0)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    # Liveness: the writing process and when it last showed a sign of life (see InspectionStore).
    pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None]
    # How it ran (``in-process`` / ``ray``) and, for ``oringscan reinspect``, what it selected (0003).
    engine: Mapped[str | None] = mapped_column(String(16))
    selection: Mapped[dict[str, Any] | None]

    frames: Mapped[list[Frame]] = relationship(back_populates="run", passive_deletes=True)

    __table_args__ = (
        CheckConstraint(f"status IN ({_in(RUN_STATUSES)})", name="status"),
        Index("ix_runs_started_at", "started_at"),
        Index("ix_runs_oring_type_started_at", "oring_type", "started_at"),
    )


class Frame(Base):
    """One inspected camera frame and its verdict."""

    __tablename__ = "frames"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    oring_type: Mapped[str | None] = mapped_column(String(64))
    station: Mapped[str | None] = mapped_column(String(64))
    captured_at: Mapped[datetime | None]
    inspected_at: Mapped[datetime]
    verdict: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    screen_score: Mapped[float | None] = mapped_column(Float)
    screen_threshold: Mapped[float | None] = mapped_column(Float)
    screen_flagged: Mapped[bool | None] = mapped_column(Boolean)
    screen_marginal: Mapped[bool | None] = mapped_column(Boolean)
    rework_verdict: Mapped[str | None] = mapped_column(String(16))
    n_defects: Mapped[int] = mapped_column(Integer, default=0)
    max_defect_score: Mapped[float | None] = mapped_column(Float)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    total_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    overlay_path: Mapped[str | None] = mapped_column(Text)
    model_fingerprint: Mapped[str | None] = mapped_column(String(64))
    frame_height: Mapped[int | None] = mapped_column(Integer)
    frame_width: Mapped[int | None] = mapped_column(Integer)
    # The rerun key: the content sha256, or for a file without readable content a hash of its path.
    frame_key: Mapped[str | None] = mapped_column(String(64))
    # Set when --reinspect recorded the frame again: only the current record (NULL here) is unique.
    superseded_at: Mapped[datetime | None]
    # The record this one re-inspects (``oringscan reinspect``, migration 0003); None for a first look.
    # Not a foreign key on purpose (see 0003: SQLite could add one only with a table copy).
    supersedes_id: Mapped[int | None] = mapped_column(Integer)

    run: Mapped[Run] = relationship(back_populates="frames")
    tiles: Mapped[list[Tile]] = relationship(
        back_populates="frame", cascade="all, delete-orphan", passive_deletes=True, order_by="Tile.id"
    )
    defects: Mapped[list[Defect]] = relationship(
        back_populates="frame", cascade="all, delete-orphan", passive_deletes=True, order_by="Defect.id"
    )
    measurements: Mapped[list[Measurement]] = relationship(
        back_populates="frame", cascade="all, delete-orphan", passive_deletes=True, order_by="Measurement.id"
    )
    reviews: Mapped[list[Review]] = relationship(
        back_populates="frame", order_by="Review.id", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint(f"verdict IN ({_in(VERDICTS)})", name="verdict"),
        Index("ix_frames_run_id", "run_id"),
        Index("ix_frames_sha256_model_fingerprint", "sha256", "model_fingerprint"),
        Index("ix_frames_inspected_at", "inspected_at"),
        Index("ix_frames_verdict_inspected_at", "verdict", "inspected_at"),
        Index("ix_frames_oring_type_inspected_at", "oring_type", "inspected_at"),
        Index("ix_frames_supersedes_id", "supersedes_id"),
        Index(
            "uq_frames_current_frame_key",
            "frame_key",
            "model_fingerprint",
            unique=True,
            sqlite_where=text("superseded_at IS NULL"),
            postgresql_where=text("superseded_at IS NULL"),
        ),
    )


class Tile(Base):
    """One screened tile of a frame: its box, anomaly score, and whether it was flagged."""

    __tablename__ = "tiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"))
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)

    frame: Mapped[Frame] = relationship(back_populates="tiles")

    __table_args__ = (Index("ix_tiles_frame_id", "frame_id"),)


class Defect(Base):
    """One segmented defect: class, score, box, area, mask (COCO RLE, frame coordinates) and outline."""

    __tablename__ = "defects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    area_px: Mapped[int] = mapped_column(Integer)
    area_mm2: Mapped[float | None] = mapped_column(Float)
    mask_rle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    polygon: Mapped[list[Any] | None] = mapped_column(JSON)

    frame: Mapped[Frame] = relationship(back_populates="defects")

    __table_args__ = (
        Index("ix_defects_frame_id", "frame_id"),
        Index("ix_defects_label", "label"),
    )


class Measurement(Base):
    """One rework-rule check: the measured value against its limits, and whether it fired."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    lower: Mapped[float | None] = mapped_column(Float)
    upper: Mapped[float | None] = mapped_column(Float)
    fired: Mapped[bool] = mapped_column(Boolean, default=False)
    verdict: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str | None] = mapped_column(String(16))

    frame: Mapped[Frame] = relationship(back_populates="measurements")

    __table_args__ = (
        Index("ix_measurements_frame_id", "frame_id"),
        Index("ix_measurements_metric", "metric"),
    )


class Review(Base):
    """An operator's decision about a frame. Append-only: a new decision is a new row."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="RESTRICT"))
    operator: Mapped[str] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    # The logged-in user who decided (None: recorded with login switched off, or from the CLI).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))

    frame: Mapped[Frame] = relationship(back_populates="reviews")

    __table_args__ = (
        CheckConstraint(f"decision IN ({_in(REVIEW_DECISIONS)})", name="decision"),
        Index("ix_reviews_frame_id_created_at", "frame_id", "created_at"),
        Index("ix_reviews_created_at", "created_at"),
    )


# What a review's shape comes from: a machine defect the operator confirmed (its mask kept, its class
# maybe corrected) or one the operator drew (a box or a polygon).
SHAPE_SOURCES = ("machine", "operator")
SHAPE_KINDS = ("mask", "box", "polygon")


class ReviewShape(Base):
    """One defect a review marks: a confirmed machine defect (``defect_id``) or the operator's box /
    polygon, with its class. Append-only like the review it belongs to (migration 0004)."""

    __tablename__ = "review_shapes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("reviews.id", ondelete="RESTRICT"))
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(64))
    # The machine defect confirmed (source "machine"); its mask stays in ``defects``.
    defect_id: Mapped[int | None] = mapped_column(ForeignKey("defects.id", ondelete="RESTRICT"))
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    # Polygon vertices [[x, y], ...] in frame pixels (kind "polygon"); None for a box or a mask.
    points: Mapped[list[Any] | None] = mapped_column(JSON)

    __table_args__ = (
        CheckConstraint(f"source IN ({_in(SHAPE_SOURCES)})", name="source"),
        CheckConstraint(f"kind IN ({_in(SHAPE_KINDS)})", name="kind"),
        Index("ix_review_shapes_review_id", "review_id"),
    )


class User(Base):
    """Someone who logs in to the dashboard: name, role and an argon2 password hash (never the password)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (CheckConstraint(f"role IN ({_in(USER_ROLES)})", name="role"),)


# What switched the models that decide a type's parts (``oringscan models promote`` / ``rollback``).
MODEL_CHANGE_ACTIONS = ("promote", "rollback")


class ModelPromotion(Base):
    """One promotion or rollback of a type's model version: which version, which one it replaced,
    who and why. Append-only (migration 0005), beside ``versions/history.jsonl`` on the file side."""

    __tablename__ = "model_promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    oring_type: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(32))
    # The version in use before (None: the newest models decided, nothing was promoted yet).
    previous: Mapped[str | None] = mapped_column(String(32))
    operator: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    host: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        CheckConstraint(f"action IN ({_in(MODEL_CHANGE_ACTIONS)})", name="action"),
        Index("ix_model_promotions_oring_type_created_at", "oring_type", "created_at"),
    )


# Database-side guard for "reviews are never overwritten": UPDATE and DELETE are refused.
# Used by both create_all (events below) and the initial migration.
APPEND_ONLY_DDL: dict[str, list[str]] = {
    "sqlite": [
        "CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews "
        "BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END",
        "CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews "
        "BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION oringscan_reviews_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'reviews are append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER reviews_append_only BEFORE UPDATE OR DELETE ON reviews "
        "FOR EACH ROW EXECUTE FUNCTION oringscan_reviews_append_only()",
    ],
}
DROP_APPEND_ONLY_DDL: dict[str, list[str]] = {
    "sqlite": ["DROP TRIGGER IF EXISTS reviews_no_update", "DROP TRIGGER IF EXISTS reviews_no_delete"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS reviews_append_only ON reviews",
        "DROP FUNCTION IF EXISTS oringscan_reviews_append_only()",
    ],
}


def _install_append_only_guard() -> None:
    from sqlalchemy import DDL, event

    for dialect, statements in APPEND_ONLY_DDL.items():
        for statement in statements:
            event.listen(Review.__table__, "after_create", DDL(statement).execute_if(dialect=dialect))


# review_shapes are append-only too (migration 0004 installs the same triggers).
SHAPES_APPEND_ONLY_DDL: dict[str, list[str]] = {
    "sqlite": [
        "CREATE TRIGGER review_shapes_no_update BEFORE UPDATE ON review_shapes "
        "BEGIN SELECT RAISE(ABORT, 'review shapes are append-only'); END",
        "CREATE TRIGGER review_shapes_no_delete BEFORE DELETE ON review_shapes "
        "BEGIN SELECT RAISE(ABORT, 'review shapes are append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION oringscan_review_shapes_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'review shapes are append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER review_shapes_append_only BEFORE UPDATE OR DELETE ON review_shapes "
        "FOR EACH ROW EXECUTE FUNCTION oringscan_review_shapes_append_only()",
    ],
}


def _install_shapes_append_only_guard() -> None:
    from sqlalchemy import DDL, event

    for dialect, statements in SHAPES_APPEND_ONLY_DDL.items():
        for statement in statements:
            event.listen(ReviewShape.__table__, "after_create", DDL(statement).execute_if(dialect=dialect))


_install_append_only_guard()
_install_shapes_append_only_guard()


# model_promotions are append-only too (migration 0005 installs the same triggers).
PROMOTIONS_APPEND_ONLY_DDL: dict[str, list[str]] = {
    "sqlite": [
        "CREATE TRIGGER model_promotions_no_update BEFORE UPDATE ON model_promotions "
        "BEGIN SELECT RAISE(ABORT, 'model promotions are append-only'); END",
        "CREATE TRIGGER model_promotions_no_delete BEFORE DELETE ON model_promotions "
        "BEGIN SELECT RAISE(ABORT, 'model promotions are append-only'); END",
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION oringscan_model_promotions_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'model promotions are append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER model_promotions_append_only BEFORE UPDATE OR DELETE ON model_promotions "
        "FOR EACH ROW EXECUTE FUNCTION oringscan_model_promotions_append_only()",
    ],
}


def _install_promotions_append_only_guard() -> None:
    from sqlalchemy import DDL, event

    for dialect, statements in PROMOTIONS_APPEND_ONLY_DDL.items():
        for statement in statements:
            event.listen(ModelPromotion.__table__, "after_create", DDL(statement).execute_if(dialect=dialect))


_install_promotions_append_only_guard()
