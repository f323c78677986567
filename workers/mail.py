"""The mail task's work: claim an attempt, hand it to the transport, record the outcome.

Three steps, two transactions (domain.notify.mail_delivery): no transaction is open
while the SMTP server takes its time. Only the mail's id, its attempt and the
failure's type ever reach a log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from domain.clock import utcnow
from domain.notify import mail_delivery
from domain.notify.mail_delivery import MailConfig
from infra.mail import MailError, MailTransport
from infra.services import Services

log = logging.getLogger(__name__)

SENT, RETRY, FAILED, SKIPPED = "sent", "retry", "failed", "skipped"


def config_of(services: Services) -> MailConfig:
    settings = services.settings
    return MailConfig(sender=settings.mail_from, public_url=settings.public_url)


def send_one(
    services: Services,
    transport: MailTransport,
    mail_id: str,
    clock: Callable[[], datetime] = utcnow,
) -> str:
    """One attempt at `mail_id`: sent, retry (scheduled), failed (given up) or skipped."""
    with services.unit_of_work() as uow:
        outgoing = mail_delivery.claim(uow, services.box, config_of(services), mail_id, clock())
    if outgoing is None:
        return SKIPPED
    try:
        transport.send(outgoing.message)
    except Exception as exc:
        error = str(exc) if isinstance(exc, MailError) else type(exc).__name__
        with services.unit_of_work() as uow:
            final = mail_delivery.record_failure(uow, mail_id, outgoing.attempt, error, clock())
        log.warning(
            "mail %s: attempt %d failed (%s)%s",
            mail_id,
            outgoing.attempt,
            error,
            "; given up" if final else "; will retry",
        )
        return FAILED if final else RETRY
    with services.unit_of_work() as uow:
        mail_delivery.record_sent(uow, mail_id, outgoing.attempt, clock())
    log.info("mail %s: sent (attempt %d)", mail_id, outgoing.attempt)
    return SENT
