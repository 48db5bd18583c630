"""How an API endpoint is declared: one decorator does parsing, auth, scope and unit of work.

``@endpoint("POST", "/people", body=PersonCreate, permission="people.edit", status=201)``
registers the view on the ``api_v1`` blueprint and records what the OpenAPI document needs.
The view receives a :class:`Call` (session, actor, tenant, now, parsed body and query) and
returns JSON-able data. The session commits when the view returns and rolls back on any error,
so a failed request changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, g, json, request
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session

from onecard.platform.actors import Actor
from onecard.platform.audit.record import RequestInfo, record, request_context
from onecard.platform.authz.services import actor_for, resolve_token
from onecard.platform.clock import utcnow
from onecard.platform.db.tenancy import tenant_scope
from onecard.platform.errors import AuthenticationFailed, OneCardError
from onecard.platform.tenants.models import Tenant
from onecard.web.problems import BadRequestBody
from onecard.web.state import state

api_v1 = Blueprint("api_v1", __name__, url_prefix="/api/v1")
MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Operation:
    """What OpenAPI needs to know about one endpoint."""

    method: str
    path: str
    summary: str
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    permission: str | None
    public: bool
    idempotent_key: bool
    list_response: bool
    raw_body: str | None


OPERATIONS: list[Operation] = []


class QueryModel(BaseModel):
    """Base of query-string models: unknown parameters are refused, values coerced from text."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Out(BaseModel):
    """Base of response models, built from ORM objects."""

    model_config = ConfigDict(from_attributes=True)


@dataclass
class Call:
    """Everything a view needs, passed explicitly (no Flask globals below ``web``)."""

    session: Session
    actor: Actor
    tenant: Tenant | None
    now: datetime
    body: Any = None
    query: Any = None
    path: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


def endpoint(
    method: str,
    path: str,
    *,
    tag: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    permission: str | None = None,
    public: bool = False,
    idempotent_key: bool = False,
    list_response: bool = False,
    raw_body: str | None = None,
) -> Callable[[Callable[[Call], Any]], Callable[..., Response]]:
    """Register ``view`` as ``method path`` on the API blueprint (see module docstring)."""

    def decorate(view: Callable[[Call], Any]) -> Callable[..., Response]:
        summary = (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else view.__name__
        OPERATIONS.append(
            Operation(
                method,
                path,
                summary,
                tag,
                body,
                query,
                response,
                status,
                permission,
                public,
                idempotent_key,
                list_response,
                raw_body,
            )
        )

        @functools.wraps(view)
        def handler(**path_args: Any) -> Response:
            return _handle(view, path_args, body, query, status, permission, public)

        flask_path = path.replace("{", "<").replace("}", ">")
        for name in _int_params(path):
            flask_path = flask_path.replace(f"<{name}>", f"<int:{name}>")
        api_v1.add_url_rule(
            flask_path,
            endpoint=f"{view.__module__.rsplit('.', 1)[-1]}_{view.__name__}",
            view_func=handler,
            methods=[method],
        )
        return handler

    return decorate


def _int_params(path: str) -> list[str]:
    return [p[1:-1] for p in path.split("/") if p.startswith("{") and p[1:-1].endswith("id")]


def _handle(
    view: Callable[[Call], Any],
    path_args: dict[str, Any],
    body_model: type[BaseModel] | None,
    query_model: type[BaseModel] | None,
    status: int,
    permission: str | None,
    public: bool,
) -> Response:
    st = state()
    now = utcnow()
    parsed_body = _parse_body(body_model) if body_model else None
    parsed_query = _parse_query(query_model)
    try:
        result = _run(view, st, now, public, permission, parsed_body, parsed_query, path_args)
    except OneCardError as exc:
        if exc.lasting_audit:
            _record_lasting(st, exc, now)
        raise
    if isinstance(result, Response):
        return result
    code = status
    if isinstance(result, tuple):
        result, code = result
    return Response(
        json.dumps(result, ensure_ascii=False), status=code, mimetype="application/json"
    )


def _record_lasting(st: Any, exc: OneCardError, now: datetime) -> None:
    """Write the audit events a refusal carries, in a transaction of their own."""
    with st.sessions() as session, request_context(_request_info()):
        for tenant_id, type_, actor, data in exc.lasting_audit:
            with tenant_scope(tenant_id):
                record(
                    session,
                    type_,
                    actor=actor,
                    now=now,
                    object_type="card_application",
                    object_id=data.get("application") or data.get("sector"),
                    data=data,
                )
        session.commit()


def _run(
    view: Callable[[Call], Any],
    st: Any,
    now: datetime,
    public: bool,
    permission: str | None,
    parsed_body: Any,
    parsed_query: Any,
    path_args: dict[str, Any],
) -> Any:
    with st.sessions() as session, request_context(_request_info()):
        actor, tenant = (
            (Actor(type="anonymous", id=None), None) if public else _authenticate(session, now)
        )
        if permission:
            actor.ensure(permission)
        call = Call(
            session,
            actor,
            tenant,
            now,
            parsed_body,
            parsed_query,
            path_args,
            request.headers.get("Idempotency-Key"),
        )
        with _scope(tenant):
            result = view(call)
            session.commit()
    return result


def _scope(tenant: Tenant | None) -> Any:
    if tenant is None:
        from contextlib import nullcontext

        return nullcontext()
    return tenant_scope(tenant.id)


def _request_info() -> RequestInfo:
    return RequestInfo(ip=request.remote_addr, request_id=getattr(g, "request_id", None))


def _authenticate(session: Session, now: datetime) -> tuple[Actor, Tenant]:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("send 'Authorization: Bearer <token>' (POST /api/v1/auth/login)")
    operator = resolve_token(session, token.strip(), now=now)
    tenant = session.get(Tenant, operator.tenant_id)
    if tenant is None or not tenant.active:
        raise AuthenticationFailed("tenant is not active")
    with tenant_scope(tenant.id):
        actor = actor_for(session, operator)
    g.actor = actor
    return actor, tenant


def _parse_body(model: type[BaseModel]) -> BaseModel:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequestBody(f"request body is larger than {MAX_BODY} bytes")
    if not request.is_json:
        raise BadRequestBody("send a JSON body with 'Content-Type: application/json'")
    raw = request.get_data(cache=True)
    try:
        json.loads(raw)
    except ValueError as exc:
        raise BadRequestBody(f"request body is not valid JSON: {exc}") from None
    return model.model_validate_json(raw)


def _parse_query(model: type[BaseModel] | None) -> BaseModel | None:
    args = request.args.to_dict(flat=True)
    if model is None:
        if args:
            raise BadRequestBody(f"unknown query parameter {sorted(args)[0]}")
        return None
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        unknown = [e["loc"][0] for e in exc.errors() if e["type"] == "extra_forbidden"]
        if unknown:  # the same answer as on endpoints that take no query at all
            raise BadRequestBody(f"unknown query parameter {unknown[0]}") from None
        raise


def page_params_doc() -> dict[str, Any]:
    """Shared description of pagination (for the OpenAPI document)."""
    return {"limit": "1-200, default 50", "offset": "default 0"}


def paged(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    """The list envelope every collection endpoint returns."""
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def dump(model: type[Out], obj: Any) -> dict[str, Any]:
    """Serialise an ORM object through a response model (JSON-safe)."""
    return model.model_validate(obj).model_dump(mode="json")
