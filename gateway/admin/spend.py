"""Budgets and Credits console pages.

Budgets: the caps on an org, its users, apps and keys (services/budgets.py through tenancy.py's
set_or_clear_budget: an org-admin within their org). Credits: balances, the credit transaction log,
top-ups, refunds and adjustments (super-admins), and the top-up requests made on dashboards with
Approve and Reject (services/topups.py: a request is credited once, however many approvals race).
The form URLs stay under /admin/orgs/ (scripts and bookmarks know them).
"""

from __future__ import annotations

from typing import Any

from flask import abort, request
from flask_login import current_user

from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, require_superadmin, visible_orgs, write
from gateway.admin.tenancy import _int, _sentence, add_credits, refund_or_adjust, set_or_clear_budget
from gateway.db import MAX_ROW_ID, request_session
from gateway.ledger.pricing import usd
from gateway.models import Org
from gateway.services import budgets as budget_service
from gateway.services import credits as credit_service
from gateway.services import topups
from gateway.services.errors import AdminError

BUDGETS, BUDGET_FORM = "admin/budgets/index.html", "admin/orgs/_budget.html"
CREDITS, CREDITS_FORM, ADJUST_FORM = "admin/credits/index.html", "admin/orgs/_credits.html", "admin/orgs/_adjust.html"
TOPUPS, LOG = "admin/credits/_topups.html", "admin/credits/_log.html"
LOG_LIMIT = 100


# ---- Budgets -----------------------------------------------------------------------------------

def _budget_page(partial: str, budget: dict[str, Any] | None = None, **kw: Any):
    session = request_session()
    orgs = visible_orgs(session)
    rows = [(o.name, v) for o in orgs for v in budget_service.list_budgets(session, o.id)]
    return reply(BUDGETS, partial, orgs=orgs, budget=budget or {"window": "month"}, budget_rows=rows, which="budget",
                 alerts=budget_service.alerts(session, [o.id for o in orgs]), names={o.id: o.name for o in orgs},
                 usd=usd, **kw)


@bp.get("/budgets")
def budgets():
    return _budget_page(BUDGET_FORM)


@bp.post("/orgs/budget")
def org_budget():
    form = {k: v[:300] for k, v in request.form.to_dict().items()}
    try:
        notice = write(set_or_clear_budget, form)
    except AdminError as e:
        return _budget_page(BUDGET_FORM, budget=form, error=_sentence(e))
    return _budget_page(BUDGET_FORM, budget={"org": form.get("org"), "window": form.get("window")}, notice=notice)


# ---- Credits -----------------------------------------------------------------------------------

def _credit_page(partial: str, credits: dict[str, Any] | None = None, adjust: dict[str, Any] | None = None,
                 which: str = "", **kw: Any):
    session = request_session()
    orgs = visible_orgs(session)
    allowed = [o.id for o in orgs]
    org_id = request.args.get("org", type=int)
    org_id = org_id if org_id in allowed else (allowed[0] if len(allowed) == 1 else None)
    log = credit_service.transactions(session, org_id, limit=LOG_LIMIT) if org_id else []
    ids = None if current_user.is_superadmin else allowed
    return reply(CREDITS, partial, orgs=orgs, org_id=org_id, log=log, names={o.id: o.name for o in orgs},
                 pending=topups.listed(session, ids, "pending"), decided=topups.listed(session, ids, limit=30),
                 credits=credits or {"org": str(org_id or "")}, adjust=adjust or {"org": str(org_id or "")},
                 which=which, usd=usd, **kw)


@bp.get("/credits")
def credits():
    return _credit_page(LOG if request.args.get("part") == "log" else TOPUPS)


@bp.get("/orgs/credits")
def org_credits_form():
    """The credits form, for the org of ?org= if given (a row's 'Add credits', or a new org to list)."""
    require_superadmin()
    org_id = request.args.get("org", type=int)
    if org_id is not None and (not 0 < org_id <= MAX_ROW_ID or request_session().get(Org, org_id) is None):
        abort(404)
    return _credit_page(CREDITS_FORM, credits={"org": str(org_id or "")}, which="credits")


@bp.post("/orgs/credits")
def org_credits():
    require_superadmin()
    form = {k: v[:300] for k, v in request.form.to_dict().items()}
    try:
        org = write(add_credits, _int(form.get("org")), form.get("amount"), form.get("note"))
    except AdminError as e:
        return _credit_page(CREDITS_FORM, credits=form, which="credits", error=str(e))
    return _credit_page(CREDITS_FORM, credits={"org": str(org.id)}, which="credits", event="credits-changed",
                        notice=f"Added credits: {org.name} now has ${usd(org.credits_micros)}, from the next request.")


@bp.post("/orgs/adjust")
def org_adjust():
    require_superadmin()
    form = {k: v[:300] for k, v in request.form.to_dict().items()}
    try:
        org = write(refund_or_adjust, _int(form.get("org")), form.get("kind", ""), form.get("amount"),
                    form.get("reason"))
    except AdminError as e:
        return _credit_page(ADJUST_FORM, adjust=form, which="adjust", error=_sentence(e))
    return _credit_page(ADJUST_FORM, adjust={"org": str(org.id)}, which="adjust", event="credits-changed",
                        notice=f"Recorded: {org.name} now has ${usd(org.credits_micros)}, from the next request.")


@bp.post("/credits/requests/<int:request_id>")
def topup_decide(request_id: int):
    """Approve or reject a dashboard's top-up request (super-admins); a decided one is a message."""
    require_superadmin()
    decision = request.form.get("decision")
    if decision not in ("approve", "reject"):
        abort(400, description="Approve or reject.")
    try:
        row = write(topups.decide, request_id, decision == "approve")
    except AdminError as e:
        return _credit_page(TOPUPS, decide_error=str(e))
    what = "Approved" if row.status == "approved" else "Rejected"
    return _credit_page(TOPUPS, event="topup-decided",
                        decide_notice=f"{what} top-up request #{row.id} (${usd(row.amount_micros)}).")
