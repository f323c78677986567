"""Use case: check a user's authenticator code at sign-in (the application's second factor).

Synchronous: the user is present, so the code is judged for now (+-1 step) by the
same domain.totp.judge that enrollment and the regeneration worker use. A step
accepted once for the user is never accepted again, whoever accepted it.

The order in which it decides: a totp that is not 6 digits 422 (before any lookup:
the answer is the same for every user id); unknown user 404; not enrolled 409;
TOTP throttled or locked 429 (domain.limits, the TOTP budget that enrollment and
regeneration share); otherwise the judgement.

The user's row lock is taken before the enrollment is read: judging is a few
HMACs, nothing worth running in parallel, and under the lock two requests with
the same valid code see each other's accepted step, so exactly one is accepted
and the other is a replay (a failure, as the limits say).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain import accounts, audit, guards, limits
from domain import totp as otp
from domain.audit.types import EventType, Outcome
from domain.errors import InvalidRequest, MfaNotEnrolled, NotFound
from domain.models import TotpEnrollment
from domain.ports import Services
from domain.sources import source_key
from domain.uow import UnitOfWork

# Refusals (not enrolled, throttled, locked) are recorded as a rejected TOTP with the
# refusal's slug as reason: one filter (mfa.totp.*) finds every sign-in attempt.
_REFUSED = EventType.TOTP_REJECTED


@dataclass(frozen=True)
class TotpCheck:
    accepted: bool
    replayed: bool = False


def verify_totp(
    uow: UnitOfWork,
    services: Services,
    org_id: str,
    user_external_id: str,
    totp: str,
    now: datetime,
    ctx: audit.Context,
    *,
    client_ip: str | None = None,
    user_agent: str | None = None,
) -> TotpCheck:
    """`client_ip` and `user_agent`: what the front end saw of its visitor, recorded in
    the events' details as for backup codes (the TOTP budget itself is the user's)."""
    session = uow.session
    visitor_ip = limits.parse_client_ip(client_ip)
    visitor_agent = limits.check_user_agent(user_agent)
    if not otp.is_well_formed(totp):
        raise InvalidRequest("totp must be a string of exactly 6 digits", field="totp")
    visitor = {k: v for k, v in (("client_ip", visitor_ip), ("user_agent", visitor_agent)) if v}
    details = {"during": "signin", **visitor}
    found = accounts.find_user(session, org_id, user_external_id)
    if found is None:
        raise NotFound("no such user")
    user = uow.lock_user(found)
    enrollment = session.get(TotpEnrollment, user.id, populate_existing=True)
    if enrollment is None or enrollment.confirmed_at is None:
        raise guards.refuse(uow, user, _REFUSED, MfaNotEnrolled(), ctx, **details)
    guards.require_totp_open(uow, user, _REFUSED, now, ctx, services.limits, **details)

    judgement = otp.judge(
        services.box.decrypt_text(enrollment.secret_ciphertext),
        totp,
        now,
        enrollment.last_accepted_step,
    )
    if judgement.verdict is otp.Verdict.ACCEPTED:
        enrollment.last_accepted_step = judgement.step
        enrollment.drift = judgement.drift
        limits.record_success(session, user, limits.TOTP, None, now)
        audit.append(
            uow,
            user.org_id,
            EventType.TOTP_ACCEPTED,
            Outcome.SUCCESS,
            ctx,
            user_id=user.external_id,
            details=details,
        )
        return TotpCheck(accepted=True)
    # A replayed step is a failure too: else a code seen over a shoulder could be
    # tried again and again for free.
    replayed = judgement.verdict is otp.Verdict.REPLAYED
    source = source_key(visitor_ip, ctx.source_ip)
    limits.record_failure(uow, user, limits.TOTP, source, now, ctx, services.limits)
    audit.append(
        uow,
        user.org_id,
        EventType.TOTP_REPLAYED if replayed else EventType.TOTP_REJECTED,
        Outcome.DENIED if replayed else Outcome.FAILURE,
        ctx,
        user_id=user.external_id,
        details=details,
    )
    return TotpCheck(accepted=False, replayed=replayed)
