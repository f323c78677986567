"""create_app(settings) -> falcon.App. Nothing happens at import time.

The app publishes the outbox rows of every committed request to the broker
(workers.publish, an after-commit hook of every unit of work), and maps every error to
problem+json in one place (api.errors).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import falcon
import falcon.media
from falcon.inspect import inspect_routes

from api import errors, metrics
from api.middleware import RequestContext
from api.resources import (
    admin,
    audit,
    health,
    me,
    openapi,
    regenerations,
    repudiations,
    signin,
    tokens,
    ui_links,
    users,
    webhooks,
)
from api.ui import pages as ui_pages
from api.ui import session as ui_session
from infra.services import Services
from infra.settings import Settings

if TYPE_CHECKING:
    from workers.publish import Publisher


def create_app(
    settings: Settings, services: Services | None = None, publisher: Publisher | None = None
) -> falcon.App[falcon.Request, falcon.Response]:
    services = services or Services.build(settings)
    if publisher is None:
        # The API calls the workers package only to publish (docs/architecture.md, rule 1).
        from workers.runtime import make_publisher

        publisher = make_publisher(services, batch_marks=True)
    app: falcon.App[falcon.Request, falcon.Response] = falcon.App(
        middleware=[metrics.HttpMetrics(), RequestContext(services)]
    )
    json_handler = falcon.media.JSONHandler()
    app.resp_options.media_handlers[errors.PROBLEM] = json_handler
    app.req_options.strip_url_path_trailing_slash = False
    errors.install(app)

    health.register(app, services, publisher.ping)
    openapi.register(app)
    me.register(app, services)
    regenerations.register(app, services)
    signin.register(app, services)
    admin.register(app, services)
    tokens.register(app, services)
    audit.register(app, services)
    repudiations.register(app, services)
    users.register(app, services)
    webhooks.register(app, services)
    ui_links.register(app, services)
    ui_session.register(app, services)
    ui_pages.register(app, services)
    _require_roles_on_v1(app)
    return app


def _require_roles_on_v1(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Fail at start-up, not in production, when a /v1 resource forgot its `roles`:
    the middleware authenticates only resources that declare them. A resource that is
    meant to be reached without a token says so explicitly (`public = True`)."""
    router = app._router  # falcon.inspect lists paths, not their resources
    for route in inspect_routes(app):
        concrete = re.sub(r"\{[^}]+\}", "x", route.path)
        found = router.find(concrete)
        resource = found[0] if found else None
        if getattr(resource, "public", False) is True:
            if getattr(resource, "roles", None) is not None:
                raise RuntimeError(f"{route.path}: a public resource declares no roles")
            continue
        if route.path.startswith("/v1/") and getattr(resource, "roles", None) is None:
            raise RuntimeError(f"{route.path}: a /v1 resource must declare roles")
