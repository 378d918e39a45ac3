"""Data protection console: per org and app status, per-scope rules and actions, the org's custom
rules with a test box, recent activity and daily counts. Thin over gateway/services/dlp.py; every
read and write is limited to the orgs the signed-in user may see."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, request
from flask_login import current_user

from gateway.admin.blueprint import bp
from gateway.admin.editing import delete, reply, write
from gateway.db import request_session
from gateway.dlp.rules import ACTIONS, BUILTIN, UNAVAILABLE
from gateway.models import App
from gateway.services import dlp as dlp_service
from gateway.services.errors import AdminError, may_edit

PAGE, SCOPES, SCOPE_FORM, CUSTOM, TEST = ("admin/dlp/index.html", "admin/dlp/_scopes.html", "admin/dlp/_scope.html",
                                          "admin/dlp/_custom.html", "admin/dlp/_test.html")
EVENT = "dlp-changed"


def _context(**kw: Any) -> dict[str, Any]:
    session = request_session()
    return {"scopes": dlp_service.status(session, current_user), "customs": dlp_service.custom_rules(session, current_user),
            "activity": dlp_service.recent_activity(session, current_user),
            "rollups": dlp_service.rollups(session, current_user), "builtin": BUILTIN, "unavailable": UNAVAILABLE,
            "actions": ACTIONS, "orgs": dlp_service.visible_orgs(session, current_user),
            "default_regions": dlp_service.DEFAULT_REGIONS, **kw}


@bp.get("/dlp")
def dlp():
    return reply(PAGE, SCOPES, **_context())


def _scope_args() -> tuple[int, int | None]:
    try:
        org_id = int(request.values.get("org", ""))
        app_id = int(request.values["app"]) if request.values.get("app") else None
    except ValueError:
        abort(400, description="Unknown scope.")
    if not may_edit(current_user, org_id):
        abort(404)
    if app_id is not None:
        app = request_session().get(App, app_id)
        if app is None or app.org_id != org_id:
            abort(404)
    return org_id, app_id


@bp.get("/dlp/scope")
def dlp_scope():
    org_id, app_id = _scope_args()
    row = dlp_service.setting_for(request_session(), org_id, app_id)
    form = {"org": org_id, "app": app_id, "enabled": bool(row and row.enabled), "rules": dict(row.rules) if row else {},
            "regions": " ".join(row.regions or ()) if row else ""}
    return reply(PAGE, SCOPE_FORM, **_context(form=form))


@bp.post("/dlp/scope")
def dlp_scope_save():
    org_id, app_id = _scope_args()
    rules = {k[5:]: v for k, v in request.form.items() if k.startswith("rule:") and v in ACTIONS}
    enabled = request.form.get("enabled") == "on"
    regions = request.form.get("regions", "").replace(",", " ").upper().split()
    form = {"org": org_id, "app": app_id, "enabled": enabled, "rules": rules, "regions": " ".join(regions)}
    try:
        write(dlp_service.configure, org_id, app_id, enabled, rules, regions)
    except AdminError as e:
        return reply(PAGE, SCOPE_FORM, error=str(e), **_context(form=form))
    return reply(PAGE, SCOPE_FORM, event=EVENT, **_context(form=form, notice="Saved; servers apply it within a second."))


@bp.post("/dlp/custom")
def dlp_custom_add():
    f = request.form
    form = {"org": f.get("org", ""), "name": f.get("name", ""), "kind": f.get("kind", ""), "pattern": f.get("pattern", "")}
    try:
        org_id = int(form["org"])
    except ValueError:
        abort(400, description="Unknown org.")
    try:
        write(dlp_service.add_custom_rule, org_id, form["name"].strip(), form["kind"].strip(), form["pattern"])
    except AdminError as e:
        return reply(PAGE, CUSTOM, error=str(e), **_context(custom_form=form))
    return reply(PAGE, CUSTOM, event=EVENT, **_context(custom_form={"org": form["org"]}))


@bp.post("/dlp/custom/<int:rule_id>/delete")
def dlp_custom_delete(rule_id: int) -> Response:
    return delete(dlp_service.delete_custom_rule, rule_id, "admin.dlp", EVENT)


@bp.post("/dlp/test")
def dlp_test():
    """The test box: what a pattern matches in the admin's own sample. Nothing is stored."""
    f = request.form
    test = {"pattern": f.get("pattern", ""), "sample": f.get("sample", "")[:20_000]}
    try:
        test["matches"] = dlp_service.test_pattern("test", "TEST", test["pattern"], test["sample"])
    except AdminError as e:
        return reply(PAGE, TEST, error=str(e), **_context(test=test))
    return reply(PAGE, TEST, **_context(test=test))
