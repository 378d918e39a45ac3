"""Admin writes on tenancy (orgs, credits, keys, users, apps), shared by the CLI and the console.

Each write is one short transaction that also announces the change (memo.py) and audits it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import crypto
from gateway.ledger import rollups
from gateway.ledger.pricing import usd_to_micros
from gateway.memo import announce
from gateway.models import ApiKey, App, AuditLog, Org, User, utcnow
from gateway.services import credits as credit_service
from gateway.services import plans as plan_service
from gateway.services.errors import AdminError

SCOPES = ("inference", "read", "admin")
ROLES = ("super-admin", "org-admin", "member")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
NAME_MAX = 120  # Org.name and ApiKey.name columns
PASSWORD_MIN = 10
# One grant above this is a typo far more often than a real top-up; it also keeps sums clear of BIGINT.
MAX_GRANT_USD = Decimal(1_000_000_000)


class AccountError(AdminError):
    pass


def audit(session: Session, actor: str, action: str, target: str = "", detail: str = "",
          org_id: int | None = None) -> None:
    session.add(AuditLog(actor=actor, action=action, target=target, detail=detail, org_id=org_id))


def org_by_name(session: Session, name: str) -> Org:
    org = session.scalar(select(Org).where(Org.name == name))
    if org is None:
        raise AccountError(f"no org named '{name}'")
    return org


def create_org(session: Session, name: str, credits_micros: int = 0, actor: str = "cli",
               plan: str | None = None) -> Org:
    name = name.strip()
    if not name:
        raise AccountError("org name must not be empty")
    if len(name) > NAME_MAX:
        raise AccountError(f"an org name has at most {NAME_MAX} characters")
    if session.scalar(select(Org).where(Org.name == name)) is not None:
        raise AccountError(f"an org named '{name}' already exists")
    org = Org(name=name, credits_micros=0)
    session.add(org)
    session.flush()
    if credits_micros:
        add_credits(session, org, credits_micros, actor=actor, note="initial credits")
    if plan:
        plan_service.set_org_plan(session, org, plan_service.by_name(session, plan), actor=actor)
    audit(session, actor, "org.create", name, org_id=org.id)
    announce(session, "orgs")
    return org


def add_credits(session: Session, org: Org, micros: int, actor: str = "cli", note: str = "") -> None:
    """A top-up (see services/credits.py: the transaction log keeps the balance derivable)."""
    if micros <= 0:
        raise AccountError("the amount must be positive")
    credit_service.top_up(session, org, micros, actor=actor, reason=note or "top-up")


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # shown once, never stored


def create_key(session: Session, org: Org, name: str = "", scope: str = "inference", actor: str = "cli",
               user_id: int | None = None, app_id: int | None = None) -> NewKey:
    """A key of `org`, optionally of one of its users or one of its apps (not both). Refused beyond
    the org's plan's max_keys."""
    if scope not in SCOPES:
        raise AccountError(f"scope must be one of {', '.join(SCOPES)}")
    if len(name) > NAME_MAX:
        raise AccountError(f"a key name has at most {NAME_MAX} characters")
    if user_id is not None and app_id is not None:
        raise AccountError("a key belongs to one user or one app, not both")
    if user_id is not None:
        user = session.get(User, user_id)
        if user is None or user.org_id != org.id:
            raise AccountError(f"no such user in org {org.name}")
    if app_id is not None:
        app = session.get(App, app_id)
        if app is None or app.org_id != org.id:
            raise AccountError(f"no such app in org {org.name}")
    plan_service.check_key_quota(session, org)
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


def _check_new_password(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise AccountError(f"the password must have at least {PASSWORD_MIN} characters")
    if len(password) > 1024:
        raise AccountError("the password must have at most 1024 characters")
    # Control characters are never typed, and trailing NULs vanish inside scrypt's HMAC ("a\0" == "a").
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise AccountError("the password must not contain control characters")


def create_admin(session: Session, email: str, password: str, superadmin: bool = False,
                 org_id: int | None = None, actor: str = "cli", role: str | None = None,
                 one_time: bool = False) -> User:
    """A user who signs in to the console: a super-admin (every org), or an org's org-admin or member.
    `one_time`: the password was generated and shown to someone, so it must be changed at the first
    sign-in."""
    email = email.strip().lower()
    role = "super-admin" if superadmin else (role or "org-admin")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if role == "super-admin" and not superadmin:
        superadmin = True
    if not EMAIL.match(email) or len(email) > 254:
        raise AccountError("a valid email is required")
    _check_new_password(password)
    if session.scalar(select(User).where(User.email == email)) is not None:
        raise AccountError(f"a user with email {email} already exists")
    user = User(email=email, password_hash=crypto.hash_password(password), is_superadmin=superadmin,
                org_id=None if superadmin else org_id, role=role, status="active", must_change_password=one_time)
    session.add(user)
    session.flush()
    audit(session, actor, "admin.create", email, (role or "") + ("; one-time password" if one_time else ""),
          org_id=user.org_id)
    return user


def one_time_password() -> str:
    return secrets.token_urlsafe(12)


def end_sessions(user: User) -> None:
    """Every session cookie issued to `user` so far stops working (see admin/__init__.py)."""
    user.session_version = (user.session_version or 0) + 1


def change_password(session: Session, user: User, current: str, new: str, repeat: str, actor: str) -> None:
    """The user's own change: the current password, the new one twice. Ends every other session."""
    if not crypto.check_password(user.password_hash, current):
        raise AccountError("the current password is wrong")
    if new != repeat:
        raise AccountError("the two new passwords differ")
    _check_new_password(new)
    if new == current:
        raise AccountError("the new password must differ from the current one")
    user.password_hash = crypto.hash_password(new)
    user.must_change_password = False
    user.failed_logins, user.locked_until = 0, None
    end_sessions(user)
    audit(session, actor, "password.change", user.email, org_id=user.org_id)  # never the password


