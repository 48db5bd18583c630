"""device records on SQLite: timestamps in the ORM's text form

The ingest's bulk insert handed SQLite's driver timezone-aware datetimes, which it wrote in
Python's ``isoformat`` form (``2026-11-26 08:30:00.250000+00:00``; without the microseconds
when they were zero) instead of the form every ORM-written timestamp has
(``2026-11-26 08:30:00.250000``). Both read back as the same instant, but SQL compares them as
text, so ranges and ordering over ``received_at`` and ``corrected_time`` mixed the forms. This
rewrites the old form; PostgreSQL stores real timestamps and has nothing to rewrite.

Revision ID: 0008_sqlite_record_stamps
Revises: 0007_bundle_key_unique
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0008_sqlite_record_stamps"
down_revision = "0007_bundle_key_unique"
branch_labels = None
depends_on = None

COLUMNS = ("received_at", "corrected_time")


def _rewrite(column: str) -> str:
    # Built from the constant column names above only.
    return (
        f"UPDATE device_records SET {column} = CASE"  # noqa: S608
        f" WHEN length({column}) = 32 THEN substr({column}, 1, 26)"
        f" WHEN length({column}) = 25 THEN substr({column}, 1, 19) || '.000000'"
        f" ELSE {column} END"
        f" WHERE {column} LIKE '%+00:00'"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for column in COLUMNS:
        op.execute(_rewrite(column))


def downgrade() -> None:
    """Nothing to undo: the rewritten values are the form the ORM reads and writes."""
