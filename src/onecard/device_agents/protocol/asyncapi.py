"""The AsyncAPI 3.0 document of the device protocol, generated from the message models, and
`validate_message`, which checks a payload against that document's JSON Schemas.

``python -m onecard.device_agents.protocol.asyncapi > docs/asyncapi.yaml`` writes the committed
document; a test keeps the two equal. The document is written from the device's point of view:
it ``send``s on ``state`` and ``up/...`` and ``receive``s on ``down/...``.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from typing import Any, Final

import jsonschema
import yaml
from pydantic import TypeAdapter
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from onecard.device_agents.protocol.codec import MODEL_FOR_TOPIC, max_payload
from onecard.device_agents.protocol.codes import ErrorReason, ProtocolError
from onecard.device_agents.protocol.examples import example_messages
from onecard.device_agents.protocol.messages import PROTOCOL_VERSION, Message
from onecard.device_agents.protocol.topics import BRIDGE_SUBSCRIPTION, Topic, parse_topic

DOC_URI: Final = "urn:onecard:asyncapi"
REF_TEMPLATE: Final = "#/components/schemas/{model}"

CHANNEL_IDS: Final[dict[Topic, str]] = {
    Topic.STATE: "state",
    Topic.HELLO: "hello",
    Topic.TAP: "tapRequest",
    Topic.DECISION: "tapDecision",
    Topic.RECORDS: "records",
    Topic.ACK: "ack",
    Topic.HEARTBEAT: "heartbeat",
    Topic.TIME_REQUEST: "timeRequest",
    Topic.TIME_RESPONSE: "timeResponse",
    Topic.LISTS: "lists",
    Topic.CONFIG: "config",
    Topic.COMMAND: "command",
    Topic.RECEIPT: "receipt",
}
CHANNEL_PURPOSE: Final[dict[Topic, str]] = {
    Topic.STATE: "up, retained, QoS 0: `online` on connect; the last will sets `offline`",
    Topic.HELLO: "up, after each connect: kind, firmware, epoch, highest seq, versions, clock",
    Topic.TAP: "up: online authorisation request",
    Topic.DECISION: "down: the decision for a tap request, same `req_id`",
    Topic.RECORDS: "up: batch of stored records of one epoch",
    Topic.ACK: "down: what the platform holds of an epoch; ranges to resend",
    Topic.HEARTBEAT: "up: health, unsent count, versions held, clock offset",
    Topic.TIME_REQUEST: "up: clock sync request (t0)",
    Topic.TIME_RESPONSE: "down: clock sync answer (t0, t1, t2)",
    Topic.LISTS: "down: list delta, or one chunk of a snapshot",
    Topic.CONFIG: "down, retained: signed configuration bundle",
    Topic.COMMAND: "down: remote command (or an error answering a refused message)",
    Topic.RECEIPT: "up: result of a command; list or config version applied",
}
MESSAGE_NAMES: Final[dict[Topic, str]] = {
    Topic.LISTS: "ListUpdate",
    Topic.RECEIPT: "Receipt",
}

DESCRIPTION: Final = """\
The contract between OneCard terminals and the platform (MQTT 5; 3.1.1 accepted).

* One MQTT username per device, equal to its device id (`[a-z0-9-]{3,64}`). A device publishes \
only under `oc/v1/{dev}/up/#` and `oc/v1/{dev}/state` and subscribes to `oc/v1/{dev}/down/#`.
* QoS 1 everywhere except `state` (QoS 0, retained). `down/config` is retained.
* Payloads are UTF-8 JSON objects with a required integer `v` (protocol minor version, now \
%(v)d). Unknown fields are ignored; a missing required field or a wrong type (no coercion) \
refuses the message. Times are integer milliseconds since 1970-01-01T00:00:00Z; money is \
integer fen.
* Session: on connect publish `state` `online` (retained; the last will is `offline`, \
retained), subscribe to `down/#`, publish `up/hello`. The platform answers with pending \
`down/lists` deltas and then a `down/ack` for the hello's epoch. Apply the deltas, then upload \
records not covered by that ack.
* Exactly-once records: each stored record gets `seq` = previous + 1 within an `epoch` (a random \
id chosen when the device's store is created; a wiped store gets a new epoch and restarts at \
seq 1). Identity is (device, epoch, seq); repeats are acknowledged and change nothing. An ack \
covers every seq <= `acked_upto` and every seq in (`acked_upto`, `highest`] outside the \
`missing` ranges; delete only covered records; resend `missing` ones or declare them `gone` in \
the next `up/records`.
* Lists: apply a delta only when holding its `from` version, then send a `list` receipt; on a \
gap send a `gap` receipt with the version held. A snapshot is `count` chunks whose base64 \
`data` concatenated is `zlib(varint(n) varint(k0) varint(k1-k0) ...)` (LEB128, sorted keys), \
SHA-256 `total_sha256`.
* Config: verify sha256(body) and the Ed25519 signature over \
`oc-config/v1|{device}|{version}|{sha256}` with the tenant key provisioned on the device; \
apply atomically; send a `config` receipt.
* Clock: send `up/time` with t0; with t1, t2 from `down/time` and t3 on receipt, \
offset = ((t1 - t0) + (t2 - t3)) / 2, round trip = (t3 - t0) - (t2 - t1).
* The platform's bridges read `%(share)s` (shared subscription).
"""


def _payload_schema(kind: Topic) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(message name, schema of the payload, definitions it refers to)."""
    model = MODEL_FOR_TOPIC[kind]
    schema = TypeAdapter(model).json_schema(ref_template=REF_TEMPLATE)
    defs: dict[str, Any] = schema.pop("$defs", {})
    name = MESSAGE_NAMES.get(kind) or model.__name__
    if "$ref" in schema:  # a plain model: its own schema lives in components
        return name, {"$ref": schema["$ref"]}, defs
    defs[name] = schema
    return name, {"$ref": REF_TEMPLATE.format(model=name)}, defs


def _fix_schema(node: Any) -> Any:
    """AsyncAPI schemas name the discriminator property with a plain string; one-line texts."""
    if isinstance(node, dict):
        out = {k: _fix_schema(v) for k, v in node.items()}
        if isinstance(out.get("description"), str):
            out["description"] = " ".join(out["description"].split()).replace("``", "`")
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_fix_schema(v) for v in node]
    return node


