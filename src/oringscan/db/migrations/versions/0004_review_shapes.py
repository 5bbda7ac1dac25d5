"""Review shapes: what a review marks, so reviewed frames become labelled training data.

- review_shapes: one row per defect a review marks, either a machine defect the operator confirmed
  (``defect_id``; its mask stays in ``defects``, its class may be corrected) or the operator's own
  box / polygon with a class. Append-only like ``reviews`` (the same kind of triggers).

A new table only: no existing row or table is touched, so the upgrade is instant on any size.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: a migration must not change when models.py does.
APPEND_ONLY = {
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
DROP_APPEND_ONLY = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS review_shapes_no_update",
        "DROP TRIGGER IF EXISTS review_shapes_no_delete",
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS review_shapes_append_only ON review_shapes",
        "DROP FUNCTION IF EXISTS oringscan_review_shapes_append_only()",
    ],
}


def upgrade() -> None:
    op.create_table(
        "review_shapes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("defect_id", sa.Integer(), nullable=True),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("w", sa.Integer(), nullable=False),
        sa.Column("h", sa.Integer(), nullable=False),
        sa.Column("points", sa.JSON(), nullable=True),
        sa.CheckConstraint("source IN ('machine', 'operator')", name=op.f("ck_review_shapes_source")),
        sa.CheckConstraint("kind IN ('mask', 'box', 'polygon')", name=op.f("ck_review_shapes_kind")),
        sa.ForeignKeyConstraint(
            ["review_id"],
            ["reviews.id"],
            name=op.f("fk_review_shapes_review_id_reviews"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["defect_id"],
            ["defects.id"],
            name=op.f("fk_review_shapes_defect_id_defects"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_shapes")),
    )
    op.create_index("ix_review_shapes_review_id", "review_shapes", ["review_id"])
    for statement in APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)
    op.drop_index("ix_review_shapes_review_id", table_name="review_shapes")
    op.drop_table("review_shapes")
