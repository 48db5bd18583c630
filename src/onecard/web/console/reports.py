"""Report pages with charts and XLSX/CSV export (班报/日报/月报/年报, top-ups, subsidies,
balances). The numbers come from :mod:`onecard.web.console.reports_data`."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import Any

from flask import Response, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from openpyxl import Workbook

from onecard.web.console import reports_data as data
from onecard.web.console.core import Ctx, bp, page, render
from onecard.web.console.i18n import DISPLAY_ZONE, yuan
from onecard.web.state import state

KINDS = {
    "takings": _l("Takings per merchant"),
    "top_ups": _l("Top-ups by channel"),
    "subsidy_use": _l("Subsidy use"),
    "balances": _l("Balances (liability)"),
}
GRAIN_LABELS = {
    "shift": _l("Shift (班报)"),
    "day": _l("Daily (日报)"),
    "month": _l("Monthly (月报)"),
    "year": _l("Yearly (年报)"),
}
COUNT_COLUMNS = {"accounts"}
MAX_SPAN_DAYS = {"shift": 31, "day": 366, "month": 3660, "year": 36600}


def _dates(grain: str, today: date) -> tuple[date, date]:
    default_from = {
        "shift": today,
        "day": today.replace(day=1),
        "month": today.replace(month=1, day=1),
        "year": today.replace(year=today.year - 4, month=1, day=1),
    }[grain]
    try:
        start = date.fromisoformat(request.args.get("from", ""))
    except ValueError:
        start = default_from
    try:
        end = date.fromisoformat(request.args.get("to", ""))
    except ValueError:
        end = today
    if end < start:
        start, end = end, start
    end = min(end, start + timedelta(days=MAX_SPAN_DAYS[grain]))
    return data.align(grain, start), end


def build(ctx: Ctx) -> tuple[data.Table, dict[str, Any], datetime]:
    """The report the query string asks for, the form values it was built from, and the time
    its figures are from."""
    kind = request.args.get("kind", "top_ups")
    kind = kind if kind in KINDS else "top_ups"
    grain = request.args.get("grain", "day")
    grain = grain if grain in data.GRAINS else "day"
    today = ctx.now.astimezone(DISPLAY_ZONE).date()
    start, end = _dates(grain, today)
    as_of = ctx.now
    if kind == "balances":
        # A sum over every holder account of the tenant (0.5 s with a million purses): kept for
        # a minute per process, and the page says how old it is (docs/benchmarks.md, Console).
        table, as_of = state().snapshots.get(
            ("balances", ctx.tenant.id), ctx.now, lambda: data.balances(ctx.session)
        )
    else:
        parts = data.buckets(grain, start, end, DISPLAY_ZONE)
        table = getattr(data, kind)(ctx.session, parts)
    values = {"kind": kind, "grain": grain, "from": start.isoformat(), "to": end.isoformat()}
    return table, values, as_of


@bp.get("/reports", endpoint="reports")
@page("ledger.view")
def reports(ctx: Ctx) -> Any:
    """A report as a table and a chart, with export links."""
    table, values, as_of = build(ctx)
    chart = {
        "type": "bar" if values["kind"] != "subsidy_use" else "line",
        "labels": table.labels,
        "datasets": [
            {"label": _series_label(s), "data": [v / 100 for v in table.values[s]]}
            for s in table.series
        ],
    }
    return render(
        "console/reports.html",
        table=table,
        values=values,
        kinds=KINDS,
        grains=GRAIN_LABELS,
        chart=chart,
        as_of=as_of,
        count_columns=COUNT_COLUMNS,
        series_label=_series_label,
    )


def _series_label(name: str) -> str:
    known = {
        "period": _("Period"),
        "total": _("Total"),
        "kind": _("Kind"),
        "accounts": _("Accounts"),
        "balance": _("Balance"),
        "granted": _("Granted"),
        "spent": _("Spent"),
        "reclaimed": _("Reclaimed"),
        "cash": _("Cash"),
        "bank": _("Bank"),
    }
    return known.get(name) or _(name)


@bp.get("/reports/export.<any(csv,xlsx):fmt>")
@page("ledger.view")
def reports_export(ctx: Ctx, fmt: str) -> Any:
    """The same report as a CSV or XLSX file (amounts in yuan)."""
    table, values, _as_of = build(ctx)
    header = [_series_label(c) for c in table.columns]
    rows = [
        [
            _series_label(cell)
            if n == 0
            else (cell if table.columns[n] in COUNT_COLUMNS else yuan(cell))
            for n, cell in enumerate(row)
        ]
        for row in table.rows
    ]
    name = f"{values['kind']}-{values['grain']}-{values['from']}-{values['to']}.{fmt}"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
        body = ("\ufeff" + out.getvalue()).encode("utf-8")  # BOM: Excel reads it as UTF-8
        mimetype = "text/csv"
    else:
        body = _xlsx(str(KINDS[values["kind"]]), header, table, rows)
        mimetype = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    return Response(
        body,
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _xlsx(title: str, header: list[str], table: data.Table, rows: list[list[Any]]) -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.title = title[:31]
    sheet.append(header)
    for raw, shown in zip(table.rows, rows, strict=True):
        cells = [shown[0]]
        for n, cell in enumerate(raw[1:], start=1):
            money = table.columns[n] not in COUNT_COLUMNS
            cells.append(_decimal(cell) if money else cell)
        sheet.append(cells)
        if len(cells) > 1:
            for column in range(2, len(cells) + 1):
                if table.columns[column - 1] not in COUNT_COLUMNS:
                    sheet.cell(row=sheet.max_row, column=column).number_format = "#,##0.00"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _decimal(fen: int) -> Any:
    from decimal import Decimal

    return Decimal(fen) / 100
