"""device taps are append-only facts: refuse UPDATE and DELETE on PostgreSQL

Revision ID: 0005_device_taps_append_only
Revises: 0004_device_protocol_shapes
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from onecard.platform.db.immutability import postgres_trigger_sql

revision = "0005_device_taps_append_only"
down_revision = "0004_device_protocol_shapes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(postgres_trigger_sql("device_taps"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS device_taps_append_only ON device_taps")
