"""Redrives: which runs took over from which.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_redrives",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("redrive_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", db.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "run_id", "redrive_id", name=op.f("pk_run_redrives")),
    )


def downgrade() -> None:
    op.drop_table("run_redrives")
