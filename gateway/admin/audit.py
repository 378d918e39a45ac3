"""Audit log console page: who changed what, and when; org admins see their own org's entries only."""

from __future__ import annotations

from flask import request
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.logs import visible_org_ids
from gateway.db import request_session
from gateway.htmx import render_page_or_partial
from gateway.models import AuditLog, Org

PAGE = 200
AREAS = ("alias", "fallback", "agent", "access", "routing", "key", "org", "credits", "admin", "login", "savings",
         "user", "app", "budget", "password", "topup")


@bp.get("/audit")
def audit_log():
    area = request.args.get("area") or ""
    q = (select(AuditLog, Org.name).outerjoin(Org, Org.id == AuditLog.org_id)
         .order_by(AuditLog.created_at.desc(), AuditLog.id.desc()).limit(PAGE))
    orgs = visible_org_ids()
    if orgs is not None:  # global entries (org_id NULL) are the super-admins' to read
        q = q.where(AuditLog.org_id.in_(orgs))
    if area in AREAS:
        q = q.where(AuditLog.action.like(f"{area}.%"))
    else:
        area = ""
    rows = request_session().execute(q).all()
    return render_page_or_partial("admin/audit/index.html", "admin/audit/_table.html", rows=rows, area=area,
                                  areas=AREAS)
