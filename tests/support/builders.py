"""Test data, made through the domain: organizations, users, a confirmed TOTP
enrollment and a set of codes. Shared by the tests and bench/.

Rows that a flow would take many steps to reach (an enrollment, a code set) are
written directly, with the secret encrypted by the services' box and the codes
hashed by their hasher (or given hashes), as the worker would store them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain import accounts, audit, policy
from domain import totp as otp
from domain.codes import CodeHasher, PlainCode, generate_codes, new_set_id
from domain.models import BackupCode, TotpEnrollment
from infra.services import Services

# The tests' moment: fixed, so that windows, expiries and TOTP steps are exact.
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

# The actors: a user acting for themself, the sign-in front end, an administrator.
USER_CTX = audit.Context(
    principal_id="alice", role="user", token_id="tok-1", request_id="req-1", source_ip="127.0.0.1"
)
SIGNIN_CTX = audit.Context(
    principal_id="signin-frontend",
    role="service",
    token_id="tok-svc",
    request_id="req-signin",
    source_ip="127.0.0.1",
)
ADMIN_CTX = audit.Context(
    principal_id="root", role="admin", token_id="tok-admin", request_id="req-adm"
)


@dataclass(frozen=True)
class Person:
    """A user with a confirmed TOTP enrollment, and the secret to make their codes."""

    org_id: str
    external_id: str
    secret: str

    def code(self, at: datetime | None = None, offset: int = 0) -> str:
        """The TOTP value for `at` (now), `offset` steps on."""
        return otp.code_for_step(self.secret, otp.step_at(at or datetime.now(UTC)) + offset)


def unique(prefix: str = "org") -> str:
    """Tests share one database per session; each makes its own organization."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_org(svc: Services, *, enabled: bool = True, code_count: int = 5) -> str:
    org_id = unique()
    with svc.unit_of_work() as uow:
        org = accounts.create_org(uow, org_id, audit.CLI)
        if not enabled or code_count != 5:
            policy.set_policy(uow, org, enabled, code_count, audit.CLI)
    return org_id


def new_user(
    svc: Services, org_id: str, external_id: str = "alice", email: str | None = None
) -> str:
    """The new user's id."""
    with svc.unit_of_work() as uow:
        return accounts.create_user(uow, org_id, external_id, email, audit.CLI).id


def add_enrollment(
    session: Session,
    svc: Services,
    user_id: str,
    secret: str,
    at: datetime,
    *,
    confirmed: bool = True,
) -> None:
    """A TOTP enrollment row (confirmed at `at` unless told otherwise)."""
    session.add(
        TotpEnrollment(
            user_id=user_id,
            secret_ciphertext=svc.box.encrypt_text(secret),
            confirmed_at=at if confirmed else None,
            created_at=at,
        )
    )


def add_code_set(
    session: Session,
    user_id: str,
    hashed_codes: Sequence[tuple[PlainCode, str]],
    at: datetime,
    generation: int = 1,
) -> str:
    """One set of (code, hash) rows next to whatever the user has (nothing is
    deactivated); its set id."""
    set_id = new_set_id()
    session.add_all(
        BackupCode(
            user_id=user_id,
            set_id=set_id,
            generation=generation,
            position=code.position,
            locator=code.locator,
            symbols=code.symbols,
            hash=hashed,
            created_at=at,
        )
        for code, hashed in hashed_codes
    )
    return set_id


def enroll(svc: Services, user_id: str, *, confirmed: bool = True, at: datetime = NOW) -> None:
    with svc.unit_of_work() as uow:
        add_enrollment(uow.session, svc, user_id, otp.new_secret(), at, confirmed=confirmed)


def insert_codes(
    svc: Services,
    user_id: str,
    count: int = 5,
    *,
    at: datetime = NOW,
    hasher: CodeHasher | None = None,
    codes: Sequence[PlainCode] | None = None,
) -> tuple[str, list[PlainCode]]:
    """A new set added next to whatever the user has (nothing is deactivated):
    `count` new codes, or the `codes` given (an older set, a chosen locator)."""
    codes = list(codes) if codes is not None else generate_codes(count)
    hashes = (hasher or svc.hasher).hash_all(codes)
    with svc.unit_of_work() as uow:
        previous = uow.session.execute(
            select(func.max(BackupCode.generation)).where(BackupCode.user_id == user_id)
        ).scalar()
        pairs = list(zip(codes, hashes, strict=True))
        set_id = add_code_set(uow.session, user_id, pairs, at, (previous or 0) + 1)
    return set_id, codes


@dataclass(frozen=True)
class Holder:
    """An enrolled user and the plaintext of their current set (display form)."""

    org_id: str
    external_id: str
    user_id: str
    set_id: str
    codes: tuple[str, ...]


def holder(
    svc: Services,
    count: int = 5,
    *,
    enabled: bool = True,
    org_id: str | None = None,
    external_id: str = "alice",
    confirmed: bool = True,
    hasher: CodeHasher | None = None,
    codes: Sequence[PlainCode] | None = None,
) -> Holder:
    """An enrolled user holding a set of `count` codes, or of the `codes` given (in a
    new organization unless `org_id` is given)."""
    org_id = org_id or new_org(svc, enabled=enabled)
    user_id = new_user(svc, org_id, external_id)
    enroll(svc, user_id, confirmed=confirmed)
    set_id, codes = insert_codes(svc, user_id, count, hasher=hasher, codes=codes)
    return Holder(org_id, external_id, user_id, set_id, tuple(c.display for c in codes))
