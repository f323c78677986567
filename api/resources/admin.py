"""Administration (role `admin`): policy, revocation of a user's codes, unlock, MFA reset."""

from __future__ import annotations

import falcon
from msgspec import UnsetType

from api import representations
from api.bodies import Empty, Policy, read_body
from api.resources.base import Resource
from api.resources.signin import possible_user_id
from domain import admin
from domain.policy import NotifyChange
from infra.services import Services


class _AdminResource(Resource):
    roles = ("admin",)
    no_store = False  # the contract never asked these answers out of caches


class OrgPolicy(_AdminResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        with self.services.unit_of_work() as uow:
            org = admin.get_policy(uow.session, req.context.principal.org_id)
            resp.media = representations.policy(org)

    def on_put(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = read_body(req, Policy)
        contact = body.support_contact
        notify = NotifyChange(
            notify_users=None if isinstance(body.notify_users, UnsetType) else body.notify_users,
            support_contact=contact if isinstance(contact, str) else None,
            clear_support_contact=contact is None,
        )
        with self.services.unit_of_work() as uow:
            org = admin.put_policy(
                uow,
                req.context.principal.org_id,
                body.backup_codes_enabled,
                body.code_count,
                req.context.audit,
                notify,
            )
            resp.media = representations.policy(org)


class Revocation(_AdminResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        read_body(req, Empty, allow_empty=True)
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            admin.revoke_codes(uow, req.context.principal.org_id, user_id, req.context.audit)
        resp.status = falcon.HTTP_204


class UserMfa(_AdminResource):
    def on_delete(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            admin.reset_mfa(uow, req.context.principal.org_id, user_id, req.context.audit)
        resp.status = falcon.HTTP_204


class MfaUnlock(_AdminResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response, user_id: str) -> None:
        read_body(req, Empty, allow_empty=True)
        user_id = possible_user_id(user_id)
        with self.services.unit_of_work() as uow:
            admin.unlock(uow, req.context.principal.org_id, user_id, req.context.audit)
        resp.status = falcon.HTTP_204


def register(app: falcon.App[falcon.Request, falcon.Response], services: Services) -> None:
    app.add_route("/v1/org/policy", OrgPolicy(services))
    app.add_route("/v1/users/{user_id}/backup-codes/revocation", Revocation(services))
    app.add_route("/v1/users/{user_id}/mfa", UserMfa(services))
    app.add_route("/v1/users/{user_id}/mfa/unlock", MfaUnlock(services))
