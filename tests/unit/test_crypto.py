from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from domain.crypto import SecretBox, SecretBoxError


def test_round_trip_and_ciphertext_hides_plaintext() -> None:
    box = SecretBox([Fernet.generate_key().decode()])
    token = box.encrypt_text("JBSWY3DPEHPK3PXP")
    assert b"JBSWY3DPEHPK3PXP" not in token
    assert box.decrypt_text(token) == "JBSWY3DPEHPK3PXP"


def test_rotation_new_key_first_old_still_decrypts_and_rotate_moves_to_new() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretBox([old]).encrypt(b"secret")
    rotated_box = SecretBox([new, old])
    assert rotated_box.decrypt(token) == b"secret"
    moved = rotated_box.rotate(token)
    assert SecretBox([new]).decrypt(moved) == b"secret"
    with pytest.raises(SecretBoxError):
        SecretBox([old]).decrypt(moved)


def test_wrong_key_error_does_not_echo_the_token() -> None:
    token = SecretBox([Fernet.generate_key().decode()]).encrypt(b"x")
    with pytest.raises(SecretBoxError) as info:
        SecretBox([Fernet.generate_key().decode()]).decrypt(token)
    assert token.decode() not in str(info.value)


def test_no_key_is_refused() -> None:
    with pytest.raises(SecretBoxError):
        SecretBox([])


def test_a_remembered_text_is_decrypted_once_and_a_failure_never_remembered() -> None:
    box = SecretBox([Fernet.generate_key().decode()])
    token = box.encrypt_text("whsec_example")
    foreign = SecretBox([Fernet.generate_key().decode()]).encrypt(b"x")
    real, decrypted = box._box, []

    class Counting:
        def decrypt(self, t: bytes) -> bytes:
            decrypted.append(t)
            return real.decrypt(t)

    box._box = Counting()  # type: ignore[assignment]
    assert [box.decrypt_text_remembered(token) for _ in range(3)] == ["whsec_example"] * 3
    assert decrypted == [token]
    for _ in range(2):
        with pytest.raises(SecretBoxError):
            box.decrypt_text_remembered(foreign)
    assert decrypted == [token, foreign, foreign]
