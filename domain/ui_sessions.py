"""Signing in a browser: one-time links to the pages, and the sessions they open.

A link's ticket is 256 random bits, shown once (in the URL's fragment, which no
server log or Referer carries) and kept only as its SHA-256, like the tokens. It
works once, for 120 s: the redeeming UPDATE is conditional (unused, unexpired), so
of two concurrent redeems exactly one wins. Redeeming opens a session: an
api_tokens row of kind `session` (8 h at most, 15 min idle: domain.tokens.usable),
so every revocation path (sign-out, an administrator's revoke, an MFA reset, a
repudiation, deleting the user) ends it like any token. Its issue is audited as
`token.issued` with kind `session`.

The page's CSRF token is an HMAC of the session token under a key derived from the
service's secret key: bound to the session, stored nowhere, checked in constant
time (every configured key is tried, so a key rotation does not end sessions).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from domain import accounts, audit, tokens
from domain.audit.types import EventType, Outcome
from domain.errors import InvalidRequest, TicketGone
from domain.models import ApiToken, Role, TokenKind, UiTicket
from domain.sql import rowcount
from domain.uow import UnitOfWork

TICKET_BYTES = 32
TICKET_VALID_FOR = timedelta(seconds=120)
MAX_TICKET = 128  # a longer string is no ticket of ours
SESSION_LIFETIME = timedelta(hours=8)
SESSION_IDLE = tokens.SESSION_IDLE
ENTER_PATH = "/ui/enter"
# The page each role's link opens; a service's link may open the user's page only.
PAGES: dict[str, str] = {
    Role.USER: "/ui/security",
    Role.AUDITOR: "/ui/audit",
    Role.ADMIN: "/ui/admin",
}
LINK_ROLES = tuple(str(role) for role in PAGES)
# POST /v1/users/{id}/ui-links: the page names a service may ask for.
SERVICE_PAGES = {"security": Role.USER}
_CSRF_LABEL = b"mfa-backup-codes ui csrf v1"


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode("utf-8", "surrogatepass")).hexdigest()


def issue_ticket(
    uow: UnitOfWork,
    org_id: str,
    principal_id: str,
    role: str,
    now: datetime,
    ctx: audit.Context,
) -> tuple[str, datetime]:
    """A new ticket for `principal_id` with `role` (a user must exist: NotFound
    otherwise); returns it in clear, once, and when it expires. Audited as
    `token.issued` (kind "ui-link") in the name of whoever asked (`ctx`: the service
    or the operator), so the trail says who could open a session for whom."""
    if role not in PAGES:
        raise InvalidRequest(f"role must be one of {', '.join(LINK_ROLES)}", field="role")
    if not principal_id or len(principal_id) > 128 or not principal_id.isprintable():
        raise InvalidRequest("principal id must be 1 to 128 characters", field="principal_id")
    accounts.get_org(uow.session, org_id)
    if role == Role.USER:
        accounts.get_user(uow.session, org_id, principal_id)
    ticket = secrets.token_urlsafe(TICKET_BYTES)
    expires_at = now + TICKET_VALID_FOR
    uow.session.add(
        UiTicket(
            ticket_hash=_digest(ticket),
            org_id=org_id,
            principal_id=principal_id,
            role=role,
            created_at=now,
            expires_at=expires_at,
        )
    )
    uow.session.flush()
    audit.append(
        uow,
        org_id,
        EventType.TOKEN_ISSUED,
        Outcome.SUCCESS,
        ctx,
        user_id=principal_id if role == Role.USER else None,
        details={
            "kind": "ui-link",
            "role": role,
            "principal_id": principal_id,
            "expires_at": expires_at.isoformat(),
        },
    )
    return ticket, expires_at


def link(public_url: str, ticket: str) -> str:
    """The enter page with the ticket in the fragment: never sent to a server."""
    return f"{public_url.rstrip('/')}{ENTER_PATH}#ticket={ticket}"


@dataclass(frozen=True)
class SessionView:
    """What a page learns of its session (GET and POST /ui/session), never the token."""

    token_id: str
    role: str
    page: str
    expires_at: datetime
    principal_id: str
    org_id: str
    org_name: str


def view(row: ApiToken) -> SessionView:
    if row.expires_at is None:  # a session always expires; a bearer token is no session
        raise ValueError("not a session")
    return SessionView(
        token_id=row.id,
        role=row.role,
        page=PAGES.get(row.role, PAGES[Role.USER]),
        expires_at=row.expires_at,
        principal_id=row.principal_id,
        org_id=row.org_id,
        # Organizations are named by their id (mfa-codes org create ORG).
        org_name=row.org_id,
    )


def redeem(
    uow: UnitOfWork, ticket: str, ctx: audit.Context, now: datetime
) -> tuple[SessionView, str]:
    """Spend the ticket and open a session: (what the page is told, the session token
    in clear, for the cookie only). TicketGone for an unknown, used or expired ticket
    alike (the answer tells a guesser nothing). `ctx` says from where; the principal
    is the ticket's."""
    if not ticket or len(ticket) > MAX_TICKET:
        raise TicketGone()
    session = uow.session
    digest = _digest(ticket)
    # Conditional: of concurrent redeems only the first UPDATE finds the ticket unused
    # (on PostgreSQL the others wait for its commit and then match nothing).
    claimed = session.execute(
        update(UiTicket)
        .where(
            UiTicket.ticket_hash == digest,
            UiTicket.used_at.is_(None),
            UiTicket.expires_at > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(claimed) != 1:
        raise TicketGone()
    row = session.get(UiTicket, digest)
    if row is None:  # pragma: no cover - claimed a moment ago in this transaction
        raise TicketGone()
    who = audit.Context(
        principal_id=row.principal_id,
        role=row.role,
        request_id=ctx.request_id,
        source_ip=ctx.source_ip,
        user_agent=ctx.user_agent,
        server_request_id=ctx.server_request_id,
    )
    token_row, plaintext = tokens.issue(
        uow,
        row.org_id,
        row.principal_id,
        row.role,
        who,
        ttl=SESSION_LIFETIME,
        kind=TokenKind.SESSION,
        now=now,
    )
    return view(token_row), plaintext


# --- CSRF -----------------------------------------------------------------------------


def _csrf_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), _CSRF_LABEL, hashlib.sha256).digest()


def _csrf_under(secret_key: str, session_token: str) -> str:
    mac = hmac.new(_csrf_key(secret_key), session_token.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def csrf_token(secret_keys: Sequence[str], session_token: str) -> str:
    """The session's CSRF token, under the current (first) secret key."""
    return _csrf_under(secret_keys[0], session_token)


def csrf_matches(secret_keys: Sequence[str], session_token: str, presented: str | None) -> bool:
    """Is `presented` the session's CSRF token under one of the keys (constant time)?"""
    if not presented or len(presented) > 128:
        return False
    found = False
    for key in secret_keys:
        expected = _csrf_under(key, session_token)
        found |= hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))
    return found
