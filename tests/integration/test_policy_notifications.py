"""The policy's mail settings over HTTP: notify_users and support_contact, kept when
left out, checked, audited with the rest of the policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from domain.audit.types import EventType
from domain.models import AuditEvent
from infra.migrate import upgrade
from tests.support.api_world import ApiWorld, api_world
from tests.support.settings import make_settings

POLICY = "/v1/org/policy"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    settings = make_settings(tmp_path_factory.mktemp("policy-mail"))
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as built:
        yield built


def admin_of(world: ApiWorld) -> tuple[str, str]:
    org = world.org()
    return org, world.token(org, "root", "admin")


def put(world: ApiWorld, admin: str, **fields: Any) -> Any:
    body = {"backup_codes_enabled": True, "code_count": 5, **fields}
    return world.call("PUT", POLICY, admin, json=body)


def test_a_new_organization_notifies_users_and_names_no_contact(world: ApiWorld) -> None:
    _, admin = admin_of(world)
    got = world.call("GET", POLICY, admin)
    assert got.status_code == 200
    assert got.json["notify_users"] is True and got.json["support_contact"] is None


def test_the_mail_settings_are_set_kept_when_left_out_and_removed_by_null(
    world: ApiWorld,
) -> None:
    org, admin = admin_of(world)
    set_ = put(world, admin, notify_users=False, support_contact="  help@acme.example ")
    assert set_.status_code == 200, set_.text
    assert (set_.json["notify_users"], set_.json["support_contact"]) == (
        False,
        "help@acme.example",
    )
    kept = put(world, admin, code_count=7)
    assert kept.status_code == 200
    assert kept.json == {
        "backup_codes_enabled": True,
        "code_count": 7,
        "notify_users": False,
        "support_contact": "help@acme.example",
    }
    removed = put(world, admin, support_contact=None, notify_users=True)
    assert (removed.json["notify_users"], removed.json["support_contact"]) == (True, None)
    with world.services.unit_of_work() as uow:
        changes = [
            e.details
            for e in uow.session.execute(
                select(AuditEvent)
                .where(AuditEvent.org_id == org, AuditEvent.type == EventType.POLICY_CHANGED)
                .order_by(AuditEvent.seq)
            ).scalars()
        ]
    assert changes[0]["old"]["notify_users"] is True
    assert changes[0]["new"]["support_contact"] == "help@acme.example"
    assert changes[-1]["new"] == {
        "backup_codes_enabled": True,
        "code_count": 5,
        "notify_users": True,
        "support_contact": None,
    }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"support_contact": "x" * 201}, "support_contact"),
        ({"support_contact": "line one\r\nBcc: evil@example.com"}, "support_contact"),
        ({"support_contact": 5}, "support_contact"),
        ({"notify_users": "yes"}, "notify_users"),
        ({"notify_users": None}, "notify_users"),
    ],
)
def test_bad_mail_settings_are_refused_naming_the_field(
    world: ApiWorld, fields: dict[str, Any], field: str
) -> None:
    _, admin = admin_of(world)
    got = put(world, admin, **fields)
    assert got.status_code == 422, got.text
    assert got.json["field"] == field
    assert world.call("GET", POLICY, admin).json["support_contact"] is None


def test_two_hundred_characters_of_contact_are_taken(world: ApiWorld) -> None:
    _, admin = admin_of(world)
    text = "Call the help desk on +1 555 0100, or write to help@acme.example. " * 3
    got = put(world, admin, support_contact=text[:200])
    assert got.status_code == 200 and got.json["support_contact"] == text[:200].strip()
