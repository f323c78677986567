"""Who may call what: every /v1 endpoint of docs/api.md x every role x own organization,
another organization's token, no token and an unknown token, on PostgreSQL with a
RabbitMQ worker. One expected status a cell, derived from three rules:

- no token or an unknown one: 401 `unauthenticated` with `WWW-Authenticate: Bearer`;
- a token of the wrong role: 403 `forbidden` (whatever its organization); an
  endpoint may admit a second role (`also`: GET and PUT /v1/users/{id} are the
  service's and the admin's); sign-out admits every role;
- the right role, but the path names a user, regeneration or token of another
  organization: 404 `not-found`; otherwise the endpoint's success status.

Refused cells aim at a shared victim in organization A, with a body that would
change it, and then check that nothing of the victim changed. Succeeding cells
act on fresh users of the caller's own organization (A, or B for the "foreign"
token of an endpoint that only ever addresses the caller's own organization).
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select

from domain import accounts, audit, tokens
from domain.models import (
    ApiToken,
    AttemptLimit,
    AuthFailure,
    BackupCode,
    Regeneration,
    Sheet,
    TotpEnrollment,
    UiTicket,
    Webhook,
)
from domain.notify.webhook_addresses import AllowPrivate
from tests.support.api_world import ApiWorld, api_world
from tests.support.builders import unique
from tests.support.codes import WRONG_CODE
from tests.support.settings import pg_amqp_settings

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ROLES = ("user", "service", "admin", "auditor")
VICTIM = "victim"  # exists in organization A only
A_POLICY = {"backup_codes_enabled": True, "code_count": 7}  # B keeps the default 5


# --- the shared world ---------------------------------------------------------------


@dataclass
class Org:
    id: str
    tokens: dict[str, str]  # role -> token; the user token is the victim's in A


@dataclass
class Shared:
    world: ApiWorld
    a: Org
    b: Org
    victim_rid: str
    victim_hook: str = ""  # a webhook of A, and a delivery of it
    victim_delivery: str = ""
    victim_token_id: str = ""
    baseline: tuple[Any, ...] = ()
    fresh: Iterator[int] = field(default_factory=lambda: iter(range(10**6)))
    scratch_hooks: dict[str, str] = field(default_factory=dict)  # org -> a webhook to use

    def new_user(self, org: Org) -> str:
        external = f"u{next(self.fresh)}"
        self.world.user(org.id, external)
        return external


def victim_state(shared: Shared) -> tuple[Any, ...]:
    """Everything a refused call could have changed about A and its victim."""
    with shared.world.services.unit_of_work() as uow:
        org = accounts.get_org(uow.session, shared.a.id)
        user = accounts.get_user(uow.session, shared.a.id, VICTIM)
        enrollment = uow.session.get(TotpEnrollment, user.id)
        codes = uow.session.execute(
            select(BackupCode.id, BackupCode.spent_at, BackupCode.deactivated_at)
            .where(BackupCode.user_id == user.id)
            .order_by(BackupCode.id)
        ).all()
        regenerations = uow.session.execute(
            select(Regeneration.id, Regeneration.status)
            .where(Regeneration.user_id == user.id)
            .order_by(Regeneration.id)
        ).all()
        sheets = uow.session.execute(
            select(func.count())
            .select_from(Sheet)
            .where(Sheet.regeneration_id == shared.victim_rid)
        ).scalar_one()
        failures = uow.session.execute(
            select(func.count()).select_from(AuthFailure).where(AuthFailure.user_id == user.id)
        ).scalar_one()
        hook = uow.session.get(Webhook, shared.victim_hook)
        hook_state = (
            None
            if hook is None
            else (
                hook.url,
                tuple(hook.events),
                hook.description,
                hook.enabled,
                hook.secret_ciphertext,
            )
        )
        standing = uow.session.execute(
            select(
                AttemptLimit.factor,
                AttemptLimit.consecutive_failures,
                AttemptLimit.window_failures,
                AttemptLimit.locked_at,
            )
            .where(AttemptLimit.user_id == user.id)
            .order_by(AttemptLimit.factor)
        ).all()
        victim_tokens = uow.session.execute(
            select(ApiToken.id, ApiToken.revoked_at)
            .where(ApiToken.org_id == shared.a.id, ApiToken.principal_id == VICTIM)
            .order_by(ApiToken.id)
        ).all()
        links = uow.session.execute(
            select(func.count())
            .select_from(UiTicket)
            .where(UiTicket.org_id == shared.a.id, UiTicket.principal_id == VICTIM)
        ).scalar_one()
        return (
            (user.email, user.recovery_email, user.display_name, user.updated_at),
            tuple(victim_tokens),
            links,
            org.backup_codes_enabled,
            org.code_count,
            tuple(standing),
            None if enrollment is None else enrollment.confirmed_at,
            tuple(codes),
            tuple(regenerations),
            sheets,
            failures,
            hook_state,
        )


def _org_with_tokens(world: ApiWorld, user_principal: str) -> Org:
    org_id = world.org()
    world.user(org_id, user_principal)
    made = {role: world.token(org_id, f"{role}-principal", role) for role in ROLES[1:]}
    made["user"] = world.token(org_id, user_principal, "user")
    return Org(org_id, made)


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, pg_database_url: str, amqp_url: str
) -> Iterator[Shared]:
    settings = pg_amqp_settings(
        tmp_path_factory.mktemp("matrix"), pg_database_url, amqp_url
    ).with_overrides(webhook_allow_private=AllowPrivate.LOOPBACK)  # deliveries stay on 127.0.0.1
    with api_world(settings) as world:
        a_id = world.org(code_count=A_POLICY["code_count"])
        _, confirmed = world.enroll(a_id, VICTIM)
        rid = confirmed["regeneration"]["id"]
        a = Org(a_id, {role: world.token(a_id, f"{role}-principal", role) for role in ROLES[1:]})
        a.tokens["user"] = world.token(a_id, VICTIM, "user")
        b = _org_with_tokens(world, "bob")
        s = Shared(world, a, b, rid)
        s.victim_hook = _new_hook(s, a)
        ping = world.call("POST", f"{HOOKS}/{s.victim_hook}/ping", a.tokens["admin"])
        assert ping.status_code == 202, ping.text
        s.victim_delivery = ping.json["id"]
        with world.services.unit_of_work() as uow:
            victim_token = tokens.authenticate(uow.session, a.tokens["user"])
            assert victim_token is not None
            s.victim_token_id = victim_token.id
        assert world.await_status(a.tokens["user"], rid)["status"] == "ready"
        s.baseline = victim_state(s)
        yield s


# --- the endpoints -----------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    path: str
    token: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    check: Callable[[Any], None] | None = None  # on the successful answer's body


def _me(s: Shared, org: Org, path: str, json: Any = None) -> Call:
    user = s.new_user(org)
    return Call(path, s.world.token(org.id, user, "user"), json)


def _enrolled(s: Shared, org: Org) -> tuple[str, str, str]:
    """A fresh enrolled user of `org`: (external id, user token, first regeneration id)."""
    external = f"u{next(s.fresh)}"
    tok, body = s.world.enroll(org.id, external)
    return external, tok, body["regeneration"]["id"]


def prep_status(s: Shared, org: Org) -> Call:
    return _me(s, org, "/v1/me/mfa")


def prep_enrollment(s: Shared, org: Org) -> Call:
    return _me(s, org, "/v1/me/mfa/enrollment")


def prep_confirm(s: Shared, org: Org) -> Call:
    user = s.new_user(org)
    tok = s.world.token(org.id, user, "user")
    started = s.world.call("POST", "/v1/me/mfa/enrollment", tok)
    assert started.status_code == 201, started.text
    s.world.secrets[(org.id, user)] = started.json["secret"]
    return Call("/v1/me/mfa/enrollment/confirm", tok, {"totp": s.world.totp(org.id, user)})


def prep_regenerate(s: Shared, org: Org) -> Call:
    user, tok, first = _enrolled(s, org)
    s.world.await_status(tok, first)  # one pending regeneration a user at a time
    body = {"totp": s.world.totp(org.id, user, offset_steps=1)}
    return Call("/v1/me/backup-codes/regenerations", tok, body)


def prep_regeneration(s: Shared, org: Org) -> Call:
    _, tok, rid = _enrolled(s, org)

    def check(body: Any) -> None:
        assert body["id"] == rid

    return Call(f"/v1/me/backup-codes/regenerations/{rid}", tok, check=check)


def prep_sheet(s: Shared, org: Org) -> Call:
    _, tok, rid = _enrolled(s, org)
    s.world.await_status(tok, rid)
    return Call(f"/v1/me/backup-codes/regenerations/{rid}/sheet", tok, headers=TEXT)


def prep_verify(s: Shared, org: Org) -> Call:
    user, _, _ = _enrolled(s, org)

    def check(body: Any) -> None:
        assert body["accepted"] is False

    path = f"/v1/users/{user}/backup-codes/verify"
    return Call(path, org.tokens["service"], {"code": WRONG_CODE}, check=check)


def _policy_of(s: Shared, org: Org) -> dict[str, Any]:
    with s.world.services.unit_of_work() as uow:
        o = accounts.get_org(uow.session, org.id)
        return {
            "backup_codes_enabled": o.backup_codes_enabled,
            "code_count": o.code_count,
            "notify_users": o.notify_users,
            "support_contact": o.support_contact,
        }


def prep_get_policy(s: Shared, org: Org) -> Call:
    current = _policy_of(s, org)

    def check(body: Any) -> None:
        assert body == current  # the caller's own organization's, never A's for B

    return Call("/v1/org/policy", org.tokens["admin"], check=check)


def prep_put_policy(s: Shared, org: Org) -> Call:
    # The current policy again: the call succeeds and the victim's organization keeps
    # its policy, so the other cells' comparison with the baseline still holds.
    current = _policy_of(s, org)

    def check(body: Any) -> None:
        assert body == current

    return Call("/v1/org/policy", org.tokens["admin"], current, check=check)


def prep_revocation(s: Shared, org: Org) -> Call:
    return Call(f"/v1/users/{s.new_user(org)}/backup-codes/revocation", org.tokens["admin"])


def prep_reset(s: Shared, org: Org) -> Call:
    return Call(f"/v1/users/{s.new_user(org)}/mfa", org.tokens["admin"])


def prep_unlock(s: Shared, org: Org) -> Call:
    return Call(f"/v1/users/{s.new_user(org)}/mfa/unlock", org.tokens["admin"])


def prep_events(s: Shared, org: Org) -> Call:
    def check(body: Any) -> None:
        about_victim = any(e["user_id"] == VICTIM for e in body["events"])
        assert about_victim == (org is s.a)  # B's auditor never sees A's trail

    return Call("/v1/audit/events?limit=1000", org.tokens["auditor"], check=check)


def prep_verification(s: Shared, org: Org) -> Call:
    def check(body: Any) -> None:
        assert body["ok"] is True
        # No checkpoint yet in this world: every event so far is unsigned.
        assert body["unsigned_events"] == body["head"]["seq"] > 0

    return Call("/v1/audit/verification", org.tokens["auditor"], check=check)


HOOKS = "/v1/org/webhooks"
# A closed port on loopback: the deliveries the matrix causes fail at once, on 127.0.0.1.
HOOK_BODY = {"url": "http://127.0.0.1:9/hook", "events": ["webhook.ping"], "description": "m"}


def _new_hook(s: Shared, org: Org) -> str:
    got = s.world.call("POST", HOOKS, org.tokens["admin"], HOOK_BODY)
    assert got.status_code == 201, got.text
    return str(got.json["id"])


def _scratch_hook(s: Shared, org: Org) -> str:
    if org.id not in s.scratch_hooks:
        s.scratch_hooks[org.id] = _new_hook(s, org)
    return s.scratch_hooks[org.id]


def prep_create_hook(s: Shared, org: Org) -> Call:
    def check(body: Any) -> None:
        assert body["secret"].startswith("whsec_") and body["enabled"] is True
        got = s.world.call("DELETE", f"{HOOKS}/{body['id']}", org.tokens["admin"])
        assert got.status_code == 204  # (at most 10 an organization)

    return Call(HOOKS, org.tokens["admin"], HOOK_BODY, check=check)


def prep_list_hooks(s: Shared, org: Org) -> Call:
    mine = _scratch_hook(s, org)

    def check(body: Any) -> None:
        ids = {h["id"] for h in body["webhooks"]}
        assert mine in ids and (s.victim_hook in ids) == (org is s.a)
        assert all("secret" not in h for h in body["webhooks"])

    return Call(HOOKS, org.tokens["admin"], check=check)


def prep_get_hook(s: Shared, org: Org) -> Call:
    return Call(f"{HOOKS}/{_scratch_hook(s, org)}", org.tokens["admin"])


def prep_patch_hook(s: Shared, org: Org) -> Call:
    return Call(f"{HOOKS}/{_scratch_hook(s, org)}", org.tokens["admin"], {"description": "n"})


def prep_delete_hook(s: Shared, org: Org) -> Call:
    return Call(f"{HOOKS}/{_new_hook(s, org)}", org.tokens["admin"])


def prep_hook_secret(s: Shared, org: Org) -> Call:
    return Call(f"{HOOKS}/{_scratch_hook(s, org)}/secret", org.tokens["admin"])


def prep_hook_ping(s: Shared, org: Org) -> Call:
    return Call(f"{HOOKS}/{_scratch_hook(s, org)}/ping", org.tokens["admin"])


def prep_hook_deliveries(s: Shared, org: Org) -> Call:
    return Call(f"{HOOKS}/{_scratch_hook(s, org)}/deliveries", org.tokens["admin"])


def prep_hook_retry(s: Shared, org: Org) -> Call:
    hook = _scratch_hook(s, org)
    ping = s.world.call("POST", f"{HOOKS}/{hook}/ping", org.tokens["admin"])
    assert ping.status_code == 202, ping.text
    return Call(f"{HOOKS}/{hook}/deliveries/{ping.json['id']}/retry", org.tokens["admin"])


def prep_totp_verify(s: Shared, org: Org) -> Call:
    user, _, _ = _enrolled(s, org)

    def check(body: Any) -> None:
        assert body == {"accepted": True, "replayed": False}

    totp = {"totp": s.world.totp(org.id, user, offset_steps=1)}
    return Call(f"/v1/users/{user}/totp/verify", org.tokens["service"], totp, check=check)


def prep_user_token(s: Shared, org: Org, role: str) -> Call:
    user = s.new_user(org)

    def check(body: Any) -> None:
        assert body["role"] == "user"
        assert s.world.call("GET", "/v1/me/mfa", body["token"]).status_code == 200

    return Call(f"/v1/users/{user}/tokens", org.tokens[role], {"ttl_seconds": 600}, check=check)


def prep_list_tokens(s: Shared, org: Org) -> Call:
    def check(body: Any) -> None:
        ids = {t["token_id"] for t in body["tokens"]}
        assert (s.victim_token_id in ids) == (org is s.a)  # B's admin never sees A's tokens
        assert not any("token" in t for t in body["tokens"])

    return Call("/v1/org/tokens?limit=1000", org.tokens["admin"], check=check)


def prep_revoke_token(s: Shared, org: Org) -> Call:
    with s.world.services.unit_of_work() as uow:
        row, _ = tokens.issue(uow, org.id, s.new_user(org), "user", audit.CLI)
    return Call(f"/v1/org/tokens/{row.id}", org.tokens["admin"])


def prep_sign_out(s: Shared, org: Org, role: str) -> Call:
    # A token of its own: signing out the organization's shared one would end the matrix.
    principal = s.new_user(org) if role == "user" else f"{role}-leaving"
    return Call("/v1/me/token", s.world.token(org.id, principal, role))


def prep_put_user(s: Shared, org: Org) -> Call:
    fresh = f"p{next(s.fresh)}"

    def check(body: Any) -> None:
        assert (body["user_id"], body["display_name"]) == (fresh, "New")
        with s.world.services.unit_of_work() as uow:
            assert accounts.find_user(uow.session, org.id, fresh) is not None

    path = f"/v1/users/{fresh}"
    return Call(path, org.tokens["service"], {"display_name": "New"}, check=check)


def prep_get_user(s: Shared, org: Org) -> Call:
    user = s.new_user(org)

    def check(body: Any) -> None:
        assert body["user_id"] == user and "mfa" in body

    return Call(f"/v1/users/{user}", org.tokens["service"], check=check)


def prep_delete_user(s: Shared, org: Org) -> Call:
    return Call(f"/v1/users/{s.new_user(org)}", org.tokens["admin"])


def prep_list_users(s: Shared, org: Org) -> Call:
    def check(body: Any) -> None:
        listed = {u["user_id"] for u in body["users"]}
        assert (VICTIM in listed) == (org is s.a)  # B's admin never sees A's users

    return Call("/v1/users?limit=1000", org.tokens["admin"], check=check)


def prep_own_events(s: Shared, org: Org) -> Call:
    def check(body: Any) -> None:
        # A fresh user's own: created by the CLI, then its token issued; nobody else's.
        assert {e["type"] for e in body["events"]} == {"user.created", "token.issued"}

    call = _me(s, org, "/v1/me/events")
    return dataclasses.replace(call, check=check)


def prep_ui_link(s: Shared, org: Org) -> Call:
    user = s.new_user(org)

    def check(body: Any) -> None:
        assert body["url"].startswith(f"{s.world.settings.public_url}/ui/enter#ticket=")
        with s.world.services.unit_of_work() as uow:
            (row,) = uow.session.execute(
                select(UiTicket).where(UiTicket.org_id == org.id, UiTicket.principal_id == user)
            ).scalars()
            assert row.role == "user"

    path = f"/v1/users/{user}/ui-links"
    return Call(path, org.tokens["service"], {"page": "security"}, check=check)


TEXT = {"Accept": "text/plain"}
BAD_TOTP = {"totp": "123456"}
HOSTILE_PROFILE = {"email": "attacker@example.org", "display_name": "pwned"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # {user} and {rid}: the victim's, in refused cells
    role: str
    success: int
    # Names a user or a regeneration: another organization's token gets 404. The
    # others only ever address the caller's own organization.
    addressed: bool
    prepare: Callable[[Shared, Org], Call] | None
    harmful: Any = None  # what refused cells send: it would change the victim
    headers: dict[str, str] = field(default_factory=dict)
    also: tuple[str, ...] = ()  # further roles admitted ("any": every role)
    # Instead of `prepare`, for an endpoint that more than one role may call.
    prepare_as: Callable[[Shared, Org, str], Call] | None = None

    def admits(self, role: str) -> bool:
        return role == self.role or role in self.also or "any" in self.also

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


ENDPOINTS = [
    Endpoint("GET", "/v1/me/mfa", "user", 200, False, prep_status),
    Endpoint("POST", "/v1/me/mfa/enrollment", "user", 201, False, prep_enrollment),
    Endpoint("POST", "/v1/me/mfa/enrollment/confirm", "user", 201, False, prep_confirm, BAD_TOTP),
    Endpoint(
        "POST", "/v1/me/backup-codes/regenerations", "user", 202, False, prep_regenerate, BAD_TOTP
    ),
    Endpoint(
        "GET", "/v1/me/backup-codes/regenerations/{rid}", "user", 200, True, prep_regeneration
    ),
    Endpoint(
        "GET",
        "/v1/me/backup-codes/regenerations/{rid}/sheet",
        "user",
        200,
        True,
        prep_sheet,
        headers=TEXT,
    ),
    Endpoint(
        "POST",
        "/v1/users/{user}/backup-codes/verify",
        "service",
        200,
        True,
        prep_verify,
        {"code": WRONG_CODE},
    ),
    Endpoint("GET", "/v1/org/policy", "admin", 200, False, prep_get_policy),
    Endpoint(
        "PUT",
        "/v1/org/policy",
        "admin",
        200,
        False,
        prep_put_policy,
        {"backup_codes_enabled": False, "code_count": 3},
    ),
    Endpoint(
        "POST", "/v1/users/{user}/backup-codes/revocation", "admin", 204, True, prep_revocation
    ),
    Endpoint("DELETE", "/v1/users/{user}/mfa", "admin", 204, True, prep_reset),
    Endpoint("POST", "/v1/users/{user}/mfa/unlock", "admin", 204, True, prep_unlock),
    Endpoint("POST", HOOKS, "admin", 201, False, prep_create_hook, HOOK_BODY),
    Endpoint("GET", HOOKS, "admin", 200, False, prep_list_hooks),
    Endpoint("GET", HOOKS + "/{hook}", "admin", 200, True, prep_get_hook),
    Endpoint("PATCH", HOOKS + "/{hook}", "admin", 200, True, prep_patch_hook, {"enabled": False}),
    Endpoint("DELETE", HOOKS + "/{hook}", "admin", 204, True, prep_delete_hook),
    Endpoint("POST", HOOKS + "/{hook}/secret", "admin", 201, True, prep_hook_secret),
    Endpoint("POST", HOOKS + "/{hook}/ping", "admin", 202, True, prep_hook_ping),
    Endpoint("GET", HOOKS + "/{hook}/deliveries", "admin", 200, True, prep_hook_deliveries),
    Endpoint(
        "POST",
        HOOKS + "/{hook}/deliveries/{delivery}/retry",
        "admin",
        202,
        True,
        prep_hook_retry,
    ),
    Endpoint(
        "POST",
        "/v1/users/{user}/totp/verify",
        "service",
        200,
        True,
        prep_totp_verify,
        BAD_TOTP,
    ),
    Endpoint(
        "POST",
        "/v1/users/{user}/tokens",
        "service",
        201,
        True,
        None,
        {"ttl_seconds": 3600},
        also=("admin",),
        prepare_as=prep_user_token,
    ),
    Endpoint("GET", "/v1/org/tokens", "admin", 200, False, prep_list_tokens),
    Endpoint("DELETE", "/v1/org/tokens/{token}", "admin", 204, True, prep_revoke_token),
    Endpoint(
        "DELETE", "/v1/me/token", "user", 204, False, None, also=("any",), prepare_as=prep_sign_out
    ),
    Endpoint("GET", "/v1/audit/events", "auditor", 200, False, prep_events),
    Endpoint("GET", "/v1/audit/verification", "auditor", 200, False, prep_verification),
    # A PUT never answers 404: another organization's token provisions a user of its own.
    Endpoint(
        "PUT",
        "/v1/users/{user}",
        "service",
        201,
        False,
        prep_put_user,
        HOSTILE_PROFILE,
        also=("admin",),
    ),
    Endpoint("GET", "/v1/users/{user}", "service", 200, True, prep_get_user, also=("admin",)),
    Endpoint("DELETE", "/v1/users/{user}", "admin", 204, True, prep_delete_user),
    Endpoint("GET", "/v1/users", "admin", 200, False, prep_list_users),
    Endpoint("GET", "/v1/me/events", "user", 200, False, prep_own_events),
    Endpoint(
        "POST",
        "/v1/users/{user}/ui-links",
        "service",
        201,
        True,
        prep_ui_link,
        {"page": "security"},
    ),
]

# (who, role): "none" and "unknown" carry no role; "own" is organization A, "foreign" B.
CALLERS = [("none", None), ("unknown", None)] + [
    (where, role) for role in ROLES for where in ("own", "foreign")
]


def expected(ep: Endpoint, who: str, role: str | None) -> int:
    if role is None:
        return 401
    if not ep.admits(role):
        return 403
    if who == "foreign" and ep.addressed:
        return 404
    return ep.success


CELLS = [
    pytest.param(ep, who, role, expected(ep, who, role), id=f"{ep}|{who}-{role or who}")
    for ep in ENDPOINTS
    for who, role in CALLERS
]
SLUGS = {401: "unauthenticated", 403: "forbidden", 404: "not-found"}
# Refused calls from one source are throttled (30 failed authentications, 60 refusals a
# minute): each refused cell calls from its own address, so the matrix sees the refusal.
SOURCES = (f"198.18.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def _refused_call(s: Shared, ep: Endpoint, who: str, role: str | None) -> Call:
    path = ep.template.format(
        user=VICTIM,
        rid=s.victim_rid,
        token=s.victim_token_id,
        hook=s.victim_hook,
        delivery=s.victim_delivery,
    )
    if who == "none":
        token = None
    elif who == "unknown":
        token = tokens.PREFIX + secrets.token_urlsafe(32)
    else:
        assert role is not None
        token = (s.a if who == "own" else s.b).tokens[role]
    return Call(path, token or "", ep.harmful, ep.headers)


@pytest.mark.parametrize(("ep", "who", "role", "status"), CELLS)
def test_matrix(shared: Shared, ep: Endpoint, who: str, role: str | None, status: int) -> None:
    s = shared
    if status in SLUGS:
        call = _refused_call(s, ep, who, role)
        got = s.world.call(
            ep.method,
            call.path,
            call.token or None,
            call.json,
            call.headers,
            remote_addr=next(SOURCES),
        )
        assert got.status_code == status, got.text
        assert got.json["type"] == f"/problems/{SLUGS[status]}"
        assert got.headers["content-type"].startswith("application/problem+json")
        if status == 401:
            assert got.headers["www-authenticate"] == "Bearer"
    else:
        org = s.a if who == "own" else s.b
        if ep.prepare_as is not None:
            assert role is not None
            call = ep.prepare_as(s, org, role)
        else:
            assert ep.prepare is not None
            call = ep.prepare(s, org)
            if role in ep.also and role in org.tokens:
                call = dataclasses.replace(call, token=org.tokens[role])
        got = s.world.call(ep.method, call.path, call.token, call.json, call.headers)
        assert got.status_code == status, got.text
        if call.check is not None:
            call.check(got.json)
    assert got.headers["x-request-id"]
    assert victim_state(s) == s.baseline, "a call changed organization A's victim"


def test_the_matrix_covers_every_v1_route_of_the_app(shared: Shared) -> None:
    """A route added to the app without a row here fails this test."""
    from falcon.routing import CompiledRouter

    app = shared.world.client.app
    router = app._router  # Falcon keeps its routes there
    assert isinstance(router, CompiledRouter)
    served = set()
    public = set()
    for node in _walk(router._roots):
        if node.resource is None or not node.uri_template.startswith("/v1/"):
            continue
        if getattr(node.resource, "public", False):
            # No token, no role: the ticket in the path is the credential
            # (tests/integration/test_repudiation.py).
            public.add(_normalise(node.uri_template))
            continue
        for method in node.method_map:
            # Falcon answers 405 and OPTIONS for what the resource does not define.
            if hasattr(node.resource, f"on_{method.lower()}"):
                served.add((method, _normalise(node.uri_template)))
    listed = {(ep.method, _normalise(ep.template)) for ep in ENDPOINTS}
    assert served == listed
    assert public == {"/v1/repudiations/{}"}


def _walk(nodes: list[Any]) -> Iterator[Any]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


def _normalise(template: str) -> str:
    """/v1/users/{user_id}/mfa -> /v1/users/{}/mfa"""
    out, depth = [], 0
    for ch in template:
        if ch == "{":
            depth += 1
            out.append("{}")
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


# --- around the matrix ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/sheet"])
def test_another_users_regeneration_of_the_same_organization_is_404_like_none_at_all(
    shared: Shared, suffix: str
) -> None:
    s = shared
    other = s.world.token(s.a.id, s.new_user(s.a), "user")
    theirs = s.world.call("GET", f"/v1/me/backup-codes/regenerations/{s.victim_rid}{suffix}", other)
    nobody = s.world.call("GET", f"/v1/me/backup-codes/regenerations/{unique('r')}{suffix}", other)
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json == nobody.json
    assert victim_state(s) == s.baseline


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "bearer not-a-token", "Token mfa_x"],
)
def test_malformed_authorization_is_401(shared: Shared, authorization: str) -> None:
    got = shared.world.call(
        "GET", "/v1/org/policy", headers={"Authorization": authorization}, remote_addr=next(SOURCES)
    )
    assert got.status_code == 401
    assert got.headers["www-authenticate"] == "Bearer"


def test_a_revoked_token_is_401(shared: Shared) -> None:
    s = shared
    tok = s.world.token(s.a.id, "short-lived", "admin")
    assert s.world.call("GET", "/v1/org/policy", tok).status_code == 200
    with s.world.services.unit_of_work() as uow:
        row = tokens.authenticate(uow.session, tok)
        assert row is not None
        assert tokens.revoke(uow, row.id, audit.CLI).revoked_at is not None
    got = s.world.call("GET", "/v1/org/policy", tok, remote_addr=next(SOURCES))
    assert got.status_code == 401
    assert got.json["type"] == "/problems/unauthenticated"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_unauthenticated_endpoints_need_no_token(shared: Shared, path: str) -> None:
    assert shared.world.call("GET", path).status_code == 200
    unknown = tokens.PREFIX + secrets.token_urlsafe(32)
    assert shared.world.call("GET", path, unknown, remote_addr=next(SOURCES)).status_code == 200
