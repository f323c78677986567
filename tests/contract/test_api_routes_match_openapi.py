"""The router and api/openapi.yaml agree: every routed path and method is documented,
every documented one is routed, and /openapi.json serves the document itself.

create_app builds nothing that connects (the engine is lazy, the publisher is a
stand-in), so this stays a unit test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import falcon
import pytest
import yaml
from falcon import inspect, testing

from api.app import create_app
from api.ui import pages as ui_pages
from infra.services import Services
from tests.support.settings import make_settings

DOCUMENT = Path(__file__).resolve().parents[2] / "api" / "openapi.yaml"
HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"}


class _Publisher:
    """Only readiness calls the publisher, and these tests never ask for it."""

    def ping(self) -> bool:
        return True


@pytest.fixture
def app(tmp_path: Path) -> Iterator[falcon.App[falcon.Request, falcon.Response]]:
    settings = make_settings(tmp_path)
    services = Services.build(settings)
    try:
        yield create_app(settings, services, _Publisher())  # type: ignore[arg-type]
    finally:
        services.close()


def routed(app: falcon.App[falcon.Request, falcon.Response]) -> set[tuple[str, str]]:
    """(path template, METHOD) of every responder a resource defines; Falcon's own
    defaults (405 for the rest, OPTIONS) are `internal` and left out, and so are the
    pages and their files (api.ui.pages: HTML, CSS and JS for a browser, no API
    operation; tests/integration/test_ui_serving.py checks them)."""
    return {
        (route.path, method.method)
        for route in inspect.inspect_app(app).routes
        for method in route.methods
        if not method.internal and route.path not in ui_pages.route_templates()
    }


def documented() -> set[tuple[str, str]]:
    doc = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return {
        (path, method.upper())
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in HTTP_METHODS
    }


def test_the_router_is_not_empty(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    # Guards the comparisons below against walking nothing.
    found = routed(app)
    assert ("/v1/me/backup-codes/regenerations", "POST") in found
    assert len(found) >= 15


def test_routes_are_documented(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    assert routed(app) - documented() == set()


def test_documented_operations_are_routed(app: falcon.App[falcon.Request, falcon.Response]) -> None:
    assert documented() - routed(app) == set()


def test_resources_admit_the_roles_the_document_names(
    app: falcon.App[falcon.Request, falcon.Response],
) -> None:
    """x-roles (or x-role alone) is what the resource's `roles` admits; `any` is `()`."""
    doc = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    router = app._router  # falcon.inspect lists paths, not their resources
    checked = 0
    for path, item in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        resource = router.find(path.replace("{", "").replace("}", ""))[0]
        for method, operation in item.items():
            if method.upper() not in HTTP_METHODS:
                continue
            if operation.get("security") == []:
                assert getattr(resource, "public", False), f"{method.upper()} {path}"
                continue  # public (the repudiation link: its ticket is the credential)
            named = operation.get("x-roles", [operation["x-role"]])
            expected = () if named == ["any"] else tuple(named)
            admitted = getattr(resource, "method_roles", {}).get(method.upper(), resource.roles)
            if admitted == () and path.startswith("/v1/audit/"):
                continue  # any token reaches the audit resources, which refuse on record
            assert set(admitted) == set(expected), f"{method.upper()} {path}"
            checked += 1
    assert checked >= 15


def test_openapi_json_serves_the_document(
    app: falcon.App[falcon.Request, falcon.Response],
) -> None:
    got = testing.TestClient(app).simulate_get("/openapi.json")
    assert got.status_code == 200
    assert got.headers["Content-Type"].startswith("application/json")
    assert got.json == yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert got.json["openapi"].startswith("3.1")
