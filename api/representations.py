"""JSON of the domain's models, with the API's URLs: the only place that knows them."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from api.qr import otpauth_svg
from domain.admin import CodeSet, MfaStatus
from domain.audit.query import event_to_dict
from domain.audit.verify import Verification
from domain.clock import rfc3339_millis
from domain.limits import Standing
from domain.models import ApiToken, AuditEvent, Regeneration, User, Webhook, WebhookDelivery
from domain.policy import Policy
from domain.sheets.store import RetrievedSheet
from domain.signin import VerifyResult
from domain.tokens import TokenInfo
from domain.totp_signin import TotpCheck

REGENERATIONS_PATH = "/v1/me/backup-codes/regenerations"


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339_millis(moment)


def regeneration_path(regeneration_id: str) -> str:
    return f"{REGENERATIONS_PATH}/{regeneration_id}"


def regeneration(reg: Regeneration) -> dict[str, Any]:
    """docs/api.md's Regeneration JSON."""
    path = regeneration_path(reg.id)
    return {
        "id": reg.id,
        "status": reg.status,
        "reason": reg.reason,
        "failure": reg.failure,
        "created_at": _ts(reg.created_at),
        "completed_at": _ts(reg.completed_at),
        "expires_at": _ts(reg.expires_at),
        "code_count": reg.code_count,
        "links": {"self": path, "sheet": f"{path}/sheet"},
    }


def mfa_status(status: MfaStatus) -> dict[str, Any]:
    """docs/api.md's MfaStatus JSON."""
    return {
        "enrolled": status.enrolled,
        "enrolled_at": _ts(status.enrolled_at),
        "backup_codes_enabled": status.backup_codes_enabled,
        "backup_codes": None if status.backup_codes is None else _code_set(status.backup_codes),
        "last_set_expired_unseen": status.last_set_expired_unseen,
        "limits": limits(status.limits),
    }


def user(row: User, status: MfaStatus) -> dict[str, Any]:
    """docs/api.md's User JSON: the profile and its MfaStatus, nothing secret."""
    return {
        "user_id": row.external_id,
        "email": row.email,
        "recovery_email": row.recovery_email,
        "display_name": row.display_name,
        "created_at": rfc3339_millis(row.created_at),
        "mfa": mfa_status(status),
    }


def own_event(event: AuditEvent) -> dict[str, Any]:
    """One event of GET /v1/me/events: what happened, when and from where."""
    return {
        "type": event.type,
        "occurred_at": rfc3339_millis(event.occurred_at),
        "outcome": event.outcome,
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "details": event.details,
    }


def _code_set(current: CodeSet) -> dict[str, Any]:
    return {
        "set_id": current.set_id,
        "remaining": current.remaining,
        "total": current.total,
        "low": current.low,
        "generated_at": rfc3339_millis(current.generated_at),
        "last_used_at": _ts(current.last_used_at),
        "format": current.format,
    }


def limits(standing: Standing) -> dict[str, Any]:
    """MfaStatus.limits."""
    return {
        "totp_throttled_until": _ts(standing.totp_throttled_until),
        "totp_locked": standing.totp_locked,
        "backup_codes_locked": standing.backup_codes_locked,
    }


def policy(current: Policy) -> dict[str, Any]:
    """docs/api.md's Policy JSON."""
    return {
        "backup_codes_enabled": current.backup_codes_enabled,
        "code_count": current.code_count,
        "notify_users": current.notify_users,
        "support_contact": current.support_contact,
    }


def verification(result: VerifyResult) -> dict[str, Any]:
    """docs/api.md's VerifyResult JSON."""
    return {
        "accepted": result.accepted,
        "mistyped": result.mistyped,
        "remaining": result.remaining,
        "low": result.low,
    }


def totp_check(result: TotpCheck) -> dict[str, Any]:
    """The answer to POST /v1/users/{id}/totp/verify."""
    return {"accepted": result.accepted, "replayed": result.replayed}


def issued_token(row: ApiToken, plaintext: str) -> dict[str, Any]:
    """The answer to POST /v1/users/{id}/tokens: the token, shown this once."""
    return {
        "token": plaintext,
        "token_id": row.id,
        "role": row.role,
        "expires_at": _ts(row.expires_at),
    }


def token_info(info: TokenInfo) -> dict[str, Any]:
    """A token as GET /v1/org/tokens lists it: never the token, nor its hash."""
    return {
        "token_id": info.token_id,
        "principal_id": info.principal_id,
        "role": info.role,
        "kind": info.kind,
        "created_at": _ts(info.created_at),
        "expires_at": _ts(info.expires_at),
        "last_used_at": _ts(info.last_used_at),
        "revoked_at": _ts(info.revoked_at),
    }


def token_page(infos: Iterable[TokenInfo], next_cursor: str | None) -> dict[str, Any]:
    return {"tokens": [token_info(i) for i in infos], "next": next_cursor}


def audit_verification(result: Verification) -> dict[str, Any]:
    """The body of GET /v1/audit/verification (docs/api.md), plus `reason` in words."""
    return {
        "ok": result.ok,
        "events_checked": result.events_checked,
        "head": result.head,
        "first_bad_seq": result.first_bad_seq,
        "reason": result.reason,
        "checkpoint": result.checkpoint,
        "unsigned_events": result.unsigned_events,
    }


def enrollment(secret: str, otpauth_uri: str) -> dict[str, Any]:
    """The answer to POST /v1/me/mfa/enrollment: the secret, shown this once, and its
    URI as a QR code to scan."""
    return {"secret": secret, "otpauth_uri": otpauth_uri, "qr_svg": otpauth_svg(otpauth_uri)}


def sheet(got: RetrievedSheet, filename: str) -> dict[str, Any]:
    """The JSON form of the sheet: the codes and the PDF (base64) of one retrieval."""
    reg = got.regeneration
    return {
        "set_id": reg.set_id,
        "generated_at": _ts(reg.completed_at or reg.created_at),
        "codes": got.codes,
        "filename": filename,
        "pdf": base64.b64encode(got.pdf).decode("ascii"),
    }


def enrollment_confirmed(first: Regeneration | None) -> dict[str, Any]:
    """The answer to a confirmed enrollment, with the first set's regeneration, if any."""
    return {"enrolled": True, "regeneration": None if first is None else regeneration(first)}


def audit_page(rows: Iterable[AuditEvent | Row[Any]], next_cursor: str | None) -> dict[str, Any]:
    """A page of GET /v1/audit/events: each event as the export writes it."""
    return {"events": [event_to_dict(r) for r in rows], "next": next_cursor}


def webhook(hook: Webhook) -> dict[str, Any]:
    """A webhook as the API shows it: never its secret."""
    return {
        "id": hook.id,
        "url": hook.url,
        "events": list(hook.events),
        "description": hook.description,
        "enabled": hook.enabled,
        "created_at": _ts(hook.created_at),
        "disabled_reason": hook.disabled_reason,
    }


def webhook_delivery(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": str(delivery.id),
        "event_id": delivery.message_id,
        "type": delivery.type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_attempt_at": _ts(delivery.last_attempt_at),
        "next_attempt_at": _ts(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
    }
