"""RFC 9457 problem documents for every error the API returns.

Domain errors carry their own status and slug; pydantic validation errors become 422 with the
list of offending fields; malformed JSON is 400; everything unexpected is a 500 whose body says
nothing about internals (the log has the traceback and the request id).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, json, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from onecard.platform.errors import OneCardError

log = logging.getLogger(__name__)
PROBLEM_BASE = "https://onecard.dev/problems/"


RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "request_id"})


def problem(status: int, slug: str, title: str, detail: str = "", **extra: Any) -> Response:
    """A ``application/problem+json`` response; ``extra`` adds members (never the standard ones)."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.path
    rid = getattr(g, "request_id", None)
    if rid:
        body["request_id"] = rid
    body.update({k: v for k, v in extra.items() if k not in RESERVED_MEMBERS})
    resp = Response(
        json.dumps(body, ensure_ascii=False), status=status, mimetype="application/problem+json"
    )
    return resp


class BadRequestBody(OneCardError):
    """The request body is not the JSON (or file) the endpoint expects."""

    status = 400
    slug = "malformed-request"
    title = "Malformed request"


class TooManyRequests(OneCardError):
    """Throttled (too many failed logins from one address)."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


def _onecard_error(exc: OneCardError) -> Response:
    details = _safe(exc.details)
    clashing = {k: details.pop(k) for k in list(details) if k in RESERVED_MEMBERS}
    body = problem(exc.status, exc.slug, exc.title, exc.message, **details)
    if clashing:  # keep domain details whose names are taken by RFC 9457 under "context"
        doc = json.loads(body.get_data())
        doc["context"] = clashing
        body.set_data(json.dumps(doc, ensure_ascii=False))
    return body


def _safe(details: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(details, default=str))  # type: ignore[no-any-return]


def _validation_error(exc: ValidationError) -> Response:
    errors = [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "(body)",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return problem(
        422,
        "validation-failed",
        "Validation failed",
        f"{len(errors)} field(s) are invalid",
        errors=errors,
    )


def _http_error(exc: HTTPException) -> Response:
    slug = (exc.name or "error").lower().replace(" ", "-")
    return problem(exc.code or 500, slug, exc.name or "Error", exc.description or "")


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error", extra={"request_id": getattr(g, "request_id", None)})
    return problem(
        500,
        "internal-error",
        "Internal error",
        "the server failed to handle the request; quote the request id",
    )


def register_error_handlers(app: Flask) -> None:
    """Map every error to a problem document."""
    app.register_error_handler(OneCardError, _onecard_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
