"""Form plumbing: parse into the platform's pydantic models, collect field errors, page lists,
confirm destructive actions, and read amounts typed in yuan."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import render_template, request, url_for
from flask_babel import gettext as _
from pydantic import BaseModel, ValidationError

from onecard.platform.errors import OneCardError
from onecard.platform.money import Money
from onecard.web.console.messages import localise

M = TypeVar("M", bound=BaseModel)
PAGE_SIZES = (20, 50, 100, 200)


class FormErrors(dict[str, str]):
    """Field name → message; ``""`` is the key of errors about the whole form."""

    def add_domain(self, exc: OneCardError, field: str | None = None) -> None:
        """File a platform error under ``field``, else its own ``field``, else the whole form
        (in the operator's language)."""
        where = field if field is not None else str(exc.details.get("field") or "")
        self[where] = localise(exc.message)

    def add_validation(self, exc: ValidationError) -> None:
        """File each pydantic error under its first location part (in the operator's
        language)."""
        for err in exc.errors(include_url=False, include_input=False):
            where = str(err["loc"][0]) if err["loc"] else ""
            self.setdefault(where, localise(err["msg"]))


def form_values(*names: str) -> dict[str, str]:
    """The submitted text of ``names`` (stripped; missing fields are empty)."""
    return {n: request.form.get(n, "").strip() for n in names}


def parse(model: type[M], values: dict[str, Any], errors: FormErrors) -> M | None:
    """Validate ``values`` (empty strings dropped) with ``model``; ``None`` and errors filed."""
    data = {k: v for k, v in values.items() if v not in ("", None)}
    try:
        return model.model_validate_json(_json(data))
    except ValidationError as exc:
        errors.add_validation(exc)
        return None


def _json(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, ensure_ascii=False)


def parse_yuan(text: str, field: str, errors: FormErrors, *, positive: bool = True) -> int | None:
    """``"12.50"`` → 1250 fen, or an error filed under ``field``."""
    if not text:
        errors[field] = _("required")
        return None
    try:
        fen = Money.parse(text).fen
    except OneCardError as exc:
        errors.add_domain(exc, field)
        return None
    if positive and fen <= 0:
        errors[field] = _("must be more than 0")
        return None
    return fen


@dataclass(frozen=True)
class Pager:
    """Where a list page is (offset paging, as the platform's queries are)."""

    total: int
    limit: int
    offset: int
    capped: bool = False

    @property
    def page(self) -> int:
        """1-based number of this page."""
        return self.offset // self.limit + 1

    @property
    def pages(self) -> int:
        """How many pages there are (at least one)."""
        return max(1, math.ceil(self.total / self.limit))

    @property
    def first(self) -> int:
        """1-based index of the first row shown."""
        return min(self.offset + 1, self.total)

    @property
    def last(self) -> int:
        """1-based index of the last row shown."""
        return min(self.offset + self.limit, self.total)

    def url(self, page: int) -> str:
        """This page's URL with another page number (other query arguments kept)."""
        args = request.args.to_dict(flat=True)
        args["offset"] = str(max(0, (page - 1) * self.limit))
        args["limit"] = str(self.limit)
        assert request.endpoint is not None
        return url_for(request.endpoint, **(request.view_args or {}), **args)


def paging(default: int = 50, most: int = 200) -> tuple[int, int]:
    """``(limit, offset)`` from the query string (``default`` rows a page, at most ``most``),
    clamped to sane values."""
    try:
        limit = int(request.args.get("limit", str(default)))
        offset = int(request.args.get("offset", "0"))
    except ValueError:
        limit, offset = default, 0
    return max(1, min(limit, most)), max(0, min(offset, 10**9))


def confirmed() -> bool:
    """True when the form carries the confirmation of the confirm page."""
    return request.form.get("confirmed") == "yes"


def confirm_page(title: str, message: str, details: list[tuple[str, str]] | None = None) -> str:
    """A page that repeats the submitted form with ``confirmed=yes`` (every destructive action
    goes through it: the first POST only asks)."""
    fields = [(k, v) for k, v in request.form.items(multi=True) if k not in ("csrf_token",)]
    return render_template(
        "console/confirm.html",
        title=title,
        message=message,
        details=details or [],
        fields=fields,
        action=request.path,
    )
