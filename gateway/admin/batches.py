"""Batches console page: every batch the user may see (its org's; every org's for a super-admin) with
status, counts, cost at the batch price and what it saved; a drill-down to its requests; cancel
(org admins and super-admins, audited). Thin over services/batches.py."""

from __future__ import annotations

from flask import abort, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.editing import org_names, visible_orgs
from gateway.db import request_session
from gateway.errors import GatewayError, NotFound
from gateway.htmx import is_htmx, render_page_or_partial, trigger
from gateway.ledger.pricing import usd
from gateway.models import Batch, BatchPart
from gateway.services import batches
from gateway.services.errors import Forbidden

PAGE = 100


def _require_admin() -> None:
    if not (current_user.is_superadmin or current_user.role == "org-admin"):
        abort(403, description="Only org admins and super-admins can see batches.")


@bp.get("/batches", endpoint="batches")  # the nav's endpoint name
def batch_list():
    _require_admin()
    session = request_session()
    orgs = [o.id for o in visible_orgs(session)]
    status = request.args.get("status") or ""
    q = select(Batch).where(Batch.org_id.in_(orgs))
    if status:
        q = q.where(Batch.status == status)
    rows = list(session.scalars(q.order_by(Batch.id.desc()).limit(PAGE)))
    providers = {}
    for part in session.scalars(select(BatchPart).where(BatchPart.batch_id.in_([b.id for b in rows]))):
        providers.setdefault(part.batch_id, []).append(part.provider)
    return render_page_or_partial("admin/batches/index.html", "admin/batches/_table.html", rows=rows,
                                  names=org_names(session), providers=providers, usd=usd, status=status)


def _visible(public_id: str) -> Batch:
    session = request_session()
    try:
        batch = batches.get(session, None, public_id[:64])
    except NotFound:
        abort(404)
    if not current_user.is_superadmin and batch.org_id != current_user.org_id:
        abort(404)  # another org's batch is not shown to exist
    return batch


@bp.get("/batches/<public_id>")
def batch_detail(public_id: str):
    _require_admin()
    batch = _visible(public_id)
    session = request_session()
    parts = list(session.scalars(select(BatchPart).where(BatchPart.batch_id == batch.id)))
    return render_page_or_partial("admin/batches/detail.html", "admin/batches/detail.html", batch=batch,
                                  parts=parts, requests=batches.requests_of(session, batch.id),
                                  org=org_names(session).get(batch.org_id, ""), usd=usd)


@bp.post("/batches/<public_id>/cancel")
def batch_cancel(public_id: str):
    _visible(public_id)
    try:
        batches.console_cancel(current_user, public_id[:64])
    except Forbidden as e:
        abort(403, description=str(e))
    except NotFound:
        abort(404)
    except GatewayError as e:  # a finished batch: say so on the page
        abort(409, description=e.message)
    if is_htmx():
        resp = redirect(url_for("admin.batch_detail", public_id=public_id))
        return trigger(resp, "batches-changed")
    return redirect(url_for("admin.batch_detail", public_id=public_id))
