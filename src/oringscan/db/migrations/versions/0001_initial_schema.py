"""Initial schema: runs, frames, tiles, defects, measurements, reviews (append-only).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Reviews are append-only: the database itself refuses UPDATE and DELETE on them.
APPEND_ONLY = {
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
DROP_APPEND_ONLY = {
    "sqlite": ["DROP TRIGGER IF EXISTS reviews_no_update", "DROP TRIGGER IF EXISTS reviews_no_delete"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS reviews_append_only ON reviews",
        "DROP FUNCTION IF EXISTS oringscan_reviews_append_only()",
    ],
}


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("oring_type", sa.String(length=64), nullable=True),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("model_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("model_versions", sa.JSON(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("n_frames", sa.Integer(), nullable=False),
        sa.Column("n_good", sa.Integer(), nullable=False),
        sa.Column("n_defect", sa.Integer(), nullable=False),
        sa.Column("n_rework", sa.Integer(), nullable=False),
        sa.Column("n_suspect", sa.Integer(), nullable=False),
        sa.Column("n_error", sa.Integer(), nullable=False),
        sa.Column("n_skipped", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'done', 'interrupted', 'failed')", name=op.f("ck_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_oring_type_started_at", "runs", ["oring_type", "started_at"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])

    op.create_table(
        "frames",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("oring_type", sa.String(length=64), nullable=True),
        sa.Column("station", sa.String(length=64), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inspected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("screen_score", sa.Float(), nullable=True),
        sa.Column("screen_threshold", sa.Float(), nullable=True),
        sa.Column("screen_flagged", sa.Boolean(), nullable=True),
        sa.Column("screen_marginal", sa.Boolean(), nullable=True),
        sa.Column("rework_verdict", sa.String(length=16), nullable=True),
        sa.Column("n_defects", sa.Integer(), nullable=False),
        sa.Column("max_defect_score", sa.Float(), nullable=True),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("total_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("overlay_path", sa.Text(), nullable=True),
        sa.Column("model_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("frame_height", sa.Integer(), nullable=True),
        sa.Column("frame_width", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "verdict IN ('good', 'defect', 'rework', 'suspect', 'error')", name=op.f("ck_frames_verdict")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_frames_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_frames")),
    )
    op.create_index("ix_frames_inspected_at", "frames", ["inspected_at"])
    op.create_index("ix_frames_oring_type_inspected_at", "frames", ["oring_type", "inspected_at"])
    op.create_index("ix_frames_run_id", "frames", ["run_id"])
    op.create_index("ix_frames_sha256_model_fingerprint", "frames", ["sha256", "model_fingerprint"])
    op.create_index("ix_frames_verdict_inspected_at", "frames", ["verdict", "inspected_at"])

    op.create_table(
        "defects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("w", sa.Integer(), nullable=False),
        sa.Column("h", sa.Integer(), nullable=False),
        sa.Column("area_px", sa.Integer(), nullable=False),
        sa.Column("area_mm2", sa.Float(), nullable=True),
        sa.Column("mask_rle", sa.JSON(), nullable=True),
        sa.Column("polygon", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_defects_frame_id_frames"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_defects")),
    )
    op.create_index("ix_defects_frame_id", "defects", ["frame_id"])
    op.create_index("ix_defects_label", "defects", ["label"])

    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("lower", sa.Float(), nullable=True),
        sa.Column("upper", sa.Float(), nullable=True),
        sa.Column("fired", sa.Boolean(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("unit", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_measurements_frame_id_frames"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurements")),
    )
    op.create_index("ix_measurements_frame_id", "measurements", ["frame_id"])
    op.create_index("ix_measurements_metric", "measurements", ["metric"])

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("decision IN ('good', 'defect', 'rework')", name=op.f("ck_reviews_decision")),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_reviews_frame_id_frames"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    op.create_index("ix_reviews_created_at", "reviews", ["created_at"])
    op.create_index("ix_reviews_frame_id_created_at", "reviews", ["frame_id", "created_at"])

    for statement in APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)

    op.create_table(
        "tiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("frame_id", sa.Integer(), nullable=False),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("w", sa.Integer(), nullable=False),
        sa.Column("h", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["frame_id"], ["frames.id"], name=op.f("fk_tiles_frame_id_frames"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tiles")),
    )
    op.create_index("ix_tiles_frame_id", "tiles", ["frame_id"])


def downgrade() -> None:
    op.drop_index("ix_tiles_frame_id", table_name="tiles")

    op.drop_table("tiles")
    op.drop_index("ix_reviews_frame_id_created_at", table_name="reviews")
    op.drop_index("ix_reviews_created_at", table_name="reviews")

    for statement in DROP_APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)
    op.drop_table("reviews")
    op.drop_index("ix_measurements_metric", table_name="measurements")
    op.drop_index("ix_measurements_frame_id", table_name="measurements")

    op.drop_table("measurements")
    op.drop_index("ix_defects_label", table_name="defects")
    op.drop_index("ix_defects_frame_id", table_name="defects")

    op.drop_table("defects")
    op.drop_index("ix_frames_verdict_inspected_at", table_name="frames")
    op.drop_index("ix_frames_sha256_model_fingerprint", table_name="frames")
    op.drop_index("ix_frames_run_id", table_name="frames")
    op.drop_index("ix_frames_oring_type_inspected_at", table_name="frames")
    op.drop_index("ix_frames_inspected_at", table_name="frames")

    op.drop_table("frames")
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.drop_index("ix_runs_oring_type_started_at", table_name="runs")

    op.drop_table("runs")
