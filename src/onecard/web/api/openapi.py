"""The OpenAPI 3.1 document of ``/api/v1``, generated from the declared endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from onecard import __version__
from onecard.web.api.base import OPERATIONS, Operation, endpoint

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem document",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status"],
}


def build_document() -> dict[str, Any]:
    """OpenAPI 3.1 for every registered operation (schemas come from the pydantic models)."""
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OneCard API",
            "version": __version__,
            "description": "OneCard (一卡通) platform API. Amounts are integer fen. Errors "
            "are RFC 9457 problem documents. Writes to accounts honour "
            "the Idempotency-Key header.",
        },
        "servers": [{"url": "/api/v1"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _ref(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas[name] = sub
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method.lower()}{op.path.replace('/', '_')}",
        "parameters": _parameters(op),
        "responses": _responses(op, schemas),
    }
    if op.public:
        out["security"] = []
    if op.permission:
        out["description"] = f"Needs permission `{op.permission}`."
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body, schemas)}},
        }
    elif op.raw_body:
        out["requestBody"] = {
            "required": True,
            "description": op.raw_body,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    return out


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params = [
        {"name": p[1:-1], "in": "path", "required": True, "schema": {"type": "integer"}}
        for p in op.path.split("/")
        if p.startswith("{")
    ]
    if op.path.endswith("{module_key}"):
        params[-1]["schema"] = {"type": "string"}
    if op.query is not None:
        props = op.query.model_json_schema().get("properties", {})
        params += [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in props.items()
        ]
    if op.idempotent_key:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 100},
                "description": "Repeat a write safely: a replay returns the first result.",
            }
        )
    return params


def _responses(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "Success"}
    if op.response is not None:
        ref = _ref(op.response, schemas)
        schema = (
            {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": ref},
                    "total": {"type": "integer"},
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                },
            }
            if op.list_response
            else ref
        )
        ok["content"] = {"application/json": {"schema": schema}}
    problem = {
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    }
    responses = {str(op.status): ok}
    for code, text in (
        ("400", "Malformed request"),
        ("401", "Not authenticated"),
        ("403", "Permission denied"),
        ("404", "Not found"),
        ("409", "Conflict with current state"),
        ("422", "Validation failed"),
    ):
        responses[code] = {"description": text, **problem}
    return responses


@endpoint("GET", "/openapi.json", tag="meta", public=True)
def openapi(call: Any) -> Any:
    """This document."""
    return build_document()
