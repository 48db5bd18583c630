"""device signing keys: at most one active key per tenant (partial unique index)

Two bridge workers creating a tenant's first config-bundle signing key at the same time could
both insert an active key. Before the index is created, any tenant that already has several
active keys keeps its newest one active (the key ``bundles.signing_key`` used so far); the
older keys stay stored, so bundles they signed still verify by ``key_id``.

Revision ID: 0007_bundle_key_unique
Revises: 0005_device_taps_append_only
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_bundle_key_unique"
down_revision = "0005_device_taps_append_only"
branch_labels = None
depends_on = None

INDEX = "uq_device_signing_keys_one_active"
ACTIVE = sa.text("active")

keys = sa.table(
    "device_signing_keys",
    sa.column("id", sa.BigInteger()),
    sa.column("tenant_id", sa.BigInteger()),
    sa.column("active", sa.Boolean()),
)


def upgrade() -> None:
    newest_active = (
        sa.select(sa.func.max(keys.c.id)).where(keys.c.active).group_by(keys.c.tenant_id)
    )
    op.execute(
        keys.update().where(keys.c.active, keys.c.id.not_in(newest_active)).values(active=False)
    )
    op.create_index(
        INDEX,
        "device_signing_keys",
        ["tenant_id"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="device_signing_keys")
