from __future__ import annotations

import pytest

from domain.audit import _check_details


@pytest.mark.parametrize(
    "details",
    [{"code": "x"}, {"new_totp": "1"}, {"old": {"secret": "s"}}, {"api_token": "t"}],
)
def test_details_named_like_secrets_are_refused(details: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _check_details(details)


@pytest.mark.parametrize(
    "details",
    [
        {"code_count": 5},
        {"issued_token_id": "abc"},
        {"old": {"backup_codes_enabled": True}},
        {"remaining": 3, "set_id": "ABC-DEF"},
    ],
)
def test_ordinary_details_pass(details: dict[str, object]) -> None:
    _check_details(details)
    assert details  # unchanged: the check only reads
