"""The pack registry: published versions of each tenant's packs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pack_versions",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=True),
        sa.Column("signed_by", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("published_at", db.models.UTCDateTime(), nullable=False),
        sa.Column("published_by", sa.String(length=255), nullable=True),
        sa.Column("status_changed_at", db.models.UTCDateTime(), nullable=True),
        sa.Column("status_changed_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "name", "version", name=op.f("pk_pack_versions")),
    )


def downgrade() -> None:
    op.drop_table("pack_versions")
