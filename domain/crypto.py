"""Encryption of secrets at rest (Fernet from cryptography), with key rotation.

Keys are listed newest first: the first encrypts, every key decrypts, and
`rotate` re-encrypts a token under the newest key.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBoxError(Exception):
    pass


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretBoxError("no encryption key configured")
        self._box = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt(self, data: bytes) -> bytes:
        return self._box.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._box.decrypt(token)
        except InvalidToken:
            # No detail: the token itself must never reach a log.
            raise SecretBoxError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None

    def encrypt_text(self, text: str) -> bytes:
        return self.encrypt(text.encode())

    def decrypt_text(self, token: bytes) -> str:
        return self.decrypt(token).decode()

    def rotate(self, token: bytes) -> bytes:
        try:
            return self._box.rotate(token)
        except InvalidToken:
            raise SecretBoxError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None
