"""What every /v1 resource shares: the services, the answer kept out of caches, the
authenticated user.

`roles` is what the middleware authenticates against (api.middleware); `no_store`
makes it set Cache-Control: no-store before the responder runs, so a resource
cannot forget it (a problem is never cached either: api.errors).
"""

from __future__ import annotations

from typing import ClassVar

import falcon

from domain import accounts
from domain.models import User
from domain.uow import UnitOfWork
from infra.services import Services


class Resource:
    roles: ClassVar[tuple[str, ...]]
    # A method's own roles where they differ from `roles` (api.middleware).
    method_roles: ClassVar[dict[str, tuple[str, ...]]] = {}
    no_store: ClassVar[bool] = True

    def __init__(self, services: Services) -> None:
        self.services = services

    @staticmethod
    def user(uow: UnitOfWork, req: falcon.Request, *, for_update: bool = False) -> User:
        """The user the token belongs to (role `user`), of its own organization;
        `for_update` takes the user's row lock in the same read."""
        p = req.context.principal
        if for_update:
            return accounts.get_locked_user(uow, p.org_id, p.principal_id)
        return accounts.get_user(uow.session, p.org_id, p.principal_id)
