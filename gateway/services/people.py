"""People and apps as the console manages them: who may create, change and disable whom, and a
signed-in user's own keys (the dashboard).

Rules (each write checks them itself, whatever page calls it):
- A super-admin manages everyone; an org-admin manages their own org's users and apps only, and can
  neither create a super-admin nor promote anyone beyond org-admin, nor touch a super-admin.
- Nobody changes their own role or status here (an admin cannot lock themselves out by a click),
  and the last active super-admin stays one.
- A user's own keys are bound to them (ApiKey.user_id); a member's keys are inference or read keys,
  never admin (an admin key manages every key of the org over /v1/api-keys).

The writes are services/tenancy.py's and budgets.py's (audited, announced); the checks and the
extra audit lines (role, cap) are here. Errors are AdminError (shown in the form) or Forbidden (403).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.memo import announce
from gateway.models import ApiKey, App, Budget, Org, Plan, User
from gateway.services import budgets as budget_service
from gateway.services import dlp as dlp_service
from gateway.services import tenancy
from gateway.services.errors import Actor, AdminError, Forbidden, is_member, require_org_admin
from gateway.services.tenancy import AccountError

ORG_ROLES = ("org-admin", "member")
MEMBER_SCOPES = ("inference", "read")


def role_of(user: User) -> str:
    return "super-admin" if user.is_superadmin else (user.role or "member")


def _sentence(e: Exception) -> str:
    text = str(e)
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _org(session: Session, org_id: int | None) -> Org:
    org = session.get(Org, org_id) if org_id else None
    if org is None:
        raise AdminError("Choose an org.")
    return org


def _managed_user(session: Session, actor: Actor, user_id: int, what: str) -> User:
    """The user `user_id` if the actor manages them; another org's user is a 403."""
    user = session.get(User, user_id)
    if user is None:
        raise AdminError("That user does not exist.")
    if not actor.is_superadmin:
        require_org_admin(actor, user.org_id, what)
        if user.is_superadmin:
            raise Forbidden("Only a super-admin can change a super-admin.")
    return user


def _not_self(actor: Actor, user: User, what: str) -> None:
    if getattr(actor, "id", None) == user.id or actor.email == user.email:
        raise AdminError(f"You cannot {what} yourself; ask another administrator.")


def _other_superadmins(session: Session, user: User) -> int:
    return session.scalar(select(func.count()).select_from(User).where(
        User.is_superadmin.is_(True), User.status == "active", User.id != user.id)) or 0


# ---- users -------------------------------------------------------------------------------------

def create_user(session: Session, actor: Actor, org_id: int | None, email: str, role: str,
                weekly_cap: str | None = None) -> tenancy.NewUser:
    """A user with a one-time password (returned once). role super-admin: no org, super-admins only."""
    role = (role or "member").strip()
    if role not in tenancy.ROLES:
        raise AdminError(f"Role must be one of {', '.join(tenancy.ROLES)}.")
    if role == "super-admin":
        if not actor.is_superadmin:
            raise Forbidden("Only a super-admin can create a super-admin.")
        if (weekly_cap or "").strip():
            raise AdminError("A super-admin belongs to no org, so has no weekly cap.")
        password = tenancy.one_time_password()
        try:
            user = tenancy.create_admin(session, email or "", password, superadmin=True, actor=actor.email,
                                        one_time=True)
        except AccountError as e:
            raise AdminError(_sentence(e)) from None
        return tenancy.NewUser(user, password)
    if org_id is not None:  # permission first: another org's id is a 403, whatever else is wrong
        require_org_admin(actor, org_id, "create users")
    org = _org(session, org_id)
    try:
        micros = tenancy.parse_usd(weekly_cap, allow_zero=True)
        return tenancy.create_user(session, org, email or "", role=role, weekly_cap_micros=micros or None,
                                   actor=actor.email)
    except AccountError as e:
        raise AdminError(_sentence(e)) from None


