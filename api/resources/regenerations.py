"""Regenerations (role `user`): request one, poll it, fetch its sheet exactly once."""

from __future__ import annotations

import falcon

from api import representations
from api.bodies import Totp, read_body
from api.resources.base import Resource
from domain import regeneration
from domain.sheets.render import sheet_filename
from infra.db import utcnow
from infra.services import Services

PDF = "application/pdf"
TEXT = "text/plain"
JSON = "application/json"
# The media type a client prefers -> the form the domain is asked for (PDF by default).
_KINDS = {PDF: "pdf", TEXT: "text", JSON: "json"}


class Regenerations(Resource):
    roles = ("user",)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(req, Totp)
        key = req.get_header("Idempotency-Key")
        with self.services.unit_of_work() as uow:
            # Locked in the same read: request_regeneration needs the lock anyway.
            user = self.user(uow, req, for_update=True)
            outcome = regeneration.request_regeneration(
                uow, self.services, user, body.totp, key, utcnow(), req.context.audit
            )
            answer = representations.regeneration(outcome.regeneration)
        # The outbox row is published by the after-commit hook (workers.publish).
        resp.status = falcon.HTTP_202
        resp.location = answer["links"]["self"]
        resp.media = answer


class RegenerationItem(Resource):
    roles = ("user",)

    def on_get(self, req: falcon.Request, resp: falcon.Response, regeneration_id: str) -> None:
        with self.services.unit_of_work() as uow:
            reg = regeneration.get_regeneration(uow.session, self.user(uow, req), regeneration_id)
            resp.media = representations.regeneration(reg)


class RegenerationSheet(Resource):
    roles = ("user",)

    def on_get(self, req: falcon.Request, resp: falcon.Response, regeneration_id: str) -> None:
        # PDF unless the client prefers the text or the JSON form (docs/api.md).
        kind = _KINDS.get(req.client_prefers(list(_KINDS)) or PDF, "pdf")
        with self.services.unit_of_work() as uow:
            got = regeneration.retrieve_sheet_forms(
                uow,
                self.services,
                self.user(uow, req),
                regeneration_id,
                kind,
                utcnow(),
                req.context.audit,
            )
        reg = got.regeneration
        filename = sheet_filename(reg.completed_at or reg.created_at)
        resp.set_header("X-Content-Type-Options", "nosniff")
        if kind == "json":
            # Everything a page needs for copy, download and print, from this one answer.
            resp.media = representations.sheet(got, filename)
        elif kind == "text":
            resp.content_type = "text/plain; charset=utf-8"
            resp.data = got.text.encode()
        else:
            resp.content_type = PDF
            resp.downloadable_as = filename
            resp.data = got.pdf


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    base = representations.REGENERATIONS_PATH
    app.add_route(base, Regenerations(services))
    app.add_route(base + "/{regeneration_id}", RegenerationItem(services))
    app.add_route(base + "/{regeneration_id}/sheet", RegenerationSheet(services))
