"""Orgs and API Keys console: what the `gateway org|key` commands do, for admins in a browser (the
credit and budget writes below serve the Credits and Budgets pages, spend.py).

The writes are tenancy.py's (shared with the CLI), so each one audits and announces itself; the
wrappers here add who may do it (Forbidden is a 403) and turn AccountError into a message for the form.
"""

from __future__ import annotations

from typing import Any

from flask import abort, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, require_superadmin, visible_orgs, write
from gateway.db import request_session
from gateway.htmx import is_htmx, trigger
from gateway.ledger.pricing import usd
from gateway.models import ApiKey, Org
from gateway.services import budgets as budget_service
from gateway.services import credits as credit_service
from gateway.services import people, tenancy
from gateway.services.errors import Actor, AdminError, Forbidden, require_org_admin
from gateway.services.tenancy import AccountError

ORGS, ORG_TABLE = "admin/orgs/index.html", "admin/orgs/_table.html"
ORG_FORM = "admin/orgs/_form.html"
KEYS, KEY_TABLE, KEY_FORM, KEY_ROW = ("admin/keys/index.html", "admin/keys/_table.html", "admin/keys/_form.html",
                                     "admin/keys/_row.html")
KEY_LIMIT = 500  # newest first; an org with more keys is filtered by org
SCOPE_HELP = {"inference": "API calls and listings", "read": "listings only (403 on inference)",
              "admin": "everything inference can"}


def _sentence(e: Exception) -> str:
    """tenancy.py speaks in CLI fragments ('the amount must be positive'); the form shows sentences."""
    text = str(e)
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _superadmin(actor: Actor, what: str) -> None:
    if not actor.is_superadmin:
        raise Forbidden(f"Only a super-admin can {what}.")


def _own_org(actor: Actor, org_id: int | None, what: str) -> None:
    require_org_admin(actor, org_id, what)


def _org(session, org_id: int | None) -> Org:
    if org_id is None:
        raise AdminError("Choose an org.")
    org = session.get(Org, org_id)
    if org is None:
        raise AdminError("That org does not exist.")
    return org


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


# ---- writes, as the signed-in user (editing.write runs each in its own short transaction) ----------

def create_org(session, actor: Actor, name: str, credits: str | None) -> Org:
    _superadmin(actor, "create orgs")
    name = (name or "").strip()
    if len(name) > tenancy.NAME_MAX:
        raise AdminError(f"An org name has at most {tenancy.NAME_MAX} characters.")
    try:
        micros = tenancy.parse_usd(credits, allow_zero=True)
        return tenancy.create_org(session, name, micros, actor=actor.email)
    except AccountError as e:
        raise AdminError(_sentence(e)) from None


def add_credits(session, actor: Actor, org_id: int | None, amount: str | None, note: str | None) -> Org:
    _superadmin(actor, "add credits")
    org = _org(session, org_id)
    note = (note or "").strip()
    if len(note) > 200:
        raise AdminError("A note has at most 200 characters.")
    try:
        tenancy.add_credits(session, org, tenancy.parse_usd(amount), actor=actor.email, note=note)
    except AccountError as e:
        raise AdminError(_sentence(e)) from None
    return org


def refund_or_adjust(session, actor: Actor, org_id: int | None, kind: str, amount: str | None,
                     reason: str | None) -> Org:
    _superadmin(actor, "refund or adjust credits")
    org = _org(session, org_id)
    reason = (reason or "").strip()
    if kind == "refund":
        credit_service.refund(session, org, tenancy.parse_usd(amount), reason, actor=actor.email)
    elif kind == "adjustment":
        credit_service.adjust(session, org, credit_service.parse_signed_usd(amount), reason, actor=actor.email)
    else:
        raise AdminError("Choose refund or adjustment.")
    return org


def set_or_clear_budget(session, actor: Actor, form: dict[str, Any]) -> str:
    """A budget on one of the actor's orgs (a super-admin: any), or on one of its users, apps or keys."""
    org_id = _int(form.get("org"))
    if org_id is not None:
        _own_org(actor, org_id, "set budgets")
    org = _org(session, org_id)
    t = budget_service.target(session, org, form.get("user") or None, form.get("app") or None,
                              (form.get("key") or "").strip() or None)
    if form.get("action") == "clear":
        found = budget_service.clear_budget(session, t, actor=actor.email)
        return f"Cleared the budget on {t.kind} {t.label}." if found else f"No budget on {t.kind} {t.label}."
    micros = tenancy.parse_usd(form.get("amount"))
    budget_service.set_budget(session, t, micros, form.get("window", ""), hard=not form.get("soft"),
                              rollover=bool(form.get("rollover")), actor=actor.email)
    return f"Budget on {t.kind} {t.label}: ${usd(micros)} per {form.get('window')}, from the next request."


