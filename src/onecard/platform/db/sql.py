"""Statement pieces that differ by database for speed, not meaning."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

DIALECTS = ("postgresql", "sqlite")


def in_values(column: Any, name: str, dialect: str) -> ColumnElement[bool]:
    """``column IN`` the list bound as ``name``, for a statement built once per ``dialect``.

    On PostgreSQL it is ``column = ANY(:name)`` with one array parameter: the statement's text
    is the same whatever the list's length, so the driver converts it once and the server
    reuses its prepared plan (an expanding ``IN`` is new text for every length, parsed again
    by both). Elsewhere, an expanding ``IN``.
    """
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]
