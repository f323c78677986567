"""Strict JSON bodies, validated once, here, into typed values (msgspec Structs):
an object, only the named fields, each of its type.

Every refusal is a 4xx naming the field; nothing a client sends reaches a 5xx.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any, TypeVar, get_args

import falcon
import msgspec

from api.middleware import MAX_BODY_BYTES
from domain.errors import InvalidRequest

T = TypeVar("T", bound=msgspec.Struct)


class Empty(msgspec.Struct, forbid_unknown_fields=True):
    """No fields: an empty body or {} only."""


class Totp(msgspec.Struct, forbid_unknown_fields=True):
    """Enrollment confirmation and a regeneration request: the authenticator's code."""

    totp: str


class Verification(msgspec.Struct, forbid_unknown_fields=True):
    """A backup code to verify, and what the front end saw of its visitor."""

    code: str
    client_ip: str | msgspec.UnsetType = msgspec.UNSET
    user_agent: str | msgspec.UnsetType = msgspec.UNSET


class TotpVerification(msgspec.Struct, forbid_unknown_fields=True):
    """An authenticator code to check at sign-in, and what the front end saw of its visitor."""

    totp: str
    client_ip: str | msgspec.UnsetType = msgspec.UNSET
    user_agent: str | msgspec.UnsetType = msgspec.UNSET


class UserTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/users/{id}/tokens: how long the token lives (its range is the domain's rule)."""

    ttl_seconds: int | msgspec.UnsetType = msgspec.UNSET


class UiLinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/users/{id}/ui-links: the page the link opens (only "security")."""

    page: str


class UiTicket(msgspec.Struct, forbid_unknown_fields=True):
    """POST /ui/session: the ticket of a ui-link."""

    ticket: str


class Policy(msgspec.Struct, forbid_unknown_fields=True):
    """The organization's policy (its range is the domain's rule); the mail settings
    may be left out, keeping their value; support_contact null removes it."""

    backup_codes_enabled: bool
    code_count: int
    notify_users: bool | msgspec.UnsetType = msgspec.UNSET
    support_contact: str | msgspec.UnsetType | None = msgspec.UNSET


class UserProfile(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /v1/users/{user_id}: a field left out is kept (UNSET), null clears it."""

    email: str | msgspec.UnsetType | None = msgspec.UNSET
    recovery_email: str | msgspec.UnsetType | None = msgspec.UNSET
    display_name: str | msgspec.UnsetType | None = msgspec.UNSET

    def given(self) -> dict[str, str | None]:
        """The fields the body named, with their values (None: cleared)."""
        return {
            f.name: value
            for f in msgspec.structs.fields(self)
            if not isinstance(value := getattr(self, f.name), msgspec.UnsetType)
        }


P = TypeVar("P", str, int)


def present(value: P | msgspec.UnsetType) -> P | None:
    """An optional field's value, None when it was left out."""
    return None if isinstance(value, msgspec.UnsetType) else value


def read_body(req: falcon.Request, shape: type[T], *, allow_empty: bool = False) -> T:
    """The body as `shape`; `allow_empty`: no body at all counts as {}."""
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
        # json.loads decides what is JSON (as the contract's answers always did: it
        # reads UTF-16 and a BOM, NaN and lone surrogates); msgspec types the result.
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: 64 KiB of '[' nests deeper than the decoder's stack allows.
        raise falcon.HTTPBadRequest(
            title="The request is not valid", description="The body is not valid JSON"
        ) from None
    if body is None and allow_empty:
        body = {}
    return typed(body, shape)


# Reading a Struct's fields evaluates its annotations: once a shape, not every request.
_fields = cache(msgspec.structs.fields)


def typed(body: Any, shape: type[T]) -> T:
    """A decoded JSON value as `shape`, or the 422 naming the field at fault: the body
    if it is no object, then an unknown field, then a missing one, then a wrong type
    (bool apart from int, no float for an int)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object", field="body")
    fields = _fields(shape)
    known = {f.encode_name for f in fields}
    for name in body:
        if name not in known:
            raise InvalidRequest(f"Unknown field {name!r}", field=str(name)[:64])
    for f in fields:
        if f.required and f.encode_name not in body:
            raise InvalidRequest(f"Missing field {f.encode_name!r}", field=f.encode_name)
    try:
        return msgspec.convert(body, shape, strict=True)
    except msgspec.ValidationError as exc:
        name, kind = _field_at_fault(str(exc), fields)
        raise InvalidRequest(f"{name!r} must be of type {kind}", field=name) from None


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


_JSON_TYPES: dict[object, str] = {str: "string", int: "integer", bool: "boolean"}
# `$.events` or, inside a list, `$.events[0]`: the field is the name before the index.
_AT_FIELD = re.compile(r"at `\$\.([^`\[]+)(?:\[[^`]*\])?`")


def _field_at_fault(message: str, fields: tuple[msgspec.structs.FieldInfo, ...]) -> tuple[str, str]:
    """The field msgspec's message names, and its JSON type (optional fields are
    `X | UnsetType`)."""
    found = _AT_FIELD.search(message)
    for f in fields:
        if found and f.encode_name == found.group(1):
            types = [t for t in get_args(f.type) if t is not msgspec.UnsetType] or [f.type]
            return f.encode_name, _JSON_TYPES.get(types[0], "value")
    return "body", "object"


class WebhookCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new webhook: where to, which types (or prefixes ending in `*`, or `*`)."""

    url: str
    events: list[str]
    description: str = ""


class WebhookChange(msgspec.Struct, forbid_unknown_fields=True):
    """What PATCH may change; a field left out stays as it is."""

    url: str | msgspec.UnsetType = msgspec.UNSET
    events: list[str] | msgspec.UnsetType = msgspec.UNSET
    description: str | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
