"""Feature opt-ins: which savings layers an org may switch on or off for itself, from its dashboard.

A super-admin chooses the layers open to self-service (Gateway settings -> Features, stored as the
`features` gateway setting: `{"allowed": [layer, ...]}`; nothing is open until chosen). An org's
plan narrows that further (a plan's `features` list; no list allows every layer). Within what is
allowed, an org's own choice (FeatureOptIn, one row per org and layer) sets the layer's `enabled`
for the org's requests: over the config's `savings:` defaults and the org's admin override, under
an app's override and a request's `x-gateway-<layer>` header (pipeline/savings/__init__.py).
A choice for a layer that is not (or no longer) allowed is refused when made and ignored when a
request resolves its layers, so withdrawing a layer turns every org's opt-in for it off at once.

API (what the customer dashboard calls):

    allowed(org_id) -> set[str]                 layers this org may switch itself
    choices(org_id) -> dict[str, bool]          the org's own choices (only those it made)
    state(org_id) -> list[dict]                 per allowed layer: {"layer", "on" (in force for the
                                                org's requests), "chosen" (its choice, or None)}
    set_opt_in(actor, org_id, layer, on)        switch one allowed layer; own transaction; audited
    put_opt_in(session, actor, org_id, layer, on)   the same inside the caller's transaction

`actor` is the signed-in user (email, is_superadmin, org_id, role): a super-admin for any org, an
org-admin for its own org; a member, or anyone for another org, gets Forbidden (a 403). A layer
not allowed, or not a savings layer at all, is an AdminError (nothing written). The reads answer
from the in-memory policy, which every write reloads in its own process (others within a second).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import db, seed
from gateway.memo import MEMO, announce
from gateway.models import FeatureOptIn, GatewaySetting, Org, Plan
from gateway.pipeline.savings import LAYERS, self_service
from gateway.services.errors import Actor, AdminError, Forbidden, require_superadmin
from gateway.services.tenancy import audit

SETTING = "features"


def allowed(org_id: int) -> set[str]:
    """The savings layers this org may switch on or off itself: the super-admin's list, narrowed
    by the org's plan."""
    layers = set(self_service(MEMO.policy))
    plan = MEMO.org_money(org_id).plan
    if plan is not None and plan.features is not None:
        layers &= set(plan.features)
    return layers


def choices(org_id: int) -> dict[str, bool]:
    """The org's own choices, layer -> on (layers it never switched are absent)."""
    return dict(MEMO.policy.opt_ins.get(org_id, {}))


def state(org_id: int) -> list[dict[str, Any]]:
    """What a dashboard shows: each layer the org may switch, whether it is on for the org's
    requests now (before any app override or request header), and the org's own choice."""
    from gateway.pipeline.savings import org_layers

    mine = choices(org_id)
    merged = org_layers(org_id)
    return [{"layer": layer, "on": bool(merged[layer]["enabled"]), "chosen": mine.get(layer)}
            for layer in LAYERS if layer in allowed(org_id)]


def set_opt_in(actor: Actor, org_id: int, layer: str, on: bool) -> None:
    """Switch one allowed layer on or off for the org, in its own transaction (see put_opt_in)."""
    with db.write_lock, db.session_scope() as session:
        put_opt_in(session, actor, org_id, layer, on)
    with db.session_scope() as session:
        MEMO.reload(session, "policy")


def put_opt_in(session: Session, actor: Actor, org_id: int, layer: str, on: Any) -> FeatureOptIn:
    if not isinstance(on, bool):
        raise AdminError("Choose on or off.")
    if not (actor.is_superadmin or (actor.org_id == org_id and getattr(actor, "role", "org-admin") == "org-admin")):
        raise Forbidden("Only the org's admins can change its features.")
    org = session.get(Org, org_id) if isinstance(org_id, int) else None
    if org is None:
        raise AdminError("That org no longer exists.")
    if layer not in LAYERS:
        raise AdminError(f"Unknown feature '{layer}' (savings layers: {', '.join(LAYERS)}).")
    if layer not in allowed_in(session, org_id):
        raise AdminError(f"{layer} is not open to self-service for this org: a super-admin allows it under "
                         "Gateway settings -> Features.")
    row = session.scalar(select(FeatureOptIn).where(FeatureOptIn.org_id == org_id, FeatureOptIn.layer == layer))
    was = None if row is None else row.enabled
    row = row or FeatureOptIn(org_id=org_id, layer=layer)
    row.enabled, row.updated_by = on, actor.email
    session.add(row)
    session.flush()
    audit(session, actor.email, "feature.opt_in" if on else "feature.opt_out", f"{org.name}:{layer}",
          f"{layer}: {'unset' if was is None else ('on' if was else 'off')} -> {'on' if on else 'off'}", org_id)
    announce(session, "policy")
    return row


def allowed_in(session: Session, org_id: int) -> set[str]:
    """allowed(), read from the database (what a write has to check against, not a cached view)."""
    value = session.scalar(select(GatewaySetting.value).where(GatewaySetting.key == SETTING)) or {}
    layers = {name for name in (value.get("allowed") or []) if name in LAYERS} if isinstance(value, dict) else set()
    plan = session.scalar(select(Plan).join(Org, Org.plan_id == Plan.id).where(Org.id == org_id))
    if plan is not None and plan.features is not None:
        layers &= set(plan.features)
    return layers


def put_allowed(session: Session, actor: Actor, layers: Iterable[str]) -> list[str]:
    """The super-admin's list of layers open to self-service (replaces the previous list)."""
    require_superadmin(actor, "features")
    wanted = [str(name) for name in layers]
    unknown = sorted(set(wanted) - set(LAYERS))
    if unknown:
        raise AdminError(f"Unknown features: {', '.join(unknown)[:200]} (savings layers: {', '.join(LAYERS)}).")
    ordered = [name for name in LAYERS if name in wanted]
    before = session.scalar(select(GatewaySetting.value).where(GatewaySetting.key == SETTING)) or {}
    was = [n for n in (before.get("allowed") or []) if n in LAYERS] if isinstance(before, dict) else []
    seed.put_setting(session, SETTING, {"allowed": ordered}, actor=actor.email)
    audit(session, actor.email, "features.update", "self-service layers",
          f"{', '.join(ordered) or 'none'} (was {', '.join(was) or 'none'})")
    announce(session, "policy")
    return ordered


def opt_in_rows(session: Session) -> list[dict[str, Any]]:
    """Every org's own choices, for the super-admin's Features page: {org, layer, enabled, by, at}."""
    q = (select(FeatureOptIn, Org.name).join(Org, Org.id == FeatureOptIn.org_id)
         .order_by(Org.name, FeatureOptIn.layer))
    return [{"org": name, "org_id": row.org_id, "layer": row.layer, "enabled": row.enabled,
             "by": row.updated_by, "at": row.updated_at} for row, name in session.execute(q).all()]