def set_role(session: Session, actor: Actor, user_id: int, role: str) -> User:
    user = _managed_user(session, actor, user_id, "change roles")
    _not_self(actor, user, "change the role of")
    if role not in tenancy.ROLES:
        raise AdminError(f"Role must be one of {', '.join(tenancy.ROLES)}.")
    if role == "super-admin" and not actor.is_superadmin:
        raise Forbidden("Only a super-admin can make someone a super-admin.")
    if user.is_superadmin and role != "super-admin":
        if user.org_id is None:
            raise AdminError("A super-admin has no org; create an org user for them instead.")
        if not _other_superadmins(session, user):
            raise AdminError("This is the last active super-admin.")
    before = role_of(user)
    if before == role:
        return user
    user.is_superadmin = role == "super-admin"
    user.role = role
    tenancy.end_sessions(user)  # the new rights apply from the next sign-in, not a stale cookie
    tenancy.audit(session, actor.email, "user.role", user.email, f"{before} -> {role}", org_id=user.org_id)
    return user


def set_status(session: Session, actor: Actor, user_id: int, active: bool) -> User:
    user = _managed_user(session, actor, user_id, "disable or enable users")
    _not_self(actor, user, "disable or enable")
    if not active and user.is_superadmin and not _other_superadmins(session, user):
        raise AdminError("This is the last active super-admin.")
    if (user.status == "active") == active:
        return user
    tenancy.set_user_status(session, user, active, actor=actor.email)
    if not active:
        tenancy.end_sessions(user)
    return user


def reset_password(session: Session, actor: Actor, user_id: int) -> tuple[User, str]:
    """A new one-time password for the user, shown once; their sessions end."""
    user = _managed_user(session, actor, user_id, "reset passwords")
    return user, tenancy.reset_password(session, user.email, actor=actor.email)


def set_weekly_cap(session: Session, actor: Actor, user_id: int, amount: str | None) -> User:
    """A hard weekly budget on the user (empty: none)."""
    user = _managed_user(session, actor, user_id, "set weekly caps")
    if user.org_id is None:
        raise AdminError("A super-admin belongs to no org, so has no weekly cap.")
    org = session.get(Org, user.org_id)
    target = budget_service.Target(org, "user", user.id, user.email)
    text = (amount or "").strip()
    if not text:
        budget_service.clear_budget(session, target, actor=actor.email)
        return user
    try:
        micros = tenancy.parse_usd(text)
    except AccountError as e:
        raise AdminError(_sentence(e)) from None
    budget_service.set_budget(session, target, micros, "week", hard=True, actor=actor.email)
    return user


@dataclass(frozen=True)
class UserRow:
    user: User
    role: str
    org_name: str
    weekly_cap_micros: int | None
    keys: int


def user_rows(session: Session, org_ids: list[int] | None) -> list[UserRow]:
    """Users of `org_ids` (None: everyone, super-admins included), with role, org, weekly cap, keys."""
    q = select(User).order_by(User.email)
    if org_ids is not None:
        q = q.where(User.org_id.in_(org_ids))
    users = list(session.scalars(q))
    ids = [u.id for u in users]
    names = dict(session.execute(select(Org.id, Org.name)).tuples().all())
    caps = dict(session.execute(select(Budget.user_id, Budget.amount_micros).where(
        Budget.user_id.in_(ids), Budget.window == "week")).tuples().all()) if ids else {}
    keys = dict(session.execute(select(ApiKey.user_id, func.count()).where(
        ApiKey.user_id.in_(ids), ApiKey.revoked_at.is_(None)).group_by(ApiKey.user_id)).tuples().all()) if ids else {}
    return [UserRow(u, role_of(u), names.get(u.org_id, ""), caps.get(u.id), keys.get(u.id, 0)) for u in users]


@dataclass(frozen=True)
class OrgDetails:
    owner: str  # the first org-admin's email, "" when none
    members: int  # users of the org, any role
    cap: Budget | None  # the org's own budget: its API spend cap (window, rollover)
    plan: str
    dlp: bool


