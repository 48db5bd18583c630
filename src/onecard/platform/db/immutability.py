"""Append-only guard for facts (ledger entries and lines, audit events).

In Python an ORM update or delete of such a row raises :class:`ImmutableRecordError`; on
PostgreSQL a trigger created by the migrations refuses ``UPDATE`` and ``DELETE`` as well.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from onecard.platform.errors import ImmutableRecordError


class AppendOnly:
    """Mixin: rows of this class can be inserted, never updated or deleted."""


def _refuse(_mapper: Any, _connection: Any, target: Any) -> None:
    raise ImmutableRecordError(f"{type(target).__name__} rows are append-only")


event.listen(AppendOnly, "before_update", _refuse, propagate=True)
event.listen(AppendOnly, "before_delete", _refuse, propagate=True)

POSTGRES_TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION onecard_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are append-only', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
"""


def postgres_trigger_sql(table: str) -> str:
    """DDL that makes ``table`` append-only on PostgreSQL."""
    return (
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION onecard_refuse_change();"
    )
