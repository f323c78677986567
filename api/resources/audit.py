"""GET /v1/audit/events and GET /v1/audit/verification: role `auditor`, own organization only.

Reading, exporting and verifying are audited themselves, in the same chain.
"""

from __future__ import annotations

from typing import Any

import falcon

from api import representations
from api.resources.base import Resource
from domain import throttles
from domain.audit import review
from domain.audit.export import csv_chunks, ndjson_chunks, stream_events
from domain.audit.query import Filters, parse_filters, parse_page, record_review
from domain.audit.types import EventType, Outcome
from domain.clock import utcnow
from domain.errors import Forbidden, InvalidRequest
from infra.services import Services

NDJSON = "application/x-ndjson"
CSV = "text/csv"
_FORMATS = ("application/json", NDJSON, CSV)
# `?format=`: a plain link (the audit page's download) cannot set Accept.
_BY_NAME = {"csv": CSV, "ndjson": NDJSON}


def _auditor(req: falcon.Request, services: Services, attempted: str) -> Any:
    """The principal, if it is an auditor; otherwise the refusal is recorded, then raised."""
    principal = req.context.principal
    if principal.role != "auditor":
        with services.unit_of_work() as uow:
            # Past the minute's refusals of this token and source: 429, the chain untouched.
            throttles.refusal_gate(uow.session, principal.token_id, req.context.audit.source_ip)
            record_review(
                uow,
                principal.org_id,
                attempted,
                Outcome.DENIED,
                req.context.audit,
                {"reason": "role", "path": req.path},
            )
            raise uow.commit_refusal(Forbidden("only an auditor token may read the audit trail"))
    return principal


def _format(value: str | list[str] | None) -> str | None:
    """The media type `?format=` names, None when absent; anything else is refused."""
    if value is None:
        return None
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    raise InvalidRequest("format must be csv or ndjson, given once", field="format")


class AuditEvents(Resource):
    roles = ()  # any token; a refused reader is recorded (_auditor)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        org_id = _auditor(req, self.services, EventType.AUDIT_READ).org_id
        params = dict(req.params)
        named = _format(params.pop("format", None))
        filters = parse_filters(params)
        pagination = parse_page(params)  # validated for every format
        wanted = named or req.client_prefers(list(_FORMATS)) or "application/json"
        if wanted == "application/json":
            with self.services.unit_of_work() as uow:
                rows, next_cursor = review.read_page(
                    uow, org_id, filters, pagination, req.context.audit
                )
                resp.media = representations.audit_page(rows, next_cursor)
            return
        self._export(req, resp, org_id, filters, wanted)

    def _export(
        self, req: falcon.Request, resp: falcon.Response, org_id: str, filters: Filters, fmt: str
    ) -> None:
        kind = "ndjson" if fmt == NDJSON else "csv"
        with self.services.unit_of_work() as uow:
            pinned, _ = review.start_export(uow, org_id, filters, kind, "api", req.context.audit)
        # Each batch opens its own short transaction: a slow reader holds no lock.
        rows = stream_events(self.services.unit_of_work, org_id, pinned)
        resp.content_type = fmt + ("; charset=utf-8" if fmt == CSV else "")
        # Org ids are [a-z0-9_.-], safe inside the quoted filename.
        resp.downloadable_as = f"audit-{org_id}-{utcnow():%Y%m%dT%H%M%SZ}.{kind}"
        resp.stream = ndjson_chunks(rows) if fmt == NDJSON else csv_chunks(rows)


class AuditVerification(Resource):
    roles = ()  # any token; a refused reader is recorded (_auditor)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        org_id = _auditor(req, self.services, EventType.AUDIT_VERIFIED).org_id
        with self.services.unit_of_work() as uow:
            result = review.verify_recorded(uow, org_id, self.services.settings, req.context.audit)
        resp.media = representations.audit_verification(result)


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/audit/events", AuditEvents(services))
    app.add_route("/v1/audit/verification", AuditVerification(services))
