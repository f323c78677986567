"""TOTP (RFC 6238, 30 s, 6 digits): secrets, verification for a given moment, replay.

Verification is for the moment a request was accepted, not the moment a
worker gets to it, and each time step is accepted at most once per user:
the accepted step must be strictly greater than the last accepted one.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from urllib.parse import quote

import pyotp

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1  # steps either side


class Verdict(Enum):
    ACCEPTED = "accepted"
    INVALID = "invalid-totp"
    REPLAYED = "totp-replayed"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    step: int | None = None
    drift: int = 0


def new_secret() -> str:
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer
    )
    # pyotp quotes the label; make sure a ':' in names cannot split issuer/account.
    assert uri.startswith("otpauth://totp/" + quote(issuer))
    return uri


def step_at(moment: datetime) -> int:
    return int(moment.timestamp()) // STEP_SECONDS


def code_for_step(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def is_well_formed(value: object) -> bool:
    return isinstance(value, str) and len(value) == DIGITS and value.isascii() and value.isdigit()


def judge(secret: str, submitted: str, at: datetime, last_step: int | None) -> Judgement:
    """Accept `submitted` if it matches a step within +-1 of `at` that is later
    than `last_step`. Every candidate is compared in constant time, all of them,
    so the position of a match does not show in the timing."""
    if not is_well_formed(submitted):
        return Judgement(Verdict.INVALID)
    centre = step_at(at)
    matches = [
        centre + offset
        for offset in range(-WINDOW, WINDOW + 1)
        if hmac.compare_digest(code_for_step(secret, centre + offset).encode(), submitted.encode())
    ]
    if not matches:
        return Judgement(Verdict.INVALID)
    fresh = [s for s in matches if last_step is None or s > last_step]
    if not fresh:
        return Judgement(Verdict.REPLAYED, max(matches))
    return Judgement(Verdict.ACCEPTED, fresh[0], fresh[0] - centre)
