"""Secrets at rest, and the hot path's promise: no database query to authenticate or route."""

import hashlib

from sqlalchemy import select

from gateway import crypto, db
from gateway.models import ApiKey, Provider
from tests.conftest import database_statements, wait_for


def test_api_keys_are_stored_as_sha256_digests(gateway):
    with db.session_scope() as s:
        keys = list(s.scalars(select(ApiKey)))
    assert keys and all(k.digest == hashlib.sha256(gateway.api_key.encode()).hexdigest() for k in keys[:1])
    with open(gateway.instance / "gateway.db", "rb") as fh:
        assert gateway.api_key.encode() not in fh.read()


def test_provider_keys_are_encrypted_with_aes_gcm(gateway):
    with db.session_scope() as s:
        provider = s.scalar(select(Provider).where(Provider.name == "fake"))
    assert b"sk-upstream-test" not in provider.api_key_enc
    key = crypto.derive_key("test-secret")
    assert crypto.decrypt(key, provider.api_key_enc, aad=b"fake") == "sk-upstream-test"
    with open(gateway.instance / "gateway.db", "rb") as fh:
        assert b"sk-upstream-test" not in fh.read()


def test_ciphertext_is_bound_to_its_provider():
    key = crypto.derive_key("s")
    blob = crypto.encrypt(key, "secret", aad=b"a")
    try:
        crypto.decrypt(key, blob, aad=b"b")
    except Exception as e:
        assert type(e).__name__ == "InvalidTag"
    else:
        raise AssertionError("decrypted with the wrong associated data")


def test_a_request_makes_no_database_query(gateway):
    """Auth, routing, the gate and metering read memory only; the ledger row is queued."""
    gateway.flush()
    with database_statements() as statements:
        gateway.sdk().chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
        list(gateway.sdk().chat.completions.create(model="fast", stream=True,
                                                   messages=[{"role": "user", "content": "hi"}]))
    assert statements == []
    wait_for(lambda: len(gateway.rows()) == 2)


def test_vendored_assets_match_their_recorded_hashes():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "static" / "vendor"
    entries = [line.split() for line in (root / "VERSIONS").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert entries
    for name, _version, _license, sha, *_ in entries:
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == sha, name
