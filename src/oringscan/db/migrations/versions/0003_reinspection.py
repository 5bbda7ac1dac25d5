"""Archive re-inspection: a new record names the one it supersedes; runs say how they ran.

- frames.supersedes_id: the record this one re-inspects (``oringscan reinspect``); the old record
  stays (marked superseded when the models are the same), so ``db diff`` can compare the two.
- runs.engine (``in-process`` / ``ray``) and runs.selection (for a re-inspection: what was selected,
  as JSON; NULL for a plain ``inspect``).

Plain ADD COLUMN / DROP COLUMN on both databases. supersedes_id is deliberately not a foreign key:
SQLite adds one only by copying the table, and dropping the old ``frames`` inside the migration's
transaction (foreign keys on) would cascade-delete every tile, defect and measurement. Readers join
it with an outer join, so a superseded record deleted with its run just leaves no link.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("engine", sa.String(length=16), nullable=True))
    op.add_column("runs", sa.Column("selection", sa.JSON(), nullable=True))
    op.add_column("frames", sa.Column("supersedes_id", sa.Integer(), nullable=True))
    op.create_index("ix_frames_supersedes_id", "frames", ["supersedes_id"])


def downgrade() -> None:
    op.drop_index("ix_frames_supersedes_id", table_name="frames")
    op.drop_column("frames", "supersedes_id")  # SQLite >= 3.35 drops a plain column in place
    op.drop_column("runs", "selection")
    op.drop_column("runs", "engine")
