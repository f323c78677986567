"""Contract fuzzing: schemathesis generates requests for every operation of
api/openapi.yaml and sends them to the real WSGI app (SQLite, a real worker).

Most requests carry a token of the operation's role (its `x-role`), a few in ten
carry none, one of another role or an unknown one, so authenticated operations
are exercised beyond 401/403 and the refusals are checked too. Half the cases
with a path parameter get a real id (a user of the organization or of another
one, a regeneration made before or during the run), so answers other than 404
are reached. Every response must pass the five response checks below.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.resources.openapi import document
from domain import accounts, audit, tokens, ui_sessions
from domain.clock import utcnow
from infra.migrate import upgrade
from tests.support.api_world import ApiWorld, api_world
from tests.support.settings import make_settings

pytestmark = pytest.mark.slow

CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Examples per operation and mode; 21 operations x (60 + 40) minus the operations
# that have nothing to negate is about 1,900 requests, some 40 s on two cores.
EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 40}
# The user operations' inputs are three strings and a page: fewer examples keep the run
# inside its time (5 operations x 50 more requests). GET /v1/me/events comes before
# DELETE /v1/users/{id}/mfa in the document, which revokes the cast's user tokens.
FEWER = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20}
EXAMPLES_OF_PATH = {path: FEWER for path in ("/v1/users", "/v1/users/{user_id}", "/v1/me/events")}
MIN_REQUESTS = 1000
UNKNOWN_TOKEN = "mfa_" + "x" * 43  # well-formed, never issued
ANY_ROLE = "any"  # x-role of an operation every role may call (sign-out)


@dataclass
class Cast:
    """Who the generated requests act as, and real ids to put in paths."""

    user_tokens: list[str]  # an enrolled user, a pending enrollment, a user without MFA
    role_tokens: dict[str, str]  # service, admin, auditor
    user_ids: list[str]  # those users, one only signed in for, one of another organization
    # A new token of a role, (token id, token): sign-out and revocation end a token each
    # time, so they get one nothing else uses.
    mint: Callable[[str], tuple[str, str]]
    regenerations: list[str] = field(default_factory=list)  # grows with every 202
    # A new user of the organization, for DELETE /v1/users/{id}: the cast must survive it.
    disposable: Callable[[], str] = lambda: "nobody"
    # A browser session's token (the cookie's value), for GET /ui/session.
    session_cookie: str = ""


def make_cast(world: ApiWorld) -> Cast:
    org = world.org()
    enrolled, confirmed = world.enroll(org, "enrolled")
    first = confirmed["regeneration"]["id"]
    world.await_status(enrolled, first)  # its sheet waits: GET .../sheet can answer 200
    world.user(org, "pending")
    pending = world.token(org, "pending", "user")
    started = world.call("POST", "/v1/me/mfa/enrollment", pending)
    assert started.status_code == 201, started.text
    world.user(org, "fresh")
    fresh = world.token(org, "fresh", "user")
    world.enroll(org, "signer")  # only signed in for: its lockout comes from bad codes alone
    other = world.org()
    world.user(other, "stranger")
    roles = {role: world.token(org, f"{role}-1", role) for role in ("service", "admin", "auditor")}

    def mint(role: str) -> tuple[str, str]:
        with world.services.unit_of_work() as uow:
            row, plaintext = tokens.issue(uow, org, f"{role}-spare", role, audit.CLI)
            return row.id, plaintext

    made = iter(range(10**6))
    with world.services.unit_of_work() as uow:
        # A user of its own: the fuzzed resets and deletions name the cast's others.
        accounts.create_user(uow, org, "browser", None, audit.CLI)
        ticket, _ = ui_sessions.issue_ticket(uow, org, "browser", "user", utcnow(), audit.CLI)
    entered = world.call("POST", "/ui/session", json={"ticket": ticket})
    assert entered.status_code == 200, entered.text
    return Cast(
        user_tokens=[enrolled, pending, fresh],
        role_tokens=roles,
        user_ids=["enrolled", "signer", "pending", "fresh", "stranger"],
        mint=mint,
        regenerations=[first],
        disposable=lambda: world.user(org, f"doomed-{next(made)}"),
        session_cookie=entered.cookies["mfa_session"].value,
    )


@dataclass
class Fuzzer:
    cast: Cast
    sent: int = 0
    # Requests sent to each operation so far: the refused tokens take slots 7 to 9 of
    # every ten of an operation's own requests, so an operation given few examples
    # still meets each kind of refusal.
    per_operation: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def token(self, role: str, n: int) -> str | None:
        """Nine in ten of the right role; the tenth none, another role's, or unknown."""
        if n % 10 == 7:
            return None
        if n % 10 == 9:
            return UNKNOWN_TOKEN
        if role == ANY_ROLE:  # sign-out: a token of its own (there is no wrong role), which it ends
            return self.cast.mint(("service", "admin", "auditor")[n % 3])[1]
        if n % 10 == 8:
            return self.cast.role_tokens["auditor" if role != "auditor" else "admin"]
        if role == "user":
            return self.cast.user_tokens[n % len(self.cast.user_tokens)]
        return self.cast.role_tokens[role]

    def prepare(self, case: Any, role: str | None, accepts: list[str]) -> None:
        n = self.per_operation[case.operation.label]
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        if role is None:
            return  # unauthenticated operations keep whatever was generated
        if case.operation.definition.raw.get("security") == [{"session": []}]:
            # The session cookie, nine in ten; the tenth none or an unknown one. (As
            # cookies, not a header: the WSGI test client sets Cookie from its own jar.)
            cookies = {k: v for k, v in (case.cookies or {}).items() if k != "mfa_session"}
            if n % 10 == 9:
                cookies["mfa_session"] = UNKNOWN_TOKEN
            elif n % 10 != 7:
                cookies["mfa_session"] = self.cast.session_cookie
            case.cookies = cookies
        else:
            token = self.token(role, n)
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
        # Each request from its own source (the test is the trusted proxy): one source's
        # failed authentications and refusals are throttled to 429 past a minute's limit.
        sent = self.sent  # (n counts this operation's requests only)
        headers["X-Forwarded-For"] = f"198.18.{sent // 250 % 250}.{sent % 250 + 1}"
        if len(accepts) > 1:
            headers["Accept"] = accepts[n % len(accepts)]
        case.headers = headers
        params = case.path_parameters
        if params and n % 2 == 0:
            if "user_id" in params:
                params["user_id"] = self.cast.user_ids[(n // 2) % len(self.cast.user_ids)]
                if case.method.upper() == "DELETE" and case.path == "/v1/users/{user_id}":
                    # A user made for it (or the stranger of another organization).
                    doomed = (n // 2) % 3
                    params["user_id"] = self.cast.disposable() if doomed else "stranger"
            if "regeneration_id" in params:
                ids = self.cast.regenerations
                params["regeneration_id"] = ids[(n // 2) % len(ids)]
            if "token_id" in params:  # a spare token the revocation may end
                params["token_id"] = self.cast.mint("service")[0]

    def run(self, case: Any, role: str | None, accepts: list[str]) -> None:
        self.prepare(case, role, accepts)
        self.sent += 1
        self.per_operation[case.operation.label] += 1
        response = case.call()
        label = case.operation.label
        self.statuses[(label, response.status_code)] += 1
        if response.status_code == 202:
            self.cast.regenerations.append(response.json()["id"])
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as failure:
            if len(self.failures) < 20:
                self.failures.append(f"{label} -> {response.status_code}\n{failure}")


def _fuzz_operation(fuzzer: Fuzzer, operation: Any, mode: GenerationMode) -> None:
    raw = operation.definition.raw
    role = raw.get("x-role")
    accepts = sorted(raw["responses"].get("200", {}).get("content", {}))

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES_OF_PATH.get(operation.path, EXAMPLES)[mode],
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        fuzzer.run(case, role, accepts)

    before = fuzzer.sent
    try:
        fuzz()
    except Unsatisfiable:
        # Nothing to negate (no parameter or body with constraints): fine, not otherwise.
        if mode is not GenerationMode.NEGATIVE or fuzzer.sent != before:
            raise


def test_generated_requests_conform_to_the_document(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, MFA_TRUSTED_PROXIES="127.0.0.1/32")
    upgrade(settings.database_url)
    with api_world(settings) as world:
        fuzzer = Fuzzer(make_cast(world))
        schema = schemathesis.openapi.from_wsgi("/openapi.json", world.client.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        started = time.perf_counter()
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(fuzzer, operation, mode)
        elapsed = time.perf_counter() - started

    print(f"\nschemathesis: {fuzzer.sent} requests, {len(operations)} operations, {elapsed:.1f} s")
    for (label, status), n in sorted(fuzzer.statuses.items()):
        print(f"  {label:70} {status} x{n}")
    assert not fuzzer.failures, "\n\n".join(fuzzer.failures)
    assert fuzzer.sent >= MIN_REQUESTS
    for operation in operations:
        if operation.definition.raw.get("x-role") is None:
            continue
        seen = {s for (label, s), _ in fuzzer.statuses.items() if label == operation.label}
        refusals = {401} if operation.definition.raw["x-role"] == ANY_ROLE else {401, 403}
        assert refusals <= seen, (operation.label, seen)
        assert seen - {401, 403}, f"{operation.label} never got past authentication: {seen}"


# --- the checks bite: a document that lies about the app fails each one ---------


def _tampered(kind: str) -> dict[str, Any]:
    doc = copy.deepcopy(document())
    answer = doc["paths"]["/healthz"]["get"]["responses"]
    if kind == "schema":
        doc["components"]["schemas"]["Health"]["properties"]["status"]["const"] = "nope"
    elif kind == "status":
        answer["201"] = answer.pop("200")
    elif kind == "content-type":
        answer["200"]["content"] = {"text/html": answer["200"]["content"]["application/json"]}
    else:
        answer["200"]["headers"]["X-Absent"] = {"required": True, "schema": {"type": "string"}}
    return doc


@pytest.mark.parametrize(
    ("kind", "code"),
    [("schema", "ST108"), ("status", "ST103"), ("content-type", "ST105"), ("headers", "ST107")],
)
def test_a_document_that_lies_fails_the_checks(tmp_path: Path, kind: str, code: str) -> None:
    settings = make_settings(tmp_path)
    upgrade(settings.database_url)
    with api_world(settings, worker=False) as world:
        schema = schemathesis.openapi.from_dict(_tampered(kind))
        schema.app = world.client.app
        case = schema["/healthz"]["GET"].Case()
        with pytest.raises(FailureGroup) as caught:
            case.call_and_validate(checks=CHECKS)
    assert code in str(caught.value)
