"""A revocation holds from the next request on in every API process: two real gunicorn
processes on one PostgreSQL database. Nothing caches a token, so a token revoked
through process A (by an administrator, or by its own sign-out) is 401 at once in
process B, and an expired one is 401 in both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from domain import accounts, audit, tokens
from infra.services import Services
from tests.support.api_processes import ApiProcess, two_apis
from tests.support.builders import new_org
from tests.support.settings import pg_amqp_settings

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

STATUS = "/v1/me/mfa"


@dataclass
class Pair:
    services: Services
    a: ApiProcess
    b: ApiProcess
    org: str
    admin: str


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, pg_database_url: str, amqp_url: str
) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("revocation")
    settings = pg_amqp_settings(workdir, pg_database_url, amqp_url)
    services = Services.build(settings)
    try:
        with two_apis(settings, workdir) as (a, b):
            org = new_org(services)
            with services.unit_of_work() as uow:
                accounts.create_user(uow, org, "alice", None, audit.CLI)
                _, admin = tokens.issue(uow, org, "root", "admin", audit.CLI)
            yield Pair(services, a, b, org, admin)
    finally:
        services.close()


def _user_token(p: Pair, via: ApiProcess) -> dict[str, str]:
    got = via.request("POST", "/v1/users/alice/tokens", p.admin, {"ttl_seconds": 600})
    assert got.status == 201, (got.body, via.tail())
    return dict(got.body)


UNAUTHENTICATED = (401, "/problems/unauthenticated", "Bearer")


def _refusal(api: ApiProcess, token: str) -> tuple[int, str, str | None]:
    """What `api` answers the token: status, problem type and WWW-Authenticate."""
    got = api.request("GET", STATUS, token)
    return got.status, got.body.get("type", ""), got.headers.get("www-authenticate")


@pytest.mark.parametrize("first", ["a", "b"])
def test_an_admins_revocation_through_one_process_holds_in_the_other(
    pair: Pair, first: str
) -> None:
    here, there = (pair.a, pair.b) if first == "a" else (pair.b, pair.a)
    issued = _user_token(pair, here)
    # Both processes have served the token (a cache, if any, would hold it now).
    for api in (here, there):
        assert api.request("GET", STATUS, issued["token"]).status == 200
    revoked = here.request("DELETE", f"/v1/org/tokens/{issued['token_id']}", pair.admin)
    assert revoked.status == 204, (revoked.body, here.tail())
    assert _refusal(there, issued["token"]) == UNAUTHENTICATED
    assert _refusal(here, issued["token"]) == UNAUTHENTICATED


def test_a_sign_out_through_one_process_holds_in_the_other(pair: Pair) -> None:
    issued = _user_token(pair, pair.b)
    for api in (pair.a, pair.b):
        assert api.request("GET", STATUS, issued["token"]).status == 200
    out = pair.a.request("DELETE", "/v1/me/token", issued["token"])
    assert out.status == 204, (out.body, pair.a.tail())
    assert _refusal(pair.b, issued["token"]) == UNAUTHENTICATED


def test_an_expired_token_is_401_in_both(pair: Pair) -> None:
    with pair.services.unit_of_work() as uow:
        _, expired = tokens.issue(
            uow,
            pair.org,
            "alice",
            "user",
            audit.CLI,
            ttl=timedelta(seconds=60),
            now=datetime.now(UTC) - timedelta(seconds=61),
        )
    for api in (pair.a, pair.b):
        assert _refusal(api, expired) == UNAUTHENTICATED, api.name
