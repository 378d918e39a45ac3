"""BYOK keys in memory: (org id, provider name) -> the org's own key, decrypted, for dispatch.

Loaded from `byok_key` at start and whenever a `byok` change is announced (memo.py calls `load`
as a listener of the topic); the hot path
reads only this map. A row that cannot be decrypted (a changed GATEWAY_SECRET_KEY) still counts as
the org's key, with no secret: the provider refuses it and the org is told, rather than the request
quietly going out on the operator's key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import crypto
from gateway.memo import MEMO
from gateway.models import ByokKey

log = logging.getLogger(__name__)


def aad(org_id: int, provider: str) -> bytes:
    """What a key's ciphertext is bound to: a row copied to another org or provider does not decrypt."""
    return f"byok:{org_id}:{provider}".encode()


@dataclass(frozen=True, slots=True)
class OrgKey:
    id: int
    api_key: str = field(repr=False)


class ByokKeys:
    def __init__(self) -> None:
        self.keys: dict[tuple[int, str], OrgKey] = {}
        self.orgs: frozenset[int] = frozenset()  # orgs with at least one key

    def get(self, org_id: int, provider: str) -> OrgKey | None:
        return self.keys.get((org_id, provider)) if self.keys else None

    def load(self, session: Session, cipher_key: bytes) -> None:
        keys: dict[tuple[int, str], OrgKey] = {}
        for k in session.scalars(select(ByokKey).where(ByokKey.deleted_at.is_(None)).order_by(ByokKey.id)):
            try:
                secret = crypto.decrypt(cipher_key, k.api_key_enc, aad=aad(k.org_id, k.provider))
            except Exception:
                log.error("BYOK key %d (org %d, %s) cannot be decrypted with this secret key", k.id, k.org_id,
                          k.provider)
                secret = ""
            keys[(k.org_id, k.provider)] = OrgKey(k.id, secret)
        self.keys = keys
        self.orgs = frozenset(org for org, _ in keys)


KEYS = ByokKeys()
MEMO.listen("byok", KEYS.load)  # reloaded with memo's topics, at start and on every `byok` change
