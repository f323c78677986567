"""The webhook endpoints over HTTP (the real app on a migrated SQLite database, no
worker: deliveries stay pending for the test to look at)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.notify import webhook_admin
from infra.migrate import upgrade
from tests.support.api_world import ApiWorld, api_world
from tests.support.records import events
from tests.support.settings import make_settings

HOOKS = "/v1/org/webhooks"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path)  # embedded: MFA_WEBHOOK_ALLOW_PRIVATE=loopback
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as built:
        yield built


@pytest.fixture
def admin(world: ApiWorld) -> tuple[str, str]:
    org_id = world.org()
    return org_id, world.token(org_id, "root", "admin")


def create(world: ApiWorld, token: str, **body: object) -> object:
    sent = {"url": "http://127.0.0.1:9/hook", "events": ["*"], **body}
    return world.call("POST", HOOKS, token, sent)


def test_create_answers_the_secret_once_and_never_again(
    world: ApiWorld, admin: tuple[str, str]
) -> None:
    org_id, token = admin
    got = create(world, token, description="siem")
    assert got.status_code == 201, got.text  # type: ignore[attr-defined]
    body = got.json  # type: ignore[attr-defined]
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert body["enabled"] is True and body["disabled_reason"] is None
    assert body["events"] == ["*"] and body["description"] == "siem"
    one = world.call("GET", f"{HOOKS}/{body['id']}", token)
    listed = world.call("GET", HOOKS, token)
    for answer in (one, listed):
        assert answer.status_code == 200
        assert secret not in answer.text and "secret" not in answer.text
    # The trail records the creation, never the secret.
    (created,) = events(world.services, org_id, "webhook.created")
    assert secret not in json.dumps(created.details)
    assert created.details["webhook_id"] == body["id"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/x", "https"),
        ("https://user:pw@hooks.example.com/x", "user information"),
        ("https://169.254.169.254/latest/meta-data", "not admitted"),
        ("https://[::ffff:169.254.169.254]/", "not admitted"),
        ("https://100.64.0.1/", "not admitted"),
        ("https://10.0.0.1/", "not admitted"),  # private needs MFA_WEBHOOK_ALLOW_PRIVATE=private
        ("not a url", "https"),
    ],
)
def test_a_url_that_is_not_admitted_is_422_naming_url(
    world: ApiWorld, admin: tuple[str, str], url: str, why: str
) -> None:
    got = create(world, admin[1], url=url)
    assert got.status_code == 422, got.text  # type: ignore[attr-defined]
    assert got.json["field"] == "url" and why in got.json["detail"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": []}, "events"),
        ({"events": ["mfa.nothing"]}, "events"),
        ({"events": [3]}, "events"),
        ({"description": "x" * 501}, "description"),
        ({"secret": "whsec_mine"}, "secret"),
    ],
)
def test_bad_fields_are_422_naming_them(
    world: ApiWorld, admin: tuple[str, str], body: dict[str, object], field: str
) -> None:
    got = create(world, admin[1], **body)
    assert got.status_code == 422, got.text  # type: ignore[attr-defined]
    assert got.json["field"] == field  # type: ignore[attr-defined]


def test_at_most_ten_webhooks_an_organization(world: ApiWorld, admin: tuple[str, str]) -> None:
    for _ in range(webhook_admin.MAX_WEBHOOKS):
        assert create(world, admin[1]).status_code == 201  # type: ignore[attr-defined]
    got = create(world, admin[1])
    assert got.status_code == 409  # type: ignore[attr-defined]
    assert got.json["type"] == "/problems/too-many-webhooks"  # type: ignore[attr-defined]
    other = world.org()
    assert create(world, world.token(other, "root", "admin")).status_code == 201  # type: ignore[attr-defined]


def test_rotation_answers_a_new_secret_and_is_audited(
    world: ApiWorld, admin: tuple[str, str]
) -> None:
    org_id, token = admin
    hook = create(world, token).json  # type: ignore[attr-defined]
    got = world.call("POST", f"{HOOKS}/{hook['id']}/secret", token)
    assert got.status_code == 201
    assert got.json["secret"].startswith("whsec_") and got.json["secret"] != hook["secret"]
    (rotated,) = events(world.services, org_id, "webhook.secret_rotated")
    assert got.json["secret"] not in json.dumps(rotated.details)


def test_deliveries_pause_while_disabled_and_resume_when_enabled(
    world: ApiWorld, admin: tuple[str, str]
) -> None:
    _, token = admin
    hook = create(world, token).json  # type: ignore[attr-defined]
    path = f"{HOOKS}/{hook['id']}"
    off = world.call("PATCH", path, token, {"enabled": False})
    assert off.status_code == 200 and off.json["enabled"] is False
    assert off.json["disabled_reason"]
    assert world.call("POST", f"{path}/ping", token).status_code == 202
    assert world.call("POST", f"{path}/ping", token).status_code == 202
    listed = world.call("GET", f"{path}/deliveries?status=pending", token).json
    assert [d["type"] for d in listed["deliveries"]] == ["webhook.ping", "webhook.ping"]
    on = world.call("PATCH", path, token, {"enabled": True})
    assert on.json["enabled"] is True and on.json["disabled_reason"] is None
    assert world.call("GET", f"{path}/deliveries?status=pending", token).json["deliveries"]


def test_the_deliveries_list_pages_newest_first_and_filters(
    world: ApiWorld, admin: tuple[str, str]
) -> None:
    _, token = admin
    hook = create(world, token).json  # type: ignore[attr-defined]
    path = f"{HOOKS}/{hook['id']}"
    ids = [world.call("POST", f"{path}/ping", token).json["id"] for _ in range(3)]
    first = world.call("GET", f"{path}/deliveries?limit=2", token).json
    assert [d["id"] for d in first["deliveries"]] == ids[::-1][:2]
    rest = world.call("GET", f"{path}/deliveries?limit=2&cursor={first['next']}", token).json
    assert [d["id"] for d in rest["deliveries"]] == [ids[0]] and rest["next"] is None
    assert world.call("GET", f"{path}/deliveries?status=dead", token).json["deliveries"] == []
    for bad in ("status=gone", "limit=0", "limit=1001", "cursor=nope", "colour=red"):
        got = world.call("GET", f"{path}/deliveries?{bad}", token)
        assert got.status_code == 422, (bad, got.text)
        assert got.json["field"] == bad.split("=")[0]
    retry = world.call("POST", f"{path}/deliveries/{ids[0]}/retry", token)
    assert retry.status_code == 202 and retry.json["status"] == "pending"
    assert world.call("POST", f"{path}/deliveries/999999/retry", token).status_code == 404
    assert world.call("POST", f"{path}/deliveries/x/retry", token).status_code == 404


def test_delete_removes_the_webhook(world: ApiWorld, admin: tuple[str, str]) -> None:
    org_id, token = admin
    hook = create(world, token).json  # type: ignore[attr-defined]
    assert world.call("DELETE", f"{HOOKS}/{hook['id']}", token).status_code == 204
    assert world.call("GET", f"{HOOKS}/{hook['id']}", token).status_code == 404
    assert events(world.services, org_id, "webhook.deleted")
