"""Keyring and AES-256-GCM with associated data. The only module that touches raw key bytes.

- `ENCRYPTION_KEYS` holds comma-separated base64 keys of exactly 32 bytes; the first encrypts,
  all decrypt.
- A ciphertext is ``nonce (12 bytes) || AES-GCM(ciphertext || tag)``; the associated data binds
  it to its table, column, row id and owner, so a ciphertext copied to another row fails.
- Each key is known by its digest: ``sha256("aes256gcm" + key)`` in hex, first 7 characters.

Nothing here ever puts key material or plaintext in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
KEY_BYTES = 32
TEST_VALUE = b"switchboard encryption key check"


class KeyringError(RuntimeError):
    """The configured keys are unusable; the message names the problem, never a key."""


class DecryptionError(RuntimeError):
    """A ciphertext could not be decrypted (wrong row, tampered, or its key is not configured)."""


def key_digest(key: bytes) -> str:
    return hashlib.sha256(b"aes256gcm" + key).hexdigest()[:7]


def associated_data(table: str, column: str, row_id: object, *owners: object) -> bytes:
    """The associated data binding a ciphertext to its place: table, column, row and owners."""
    return "|".join([table, column, str(row_id), *(str(o) for o in owners)]).encode()


def make_hint(plaintext: str) -> str:
    """`...` plus the last 4 characters, or just `...` for keys shorter than 12 characters."""
    return "..." + plaintext[-4:] if len(plaintext) >= 12 else "..."


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes
    digest: str


class Keyring:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise KeyringError("ENCRYPTION_KEYS is empty: configure at least one key.")
        self._keys: dict[str, AESGCM] = {}
        self.digests: list[str] = []
        for key in keys:
            digest = key_digest(key)
            if digest not in self._keys:
                self._keys[digest] = AESGCM(key)
                self.digests.append(digest)
        self.primary_digest = self.digests[0]

    @classmethod
    def from_config(cls, raw: str) -> Keyring:
        """Parse `ENCRYPTION_KEYS`.

        :raise KeyringError: a key is not base64 or not 32 bytes once decoded (named by position).
        """
        parts = [p.strip() for p in (raw or "").split(",") if p.strip()]
        if not parts:
            raise KeyringError("ENCRYPTION_KEYS is empty: configure at least one key.")
        keys = []
        for position, part in enumerate(parts, start=1):
            try:
                key = base64.b64decode(part, validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(
                    f"ENCRYPTION_KEYS: key #{position} is not valid base64."
                ) from None
            if len(key) != KEY_BYTES:
                raise KeyringError(
                    f"ENCRYPTION_KEYS: key #{position} is not 32 bytes after base64 decoding."
                )
            keys.append(key)
        return cls(keys)

    def knows(self, digest: str) -> bool:
        return digest in self._keys

    def encrypt(self, plaintext: bytes, aad: bytes) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._keys[self.primary_digest].encrypt(nonce, plaintext, aad)
        return Sealed(nonce + ciphertext, self.primary_digest)

    def decrypt(self, sealed: bytes, digest: str, aad: bytes) -> bytes:
        """:raise DecryptionError: unknown digest, or the ciphertext does not match its place."""
        cipher = self._keys.get(digest)
        if cipher is None:
            raise DecryptionError(f"encryption key {digest} is not configured")
        if len(sealed) < NONCE_BYTES + 16:
            raise DecryptionError("ciphertext is truncated")
        try:
            return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise DecryptionError(
                "ciphertext does not decrypt for this row (tampered, copied from another row, "
                "or encrypted with a different key)"
            ) from None

    def test_value(self, digest: str) -> bytes:
        """A fresh encryption of the check value under the key with `digest`."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._keys[digest].encrypt(nonce, TEST_VALUE, _test_aad(digest))

    def check_test_value(self, digest: str, sealed: bytes) -> bool:
        try:
            return self.decrypt(sealed, digest, _test_aad(digest)) == TEST_VALUE
        except DecryptionError:
            return False

    def fingerprint(self, secret_key: str, scope: str, plaintext: str) -> str:
        """A keyed hash to spot the same key twice in one scope, without storing the key."""
        mac_key = hashlib.sha256(b"switchboard key fingerprint|" + secret_key.encode()).digest()
        return hmac.new(mac_key, f"{scope}|{plaintext}".encode(), hashlib.sha256).hexdigest()


def _test_aad(digest: str) -> bytes:
    return associated_data("encryption_keys", "test_ciphertext", digest)
