"""Importing people from CSV/XLSX as a background job with progress and per-row errors.

The job runs in a thread of this process with its own database session; the page polls its
status (``/people/import/<job>.json``) and shows a progress bar, then the report. Jobs are kept in
memory for an hour: with several web processes a job is visible only on the process that runs it
(a sticky session is needed; a shared job table is future work).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import abort, flash, jsonify, request
from flask_babel import gettext as _

from onecard.platform.actors import Actor
from onecard.platform.audit.record import RequestInfo, request_context
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import OneCardError
from onecard.platform.people import importer
from onecard.web.console.core import Ctx, bp, page, render, to
from onecard.web.console.forms import Pager, paging
from onecard.web.state import AppState, state

log = logging.getLogger(__name__)
MAX_IMPORT_BYTES = 50 * 1024 * 1024
KEEP_SECONDS = 3600


@dataclass
class ImportJob:
    """One import's state, read by the status page while the thread works."""

    id: str
    tenant_id: int
    operator_id: int | None
    filename: str
    dry_run: bool
    skip_bad_rows: bool
    started: float = field(default_factory=time.monotonic)
    phase: str = "reading"  # reading, validating, inserting, done, failed
    total: int = 0
    validated: int = 0
    inserted: int = 0
    report: importer.ImportReport | None = None
    error: str = ""

    @property
    def percent(self) -> int:
        """Progress 0-100 (validation is the first half, inserting the second)."""
        if self.phase in ("done", "failed"):
            return 100
        if not self.total:
            return 0
        return min(99, (self.validated + self.inserted) * 50 // self.total)

    def as_dict(self) -> dict[str, Any]:
        """Status for the polling script."""
        report = self.report
        return {
            "id": self.id,
            "phase": self.phase,
            "percent": self.percent,
            "total": self.total,
            "validated": self.validated,
            "inserted": self.inserted,
            "done": self.phase in ("done", "failed"),
            "error": self.error,
            "imported": report.imported if report else 0,
            "error_count": len(report.errors) if report else 0,
        }


_jobs: dict[str, ImportJob] = {}
_lock = threading.Lock()


def _forget_old() -> None:
    cutoff = time.monotonic() - KEEP_SECONDS
    with _lock:
        for key in [k for k, j in _jobs.items() if j.started < cutoff]:
            del _jobs[key]


def _counting(rows: list[dict[str, str]], job: ImportJob) -> Any:
    for n, row in enumerate(rows, start=1):
        job.validated = n
        yield row


def _inserted(job: ImportJob, done: int) -> None:
    job.phase, job.inserted = "inserting", done


def run_import(st: AppState, job: ImportJob, data: bytes, actor: Actor) -> None:
    """The job's body: read, validate, insert, commit (or nothing on errors, unless skipped)."""
    try:
        with st.sessions() as s, tenant_scope(job.tenant_id), request_context(RequestInfo()):
            rows = list(importer.read_rows(data, job.filename))
            job.total, job.phase = len(rows), "validating"
            report = importer.import_people(
                s,
                _counting(rows, job),
                actor=actor,
                now=utcnow(),
                skip_bad_rows=job.skip_bad_rows,
                dry_run=job.dry_run,
                progress=lambda done, _total: _inserted(job, done),
            )
            if report.imported:
                s.commit()
            job.report, job.phase = report, "done"
    except OneCardError as exc:
        job.error, job.phase = exc.message, "failed"
    except Exception as exc:  # the page must learn that the job died; the log gets the rest
        log.exception("people import %s failed", job.id)
        job.error, job.phase = type(exc).__name__, "failed"


@bp.route("/people/import", methods=["GET", "POST"])
@page("people.import")
def people_import(ctx: Ctx) -> Any:
    """Upload a CSV or XLSX file of people; the import runs in the background."""
    if request.method == "GET":
        return render("console/people/import.html", columns=importer.COLUMNS)
    upload = request.files.get("file")
    data = upload.read(MAX_IMPORT_BYTES + 1) if upload else b""
    if not data or len(data) > MAX_IMPORT_BYTES:
        flash(_("Choose a CSV or XLSX file of at most 50 MiB."), "error")
        return to("console.people_import")
    _forget_old()
    job = ImportJob(
        id=secrets.token_urlsafe(12),
        tenant_id=ctx.tenant.id,
        operator_id=ctx.operator.id,
        filename=(upload.filename if upload else None) or "upload.csv",
        dry_run=request.form.get("dry_run") == "yes",
        skip_bad_rows=request.form.get("skip_bad_rows") == "yes",
    )
    with _lock:
        _jobs[job.id] = job
    st = state()
    threading.Thread(
        target=run_import, args=(st, job, data, ctx.actor), daemon=True, name="people-import"
    ).start()
    return to("console.people_import_job", job_id=job.id)


def _job(ctx: Ctx, job_id: str) -> ImportJob:
    job = _jobs.get(job_id)
    if job is None or job.tenant_id != ctx.tenant.id or job.operator_id != ctx.operator.id:
        abort(404)
    return job


@bp.get("/people/import/<job_id>")
@page("people.import")
def people_import_job(ctx: Ctx, job_id: str) -> Any:
    """Progress of an import, then its report with the per-row errors (paged)."""
    job = _job(ctx, job_id)
    limit, offset = paging()
    errors = job.report.errors if job.report else []
    pager = Pager(len(errors), limit, offset)
    return render(
        "console/people/import_job.html",
        job=job,
        errors=errors[offset : offset + limit],
        pager=pager,
    )


@bp.get("/people/import/<job_id>/status")
@page("people.import")
def people_import_status(ctx: Ctx, job_id: str) -> Any:
    """Status of an import for the progress bar."""
    return jsonify(_job(ctx, job_id).as_dict())
