"""Attacks on the second factor, over HTTP against the real app and a real worker:
replaying a TOTP code, guessing TOTP codes, guessing backup codes.

Attempt limits (docs/api.md): separate budgets per factor. TOTP: 5 failures (replays
included) in 15 minutes throttle the user's TOTP, then 429 too-many-attempts with
Retry-After, the right code included. Backup codes: 5 failures in 15 minutes from
one source throttle that source; other sources, and the TOTP, are unaffected.
"""

from __future__ import annotations

from typing import Any

import pyotp
from falcon import testing

from tests.support.api_world import ApiWorld
from tests.support.codes import CODE_RE, wrong_code, wrong_totps

REGENERATIONS = "/v1/me/backup-codes/regenerations"
CONFIRM = "/v1/me/mfa/enrollment/confirm"
THRESHOLD = 5
WINDOW_SECONDS = 900


def assert_locked_out(answer: testing.Result) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json["type"] == "/problems/too-many-attempts"
    wait = int(answer.headers["Retry-After"])
    assert 1 <= wait <= WINDOW_SECONDS
    assert answer.json.get("retry_after", wait) == wait


def current_set(world: ApiWorld, token: str) -> dict[str, Any]:
    status = world.call("GET", "/v1/me/mfa", token)
    assert status.status_code == 200, status.text
    return dict(status.json["backup_codes"])


def regenerate(world: ApiWorld, token: str, totp: str) -> testing.Result:
    return world.call("POST", REGENERATIONS, token, json={"totp": totp})


# --- replay --------------------------------------------------------------------


def test_a_totp_code_is_accepted_once(world: ApiWorld) -> None:
    org = world.org()
    token, enrolled = world.enroll(org)
    world.await_status(token, enrolled["regeneration"]["id"])
    # The enrollment used the current step: the next one is the first still fresh.
    code = world.totp(org, offset_steps=1)
    first = regenerate(world, token, code)
    assert first.status_code == 202, first.text
    assert world.await_status(token, first.json["id"])["status"] == "ready"
    issued = current_set(world, token)

    replay = regenerate(world, token, code)
    assert replay.status_code == 202, replay.text  # judged by the worker, at its moment
    judged = world.await_status(token, replay.json["id"])
    assert (judged["status"], judged["failure"]) == ("failed", "totp-replayed")
    # A step older than the accepted one is refused the same way.
    older = regenerate(world, token, world.totp(org))
    judged = world.await_status(token, older.json["id"])
    assert (judged["status"], judged["failure"]) == ("failed", "totp-replayed")
    assert current_set(world, token)["set_id"] == issued["set_id"]  # nothing was replaced


def test_the_same_code_sent_twice_is_accepted_once(world: ApiWorld) -> None:
    org = world.org()
    token, enrolled = world.enroll(org)
    world.await_status(token, enrolled["regeneration"]["id"])
    code = world.totp(org, offset_steps=1)
    sent = [regenerate(world, token, code) for _ in range(2)]
    first, second = sent
    assert first.status_code == 202, first.text
    assert world.await_status(token, first.json["id"])["status"] == "ready"
    # The second came while the first was pending (409, naming it), or after it
    # (queued, then failed as a replay): never a second set.
    if second.status_code == 409:
        assert second.json["type"] == "/problems/regeneration-pending"
        assert second.headers["Location"] == first.headers["Location"]
    else:
        assert second.status_code == 202, second.text
        judged = world.await_status(token, second.json["id"])
        assert (judged["status"], judged["failure"]) == ("failed", "totp-replayed")


# --- guessing TOTP codes ---------------------------------------------------------


def test_guessed_totps_lock_the_user_out_and_then_the_right_code_too(world: ApiWorld) -> None:
    org = world.org()
    token, enrolled = world.enroll(org)
    world.await_status(token, enrolled["regeneration"]["id"])
    before = current_set(world, token)
    secret = world.secrets[(org, "alice")]

    # Guesses one after the other (one regeneration may be pending at a time).
    failures, refused = [], 0
    for guess in wrong_totps(secret, 12):
        answer = regenerate(world, token, guess)
        if answer.status_code == 429:
            refused += 1
            continue
        assert answer.status_code == 202, answer.text
        failures.append(world.await_status(token, answer.json["id"])["failure"])
    # Exactly the threshold was judged; everything after it was refused at intake.
    assert failures == ["invalid-totp"] * THRESHOLD
    assert refused == 12 - THRESHOLD

    assert_locked_out(regenerate(world, token, wrong_totps(secret, 1)[0]))
    assert_locked_out(regenerate(world, token, world.totp(org, offset_steps=1)))
    assert current_set(world, token)["set_id"] == before["set_id"]


