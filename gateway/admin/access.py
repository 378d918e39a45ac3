"""Access Rules console: what an org, one of its apps or one key may use (models, providers, price caps)."""

from __future__ import annotations

from typing import Any

from flask import abort, request
from flask_login import current_user
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.editing import delete, reply, visible_orgs, write
from gateway.db import request_session
from gateway.ledger.pricing import usd
from gateway.models import AccessPolicy, ApiKey, App, Provider
from gateway.services import routing as routing_service
from gateway.services.errors import AdminError, may_edit
from gateway.services.routing import rule_target
from gateway.web.catalog import price

PAGE, TABLE, FORM = "admin/access/index.html", "admin/access/_table.html", "admin/access/_form.html"


def _editable(rule: AccessPolicy) -> bool:
    org_wide = rule.app_id is None and rule.key_id is None
    return current_user.is_superadmin if org_wide else may_edit(current_user, rule.org_id)


def _targets() -> list[tuple[str, list[tuple[str, str]]]]:
    """(org name, [(value, label)]) for the 'applies to' select: the whole org (super-admins only),
    each of its apps, each of its live keys."""
    session = request_session()
    groups = []
    for org in visible_orgs(session):
        options = [(f"org:{org.id}", f"the whole org {org.name}")] if current_user.is_superadmin else []
        options += [(f"app:{a.id}", f"app {a.name}") for a in
                    session.scalars(select(App).where(App.org_id == org.id).order_by(App.name)).all()]
        keys = select(ApiKey).where(ApiKey.org_id == org.id, ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)
        options += [(f"key:{k.id}", f"key {k.prefix}… {k.name}".rstrip())
                    for k in session.scalars(keys).all()]
        groups.append((org.name, options))
    return groups


def _parse_target(value: str) -> tuple[int, int | None, int | None]:
    """'org:1' / 'app:2' / 'key:3' -> (org_id, app_id, key_id); the org of an app or key is its own."""
    kind, _, raw = (value or "").partition(":")
    if kind not in ("org", "app", "key") or not raw.isdigit():
        raise AdminError("Choose what the rule applies to.")
    session = request_session()
    if kind == "org":
        return int(raw), None, None
    row = session.get(App if kind == "app" else ApiKey, int(raw))
    if row is None:
        raise AdminError(f"That {kind} does not exist.")
    return (row.org_id, row.id, None) if kind == "app" else (row.org_id, None, row.id)


def _rows() -> list[dict[str, Any]]:
    session = request_session()
    orgs = [o.id for o in visible_orgs(session)]
    rules = session.scalars(select(AccessPolicy).where(AccessPolicy.org_id.in_(orgs))
                            .order_by(AccessPolicy.org_id, AccessPolicy.app_id, AccessPolicy.key_id)).all()
    return [{"rule": r, "target": rule_target(session, r), "editable": _editable(r)} for r in rules]


def _page(partial: str, form: dict[str, Any] | None = None, **kw: Any):
    session = request_session()
    return reply(PAGE, partial, rows=_rows(), form=form or {}, targets=_targets(), price=price,
                 providers=list(session.scalars(select(Provider.name).order_by(Provider.name)).all()), **kw)


@bp.get("/access")
def access():
    return _page(TABLE)


@bp.get("/access/<int:rule_id>/edit")
def access_edit(rule_id: int):
    rule = request_session().get(AccessPolicy, rule_id)
    if rule is None or not _editable(rule):
        abort(404)
    if rule.app_id is not None:
        target = f"app:{rule.app_id}"
    else:
        target = f"key:{rule.key_id}" if rule.key_id is not None else f"org:{rule.org_id}"
    form = {"target": target, "allowed_models": ", ".join(rule.allowed_models or ()),
            "allowed_providers": ", ".join(rule.allowed_providers or ()),
            "max_input": _amount(rule.max_input_micros_per_mtok),
            "max_output": _amount(rule.max_output_micros_per_mtok)}
    return _page(FORM, form=form)


def _amount(micros: int | None) -> str:
    """A price cap as typed in the form: 2500000 -> '2.5'."""
    return "" if micros is None else usd(micros).rstrip("0").rstrip(".")


@bp.post("/access")
def access_save():
    form = request.form.to_dict()
    try:
        org_id, app_id, key_id = _parse_target(form.get("target", ""))
        write(routing_service.put_access_rule, org_id, app_id, key_id, form.get("allowed_models"),
              form.get("allowed_providers"), form.get("max_input"), form.get("max_output"))
    except AdminError as e:
        return _page(FORM, form=form, error=str(e))
    return _page(FORM, notice="Saved the access rule: it applies from the next request.",
                 event="access-changed")


@bp.post("/access/<int:rule_id>/delete")
def access_delete(rule_id: int):
    return delete(routing_service.delete_access_rule, rule_id, "admin.access", "access-changed")
