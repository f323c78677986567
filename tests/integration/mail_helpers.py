"""Shared by the mail tests: users with addresses, events that cause mails, sending."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select

from domain import audit
from domain.models import MailDelivery, Organization, User
from infra.mail import MailTransport, SmtpTransport
from infra.services import Services
from tests.support.builders import new_org, new_user
from tests.support.smtp import SmtpServer
from workers.mail import send_one

PRIMARY, RECOVERY = "alice@example.com", "alice.recovery@example.net"
LINK = re.compile(r"https?://[^\s\"<>]+/v1/repudiations/([A-Za-z0-9_\-]+)")


def person(
    svc: Services,
    *,
    email: str | None = PRIMARY,
    recovery: str | None = RECOVERY,
    display_name: str | None = "Alice",
    notify: bool = True,
    support_contact: str | None = None,
    external_id: str = "alice",
) -> tuple[str, str]:
    """(org id, user's internal id) for a user with these addresses."""
    org_id = new_org(svc)
    user_id = new_user(svc, org_id, external_id)
    with svc.unit_of_work() as uow:
        user = uow.session.get(User, user_id)
        org = uow.session.get(Organization, org_id)
        assert user is not None and org is not None
        user.email, user.recovery_email, user.display_name = email, recovery, display_name
        org.notify_users, org.support_contact = notify, support_contact
    return org_id, user_id


def append(
    svc: Services,
    org_id: str,
    type_: str,
    details: dict[str, Any] | None = None,
    ctx: audit.Context | None = None,
    external_id: str = "alice",
) -> str:
    """Append one event for the user (as its use case would); its id."""
    with svc.unit_of_work() as uow:
        event = audit.append(
            uow,
            org_id,
            type_,
            "success",
            ctx or audit.Context(principal_id="root", role="admin", source_ip="198.51.100.4"),
            user_id=external_id,
            details=details or {},
        )
        return event.id


def mails_of(svc: Services, user_id: str) -> list[MailDelivery]:
    with svc.unit_of_work() as uow:
        rows = uow.session.execute(
            select(MailDelivery)
            .where(MailDelivery.user_id == user_id)
            .order_by(MailDelivery.created_at, MailDelivery.recipient_kind)
        ).scalars()
        found = list(rows)
        uow.session.expunge_all()
        return found


def smtp_of(server: SmtpServer) -> MailTransport:
    return SmtpTransport.from_url(server.url, server.client_context())


def send_all(svc: Services, transport: MailTransport, user_id: str, clock: Any = None) -> list[str]:
    """One attempt at every mail of the user, as the delivery worker makes it."""
    outcomes = []
    for row in mails_of(svc, user_id):
        if clock is None:
            outcomes.append(send_one(svc, transport, row.id))
        else:
            outcomes.append(send_one(svc, transport, row.id, clock))
    return outcomes


def at(moment: datetime) -> Any:
    return lambda: moment
