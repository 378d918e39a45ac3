"""Plans console: the plans (from the config or made here, presets trial/starter/growth/pro) and which
org is on which. Thin over services/plans.py; only a super-admin changes anything."""

from __future__ import annotations

from typing import Any

from flask import request

from gateway.admin.blueprint import bp
from gateway.admin.editing import reply, require_superadmin, visible_orgs, write
from gateway.db import request_session
from gateway.ledger.pricing import usd
from gateway.models import Org
from gateway.services import plans as plan_service
from gateway.services.errors import Actor, AdminError, Forbidden

PAGE, TABLE, FORM = "admin/plans/index.html", "admin/plans/_table.html", "admin/plans/_form.html"


def _require(actor: Actor) -> None:
    if not actor.is_superadmin:
        raise Forbidden("Only a super-admin can change plans.")


def save_plan(session, actor: Actor, form: dict[str, Any]):
    _require(actor)
    spec = {k: form.get(k) for k in (*plan_service.LIMITS, "name", "monthly_usd")}
    spec["batch"] = form.get("batch") in ("on", "true", "1")
    features = (form.get("features") or "").strip()
    spec["features"] = [f.strip() for f in features.split(",")] if features else None
    return plan_service.upsert(session, spec, actor=actor.email)


def add_preset(session, actor: Actor, name: str):
    _require(actor)
    if name not in plan_service.PRESETS:
        raise AdminError("Unknown preset.")
    return plan_service.upsert(session, {"name": name, **plan_service.PRESETS[name]}, actor=actor.email)


def assign(session, actor: Actor, org_id: int | None, plan_name: str):
    _require(actor)
    org = session.get(Org, org_id) if org_id else None
    if org is None:
        raise AdminError("Choose an org.")
    plan = plan_service.by_name(session, plan_name) if plan_name else None
    plan_service.set_org_plan(session, org, plan, actor=actor.email)
    return org


def _page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    session = request_session()
    plans = plan_service.list_plans(session)
    return reply(PAGE, partial, plans=plans, orgs=visible_orgs(session), presets=plan_service.PRESETS,
                 names={p.id: p.name for p in plans}, form=form or {}, usd=usd, **kw)


@bp.get("/plans")
def plans():
    return _page(TABLE)


@bp.post("/plans")
def plan_save():
    require_superadmin()
    form = request.form.to_dict()
    try:
        if form.get("preset"):
            plan = write(add_preset, form["preset"])
        else:
            plan = write(save_plan, form)
    except AdminError as e:
        return _page(FORM, form=form, error=str(e))
    return _page(FORM, event="plans-changed", notice=f"Saved plan {plan.name}; it applies within a second.")


@bp.post("/plans/assign")
def plan_assign():
    require_superadmin()
    form = request.form.to_dict()
    try:
        org = write(assign, int(form["org"]) if (form.get("org") or "").isdigit() else None, form.get("plan", ""))
    except AdminError as e:
        return _page(FORM, form=form, error=str(e))
    return _page(FORM, event="plans-changed", notice=f"Org {org.name} is now on {form.get('plan') or 'no plan'}.")
