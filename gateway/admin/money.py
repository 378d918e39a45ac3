"""Reconciliation and BYOK console pages: read-only views over services/reconciliation.py's lines and the
orgs' own provider keys (services/byok.py). Reconciliation compares the operator's provider
accounts, so it is the super-admins'; BYOK keys are shown to each org's admins for their org."""

from __future__ import annotations

from datetime import date

from flask import request
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.editing import require_superadmin, visible_orgs
from gateway.db import request_session
from gateway.htmx import render_page_or_partial
from gateway.ledger.pricing import usd
from gateway.models import ReconciliationLine
from gateway.services import byok

RECENT_DAYS = 60


@bp.get("/reconciliation")
def reconciliation():
    require_superadmin()
    session = request_session()
    days = list(session.scalars(select(ReconciliationLine.day).distinct()
                                .order_by(ReconciliationLine.day.desc()).limit(RECENT_DAYS)))
    try:
        day = date.fromisoformat(request.args.get("day", ""))
    except ValueError:  # none asked for, or not a date: the latest reconciled day
        day = days[0] if days else None
    lines = list(session.scalars(select(ReconciliationLine).where(ReconciliationLine.day == day)
                                 .order_by(ReconciliationLine.flagged.desc(), ReconciliationLine.provider,
                                           ReconciliationLine.model))) if day else []
    return render_page_or_partial("admin/reconciliation/index.html", "admin/reconciliation/_table.html",
                                  lines=lines, day=day, days=days, usd=usd)


@bp.get("/byok")
def byok_keys():
    session = request_session()
    rows = [(org, view) for org in visible_orgs(session) for view in byok.list_keys(session, org.id)]
    return render_page_or_partial("admin/byok/index.html", "admin/byok/_table.html", rows=rows)
