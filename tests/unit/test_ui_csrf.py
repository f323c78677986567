"""The browser session's CSRF token (domain.ui_sessions): bound to its session and to
the service's keys, accepted under any configured key (a rotation keeps sessions)."""

from __future__ import annotations

from cryptography.fernet import Fernet

from domain import ui_sessions

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
SESSION = "mfa_" + "s" * 43


def test_the_token_is_the_sessions_and_the_keys() -> None:
    token = ui_sessions.csrf_token((OLD,), SESSION)
    assert ui_sessions.csrf_matches((OLD,), SESSION, token)
    assert not ui_sessions.csrf_matches((OLD,), SESSION + "x", token)  # another session
    assert not ui_sessions.csrf_matches((NEW,), SESSION, token)  # another service
    assert token != ui_sessions.csrf_token((NEW,), SESSION)
    assert SESSION not in token and len(token) == 43  # 256 bits, url-safe


def test_a_rotation_keeps_the_token_while_the_old_key_is_listed() -> None:
    token = ui_sessions.csrf_token((OLD,), SESSION)
    assert ui_sessions.csrf_matches((NEW, OLD), SESSION, token)
    assert ui_sessions.csrf_token((NEW, OLD), SESSION) == ui_sessions.csrf_token((NEW,), SESSION)


def test_nothing_else_matches() -> None:
    token = ui_sessions.csrf_token((OLD,), SESSION)
    for presented in (
        None,
        "",
        token[:-1],
        token + "A",
        token.upper(),
        "\udcff" + token,
        "x" * 200,
    ):
        assert not ui_sessions.csrf_matches((OLD,), SESSION, presented)
