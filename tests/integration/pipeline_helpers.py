"""Helpers shared by the enrollment and regeneration tests (no fixtures here)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from domain import accounts, enrollment, regeneration
from domain.models import Regeneration, Sheet, User
from domain.sheets.store import RetrievedSheet
from infra.services import Services
from tests.support.builders import NOW as BUILDERS_NOW
from tests.support.builders import USER_CTX as CTX
from tests.support.builders import Person, new_org, new_user
from tests.support.codes import wrong_totp
from tests.support.records import process

# Ten seconds into a TOTP step (the step begins at the builders' NOW).
NOW = BUILDERS_NOW + timedelta(seconds=10)
AUTO = object()  # request(): the right code for the moment


def start(svc: Services, org_id: str, external_id: str = "alice") -> str:
    with svc.unit_of_work() as uow:
        secret, _ = enrollment.start_enrollment(
            uow, svc, user(uow.session, org_id, external_id), CTX
        )
    return secret


def enrolled(
    svc: Services,
    *,
    enabled: bool = True,
    code_count: int = 5,
    at: datetime = NOW,
    org_id: str | None = None,
    external_id: str = "alice",
    settle: bool = True,
) -> tuple[Person, str | None]:
    """A confirmed user, and the id of the enrollment's regeneration (None when off).
    `settle`: the worker has made that first set (a user has one regeneration
    pending at a time, so a later request would otherwise be regeneration-pending)."""
    org_id = org_id or new_org(svc, enabled=enabled, code_count=code_count)
    new_user(svc, org_id, external_id)
    secret = start(svc, org_id, external_id)
    person = Person(org_id, external_id, secret)
    with svc.unit_of_work() as uow:
        reg = enrollment.confirm_enrollment(
            uow, svc, user(uow.session, org_id, external_id), person.code(at), at, CTX
        )
        first = None if reg is None else reg.id
    if first is not None and settle:
        process(svc, first, at)
    return person, first


def user(session: Session, org_id: str, external_id: str = "alice") -> User:
    return accounts.get_user(session, org_id, external_id)


def request(
    svc: Services,
    person: Person,
    at: datetime,
    *,
    code: object = AUTO,
    key: str | None = None,
) -> regeneration.RequestOutcome:
    with svc.unit_of_work() as uow:
        return regeneration.request_regeneration(
            uow,
            svc,
            user(uow.session, person.org_id, person.external_id),
            person.code(at) if code is AUTO else code,
            key,
            at,
            CTX,
        )


def load_or_none(svc: Services, regeneration_id: str) -> Regeneration | None:
    with svc.unit_of_work() as uow:
        return uow.session.get(Regeneration, regeneration_id)


def stored_sheet(svc: Services, regeneration_id: str) -> tuple[bytes, str] | None:
    """The stored sheet decrypted (pdf, text), read without retrieving it."""
    with svc.unit_of_work() as uow:
        sheet = uow.session.get(Sheet, regeneration_id)
        if sheet is None:
            return None
        return svc.box.decrypt(sheet.pdf_ciphertext), svc.box.decrypt_text(sheet.text_ciphertext)


def retrieve(svc: Services, person: Person, regeneration_id: str, kind: str, at: datetime) -> bytes:
    with svc.unit_of_work() as uow:
        body, _ = regeneration.retrieve_sheet(
            uow,
            svc,
            user(uow.session, person.org_id, person.external_id),
            regeneration_id,
            kind,
            at,
            CTX,
        )
        return body


def retrieve_forms(
    svc: Services, person: Person, regeneration_id: str, kind: str, at: datetime
) -> RetrievedSheet:
    """Both forms at once, as the API's JSON retrieval asks for them."""
    with svc.unit_of_work() as uow:
        return regeneration.retrieve_sheet_forms(
            uow,
            svc,
            user(uow.session, person.org_id, person.external_id),
            regeneration_id,
            kind,
            at,
            CTX,
        )


def enrolled_and_fetched(svc: Services, at: datetime = NOW) -> Person:
    """A confirmed user whose enrollment set was issued and its sheet fetched at `at`:
    nothing of theirs is pending, and no sheet is waiting."""
    person, enrollment_id = enrolled(svc, at=at)
    assert enrollment_id is not None
    assert process(svc, enrollment_id, at) == "ready"
    retrieve(svc, person, enrollment_id, "text", at)
    return person


def wrong_code(person: Person, at: datetime) -> str:
    """A well-formed TOTP value that is not the one for `at`."""
    return wrong_totp(person.secret, at)
