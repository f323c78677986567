"""The pure webhook rules: which audit event becomes which webhook event, the
patterns, the derived ids, the addresses each setting admits, the retry delays."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from domain.models import AuditEvent
from domain.notify import signing, webhook_rules
from domain.notify.webhook_addresses import AllowPrivate, admitted, url_problem
from domain.notify.webhook_delivery import DEFAULT_SCHEDULE, Answer, _delay
from infra.webhook_client import retry_after_seconds

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(type_: str, **details: object) -> AuditEvent:
    return AuditEvent(
        id="ev-1",
        org_id="acme",
        seq=7,
        occurred_at=AT,
        type=type_,
        outcome="success",
        actor_principal_id="admin-1",
        user_id="alice",
        request_id="req-1",
        details=dict(details),
    )


def test_the_common_fields_name_the_event_and_nothing_else() -> None:
    (out,) = webhook_rules.outgoing(event("mfa.enrollment.confirmed"))
    assert out.type == "mfa.enrolled" and out.message_id == "ev-1"
    assert out.body == {
        "type": "mfa.enrolled",
        "timestamp": "2026-12-01T12:00:00.000Z",
        "data": {
            "org": "acme",
            "user_id": "alice",
            "audit_event_id": "ev-1",
            "audit_seq": 7,
            "request_id": "req-1",
        },
    }


@pytest.mark.parametrize(
    ("remaining", "types"),
    [
        (3, ["backup_codes.used"]),
        (2, ["backup_codes.used", "backup_codes.low"]),
        (0, ["backup_codes.used", "backup_codes.low", "backup_codes.exhausted"]),
    ],
)
def test_a_used_code_derives_low_and_exhausted_with_their_own_ids(
    remaining: int, types: list[str]
) -> None:
    outs = webhook_rules.outgoing(
        event("backup_codes.code.accepted", remaining=remaining, client_ip="203.0.113.9")
    )
    assert [o.type for o in outs] == types
    assert outs[0].message_id == "ev-1"
    assert outs[0].body["data"]["client_ip"] == "203.0.113.9"
    assert [o.message_id for o in outs[1:]] == [f"ev-1.{t}" for t in types[1:]]
    assert len({o.message_id for o in outs}) == len(outs)


def test_a_mistyped_input_is_no_rejection_but_a_wrong_code_is() -> None:
    assert webhook_rules.outgoing(event("backup_codes.code.rejected", reason="mistyped")) == []
    (out,) = webhook_rules.outgoing(event("backup_codes.code.rejected", client_ip="198.51.100.1"))
    assert out.type == "backup_codes.rejected"
    assert out.body["data"]["client_ip"] == "198.51.100.1"


@pytest.mark.parametrize(
    ("audit_type", "details", "webhook_type", "data"),
    [
        ("mfa.reset", {}, "mfa.reset", {"by": "admin-1"}),
        ("backup_codes.revoked", {"count": 3}, "backup_codes.revoked", {"by": "admin-1"}),
        (
            "user.lockout.started",
            {"factor": "totp", "until": "2026-12-01T12:15:00.000Z", "failures": 10},
            "user.locked_out",
            {"factor": "totp", "until": "2026-12-01T12:15:00.000Z"},
        ),
        (
            "user.lockout.permanent",
            {"factor": "backup_codes", "failures": 100},
            "user.locked_out",
            {"factor": "backup_codes", "until": None},
        ),
        ("user.repudiated", {}, "user.repudiated", {}),
        (
            "org.policy.changed",
            {"old": {"code_count": 5}, "new": {"code_count": 8}},
            "policy.changed",
            {"old": {"code_count": 5}, "new": {"code_count": 8}},
        ),
    ],
)
def test_the_contracts_table(
    audit_type: str, details: dict[str, object], webhook_type: str, data: dict[str, object]
) -> None:
    (out,) = webhook_rules.outgoing(event(audit_type, **details))
    assert out.type == webhook_type
    extra = {k: v for k, v in out.body["data"].items() if k not in _COMMON}
    assert extra == data


_COMMON = {"org", "user_id", "audit_event_id", "audit_seq", "request_id"}


def test_generated_carries_the_set_the_reason_and_the_count() -> None:
    (out,) = webhook_rules.outgoing(
        event("backup_codes.regeneration.succeeded", set_id="AB12", code_count=5),
        regeneration_reason="enrollment",
    )
    assert out.body["data"]["set_id"] == "AB12"
    assert (out.body["data"]["reason"], out.body["data"]["code_count"]) == ("enrollment", 5)


@pytest.mark.parametrize(
    "audit_type",
    ["audit.read", "token.issued", "backup_codes.sheet.retrieved", "mfa.totp.rejected"],
)
def test_other_events_send_nothing(audit_type: str) -> None:
    assert webhook_rules.outgoing(event(audit_type)) == []


def test_checkpoints_and_pings_have_null_audit_fields_and_stable_ids() -> None:
    out = webhook_rules.checkpoint("acme", 42, "ab" * 32, "c2ln", "k1", AT)
    assert out.message_id == "checkpoint.acme.42"
    data = out.body["data"]
    assert data["audit_event_id"] is None and data["audit_seq"] is None
    assert (data["seq"], data["hash"], data["signature"], data["key_id"]) == (
        42,
        "ab" * 32,
        "c2ln",
        "k1",
    )
    ping = webhook_rules.ping("acme", "fresh-id", AT)
    assert ping.message_id == "fresh-id" and ping.body["data"]["user_id"] is None


@pytest.mark.parametrize(
    ("pattern", "type_", "matches"),
    [
        ("*", "audit.checkpoint", True),
        ("backup_codes.*", "backup_codes.low", True),
        ("backup_codes.*", "mfa.reset", False),
        ("mfa.reset", "mfa.reset", True),
        ("mfa.reset", "mfa.enrolled", False),
    ],
)
def test_patterns(pattern: str, type_: str, matches: bool) -> None:
    assert webhook_rules.listens_to([pattern], type_) is matches


@pytest.mark.parametrize("bad", ["mfa.nothing", "nope.*", "backup_*codes", "b*.*"])
def test_a_pattern_that_names_no_type_is_unknown(bad: str) -> None:
    assert webhook_rules.unknown_pattern(["mfa.reset", bad]) == bad
    assert webhook_rules.unknown_pattern(["mfa.reset", "backup_codes.*", "*"]) is None


# --- signing ---------------------------------------------------------------------


def test_signatures_verify_with_the_standardwebhooks_library_across_a_rotation() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    assert old.startswith("whsec_") and len(base64.b64decode(old[6:])) >= 24
    body = signing.encode_body({"type": "webhook.ping", "data": {"org": "acme"}})
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers("msg-1", body, [new, old], now)
    assert headers["webhook-timestamp"] == str(now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert StandardWebhook(secret).verify(body, headers) == {
            "type": "webhook.ping",
            "data": {"org": "acme"},
        }
    stranger = signing.new_secret()
    with pytest.raises(Exception, match="No matching signature"):
        StandardWebhook(stranger).verify(body, headers)


def test_the_signature_is_the_specs_hmac() -> None:
    import hashlib
    import hmac

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    mac = hmac.new(b"k" * 32, b"id.1700000000.{}", hashlib.sha256).digest()
    assert (
        signing.signature(secret, "id", 1700000000, b"{}") == "v1," + base64.b64encode(mac).decode()
    )


# --- addresses -------------------------------------------------------------------

NONE, LOOPBACK, PRIVATE = AllowPrivate.NONE, AllowPrivate.LOOPBACK, AllowPrivate.PRIVATE


@pytest.mark.parametrize(
    ("address", "admitted_under"),
    [
        ("127.0.0.1", {LOOPBACK, PRIVATE}),
        ("::1", {LOOPBACK, PRIVATE}),
        ("10.0.0.1", {PRIVATE}),
        ("192.168.1.5", {PRIVATE}),
        ("172.16.0.1", {PRIVATE}),
        ("fd00::1", {PRIVATE}),
        ("169.254.169.254", set()),
        ("fe80::1", set()),
        ("100.64.0.1", set()),
        ("224.0.0.1", set()),
        ("ff02::1", set()),
        ("0.0.0.0", set()),  # noqa: S104 (an address under test, nothing binds)
        ("0.1.2.3", set()),
        ("::ffff:169.254.169.254", set()),
        ("::ffff:127.0.0.1", {LOOPBACK, PRIVATE}),
        ("::ffff:10.0.0.1", {PRIVATE}),
        ("::ffff:100.64.0.1", set()),
        # IPv6 forms that reach an IPv4 address are judged as it (NAT64, SIIT) ...
        ("64:ff9b::a9fe:a9fe", set()),
        ("64:ff9b:1::a9fe:a9fe", set()),
        ("::ffff:0:a9fe:a9fe", set()),
        ("64:ff9b::a00:1", {PRIVATE}),
        ("64:ff9b::5db8:d822", {NONE, LOOPBACK, PRIVATE}),
        # ... and the IPv4-compatible and site-local forms are never admitted.
        ("::a9fe:a9fe", set()),
        ("::5db8:d822", set()),
        ("fec0::1", set()),
        ("93.184.216.34", {NONE, LOOPBACK, PRIVATE}),
        ("2606:4700::1111", {NONE, LOOPBACK, PRIVATE}),
    ],
)
def test_each_setting_admits_what_the_contract_says(
    address: str, admitted_under: set[AllowPrivate]
) -> None:
    for allow in AllowPrivate:
        assert admitted(address, allow) is (allow in admitted_under), (address, allow)


@pytest.mark.parametrize(
    ("url", "allow", "problem"),
    [
        ("https://hooks.example.com/x", NONE, None),
        ("http://hooks.example.com/x", NONE, "https"),
        ("http://127.0.0.1:9000/x", LOOPBACK, None),
        ("https://user:pw@hooks.example.com/", NONE, "user information"),
        ("https://169.254.169.254/latest", PRIVATE, "not admitted"),
        ("https://[::ffff:169.254.169.254]/", PRIVATE, "not admitted"),
        ("https://10.0.0.1/", LOOPBACK, "not admitted"),
        ("https://10.0.0.1/", PRIVATE, None),
        ("https://127.0.0.1/", NONE, "not admitted"),
        ("ftp://hooks.example.com/", PRIVATE, "https"),
        ("https:///nohost", NONE, "no host"),
    ],
)
def test_url_checks_at_creation(url: str, allow: AllowPrivate, problem: str | None) -> None:
    found = url_problem(url, allow)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# --- the schedule ------------------------------------------------------------------


def test_the_schedule_then_dead() -> None:
    waits = [_delay(Answer(500), n, DEFAULT_SCHEDULE) for n in range(1, 9)]
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000, None]


def test_retry_after_is_honoured_for_429_and_503_only_and_capped() -> None:
    assert _delay(Answer(429, retry_after=120), 1, DEFAULT_SCHEDULE) == 120
    assert _delay(Answer(503, retry_after=2), 2, DEFAULT_SCHEDULE) == 300  # never sooner
    assert _delay(Answer(503, retry_after=10**9), 1, DEFAULT_SCHEDULE) == 86400
    assert _delay(Answer(500, retry_after=120), 1, DEFAULT_SCHEDULE) == 5


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds("30", 0) == 30
    assert retry_after_seconds("Thu, 01 Jan 1970 00:01:40 GMT", 40) == 60
    assert retry_after_seconds("soon", 0) is None
    assert retry_after_seconds("\u00b2", 0) is None  # a digit to str.isdigit, not to float()
