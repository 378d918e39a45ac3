"""Admin writes on tenancy (orgs, credits, keys, console users), shared by the CLI and the console.

Each write is one short transaction that also announces the change (memo.py) and audits it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import crypto
from gateway.memo import announce
from gateway.models import ApiKey, AuditLog, CreditGrant, Org, User, utcnow

SCOPES = ("inference", "read", "admin")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class AccountError(ValueError):
    pass


def audit(session: Session, actor: str, action: str, target: str = "", detail: str = "",
          org_id: int | None = None) -> None:
    session.add(AuditLog(actor=actor, action=action, target=target, detail=detail, org_id=org_id))


def org_by_name(session: Session, name: str) -> Org:
    org = session.scalar(select(Org).where(Org.name == name))
    if org is None:
        raise AccountError(f"no org named '{name}'")
    return org


def create_org(session: Session, name: str, credits_micros: int = 0, actor: str = "cli") -> Org:
    name = name.strip()
    if not name:
        raise AccountError("org name must not be empty")
    if session.scalar(select(Org).where(Org.name == name)) is not None:
        raise AccountError(f"an org named '{name}' already exists")
    org = Org(name=name, credits_micros=0)
    session.add(org)
    session.flush()
    if credits_micros:
        add_credits(session, org, credits_micros, actor=actor, note="initial credits")
    audit(session, actor, "org.create", name, org_id=org.id)
    announce(session, "orgs")
    return org


def add_credits(session: Session, org: Org, micros: int, actor: str = "cli", note: str = "") -> None:
    if micros <= 0:
        raise AccountError("the amount must be positive")
    session.add(CreditGrant(org_id=org.id, amount_micros=micros, note=note, created_by=actor))
    org.credits_micros = Org.credits_micros + micros  # atomic against the ledger writer's deductions
    session.flush()
    session.refresh(org)
    audit(session, actor, "credits.add", org.name, f"{micros} micros", org_id=org.id)
    announce(session, "orgs")


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # shown once, never stored


def create_key(session: Session, org: Org, name: str = "", scope: str = "inference", actor: str = "cli",
               user_id: int | None = None, app_id: int | None = None) -> NewKey:
    if scope not in SCOPES:
        raise AccountError(f"scope must be one of {', '.join(SCOPES)}")
    secret = crypto.new_api_key()
    key = ApiKey(org_id=org.id, name=name, digest=crypto.digest(secret), prefix=crypto.display_prefix(secret),
                 scope=scope, user_id=user_id, app_id=app_id)
    session.add(key)
    session.flush()
    audit(session, actor, "key.create", f"{key.prefix}… ({name or 'unnamed'})", f"scope={scope}", org_id=org.id)
    announce(session, "keys")
    return NewKey(key, secret)


def revoke_key(session: Session, key: ApiKey, actor: str = "cli") -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit(session, actor, "key.revoke", f"{key.prefix}…", org_id=key.org_id)
        announce(session, "keys")


def create_admin(session: Session, email: str, password: str, superadmin: bool = False,
                 org_id: int | None = None, actor: str = "cli") -> User:
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise AccountError("a valid email is required")
    if len(password) < 8:
        raise AccountError("the password must have at least 8 characters")
    if session.scalar(select(User).where(User.email == email)) is not None:
        raise AccountError(f"a user with email {email} already exists")
    user = User(email=email, password_hash=crypto.hash_password(password), is_superadmin=superadmin, org_id=org_id)
    session.add(user)
    session.flush()
    audit(session, actor, "admin.create", email, "superadmin" if superadmin else "")
    return user
