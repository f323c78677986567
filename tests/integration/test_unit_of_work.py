"""The unit of work: commit, roll back, and commit-then-raise for marked refusals."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import accounts, audit
from domain.audit.types import EventType, Outcome
from domain.errors import BackupCodesDisabled, DomainError
from domain.models import AuditEvent
from infra.services import Services
from tests.support.builders import unique


def _org(svc: Services) -> str:
    org_id = unique()
    with svc.unit_of_work() as session:
        accounts.create_org(session, org_id, audit.CLI)
    return org_id


def _refusals(svc: Services, org_id: str) -> int:
    with svc.unit_of_work() as session:
        return len(
            session.execute(
                select(AuditEvent).where(
                    AuditEvent.org_id == org_id, AuditEvent.type == EventType.REGENERATION_REFUSED
                )
            ).all()
        )


def _append_refusal(session: Session, org_id: str) -> None:
    audit.append(
        session,
        org_id,
        EventType.REGENERATION_REFUSED,
        Outcome.DENIED,
        audit.SYSTEM,
        details={"reason": "backup-codes-disabled"},
    )


def test_a_committed_domain_error_keeps_what_was_written_and_still_raises(svc: Services) -> None:
    org_id = _org(svc)
    error = BackupCodesDisabled()
    with pytest.raises(BackupCodesDisabled) as info, svc.unit_of_work() as session:
        _append_refusal(session, org_id)
        raise error.committed()
    assert info.value is error
    assert _refusals(svc, org_id) == 1


def test_an_unmarked_domain_error_rolls_back(svc: Services) -> None:
    org_id = _org(svc)
    with pytest.raises(BackupCodesDisabled), svc.unit_of_work() as session:
        _append_refusal(session, org_id)
        raise BackupCodesDisabled()
    assert _refusals(svc, org_id) == 0


def test_any_other_exception_rolls_back(svc: Services) -> None:
    org_id = _org(svc)
    with pytest.raises(RuntimeError), svc.unit_of_work() as session:
        _append_refusal(session, org_id)
        raise RuntimeError("boom")
    assert _refusals(svc, org_id) == 0


def test_committed_is_per_instance_not_per_class() -> None:
    marked = BackupCodesDisabled().committed()
    assert marked.commit_before_raising is True
    assert BackupCodesDisabled().commit_before_raising is False
    assert DomainError.commit_before_raising is False
