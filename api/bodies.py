"""Strict JSON bodies: an object, only the named fields, each of its type.

Every refusal is a 4xx naming the field; nothing a client sends reaches a 5xx.
"""

from __future__ import annotations

import json
from typing import Any

import falcon

from api.middleware import MAX_BODY_BYTES
from domain.errors import InvalidRequest


def read_object(
    req: falcon.Request,
    fields: dict[str, type],
    required: tuple[str, ...] = (),
    *,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """The body as a dict; `allow_empty`: no body at all counts as {}."""
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        # A chunked body has no Content-Length for the middleware to refuse early.
        raise falcon.HTTPContentTooLarge(
            description=f"The body is larger than {MAX_BODY_BYTES // 1024} KiB"
        )
    media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
    if raw and media_type not in ("application/json", ""):
        raise falcon.HTTPBadRequest(
            title="The request is not valid", description="Content-Type must be application/json"
        )
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise falcon.HTTPBadRequest(
            title="The request is not valid", description="The body is not valid JSON"
        ) from None
    if body is None and allow_empty:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object", field="body")
    for name in body:
        if name not in fields:
            raise InvalidRequest(f"Unknown field {name!r}", field=str(name)[:64])
    for name in required:
        if name not in body:
            raise InvalidRequest(f"Missing field {name!r}", field=name)
    for name, value in body.items():
        expected = fields[name]
        # JSON booleans are Python ints: keep them apart.
        if isinstance(value, bool) and expected is not bool:
            raise InvalidRequest(f"{name!r} must be of type {_json_type(expected)}", field=name)
        if not isinstance(value, expected):
            raise InvalidRequest(f"{name!r} must be of type {_json_type(expected)}", field=name)
    return body


def _json_type(t: type) -> str:
    return {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}.get(
        t, t.__name__
    )