def create_key(session, actor: Actor, org_id: int | None, name: str, scope: str, user: str = "",
               app: str = "") -> tenancy.NewKey:
    """A key of the org, optionally of one of its users (by email) or apps (by slug)."""
    if org_id is not None:  # permission first: another org's id is a 403, whatever else is wrong
        _own_org(actor, org_id, "create keys")
    org = _org(session, org_id)
    name = (name or "").strip()
    if len(name) > tenancy.NAME_MAX:
        raise AdminError(f"A key name has at most {tenancy.NAME_MAX} characters.")
    try:
        user_id = tenancy.user_in_org(session, org, user).id if (user or "").strip() else None
        app_id = tenancy.app_by_slug(session, org, app.strip()).id if (app or "").strip() else None
        return tenancy.create_key(session, org, name=name, scope=(scope or "").strip(), actor=actor.email,
                                  user_id=user_id, app_id=app_id)
    except AdminError as e:
        raise AdminError(_sentence(e)) from None


def revoke_key(session, actor: Actor, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise AdminError("That key does not exist.")
    _own_org(actor, key.org_id, "revoke keys")
    tenancy.revoke_key(session, key, actor=actor.email)  # already revoked: nothing to do, nothing audited
    return key


# ---- Orgs --------------------------------------------------------------------------------------------

def _org_page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    """Orgs with their people, caps, plan, balance and DLP status; soft-budget alerts as a banner.
    The credit and budget forms are the Credits and Budgets pages (spend.py)."""
    session = request_session()
    orgs = visible_orgs(session)
    alerts = budget_service.alerts(session, [o.id for o in orgs])
    kw.setdefault("which", "org")
    return reply(ORGS, partial, rows=tenancy.org_overview(session, orgs), orgs=orgs, usd=usd, form=form or {},
                 alerts=alerts, names={o.id: o.name for o in orgs},
                 details=people.org_details(session, orgs, current_user), **kw)


@bp.get("/orgs")
def orgs():
    return _org_page(ORG_TABLE)


@bp.post("/orgs")
def org_create():
    require_superadmin()
    form = request.form.to_dict()
    try:
        org = write(create_org, form.get("name", ""), form.get("credits"))
    except AdminError as e:
        return _org_page(ORG_FORM, form=form, which="org", error=str(e))
    # org-created: the credits form reloads its list of orgs too
    return _org_page(ORG_FORM, which="org", event="orgs-changed, org-created",
                     notice=f"Created org {org.name} with ${usd(org.credits_micros)} of credits.")


# ---- API Keys ----------------------------------------------------------------------------------------

def _key_page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    session = request_session()
    orgs = visible_orgs(session)
    allowed = [o.id for o in orgs]
    org_id = request.args.get("org", type=int) if current_user.is_superadmin else None
    org_id = org_id if org_id in allowed else None
    shown = [org_id] if org_id else allowed
    keys = tenancy.list_keys(session, shown, limit=KEY_LIMIT + 1)
    if form is None:  # ?app= (an Apps row's "Add a key") names the app the new key is for
        form = {"org": str(org_id or current_user.org_id or ""), "scope": "inference",
                "app": (request.args.get("app") or "")[:64]}
    return reply(KEYS, partial, keys=keys[:KEY_LIMIT], more=len(keys) > KEY_LIMIT, org_id=org_id, orgs=orgs,
                 names={o.id: o.name for o in orgs}, form=form, scopes=tenancy.SCOPES, scope_help=SCOPE_HELP,
                 **kw)


@bp.get("/keys")
def keys():
    return _key_page(KEY_TABLE)


@bp.post("/keys")
def key_create():
    form = request.form.to_dict()
    try:
        new = write(create_key, _int(form.get("org")), form.get("name", ""), form.get("scope", ""),
                    form.get("user", ""), form.get("app", ""))
    except AdminError as e:
        return _key_page(KEY_FORM, form=form, error=str(e))
    # The secret exists only in this response: it is stored as a digest, and not put in the session.
    return _key_page(KEY_FORM, form={"org": form.get("org"), "scope": form.get("scope")}, event="keys-changed",
                     created=new.key, secret=new.secret, org_name=request_session().get(Org, new.key.org_id).name)


@bp.post("/keys/<int:key_id>/revoke")
def key_revoke(key_id: int):
    try:
        key = write(revoke_key, key_id)
    except AdminError:
        abort(404)
    if not is_htmx():
        return redirect(url_for("admin.keys"))
    org = request_session().get(Org, key.org_id)
    row = render_template(KEY_ROW, k=key, names={org.id: org.name})  # the row again, now revoked
    return trigger(make_response(row), "keys-changed")