def test_guessed_totps_at_enrollment_lock_the_user_out(world: ApiWorld) -> None:
    org = world.org()
    world.user(org, "mallory")
    token = world.token(org, "mallory", "user")
    secret = world.call("POST", "/v1/me/mfa/enrollment", token).json["secret"]
    guesses = wrong_totps(secret, THRESHOLD + 3)
    answers = [world.call("POST", CONFIRM, token, json={"totp": g}) for g in guesses]
    assert [a.status_code for a in answers[:THRESHOLD]] == [422] * THRESHOLD
    assert all(a.json["type"] == "/problems/invalid-totp" for a in answers[:THRESHOLD])
    for late in answers[THRESHOLD:]:
        assert_locked_out(late)
    assert_locked_out(world.call("POST", CONFIRM, token, json={"totp": pyotp.TOTP(secret).now()}))
    status = world.call("GET", "/v1/me/mfa", token)
    assert status.json["enrolled"] is False


# --- guessing backup codes -------------------------------------------------------


def _enrolled_with_codes(world: ApiWorld, org: str) -> tuple[str, list[str]]:
    token, enrolled = world.enroll(org)
    regeneration_id = enrolled["regeneration"]["id"]
    world.await_status(token, regeneration_id)
    lines = world.sheet_text(token, regeneration_id)
    codes = [m.group(0) for line in lines for m in CODE_RE.finditer(line)]
    assert len(codes) == 5
    return token, codes


def test_guessed_backup_codes_throttle_their_source_even_for_the_right_code(
    world: ApiWorld,
) -> None:
    org = world.org()
    user_token, codes = _enrolled_with_codes(world, org)
    service = world.token(org, "sign-in", "service")
    verify = "/v1/users/alice/backup-codes/verify"
    guesses = [wrong_code(n) for n in range(THRESHOLD)]
    for guess in guesses:
        answer = world.call("POST", verify, service, json={"code": guess})
        assert answer.status_code == 200, answer.text
        assert answer.json["accepted"] is False

    for _ in range(10):  # guessing on is refused without a verdict
        assert_locked_out(world.call("POST", verify, service, json={"code": wrong_code(9999)}))
    assert_locked_out(world.call("POST", verify, service, json={"code": codes[0]}))
    # The right code was not spent: it is still there for the real user, who signs in
    # from another address (the front end says which in client_ip).
    summary = current_set(world, user_token)
    assert (summary["remaining"], summary["total"]) == (5, 5)
    mine = {"code": codes[0], "client_ip": "203.0.113.5"}
    assert world.call("POST", verify, service, json=mine).json["accepted"] is True


def test_wrong_backup_codes_never_block_the_totp_nor_the_reverse(world: ApiWorld) -> None:
    """A stranger who knows the user id sends wrong codes to the sign-in front end:
    the user can still regenerate (the fallback for a lost phone). And wrong TOTPs
    never block sign-in with a backup code."""
    org = world.org()
    user_token, codes = _enrolled_with_codes(world, org)
    service = world.token(org, "sign-in", "service")
    verify = "/v1/users/alice/backup-codes/verify"
    secret = world.secrets[(org, "alice")]
    for n in range(THRESHOLD):
        wrong = world.call("POST", verify, service, json={"code": wrong_code(n)})
        assert wrong.json["accepted"] is False
    assert_locked_out(world.call("POST", verify, service, json={"code": codes[0]}))
    done = regenerate(world, user_token, world.totp(org, offset_steps=1))
    assert done.status_code == 202, done.text
    assert world.await_status(user_token, done.json["id"])["status"] == "ready"
    fresh = world.sheet_text(user_token, done.json["id"])

    for guess in wrong_totps(secret, THRESHOLD):
        queued = regenerate(world, user_token, guess)
        assert queued.status_code == 202, queued.text
        assert world.await_status(user_token, queued.json["id"])["failure"] == "invalid-totp"
    assert_locked_out(regenerate(world, user_token, world.totp(org, offset_steps=2)))
    other = {"code": fresh[0], "client_ip": "203.0.113.6"}
    assert world.call("POST", verify, service, json=other).json["accepted"] is True
