"""Error reports: the gateway's own failed requests (source gateway or upstream, written by the
ledger writer) and clients' reports (POST /v1/error-reports), grouped by type and model with counts
per hour or day, and the latest reports. Org-admins see their org's only."""

from __future__ import annotations

from datetime import timedelta

from flask import request
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.editing import chosen_orgs, require_admin, visible_orgs
from gateway.db import request_session
from gateway.htmx import render_page_or_partial
from gateway.ledger.trends import error_groups
from gateway.models import ErrorReport, Org, User, utcnow

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SOURCES = ("", "gateway", "upstream", "client")
LATEST = 100


@bp.get("/errors")
def error_reports():
    require_admin()
    org_ids, picked = chosen_orgs(request.args.get("org"))
    period = request.args.get("period") if request.args.get("period") in PERIODS else "24h"
    source = request.args.get("source") if request.args.get("source") in SOURCES else ""
    kind = (request.args.get("type") or "").strip()[:64]
    end = utcnow()
    start = end - PERIODS[period]
    session = request_session()
    groups = error_groups(session, org_ids, start, end, source)
    E = ErrorReport
    q = (select(E, User.email, Org.name).outerjoin(User, User.id == E.user_id).join(Org, Org.id == E.org_id)
         .where(E.created_at >= start).order_by(E.created_at.desc(), E.id.desc()).limit(LATEST))
    if org_ids is not None:
        q = q.where(E.org_id.in_(org_ids))
    if source:
        q = q.where(E.source == source)
    if kind:
        q = q.where(E.type == kind)
    latest = session.execute(q).all()
    peak = max((n for g in groups.groups for n in g["series"]), default=0)
    return render_page_or_partial(
        "admin/errors/index.html", "admin/errors/_body.html", groups=groups, latest=latest, peak=max(peak, 1),
        period=period, periods=list(PERIODS), source=source, sources=SOURCES, kind=kind,
        orgs=visible_orgs(session), picked=picked)