def reset_password(session: Session, email: str, actor: str = "cli") -> str:
    """A new one-time password for `email` (returned, shown once): changed at the next sign-in;
    every session of the user ends and a lockout is lifted."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise AccountError(f"no user with email {email}")
    password = one_time_password()
    user.password_hash = crypto.hash_password(password)
    user.must_change_password = True
    user.failed_logins, user.locked_until = 0, None
    end_sessions(user)
    audit(session, actor, "password.reset", user.email, "one-time password issued", org_id=user.org_id)
    return password


@dataclass(frozen=True)
class NewUser:
    user: User
    password: str  # shown once


def create_user(session: Session, org: Org, email: str, role: str = "member", weekly_cap_micros: int | None = None,
                actor: str = "cli") -> NewUser:
    """A person in `org` with a one-time password; an optional weekly cap is a hard weekly budget."""
    from gateway.services import budgets as budget_service

    if role == "super-admin":
        raise AccountError("a super-admin belongs to no org: use `gateway admin create --superadmin`")
    password = one_time_password()
    user = create_admin(session, email, password, org_id=org.id, actor=actor, role=role, one_time=True)
    if weekly_cap_micros:
        budget_service.set_budget(session, budget_service.Target(org, "user", user.id, user.email),
                                  weekly_cap_micros, "week", hard=True, actor=actor)
    return NewUser(user, password)


def set_user_status(session: Session, user: User, active: bool, actor: str = "cli") -> None:
    """Disable or re-enable a user: a disabled user cannot sign in and their keys answer 401."""
    user.status = "active" if active else "disabled"
    audit(session, actor, "user.enable" if active else "user.disable", user.email, org_id=user.org_id)
    announce(session, "keys")


def create_app(session: Session, org: Org, slug: str, name: str = "", contact_email: str = "",
               actor: str = "cli") -> App:
    slug = slug.strip().lower()
    if not SLUG.match(slug):
        raise AccountError("an app slug is 1-64 lowercase letters, digits, '-' or '_'")
    if contact_email and (not EMAIL.match(contact_email) or len(contact_email) > 254):
        raise AccountError("the contact must be an email address")
    if len(name) > NAME_MAX:
        raise AccountError(f"an app name has at most {NAME_MAX} characters")
    if session.scalar(select(App).where(App.org_id == org.id, App.slug == slug)) is not None:
        raise AccountError(f"org {org.name} already has an app '{slug}'")
    app = App(org_id=org.id, slug=slug, name=name or slug, contact_email=contact_email, active=True)
    session.add(app)
    session.flush()
    audit(session, actor, "app.create", slug, org_id=org.id)
    return app


def app_by_slug(session: Session, org: Org, slug: str) -> App:
    app = session.scalar(select(App).where(App.org_id == org.id, App.slug == slug))
    if app is None:
        raise AccountError(f"no app '{slug}' in org {org.name}")
    return app


def user_in_org(session: Session, org: Org, email: str) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower(), User.org_id == org.id))
    if user is None:
        raise AccountError(f"no user {email} in org {org.name}")
    return user


def set_app_active(session: Session, app: App, active: bool, actor: str = "cli") -> None:
    """Deactivate or reactivate an app: an inactive app's keys answer 401."""
    app.active = active
    audit(session, actor, "app.enable" if active else "app.disable", app.slug, org_id=app.org_id)
    announce(session, "keys")


# ---- reading and parsing for the console ---------------------------------------------------------

def parse_usd(value: str | None, allow_zero: bool = False) -> int:
    """A USD amount as typed ('25', '$0.50') -> micro-dollars. Credits only ever go up here
    (add_credits refuses anything else), so negative amounts are refused too."""
    text = (value or "").strip().removeprefix("$").strip()
    if not text:
        if allow_zero:
            return 0
        raise AccountError("enter an amount in USD, e.g. 25 or 0.50")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise AccountError(f"'{value}' is not an amount in USD (e.g. 25 or 0.50)")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise AccountError("the amount must not be negative" if allow_zero else "the amount must be positive")
    if amount > MAX_GRANT_USD:
        raise AccountError(f"the amount must be at most ${MAX_GRANT_USD:,} at a time")
    micros = usd_to_micros(amount)
    if micros == 0 and amount != 0:
        raise AccountError("the amount must be at least $0.000001")
    return micros


@dataclass(frozen=True)
class OrgOverview:
    org: Org
    active_keys: int
    spend_day_micros: int  # charged over the hourly rollups covering the last 24 h
    spend_week_micros: int  # ... the last 7 days


def org_overview(session: Session, orgs: Iterable[Org], now: datetime | None = None) -> list[OrgOverview]:
    """Live key counts and recent spend of `orgs` (spend from the usage rollups, never the raw ledger)."""
    orgs = list(orgs)
    ids = [o.id for o in orgs]
    if not ids:
        return []
    spend = rollups.recent_spend(session, ids, now or utcnow())
    keys = dict(session.execute(
        select(ApiKey.org_id, func.count()).where(ApiKey.org_id.in_(ids), ApiKey.revoked_at.is_(None))
        .group_by(ApiKey.org_id)).tuples().all())
    return [OrgOverview(o, keys.get(o.id, 0), *spend.get(o.id, (0, 0))) for o in orgs]


def list_keys(session: Session, org_ids: Iterable[int] | None = None, limit: int | None = None) -> list[ApiKey]:
    """Keys, newest first, of `org_ids` (None: every org), revoked ones included."""
    q = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    if org_ids is not None:
        q = q.where(ApiKey.org_id.in_(list(org_ids)))
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q).all())
