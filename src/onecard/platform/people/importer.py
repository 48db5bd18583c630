"""Bulk import of people from CSV or XLSX with a per-row error report.

All rows are validated first (fields, org-unit codes, duplicates inside the file and against
the database). A file with errors imports nothing unless ``skip_bad_rows`` is set, in which
case the good rows are imported and the bad ones reported. Inserts go in batches through Core
``INSERT`` (no per-row ORM round trips); one audit event records the import.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import record
from onecard.platform.db.tenancy import require_tenant_id
from onecard.platform.errors import ValidationFailed
from onecard.platform.people.models import Person
from onecard.platform.people.schemas import PersonCreate
from onecard.platform.tenants.models import OrgUnit

COLUMNS = (
    "person_no",
    "name",
    "identity_class",
    "org_unit_code",
    "phone",
    "email",
    "valid_from",
    "valid_until",
)
REQUIRED = ("person_no", "name", "identity_class")
BATCH = 2000
MAX_ROWS = 500_000
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RowError:
    """One problem in one row (``row`` counts data rows from 1; the header is row 0)."""

    row: int
    field: str
    message: str


@dataclass
class ImportReport:
    """What an import did (or, with errors and no skipping, would have done)."""

    rows: int = 0
    imported: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)

    def as_dict(self, max_errors: int = 1000) -> dict[str, Any]:
        """JSON-ready summary (at most ``max_errors`` errors listed)."""
        return {
            "rows": self.rows,
            "imported": self.imported,
            "skipped": self.skipped,
            "error_count": len(self.errors),
            "errors": [e.__dict__ for e in self.errors[:max_errors]],
        }


def read_rows(data: bytes, filename: str) -> Iterator[dict[str, str]]:
    """Rows of a CSV (UTF-8, optional BOM) or XLSX file as dicts keyed by header."""
    if filename.lower().endswith(".xlsx") or data[:2] == b"PK":
        return _xlsx_rows(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed("CSV file is not UTF-8 text", field="file") from None
    reader = csv.DictReader(io.StringIO(text))
    _check_header(reader.fieldnames or [])
    return ({k: (v or "").strip() for k, v in row.items() if k} for row in reader)


def _xlsx_rows(data: bytes) -> Iterator[dict[str, str]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a broken file
        raise ValidationFailed(
            f"not a readable XLSX file: {type(exc).__name__}", field="file"
        ) from None
    sheet = book.active
    if sheet is None or not hasattr(sheet, "iter_rows"):
        raise ValidationFailed("XLSX file has no worksheet", field="file")
    rows = sheet.iter_rows(values_only=True)
    header = [str(c or "").strip() for c in next(rows, ())]
    _check_header(header)
    for values in rows:
        if values is None or all(v is None for v in values):
            continue
        yield {h: _cell(v) for h, v in zip(header, values, strict=False) if h}


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _check_header(header: Iterable[str]) -> None:
    names = set(header)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ValidationFailed(
            f"header lacks column {missing[0]}", field="file", expected=list(COLUMNS)
        )
    unknown = sorted(names - set(COLUMNS) - {""})
    if unknown:
        raise ValidationFailed(f"unknown column {unknown[0]}", field="file", expected=list(COLUMNS))


def import_people(
    session: Session,
    rows: Iterable[dict[str, str]],
    *,
    actor: Actor,
    now: datetime,
    skip_bad_rows: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate ``rows`` and insert the people (see module docstring); never commits."""
    actor.ensure("people.import")
    report = ImportReport()
    units = {code: uid for code, uid in session.execute(select(OrgUnit.code, OrgUnit.id))}
    good = _validate_rows(session, rows, units, actor, report)
    if report.errors and not skip_bad_rows:
        return report
    report.skipped = report.rows - len(good)
    if dry_run:
        return report
    _insert(session, good, now, progress)
    report.imported = len(good)
    record(
        session,
        "people.imported",
        actor=actor,
        now=now,
        object_type="person",
        data={"rows": report.rows, "imported": report.imported, "skipped": report.skipped},
    )
    return report


def _validate_rows(
    session: Session,
    rows: Iterable[dict[str, str]],
    units: dict[str, int],
    actor: Actor,
    report: ImportReport,
) -> list[dict[str, Any]]:
    existing = set(session.scalars(select(Person.person_no)))
    seen: set[str] = set()
    good: list[dict[str, Any]] = []
    for n, raw in enumerate(rows, start=1):
        report.rows = n
        if n > MAX_ROWS:
            raise ValidationFailed(f"a file may hold at most {MAX_ROWS} rows", field="file")
        values = _row_values(n, raw, units, actor, report)
        if values is None:
            continue
        if values["person_no"] in existing or values["person_no"] in seen:
            report.errors.append(RowError(n, "person_no", "person number already exists"))
            continue
        seen.add(values["person_no"])
        good.append(values)
    return good


def _row_values(
    n: int, raw: dict[str, str], units: dict[str, int], actor: Actor, report: ImportReport
) -> dict[str, Any] | None:
    fields = {k: v for k, v in raw.items() if v != ""}
    try:
        person = PersonCreate.model_validate_json(json.dumps(fields))
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in err["loc"]) or "(row)"
            report.errors.append(RowError(n, where, err["msg"]))
        return None
    unit_id = units.get(person.org_unit_code) if person.org_unit_code else None
    if person.org_unit_code and unit_id is None:
        report.errors.append(
            RowError(n, "org_unit_code", f"unknown org unit {person.org_unit_code}")
        )
        return None
    if not actor.sees_org_unit(unit_id):
        report.errors.append(RowError(n, "org_unit_code", "outside your data scope"))
        return None
    data = person.model_dump(exclude={"org_unit_code", "org_unit_id"})
    data["org_unit_id"] = unit_id
    return data


def _insert(
    session: Session, good: list[dict[str, Any]], now: datetime, progress: Progress | None
) -> None:
    tid = require_tenant_id()
    for start in range(0, len(good), BATCH):
        batch = [
            {**row, "tenant_id": tid, "created_at": now, "updated_at": now}
            for row in good[start : start + BATCH]
        ]
        session.execute(insert(Person), batch)
        if progress:
            progress(min(start + BATCH, len(good)), len(good))
