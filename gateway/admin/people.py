"""Users and Apps console pages: create inline, change role, status and weekly cap, reset a password
(one-time, shown once), activate or deactivate an app, set an app's default deferral and webhook
(its signing secret shown once, services/webhooks.py). Thin over services/people.py, which decides
who may do what (an org-admin: their own org, never a super-admin); every write is audited there.

Row actions answer htmx with the row again (and a message in it); a plain form post gets the page.
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, make_response, redirect, render_template, request, url_for
from flask_login import current_user

from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, visible_orgs, write
from gateway.admin.logs import visible_org_ids
from gateway.db import request_session
from gateway.htmx import is_htmx, trigger
from gateway.ledger.pricing import usd
from gateway.models import App
from gateway.services import dlp as dlp_service
from gateway.services import people, tenancy, webhooks
from gateway.services.errors import AdminError

USERS, USER_TABLE, USER_FORM, USER_ROW = ("admin/users/index.html", "admin/users/_table.html",
                                          "admin/users/_form.html", "admin/users/_row.html")
APPS, APP_TABLE, APP_FORM, APP_ROW = ("admin/apps/index.html", "admin/apps/_table.html", "admin/apps/_form.html",
                                      "admin/apps/_row.html")


def _int(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text.isdigit() and len(text) < 10 else None


def _roles() -> tuple[str, ...]:
    return tenancy.ROLES if current_user.is_superadmin else people.ORG_ROLES


# ---- Users -------------------------------------------------------------------------------------

def _user_page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    session = request_session()
    orgs = visible_orgs(session)
    if form is None:
        form = {"org": str(current_user.org_id or ""), "role": "member"}
    shown = visible_org_ids()
    org_id = request.args.get("org", type=int)  # a super-admin's filter (an Orgs row's members link)
    if org_id in [o.id for o in orgs] and shown is None:
        shown = [org_id]
    return reply(USERS, partial, rows=people.user_rows(session, shown), orgs=orgs, form=form, roles=_roles(),
                 usd=usd, org_id=org_id if shown == [org_id] else None, **kw)


@bp.get("/users")
def users():
    return _user_page(USER_TABLE)


@bp.post("/users")
def user_create():
    form = {k: v[:300] for k, v in request.form.to_dict().items()}
    try:
        new = write(people.create_user, _int(form.get("org")), form.get("email", ""), form.get("role", ""),
                    form.get("weekly_cap"))
    except AdminError as e:
        return _user_page(USER_FORM, form=form, error=str(e))
    return _user_page(USER_FORM, event="users-created", issued=(new.user.email, new.password),
                      form={"org": form.get("org"), "role": form.get("role")})


def _row_reply(user_id: int, message: str = "", error: str = "", issued: str = ""):
    """The user's row again (htmx), or the page (a plain post)."""
    session = request_session()
    session.expire_all()
    rows = [r for r in people.user_rows(session, visible_org_ids()) if r.user.id == user_id]
    if not is_htmx():
        if error:
            return _user_page(USER_TABLE, error=error)
        if issued:
            return _user_page(USER_TABLE, issued=(rows[0].user.email if rows else "", issued))
        return redirect(url_for("admin.users"))
    if not rows:
        abort(404)
    html = render_template(USER_ROW, r=rows[0], roles=_roles(), usd=usd, message=message, error=error,
                           issued=issued)
    return trigger(make_response(html), "users-changed")


def _user_action(user_id: int, fn, *args: Any, done: str):
    try:
        write(fn, user_id, *args)
    except AdminError as e:
        return _row_reply(user_id, error=str(e))
    return _row_reply(user_id, message=done)


@bp.post("/users/<int:user_id>/role")
def user_role(user_id: int):
    role = (request.form.get("role") or "")[:32]
    return _user_action(user_id, people.set_role, role, done=f"Role: {role}.")


@bp.post("/users/<int:user_id>/status")
def user_status(user_id: int):
    active = request.form.get("active") == "1"
    return _user_action(user_id, people.set_status, active, done="Enabled." if active else
                        "Disabled: they cannot sign in and their keys answer 401.")


