"""devices: shared protocol shapes (string epochs, integer ms device times, optional storage total)

Revision ID: 0004_device_protocol_shapes
Revises: 0003_devices
Create Date: 2026-11-27 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_device_protocol_shapes"
down_revision = "0003_devices"
branch_labels = None
depends_on = None

EPOCH_TABLES = ("devices", "device_epochs", "device_records")


def upgrade() -> None:
    for table in EPOCH_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "epoch",
                existing_type=sa.BigInteger(),
                type_=sa.String(length=64),
                postgresql_using="epoch::text",
            )
    with op.batch_alter_table("device_records", schema=None) as batch_op:
        batch_op.alter_column(
            "device_time",
            existing_type=sa.String(length=40),
            type_=sa.BigInteger(),
            postgresql_using="NULL",
            nullable=True,
        )
    with op.batch_alter_table("device_heartbeats", schema=None) as batch_op:
        batch_op.alter_column("storage_total", existing_type=sa.BigInteger(), nullable=True)
    op.execute(
        "UPDATE device_list_states SET list_name = 'blacklist' WHERE list_name = 'card_blacklist'"
    )


def downgrade() -> None:
    with op.batch_alter_table("device_heartbeats", schema=None) as batch_op:
        batch_op.alter_column("storage_total", existing_type=sa.BigInteger(), nullable=False)
    with op.batch_alter_table("device_records", schema=None) as batch_op:
        batch_op.alter_column(
            "device_time",
            existing_type=sa.BigInteger(),
            type_=sa.String(length=40),
            postgresql_using="coalesce(device_time::text, '')",
            nullable=False,
        )
    for table in EPOCH_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "epoch",
                existing_type=sa.String(length=64),
                type_=sa.BigInteger(),
                postgresql_using="NULL",
            )
