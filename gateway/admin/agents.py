"""Agent Configurations console: `agent:<name>[:heavy|:max]` per scope, with YAML export and import."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, request
from flask_login import current_user
from sqlalchemy import select

from gateway.admin.blueprint import bp
from gateway.admin.editing import (
    GLOBAL,
    delete,
    editable_or_404,
    parse_scope,
    reply,
    scope_choices,
    scoped_rows,
    visible_orgs,
    write,
)
from gateway.db import request_session
from gateway.models import AgentConfig, Alias, Model
from gateway.services import routing as routing_service
from gateway.services.errors import AdminError

PAGE, TABLE, FORM, IMPORT = ("admin/agents/index.html", "admin/agents/_table.html", "admin/agents/_form.html",
                             "admin/agents/_import.html")


def _rows() -> list[dict[str, Any]]:
    return scoped_rows(request_session(), AgentConfig, "agent")


def _targets() -> list[str]:
    """What a tier may name: model slugs and the aliases this user can see."""
    session = request_session()
    orgs = [o.id for o in visible_orgs(session)]
    aliases = session.scalars(select(Alias.name).where(Alias.org_id.is_(None) | Alias.org_id.in_(orgs))).all()
    return sorted(set(session.scalars(select(Model.slug)).all()) | set(aliases))


def _default_scope() -> str:
    return GLOBAL if current_user.is_superadmin else str(current_user.org_id)


def _page(partial: str, form: dict[str, Any] | None = None, imported: dict[str, Any] | None = None,
          **kw: Any) -> Response:
    session = request_session()
    scopes = scope_choices(session)
    # Global agents are visible (and usable) by every org, so anyone may export them.
    export_scopes = scopes if current_user.is_superadmin else [(GLOBAL, "Global (every org)"), *scopes]
    return reply(PAGE, partial, rows=_rows(), form=form or {"scope": _default_scope()},
                 imported=imported or {"scope": _default_scope()}, scopes=scopes, export_scopes=export_scopes,
                 targets=_targets(), **kw)


@bp.get("/agents")
def agents():
    return _page(TABLE)


@bp.get("/agents/<int:agent_id>/edit")
def agent_edit(agent_id: int):
    agent = editable_or_404(AgentConfig, agent_id)
    form = {"scope": str(agent.org_id) if agent.org_id else GLOBAL, "name": agent.name,
            "normal": agent.normal, "heavy": agent.heavy or "", "max": agent.max or "",
            "agent_id": agent.agent_id or "", "role": agent.role or ""}
    return _page(FORM, form=form)


@bp.post("/agents")
def agent_save():
    form = request.form.to_dict()
    try:
        agent = write(routing_service.put_agent, form.get("name", ""), parse_scope(form.get("scope")),
                      form.get("normal", ""), form.get("heavy"), form.get("max"), form.get("agent_id"),
                      form.get("role"))
    except AdminError as e:
        return _page(FORM, form=form, error=str(e))
    return _page(FORM, form={"scope": form.get("scope")}, event="agents-changed",
                 notice=f"Saved agent {agent.name}: use it as model agent:{agent.name}.")


@bp.post("/agents/<int:agent_id>/delete")
def agent_delete(agent_id: int):
    return delete(routing_service.delete_agent, agent_id, "admin.agents", "agents-changed")


@bp.get("/agents/export")
def agents_export():
    scope = request.args.get("scope") or GLOBAL
    org_id = parse_scope(scope)
    if org_id is not None and org_id not in [o.id for o in visible_orgs(request_session())]:
        abort(404)
    text = routing_service.export_agents(request_session(), org_id)
    filename = "agents-global.yaml" if org_id is None else f"agents-org-{org_id}.yaml"
    return Response(text, content_type="application/yaml; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.post("/agents/import")
def agents_import():
    form = request.form.to_dict()
    try:
        names = write(routing_service.import_agents, form.get("yaml", ""), parse_scope(form.get("scope")))
    except AdminError as e:
        return _page(IMPORT, imported=form, import_error=str(e), error=str(e))
    plural = "s" if len(names) != 1 else ""
    return _page(IMPORT, imported={"scope": form.get("scope")}, event="agents-changed",
                 import_notice=f"Imported {len(names)} agent{plural}: {', '.join(names)}.")