def org_details(session: Session, orgs: list[Org], actor: Actor) -> dict[int, OrgDetails]:
    """Per org: owner, member count, API spend cap, plan and DLP status (a few grouped queries)."""
    ids = [o.id for o in orgs]
    if not ids:
        return {}
    members = dict(session.execute(select(User.org_id, func.count()).where(User.org_id.in_(ids))
                                   .group_by(User.org_id)).tuples().all())
    owners: dict[int, str] = {}
    for org_id, email in session.execute(select(User.org_id, User.email).where(
            User.org_id.in_(ids), User.role == "org-admin").order_by(User.id)).tuples():
        owners.setdefault(org_id, email)
    caps = {b.org_id: b for b in session.scalars(select(Budget).where(
        Budget.org_id.in_(ids), Budget.user_id.is_(None), Budget.app_id.is_(None), Budget.key_id.is_(None)))}
    plans = dict(session.execute(select(Plan.id, Plan.name)).tuples().all())
    dlp = {s.org_id: s.enabled for s in dlp_service.status(session, actor) if s.app_id is None}
    return {o.id: OrgDetails(owners.get(o.id, ""), members.get(o.id, 0), caps.get(o.id),
                             plans.get(o.plan_id, "") if o.plan_id else "", dlp.get(o.id, False)) for o in orgs}


# ---- apps --------------------------------------------------------------------------------------

def create_app(session: Session, actor: Actor, org_id: int | None, slug: str, name: str = "",
               contact: str = "") -> App:
    if org_id is not None:
        require_org_admin(actor, org_id, "create apps")
    org = _org(session, org_id)
    try:
        app = tenancy.create_app(session, org, slug or "", name=(name or "").strip(),
                                 contact_email=(contact or "").strip(), actor=actor.email)
    except AccountError as e:
        raise AdminError(_sentence(e)) from None
    announce(session, "keys")
    return app


def set_app_active(session: Session, actor: Actor, app_id: int, active: bool) -> App:
    app = session.get(App, app_id)
    if app is None:
        raise AdminError("That app does not exist.")
    require_org_admin(actor, app.org_id, "change apps")
    if app.active != active:
        tenancy.set_app_active(session, app, active, actor=actor.email)
    return app


def app_keys(session: Session, app_ids: list[int]) -> dict[int, list[ApiKey]]:
    out: dict[int, list[ApiKey]] = {i: [] for i in app_ids}
    if app_ids:
        for k in session.scalars(select(ApiKey).where(ApiKey.app_id.in_(app_ids)).order_by(ApiKey.id.desc())):
            out[k.app_id].append(k)
    return out


# ---- a user's own keys (the dashboard) ---------------------------------------------------------

def own_scopes(actor: Actor) -> tuple[str, ...]:
    return MEMBER_SCOPES if is_member(actor) else tenancy.SCOPES


def create_own_key(session: Session, actor: Actor, user_id: int, name: str, scope: str) -> tenancy.NewKey:
    """A key of the actor's org bound to the actor (the secret is returned once)."""
    user = session.get(User, user_id)
    if user is None or user.email != actor.email or user.status != "active":
        raise Forbidden("You can only create keys for yourself.")
    if user.org_id is None:
        raise AdminError("You belong to no org, so keys of your own have nowhere to be billed; "
                         "create org keys on the API keys page.")
    scope = (scope or "inference").strip()
    if scope not in own_scopes(actor):
        raise AdminError(f"Choose one of the scopes {', '.join(own_scopes(actor))}.")
    name = (name or "").strip()
    try:
        return tenancy.create_key(session, session.get(Org, user.org_id), name=name, scope=scope, actor=actor.email,
                                  user_id=user.id)
    except AccountError as e:
        raise AdminError(_sentence(e)) from None


def revoke_own_key(session: Session, actor: Actor, user_id: int, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.user_id != user_id:  # another user's key does not exist for you
        raise AdminError("That key does not exist.")
    tenancy.revoke_key(session, key, actor=actor.email)
    return key


def own_keys(session: Session, user_id: int) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.user_id == user_id)
                                .order_by(ApiKey.revoked_at.is_not(None), ApiKey.id.desc())))
