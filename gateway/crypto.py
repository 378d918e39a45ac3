"""AES-256-GCM for provider keys; SHA-256 digests for API keys; password hashing."""

from __future__ import annotations

import hashlib
import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_PREFIX = "gw-"
_VERSION = b"\x01"  # leading byte of every ciphertext, so the format can change later


def derive_key(secret: str, purpose: bytes = b"gateway provider keys v1") -> bytes:
    """32 bytes of AES key material from any GATEWAY_SECRET_KEY string, via HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"gateway", info=purpose).derive(secret.encode())


def encrypt(key: bytes, plaintext: str, aad: bytes = b"") -> bytes:
    nonce = os.urandom(12)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), aad)


def decrypt(key: bytes, blob: bytes, aad: bytes = b"") -> str:
    if not blob or blob[:1] != _VERSION:
        raise ValueError("unknown ciphertext version")
    return AESGCM(key).decrypt(blob[1:13], blob[13:], aad).decode()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def display_prefix(raw_key: str) -> str:
    return raw_key[:10]


# Passwords: scrypt from hashlib (memory-hard, no extra dependency), self-describing format.
_N, _R, _P = 2**14, 8, 1


# A well-formed hash that no password matches (its scrypt output would have to be all zeros): checked
# for an unknown email, so a sign-in costs one scrypt whether or not the account exists.
DUMMY_PASSWORD_HASH = f"scrypt${_N}${_R}${_P}${'00' * 16}${'00' * 32}"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${dk.hex()}"


def check_password(stored: str, password: str) -> bool:
    try:
        algo, n, r, p, salt, expected = stored.split("$")
    except ValueError:
        return False
    if algo != "scrypt":
        return False
    dk = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return secrets.compare_digest(dk.hex(), expected)
