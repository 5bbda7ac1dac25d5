"""Model promotions: every ``oringscan models promote`` / ``rollback`` recorded in the database.

- model_promotions: one row per switch of the models that decide a type's parts (type, action,
  version, the version it replaced, operator, reason, time, host). Append-only like ``reviews``
  (the same kind of triggers), so who put which models in charge, and when, is never lost.

A new table only: no existing row or table is touched, so the upgrade is instant on any size.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: a migration must not change when models.py does.
APPEND_ONLY = {
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
DROP_APPEND_ONLY = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS model_promotions_no_update",
        "DROP TRIGGER IF EXISTS model_promotions_no_delete",
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS model_promotions_append_only ON model_promotions",
        "DROP FUNCTION IF EXISTS oringscan_model_promotions_append_only()",
    ],
}


def upgrade() -> None:
    op.create_table(
        "model_promotions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("oring_type", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("previous", sa.String(length=32), nullable=True),
        sa.Column("operator", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.CheckConstraint("action IN ('promote', 'rollback')", name=op.f("ck_model_promotions_action")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_promotions")),
    )
    op.create_index(
        "ix_model_promotions_oring_type_created_at", "model_promotions", ["oring_type", "created_at"]
    )
    for statement in APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_APPEND_ONLY.get(op.get_bind().dialect.name, []):
        op.execute(statement)
    op.drop_index("ix_model_promotions_oring_type_created_at", table_name="model_promotions")
    op.drop_table("model_promotions")
