"""The organization's webhooks (role `admin`): create, list, change, delete, rotate
the secret, ping, and the deliveries with their replay. A secret is answered once,
when it is made, and never again."""

from __future__ import annotations

import falcon

from api import representations
from api.bodies import Empty, WebhookChange, WebhookCreate, read_body
from api.resources.base import Resource
from domain.audit.query import encode_cursor, parse_page
from domain.clock import utcnow
from domain.errors import InvalidRequest
from domain.notify import webhook_admin
from domain.notify.webhook_addresses import AllowPrivate
from infra.services import Services

BASE = "/v1/org/webhooks"


class _WebhookResource(Resource):
    roles = ("admin",)

    @property
    def allow(self) -> AllowPrivate:
        return self.services.settings.webhook_allow_private


class Webhooks(_WebhookResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(req, WebhookCreate)
        with self.services.unit_of_work() as uow:
            hook, secret = webhook_admin.create(
                uow,
                self.services.box,
                req.context.principal.org_id,
                body.url,
                body.events,
                body.description,
                self.allow,
                req.context.audit,
                utcnow(),
            )
            answer = {**representations.webhook(hook), "secret": secret}
        resp.status = falcon.HTTP_201
        resp.location = f"{BASE}/{answer['id']}"
        resp.media = answer

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self.services.unit_of_work() as uow:
            hooks = webhook_admin.list_all(uow, req.context.principal.org_id)
            resp.media = {"webhooks": [representations.webhook(h) for h in hooks]}


class OneWebhook(_WebhookResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        with self.services.unit_of_work() as uow:
            hook = webhook_admin.get(uow, req.context.principal.org_id, webhook_id)
            resp.media = representations.webhook(hook)

    def on_patch(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        body = read_body(req, WebhookChange)
        changes = webhook_admin.Changes(
            url=body.url if isinstance(body.url, str) else None,
            events=body.events if isinstance(body.events, list) else None,
            description=body.description if isinstance(body.description, str) else None,
            enabled=body.enabled if isinstance(body.enabled, bool) else None,
        )
        with self.services.unit_of_work() as uow:
            hook = webhook_admin.update_webhook(
                uow,
                req.context.principal.org_id,
                webhook_id,
                changes,
                self.allow,
                req.context.audit,
                utcnow(),
            )
            resp.media = representations.webhook(hook)

    def on_delete(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        with self.services.unit_of_work() as uow:
            webhook_admin.delete(uow, req.context.principal.org_id, webhook_id, req.context.audit)
        resp.status = falcon.HTTP_204


class WebhookSecret(_WebhookResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        read_body(req, Empty, allow_empty=True)
        with self.services.unit_of_work() as uow:
            secret = webhook_admin.rotate_secret(
                uow,
                self.services.box,
                req.context.principal.org_id,
                webhook_id,
                req.context.audit,
                utcnow(),
            )
        resp.status = falcon.HTTP_201
        resp.media = {"secret": secret}


class WebhookPing(_WebhookResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        read_body(req, Empty, allow_empty=True)
        with self.services.unit_of_work() as uow:
            delivery = webhook_admin.ping(uow, req.context.principal.org_id, webhook_id, utcnow())
            answer = representations.webhook_delivery(delivery)
        resp.status = falcon.HTTP_202
        resp.media = answer


class WebhookDeliveries(_WebhookResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, webhook_id: str) -> None:
        status = req.get_param("status")
        page = parse_page(req.params)
        for name in req.params:
            if name not in ("status", "limit", "cursor"):
                raise InvalidRequest(f"unknown query parameter {name[:64]!r}", field=name[:64])
        with self.services.unit_of_work() as uow:
            rows, next_id = webhook_admin.deliveries(
                uow,
                req.context.principal.org_id,
                webhook_id,
                status or None,
                page.limit,
                page.after_seq or None,
            )
            resp.media = {
                "deliveries": [representations.webhook_delivery(d) for d in rows],
                "next": None if next_id is None else encode_cursor(next_id),
            }


class DeliveryRetry(_WebhookResource):
    def on_post(
        self, req: falcon.Request, resp: falcon.Response, webhook_id: str, delivery_id: str
    ) -> None:
        read_body(req, Empty, allow_empty=True)
        with self.services.unit_of_work() as uow:
            delivery = webhook_admin.retry(
                uow, req.context.principal.org_id, webhook_id, delivery_id, utcnow()
            )
            answer = representations.webhook_delivery(delivery)
        resp.status = falcon.HTTP_202
        resp.media = answer


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route(BASE, Webhooks(services))
    app.add_route(f"{BASE}/{{webhook_id}}", OneWebhook(services))
    app.add_route(f"{BASE}/{{webhook_id}}/secret", WebhookSecret(services))
    app.add_route(f"{BASE}/{{webhook_id}}/ping", WebhookPing(services))
    app.add_route(f"{BASE}/{{webhook_id}}/deliveries", WebhookDeliveries(services))
    app.add_route(
        f"{BASE}/{{webhook_id}}/deliveries/{{delivery_id}}/retry", DeliveryRetry(services)
    )
