"""Reading back what the service stored, and the worker's use case run inline."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from domain import regeneration
from domain.models import AuditEvent, Regeneration
from infra.services import Services
from tests.support.builders import NOW


def events(svc: Services, org_id: str, type_: str | None = None) -> list[AuditEvent]:
    """The organization's audit events (of one type, if given), in order."""
    with svc.unit_of_work() as uow:
        query = select(AuditEvent).where(AuditEvent.org_id == org_id)
        if type_ is not None:
            query = query.where(AuditEvent.type == type_)
        return list(uow.session.execute(query.order_by(AuditEvent.seq)).scalars())


def load_regeneration(svc: Services, regeneration_id: str) -> Regeneration:
    with svc.unit_of_work() as uow:
        reg = uow.session.get(Regeneration, regeneration_id)
        assert reg is not None
        return reg


def process(svc: Services, regeneration_id: str, at: datetime = NOW) -> str:
    """What the worker does with a queued regeneration, here and now; its status."""
    with svc.unit_of_work() as uow:
        return regeneration.process_regeneration(uow, svc, regeneration_id, at)
