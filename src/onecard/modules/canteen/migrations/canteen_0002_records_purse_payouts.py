"""canteen: sales link their device record and say whose purse paid; settlements carry payouts

Revision ID: canteen_0002
Revises: canteen_0001
Create Date: 2026-11-27 09:00:00

``canteen_sales`` gains ``record_id`` (the uploaded device record a sale came from, unique: a
record makes at most one sale), ``paid_from`` (``accounts`` for every existing sale) and
``clearing_record_id`` (the cleared TAC of a card-purse sale). ``canteen_settlements`` gains
the merchant payout columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import onecard.platform.db.base

revision = "canteen_0002"
down_revision = "canteen_0001"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("canteen_sales", schema=None) as batch_op:
        batch_op.add_column(sa.Column("record_id", BIG_ID, nullable=True))
        batch_op.add_column(
            sa.Column("paid_from", sa.String(length=12), server_default="accounts", nullable=False)
        )
        batch_op.add_column(sa.Column("clearing_record_id", BIG_ID, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_canteen_sales_record_id_device_records"),
            "device_records",
            ["record_id"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_canteen_sales_clearing_record_id_clearing_records"),
            "clearing_records",
            ["clearing_record_id"],
            ["id"],
        )
        batch_op.create_unique_constraint(batch_op.f("uq_canteen_sales_record_id"), ["record_id"])

    with op.batch_alter_table("canteen_settlements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payout_status", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("payout_fen", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("payout_entry_id", BIG_ID, nullable=True))
        batch_op.add_column(sa.Column("payout_requested_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("payout_decided_by", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "payout_at", onecard.platform.db.base.UtcDateTime(timezone=True), nullable=True
            )
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_canteen_settlements_payout_entry_id_ledger_entries"),
            "ledger_entries",
            ["payout_entry_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("canteen_settlements", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_canteen_settlements_payout_entry_id_ledger_entries"), type_="foreignkey"
        )
        for column in (
            "payout_at",
            "payout_decided_by",
            "payout_requested_by",
            "payout_entry_id",
            "payout_fen",
            "payout_status",
        ):
            batch_op.drop_column(column)

    with op.batch_alter_table("canteen_sales", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_canteen_sales_record_id"), type_="unique")
        batch_op.drop_constraint(
            batch_op.f("fk_canteen_sales_clearing_record_id_clearing_records"), type_="foreignkey"
        )
        batch_op.drop_constraint(
            batch_op.f("fk_canteen_sales_record_id_device_records"), type_="foreignkey"
        )
        batch_op.drop_column("clearing_record_id")
        batch_op.drop_column("paid_from")
        batch_op.drop_column("record_id")