@bp.post("/users/<int:user_id>/cap")
def user_cap(user_id: int):
    amount = (request.form.get("weekly_cap") or "")[:40]
    return _user_action(user_id, people.set_weekly_cap, amount,
                        done="Weekly cap cleared." if not amount.strip() else "Weekly cap saved.")


@bp.post("/users/<int:user_id>/reset")
def user_reset(user_id: int):
    """A new one-time password, shown once in this response; the user's sessions end."""
    try:
        _user, password = write(people.reset_password, user_id)
    except AdminError as e:
        return _row_reply(user_id, error=str(e))
    if user_id == current_user.id:  # one's own reset ends this session too
        return redirect(url_for("admin.login"))
    return _row_reply(user_id, issued=password)


# ---- Apps --------------------------------------------------------------------------------------

def _app_rows(session) -> list[dict[str, Any]]:
    ids = visible_org_ids()
    q = session.query(App).order_by(App.org_id, App.slug)
    if ids is not None:
        q = q.filter(App.org_id.in_(ids))
    apps = q.all()
    names = {o.id: o.name for o in visible_orgs(session)}
    dlp = {(s.org_id, s.app_id): s for s in dlp_service.status(session, current_user) if s.app_id is not None}
    keys = people.app_keys(session, [a.id for a in apps])
    return [{"app": a, "org": names.get(a.org_id, ""), "dlp": dlp.get((a.org_id, a.id)), "keys": keys[a.id]}
            for a in apps]


def _app_page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    session = request_session()
    return reply(APPS, partial, rows=_app_rows(session), orgs=visible_orgs(session),
                 form=form if form is not None else {"org": str(current_user.org_id or "")}, **kw)


@bp.get("/apps")
def apps():
    return _app_page(APP_TABLE)


@bp.post("/apps")
def app_create():
    form = {k: v[:300] for k, v in request.form.to_dict().items()}
    try:
        app = write(people.create_app, _int(form.get("org")), form.get("slug", ""), form.get("name", ""),
                    form.get("contact", ""))
    except AdminError as e:
        return _app_page(APP_FORM, form=form, error=str(e))
    return _app_page(APP_FORM, event="apps-created", notice=f"Created app {app.slug}.",
                     form={"org": form.get("org")})


def _app_row_reply(app_id: int, message: str = "", error: str = "", issued: str = ""):
    """The app's row again (htmx), or the page (a plain post), with a message or a secret shown once."""
    if not is_htmx():
        if error or issued:
            return _app_page(APP_TABLE, delivery_error=error, issued=issued)
        return redirect(url_for("admin.apps"))
    session = request_session()
    session.expire_all()
    row = next((r for r in _app_rows(session) if r["app"].id == app_id), None)
    if row is None:
        abort(404)
    html = render_template(APP_ROW, r=row, message=message, error=error, issued=issued)
    return trigger(make_response(html), "apps-changed")


@bp.post("/apps/<int:app_id>/active")
def app_active(app_id: int):
    active = request.form.get("active") == "1"
    try:
        write(people.set_app_active, app_id, active)
    except AdminError:
        abort(404)
    return _app_row_reply(app_id)


@bp.post("/apps/<int:app_id>/delivery")
def app_delivery(app_id: int):
    """Default deferral (seconds or never) and webhook URL; the first URL's secret is shown once."""
    settings = current_app.extensions["settings"]
    try:
        _, secret = write(webhooks.console_update, app_id, request.form.get("deferral", "")[:32],
                          request.form.get("webhook_url", "")[:600], settings.secret_key,
                          settings.webhook_allow_private)
    except AdminError as e:
        if "does not exist" in str(e):
            abort(404)
        return _app_row_reply(app_id, error=str(e))
    return _app_row_reply(app_id, message="Saved.", issued=secret or "")


@bp.post("/apps/<int:app_id>/webhook-secret")
def app_webhook_secret(app_id: int):
    try:
        _, secret = write(webhooks.console_rotate, app_id, current_app.extensions["settings"].secret_key)
    except AdminError as e:
        if "does not exist" in str(e):
            abort(404)
        return _app_row_reply(app_id, error=str(e))
    return _app_row_reply(app_id, message="New signing secret made; the old one no longer signs.", issued=secret)
