"""``/people``: card holders — list/search, create, read, change, delete (four-eyes), import."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from flask import Response, request
from pydantic import Field

from onecard.platform.approvals import services as approvals
from onecard.platform.errors import ValidationFailed
from onecard.platform.people import importer
from onecard.platform.people import services as people
from onecard.platform.people.schemas import PersonCreate, PersonUpdate
from onecard.web.api.base import Call, Out, QueryModel, dump, endpoint, paged
from onecard.web.api.common import approval_response
from onecard.web.problems import BadRequestBody

MAX_IMPORT_BYTES = 50 * 1024 * 1024
MAX_PHOTO_BYTES = 1024 * 1024
PHOTO_TYPES = {"image/jpeg", "image/png"}


class PersonOut(Out):
    """A person as the API shows them."""

    id: int
    person_no: str
    name: str
    identity_class: str
    org_unit_id: int | None
    phone: str | None
    email: str | None
    valid_from: date | None
    valid_until: date | None
    created_at: datetime
    updated_at: datetime


class PeopleQuery(QueryModel):
    """Search: ``q`` matches a person-number or name prefix, or a card number exactly."""

    q: str | None = Field(default=None, max_length=100)
    org_unit_id: int | None = None
    identity_class: str | None = Field(default=None, max_length=20)
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0)


@endpoint(
    "GET",
    "/people",
    tag="people",
    query=PeopleQuery,
    response=PersonOut,
    list_response=True,
    permission="people.view",
)
def list_people(call: Call) -> Any:
    """Search people (paginated)."""
    q: PeopleQuery = call.query
    page = people.search_people(
        call.session,
        actor=call.actor,
        q=q.q,
        org_unit_id=q.org_unit_id,
        identity_class=q.identity_class,
        limit=q.limit,
        offset=q.offset,
    )
    body = paged([dump(PersonOut, p) for p in page.items], page.total, page.limit, page.offset)
    return {**body, "total_capped": page.total_capped}


@endpoint(
    "POST",
    "/people",
    tag="people",
    body=PersonCreate,
    response=PersonOut,
    status=201,
    permission="people.edit",
)
def create_person(call: Call) -> Any:
    """Create a person."""
    person = people.create_person(call.session, call.body, actor=call.actor, now=call.now)
    return dump(PersonOut, person)


@endpoint("GET", "/people/{person_id}", tag="people", response=PersonOut)
def get_person(call: Call) -> Any:
    """Read one person."""
    person = people.get_person(call.session, call.path["person_id"], actor=call.actor)
    return dump(PersonOut, person)


@endpoint("PATCH", "/people/{person_id}", tag="people", body=PersonUpdate, response=PersonOut)
def update_person(call: Call) -> Any:
    """Change some fields of a person."""
    person = people.get_person(call.session, call.path["person_id"], actor=call.actor)
    people.update_person(call.session, person, call.body, actor=call.actor, now=call.now)
    return dump(PersonOut, person)


@endpoint("DELETE", "/people/{person_id}", tag="people", status=202)
def delete_person(call: Call) -> Any:
    """Delete a person: files a four-eyes request; approval stops their cards."""
    assert call.tenant is not None
    person = people.get_person(call.session, call.path["person_id"], actor=call.actor)
    outcome = approvals.submit(
        call.session,
        call.tenant,
        "person.delete",
        {"person_id": person.id},
        actor=call.actor,
        now=call.now,
        summary=f"delete person {person.person_no} {person.name}",
        idempotency_key=call.idempotency_key,
    )
    return approval_response(outcome)


class ImportQuery(QueryModel):
    """Options of an import."""

    skip_bad_rows: bool = False
    dry_run: bool = False


@endpoint(
    "POST",
    "/people/import",
    tag="people",
    query=ImportQuery,
    permission="people.import",
    raw_body="text/csv or application/vnd.openxmlformats-officedocument.spreadsheetml.sheet "
    "(or multipart/form-data with a 'file' field)",
)
def import_people(call: Call) -> Any:
    """Import people from CSV or XLSX; per-row errors; nothing imported on errors unless skipped."""
    data, filename = _uploaded_file()
    rows = importer.read_rows(data, filename)
    q: ImportQuery = call.query
    report = importer.import_people(
        call.session,
        rows,
        actor=call.actor,
        now=call.now,
        skip_bad_rows=q.skip_bad_rows,
        dry_run=q.dry_run,
    )
    status = 422 if report.errors and not q.skip_bad_rows else 200
    if status == 422:
        call.session.rollback()
    return report.as_dict(), status


def _uploaded_file() -> tuple[bytes, str]:
    if request.content_length is not None and request.content_length > MAX_IMPORT_BYTES:
        raise BadRequestBody("file is larger than 50 MiB")
    if request.files:
        upload = request.files.get("file")
        if upload is None:
            raise BadRequestBody("multipart upload needs a 'file' field")
        return upload.read(MAX_IMPORT_BYTES + 1), upload.filename or "upload.csv"
    data = request.get_data(cache=False)
    if not data:
        raise BadRequestBody("send the file as the request body or as multipart 'file'")
    ctype = request.mimetype or ""
    return data, "upload.xlsx" if "spreadsheetml" in ctype else "upload.csv"


@endpoint(
    "PUT",
    "/people/{person_id}/photo",
    tag="people",
    status=204,
    raw_body="image/jpeg or image/png, at most 1 MiB",
    permission="people.edit",
)
def put_photo(call: Call) -> Any:
    """Set the person's photo."""
    person = people.get_person(call.session, call.path["person_id"], actor=call.actor)
    if request.mimetype not in PHOTO_TYPES:
        raise BadRequestBody("photo must be image/jpeg or image/png")
    data = request.get_data(cache=False)
    if not data or len(data) > MAX_PHOTO_BYTES:
        raise ValidationFailed("photo must be between 1 byte and 1 MiB", field="photo")
    if not _looks_like(request.mimetype, data):
        raise ValidationFailed("photo content does not match its type", field="photo")
    person.photo, person.photo_type, person.updated_at = data, request.mimetype, call.now
    return {}, 204


def _looks_like(mimetype: str, data: bytes) -> bool:
    if mimetype == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    return data.startswith(b"\xff\xd8\xff")


@endpoint("GET", "/people/{person_id}/photo", tag="people")
def get_photo(call: Call) -> Any:
    """The person's photo (404 when none)."""
    from onecard.platform.errors import NotFound

    person = people.get_person(call.session, call.path["person_id"], actor=call.actor)
    if not person.photo:
        raise NotFound("person has no photo")
    return Response(person.photo, mimetype=person.photo_type or "application/octet-stream")
