"""One current record per frame and models, run liveness, dashboard users.

- frames.frame_key (content sha256, or a hash of the path for a file without readable content) and
  frames.superseded_at; a unique index on (frame_key, model_fingerprint) over current records.
  Existing duplicates (two processes on the same frames before this rule) are kept, all but the
  newest marked superseded, so no data is lost.
- runs.pid and runs.heartbeat_at: runs whose process died are shown ``interrupted``.
- users (name, role, argon2 hash) and reviews.user_id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT = sa.text("superseded_at IS NULL")
# As in 0001 (frozen here: a migration must not change when models.py does).
APPEND_ONLY_SQLITE = [
    "CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews "
    "BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END",
    "CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews "
    "BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END",
]


def _path_key(path: str) -> str:
    """As oringscan.pipeline.batch.frame_key for a frame without content."""
    return hashlib.sha256(b"path:" + os.fsencode(path)).hexdigest()


def upgrade() -> None:
    bind = op.get_bind()
    # Plain ADD COLUMN where it suffices (no table copy).
    op.add_column("runs", sa.Column("pid", sa.Integer(), nullable=True))
    op.add_column("runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("frames", sa.Column("frame_key", sa.String(length=64), nullable=True))
    op.add_column("frames", sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))

    frames = sa.table(
        "frames",
        sa.column("id", sa.Integer),
        sa.column("path", sa.Text),
        sa.column("sha256", sa.String),
        sa.column("frame_key", sa.String),
        sa.column("model_fingerprint", sa.String),
        sa.column("superseded_at", sa.DateTime(timezone=True)),
    )
    bind.execute(frames.update().where(frames.c.sha256.is_not(None)).values(frame_key=frames.c.sha256))
    rows = bind.execute(sa.select(frames.c.id, frames.c.path).where(frames.c.sha256.is_(None))).all()
    for frame_id, path in rows:
        bind.execute(frames.update().where(frames.c.id == frame_id).values(frame_key=_path_key(path or "")))
    # Duplicates recorded before the rule: the newest record stays current.
    newer = sa.alias(frames, "newer")
    has_newer = (
        sa.select(newer.c.id)
        .where(
            newer.c.frame_key == frames.c.frame_key,
            newer.c.model_fingerprint == frames.c.model_fingerprint,
            newer.c.id > frames.c.id,
        )
        .exists()
    )
    bind.execute(
        frames.update()
        .where(frames.c.superseded_at.is_(None), has_newer)
        .values(superseded_at=datetime.now(UTC))
    )
    op.create_index(
        "uq_frames_current_frame_key",
        "frames",
        ["frame_key", "model_fingerprint"],
        unique=True,
        sqlite_where=CURRENT,
        postgresql_where=CURRENT,
    )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.CheckConstraint("role IN ('operator', 'engineer')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    if bind.dialect.name == "sqlite":
        # A named foreign key needs SQLite's table copy, which drops the append-only triggers:
        # put them back in the same transaction.
        with op.batch_alter_table("reviews", recreate="always") as batch:
            batch.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
            batch.create_foreign_key(
                op.f("fk_reviews_user_id_users"), "users", ["user_id"], ["id"], ondelete="RESTRICT"
            )
        for statement in APPEND_ONLY_SQLITE:
            op.execute(statement)
    else:
        op.add_column("reviews", sa.Column("user_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            op.f("fk_reviews_user_id_users"), "reviews", "users", ["user_id"], ["id"], ondelete="RESTRICT"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # A column with a REFERENCES clause cannot be dropped in place: copy the table, then put the
        # append-only triggers (lost with the copy) back.
        with op.batch_alter_table("reviews", recreate="always") as batch:
            batch.drop_column("user_id")
        for statement in APPEND_ONLY_SQLITE:
            op.execute(statement)
    else:
        op.drop_constraint(op.f("fk_reviews_user_id_users"), "reviews", type_="foreignkey")
        op.drop_column("reviews", "user_id")
    op.drop_table("users")
    op.drop_index("uq_frames_current_frame_key", table_name="frames")
    op.drop_column("frames", "superseded_at")
    op.drop_column("frames", "frame_key")
    op.drop_column("runs", "heartbeat_at")
    op.drop_column("runs", "pid")
