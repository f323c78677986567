from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from domain import totp
from domain.totp import Verdict, judge

MOMENT = datetime(2026, 11, 28, 9, 14, 3, tzinfo=UTC)


@pytest.fixture
def secret() -> str:
    return totp.new_secret()


def code_at(secret: str, moment: datetime) -> str:
    return pyotp.TOTP(secret).at(moment)


def test_code_of_the_moment_is_accepted_and_its_step_recorded(secret: str) -> None:
    result = judge(secret, code_at(secret, MOMENT), MOMENT, None)
    assert result.verdict is Verdict.ACCEPTED
    assert result.step == totp.step_at(MOMENT)
    assert result.drift == 0


@pytest.mark.parametrize("offset,drift", [(-30, -1), (30, 1)])
def test_one_step_either_side_is_accepted(secret: str, offset: int, drift: int) -> None:
    result = judge(secret, code_at(secret, MOMENT + timedelta(seconds=offset)), MOMENT, None)
    assert result.verdict is Verdict.ACCEPTED
    assert result.drift == drift


@pytest.mark.parametrize("offset", [-90, -60, 60, 90])
def test_two_steps_away_is_refused(secret: str, offset: int) -> None:
    result = judge(secret, code_at(secret, MOMENT + timedelta(seconds=offset)), MOMENT, None)
    assert result.verdict is Verdict.INVALID


def test_judged_for_the_moment_of_acceptance_not_now(secret: str) -> None:
    accepted = datetime.now(UTC) - timedelta(minutes=10)
    value = code_at(secret, accepted)
    assert judge(secret, value, accepted, None).verdict is Verdict.ACCEPTED
    assert judge(secret, value, datetime.now(UTC), None).verdict is Verdict.INVALID


def test_a_step_is_accepted_at_most_once(secret: str) -> None:
    value = code_at(secret, MOMENT)
    first = judge(secret, value, MOMENT, None)
    again = judge(secret, value, MOMENT, first.step)
    assert again.verdict is Verdict.REPLAYED


def test_an_earlier_step_than_the_last_accepted_is_replay(secret: str) -> None:
    later_step = totp.step_at(MOMENT) + 1
    assert judge(secret, code_at(secret, MOMENT), MOMENT, later_step).verdict is Verdict.REPLAYED


def test_next_step_after_an_accepted_one_is_fine(secret: str) -> None:
    first = judge(secret, code_at(secret, MOMENT), MOMENT, None)
    nxt = MOMENT + timedelta(seconds=30)
    assert judge(secret, code_at(secret, nxt), nxt, first.step).verdict is Verdict.ACCEPTED


@pytest.mark.parametrize(
    "bad", ["", "12345", "1234567", "12345a", "\uff11\uff12\uff13\uff14\uff15\uff16", None, 123456]
)
def test_malformed_values_are_invalid(secret: str, bad: object) -> None:
    assert judge(secret, bad, MOMENT, None).verdict is Verdict.INVALID  # type: ignore[arg-type]


def test_provisioning_uri_names_issuer_and_account(secret: str) -> None:
    uri = totp.provisioning_uri(secret, "alice@example.com", "Acme Corp")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["Acme Corp"]
    assert "alice%40example.com" in parts.path or "alice@example.com" in parts.path
