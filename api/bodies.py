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
    raw = _read_raw(req)
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
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: 64 KiB of '[' nests deeper than the decoder's stack allows.
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


def _read_raw(req: falcon.Request) -> bytes:
    """Up to one byte over the limit. A chunked body has no Content-Length, and
    Falcon's bounded stream then reads nothing: read the server's input to its end
    instead where the server says it ends (wsgi.input_terminated: gunicorn,
    waitress); elsewhere reading it could block, so it is refused (a 400, as the
    contract has no 411)."""
    if req.content_length is not None or not req.get_header("Transfer-Encoding"):
        return req.bounded_stream.read(MAX_BODY_BYTES + 1)
    if not req.env.get("wsgi.input_terminated"):
        raise falcon.HTTPBadRequest(
            title="The request is not valid", description="Send the body with a Content-Length"
        )
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY_BYTES:
        chunk = req.stream.read(MAX_BODY_BYTES + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _json_type(t: type) -> str:
    return {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}.get(
        t, t.__name__
    )
