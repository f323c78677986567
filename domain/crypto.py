"""Encryption of secrets at rest (Fernet from cryptography), with key rotation.

Keys are listed newest first: the first encrypts, every key decrypts, and
`rotate` re-encrypts a token under the newest key.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBoxError(Exception):
    pass


# How many decrypted texts `decrypt_text_remembered` keeps (webhook secrets: an
# organization has at most 10 webhooks, each with at most 2 secrets).
REMEMBERED = 256


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretBoxError("no encryption key configured")
        self._box = MultiFernet([Fernet(k.encode()) for k in keys])
        self._remembered = functools.lru_cache(maxsize=REMEMBERED)(self.decrypt_text)

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

    def decrypt_text_remembered(self, token: bytes) -> str:
        """decrypt_text, remembered for the REMEMBERED most recent tokens: for a secret
        used again and again (a webhook's, at every attempt), whose decryption costs
        more than the rest of its use. The plain text stays in this process's
        memory, which holds the keys that decrypt it anyway. A token that fails is
        not remembered."""
        return self._remembered(bytes(token))

    def rotate(self, token: bytes) -> bytes:
        try:
            return self._box.rotate(token)
        except InvalidToken:
            raise SecretBoxError(
                "stored secret cannot be decrypted with the configured keys"
            ) from None
