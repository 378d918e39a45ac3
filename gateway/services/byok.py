"""BYOK writes: an org's own provider keys, added, listed (masked) and deleted, with audit.

A key is stored AES-256-GCM under GATEWAY_SECRET_KEY, as operator keys are (crypto.py), bound to
its org and provider by the associated data, so a row copied to another org does not decrypt.
One live key per org and provider: adding one replaces the last. Every write announces `byok`, so
servers reload the keys within a sync interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import crypto
from gateway.memo import announce
from gateway.models import ByokKey, ByokRejection, Provider, utcnow
from gateway.services.errors import AdminError
from gateway.services.tenancy import audit
from gateway.stores.byok import aad

MAX_KEY_LENGTH = 512


@dataclass(frozen=True)
class KeyView:
    """What a listing shows: never the key, only its last four characters."""

    id: int
    provider: str
    masked: str
    created_at: datetime
    created_by: str
    rejected_at: datetime | None  # the provider refused it since it was added

    def as_json(self) -> dict:
        return {"id": self.id, "object": "byok_key", "provider": self.provider, "key": self.masked,
                "created_at": int(self.created_at.replace(tzinfo=UTC).timestamp()), "created_by": self.created_by,
                "rejected": self.rejected_at is not None,
                "rejected_at": int(self.rejected_at.replace(tzinfo=UTC).timestamp()) if self.rejected_at else None}


def add_key(session: Session, org_id: int, provider: object, api_key: object, secret_key: str,
            actor: str) -> KeyView:
    if not isinstance(provider, str) or not provider.strip():
        raise AdminError("'provider' must be the name of a configured provider.")
    provider = provider.strip()
    if session.scalar(select(Provider.id).where(Provider.name == provider)) is None:
        raise AdminError(f"There is no provider named '{provider[:64]}'.")
    if not isinstance(api_key, str) or not api_key.strip():
        raise AdminError("'api_key' must be a non-empty string.")
    api_key = api_key.strip()
    if len(api_key) > MAX_KEY_LENGTH or not api_key.isprintable():
        raise AdminError(f"'api_key' must be at most {MAX_KEY_LENGTH} printable characters.")
    now = utcnow()
    for old in session.scalars(select(ByokKey).where(ByokKey.org_id == org_id, ByokKey.provider == provider,
                                                     ByokKey.deleted_at.is_(None))):
        old.deleted_at = now
    key = ByokKey(org_id=org_id, provider=provider, last4=api_key[-4:], created_by=actor[:254],
                  api_key_enc=crypto.encrypt(crypto.derive_key(secret_key), api_key, aad=aad(org_id, provider)))
    session.add(key)
    session.flush()
    audit(session, actor, "byok.add", provider, f"…{key.last4}", org_id=org_id)
    announce(session, "byok")
    return _view(key, None)


def list_keys(session: Session, org_id: int) -> list[KeyView]:
    keys = session.scalars(select(ByokKey).where(ByokKey.org_id == org_id, ByokKey.deleted_at.is_(None))
                           .order_by(ByokKey.id)).all()
    rejected = dict(session.execute(
        select(ByokRejection.byok_key_id, func.max(ByokRejection.created_at))
        .where(ByokRejection.org_id == org_id, ByokRejection.byok_key_id.in_([k.id for k in keys]))
        .group_by(ByokRejection.byok_key_id)).tuples().all()) if keys else {}
    return [_view(k, rejected.get(k.id)) for k in keys]


def delete_key(session: Session, org_id: int, key_id: int, actor: str) -> bool:
    """False when the org has no such live key (another org's id included)."""
    key = session.scalar(select(ByokKey).where(ByokKey.id == key_id, ByokKey.org_id == org_id,
                                               ByokKey.deleted_at.is_(None)))
    if key is None:
        return False
    key.deleted_at = utcnow()
    audit(session, actor, "byok.delete", key.provider, f"…{key.last4}", org_id=org_id)
    announce(session, "byok")
    return True


def _view(key: ByokKey, rejected_at: datetime | None) -> KeyView:
    return KeyView(key.id, key.provider, "…" + key.last4, key.created_at, key.created_by, rejected_at)