def _message_models() -> set[str]:
    names: set[str] = set()
    pending: list[type] = [Message]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    names.discard("Message")
    return names


def _channel(kind: Topic, name: str) -> dict[str, Any]:
    return {
        "address": f"oc/v1/{{dev}}/{kind.value}",
        "title": kind.value,
        "description": CHANNEL_PURPOSE[kind],
        "parameters": {"dev": {"$ref": "#/components/parameters/dev"}},
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
    }


def _message(kind: Topic, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    examples = [
        {
            "name": f"{type(m).__name__}{i}",
            "payload": json.loads(m.model_dump_json(exclude_none=True)),
        }
        for i, m in enumerate(example_messages()[kind], 1)
    ]
    return {
        "name": name,
        "title": name,
        "summary": CHANNEL_PURPOSE[kind],
        "contentType": "application/json",
        "payload": payload,
        "bindings": {
            "mqtt": {
                "qos": kind.qos,
                "retain": kind.retained,
                "bindingVersion": "0.2.0",
            }
        },
        "examples": examples,
        "x-max-payload-bytes": max_payload(kind),
    }


@functools.cache
def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document as a dict (deterministic; computed once)."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for kind in Topic:
        cid = CHANNEL_IDS[kind]
        name, payload, defs = _payload_schema(kind)
        schemas.update(defs)
        channels[cid] = _channel(kind, name)
        messages[name] = _message(kind, name, payload)
        action = "send" if kind.upward else "receive"
        operations[f"{action}{cid[0].upper()}{cid[1:]}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"}],
        }
    for model_name in _message_models() & schemas.keys():
        required = schemas[model_name].setdefault("required", [])
        if "v" not in required:
            required.insert(0, "v")
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "OneCard device protocol",
            "version": f"1.{PROTOCOL_VERSION}.0",
            "description": DESCRIPTION % {"v": PROTOCOL_VERSION, "share": BRIDGE_SUBSCRIPTION},
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "broker.example.org:8883",
                "protocol": "secure-mqtt",
                "protocolVersion": "5",
                "description": "TLS; username = device id, password issued by the platform",
                "security": [{"$ref": "#/components/securitySchemes/devicePassword"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "parameters": {"dev": {"description": "device id, [a-z0-9-]{3,64}"}},
            "securitySchemes": {
                "devicePassword": {
                    "type": "userPassword",
                    "description": "MQTT username is the device id",
                }
            },
            "messages": messages,
            "schemas": _fix_schema(dict(sorted(schemas.items()))),
        },
    }


def asyncapi_yaml() -> str:
    """The document as YAML (what ``docs/asyncapi.yaml`` holds)."""
    doc = copy.deepcopy(asyncapi_document())
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


@functools.cache
def _validator(kind: Topic) -> jsonschema.protocols.Validator:
    doc = asyncapi_document()
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT7)
    )
    name = MESSAGE_NAMES.get(kind) or MODEL_FOR_TOPIC[kind].__name__
    schema = {"$ref": f"{DOC_URI}#/components/messages/{name}/payload"}
    return jsonschema.Draft7Validator(schema, registry=registry)


def validate_message(topic_name: str, payload: bytes | str | dict[str, Any]) -> None:
    """Check ``payload`` against the AsyncAPI schema of ``topic_name``'s channel.

    Raises `ProtocolError` (``bad_topic``, ``malformed_json``, ``too_large`` or ``bad_value``).
    """
    _, kind = parse_topic(topic_name)
    if isinstance(payload, dict):
        data = payload
    else:
        raw = payload.encode() if isinstance(payload, str) else payload
        if len(raw) > max_payload(kind):
            raise ProtocolError(ErrorReason.TOO_LARGE, f"{len(raw)} bytes")
        try:
            data = json.loads(raw)
        except ValueError as err:
            raise ProtocolError(ErrorReason.MALFORMED_JSON, str(err)[:200]) from None
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise ProtocolError(ErrorReason.BAD_VALUE, f"{where}: {error.message}"[:300])


if __name__ == "__main__":
    sys.stdout.write(asyncapi_yaml())
