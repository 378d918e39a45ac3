"""Gateway logs: a live table of recent requests, filterable, with a drill-down to one request."""

from __future__ import annotations

from flask import abort, render_template, request
from flask_login import current_user
from sqlalchemy import Select, select

from gateway.admin.blueprint import bp
from gateway.db import request_session
from gateway.htmx import render_page_or_partial
from gateway.ledger.pricing import usd
from gateway.models import ApiKey, LedgerEntry, Org, User

PAGE = 100
STATUS_FILTERS = {
    "": None,
    "ok": (LedgerEntry.status < 400),
    "error": (LedgerEntry.status >= 400),
    "4xx": (LedgerEntry.status >= 400) & (LedgerEntry.status < 500),
    "5xx": (LedgerEntry.status >= 500),
}


def visible_org_ids() -> list[int] | None:
    """None for a super-admin (every org); otherwise the user's own org only."""
    if current_user.is_superadmin:
        return None
    return [current_user.org_id] if current_user.org_id else []


def _scoped(query: Select) -> Select:
    orgs = visible_org_ids()
    return query if orgs is None else query.where(LedgerEntry.org_id.in_(orgs))


def _query(org_id: int | None, model: str, status: str, user_id: int | None = None,
           app_id: int | None = None) -> Select:
    # Every filter lands on an index that ends in created_at, so ORDER BY ... LIMIT reads it backwards.
    q = (select(LedgerEntry, ApiKey.prefix, ApiKey.name, Org.name, User.email)
         .outerjoin(ApiKey, ApiKey.id == LedgerEntry.key_id)
         .join(Org, Org.id == LedgerEntry.org_id)
         .outerjoin(User, User.id == LedgerEntry.user_id))
    q = _scoped(q)
    if org_id:
        q = q.where(LedgerEntry.org_id == org_id)
    if model:
        q = q.where(LedgerEntry.requested_model == model)
    if user_id:  # a user's requests (Per-user usage drills down here): ix_ledger_user_created
        q = q.where(LedgerEntry.user_id == user_id)
    if app_id:
        q = q.where(LedgerEntry.app_id == app_id)
    cond = STATUS_FILTERS.get(status)
    if cond is not None:
        q = q.where(cond)
    return q.order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc()).limit(PAGE)


@bp.get("/logs")
def logs():
    session = request_session()
    org_id = request.args.get("org", type=int)
    model = (request.args.get("model") or "").strip()
    status = request.args.get("status") or ""
    if status not in STATUS_FILTERS:
        status = ""
    user_id = request.args.get("user", type=int)
    app_id = request.args.get("app", type=int)
    rows = session.execute(_query(org_id, model, status, user_id, app_id)).all()
    user_email = session.scalar(select(User.email).where(User.id == user_id)) if user_id else None
    orgs_q = select(Org.id, Org.name).order_by(Org.name)
    allowed = visible_org_ids()
    if allowed is not None:
        orgs_q = orgs_q.where(Org.id.in_(allowed))
    return render_page_or_partial(
        "admin/logs/index.html", "admin/logs/_table.html",
        rows=rows, orgs=session.execute(orgs_q).all(), org_id=org_id, model=model, status=status,
        status_filters=list(STATUS_FILTERS), usd=usd, user_id=user_id, app_id=app_id, user_email=user_email,
    )


@bp.get("/logs/<request_id>")
def log_detail(request_id: str):
    session = request_session()
    q = _scoped(select(LedgerEntry, ApiKey.prefix, ApiKey.name, Org.name)
                .outerjoin(ApiKey, ApiKey.id == LedgerEntry.key_id)
                .join(Org, Org.id == LedgerEntry.org_id)
                .where(LedgerEntry.request_id == request_id))
    row = session.execute(q).first()
    if row is None:
        abort(404)
    return render_template("admin/logs/detail.html", row=row, usd=usd)
