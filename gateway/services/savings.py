"""Savings settings: what applies to an org (or one of its apps) and from where, and the admin writes
on per-org and per-app savings overrides (SavingsOverride). What the savings saved is read from the
usage rollups (gateway/ledger/rollups.py).

Writes follow the services' contract: each validates, writes, audits and announces "policy" inside
the caller's short transaction (`with db.write_lock, db.session_scope() as s:`); AdminError (a
message for the user) rolls back, Forbidden is the 403 case.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import seed
from gateway.memo import MEMO, announce
from gateway.models import Alias, App, Model, Org, SavingsOverride
from gateway.pipeline.savings import DEFAULTS, LAYERS
from gateway.services.errors import Actor, AdminError, Forbidden, may_edit
from gateway.services.tenancy import audit

# ---- settings: what applies, and from where ------------------------------------------------------

# Knobs (in any layer) only a super-admin may set: a shared cache scope would let an org read
# answers cached for other orgs, and what a cache hit is charged is billing policy, not tuning.
SUPERADMIN_KNOBS = frozenset({"shared_scope", "charge"})
CHOICES = {"charge": ("free", "full"), "mode": ("summary", "trim")}  # as seed.py checks the config
MODEL_KNOBS = frozenset({"embeddings_model", "summary_model", "verifier_model"})
SCOPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TRUE, FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")
TYPE_HINTS = {bool: "on or off", int: "a whole number above 0", "count": "a whole number, 0 or more",
              "number": "a number, 0 or more", str: "a name"}


def knobs(layer: str) -> list[str]:
    return ["enabled", *seed.SAVINGS_LAYERS[layer]]


def knob_type(layer: str, knob: str) -> Any:
    return bool if knob == "enabled" else seed.SAVINGS_LAYERS[layer][knob].type


@dataclass
class Knob:
    name: str
    type: Any
    value: Any  # effective for this org (and app)
    source: str  # default | config | org | app
    inherited: Any  # what applies here without this scope's own override
    inherited_source: str
    override: Any  # this scope's own value, or None
    locked: bool  # the viewer may not change it
    choices: tuple[str, ...] | None = None

    @property
    def is_bool(self) -> bool:
        return self.type is bool


@dataclass
class LayerView:
    name: str
    knobs: list[Knob]
    overridden: bool  # this scope has an override row

    @property
    def enabled(self) -> Knob:
        return self.knobs[0]


def layer_views(session: Session, org_id: int, app_id: int | None, superadmin: bool) -> list[LayerView]:
    """Every layer's knobs for one org (or one of its apps): effective value and where it comes from.
    Global values are the running config (memo); overrides are read from the database, so the page
    shows a change as soon as it is written."""
    config = MEMO.policy.settings.get("savings") or {}
    rows = session.scalars(select(SavingsOverride).where(
        SavingsOverride.org_id == org_id,
        SavingsOverride.app_id.is_(None) | (SavingsOverride.app_id == app_id))).all()
    org_rows = {r.layer: r.settings or {} for r in rows if r.app_id is None}
    app_rows = {r.layer: r.settings or {} for r in rows if app_id is not None and r.app_id == app_id}
    mine = app_rows if app_id is not None else org_rows
    views = []
    for layer in LAYERS:
        if layer not in seed.SAVINGS_LAYERS:
            continue
        items = []
        for knob in knobs(layer):
            chain = [("default", DEFAULTS.get(layer, {}).get(knob)),
                     ("config", config.get(layer, {}).get(knob)),
                     ("org", org_rows.get(layer, {}).get(knob))]
            if app_id is not None:
                chain.append(("app", app_rows.get(layer, {}).get(knob)))
            own_scope = chain[-1][0]
            set_at = [(v, where) for where, v in chain if v is not None] or [(None, "default")]
            value, source = set_at[-1]
            above = [(v, w) for v, w in set_at if w != own_scope] or [(None, "default")]
            inherited, inherited_source = above[-1]
            locked = knob in SUPERADMIN_KNOBS and not superadmin
            items.append(Knob(knob, knob_type(layer, knob), value, source, inherited, inherited_source,
                              mine.get(layer, {}).get(knob), locked, CHOICES.get(knob)))
        views.append(LayerView(layer, items, layer in mine))
    return views


# ---- writes ----------------------------------------------------------------------------------------

def put_override(session: Session, actor: Actor, org_id: int, app_id: int | None, layer: str,
                 values: Mapping[str, Any]) -> SavingsOverride | None:
    """Set this scope's override for one layer from form values: a blank value inherits (config
    default or the org's own override), anything else is checked against the config schema. All
    blank removes the override. Returns the row, or None when nothing is overridden any more."""
    org, app = _scope(session, actor, org_id, app_id)
    layer = _layer(layer)
    row = _row(session, org_id, app_id, layer)
    before = dict(row.settings or {}) if row else {}
    new: dict[str, Any] = {}
    for knob in knobs(layer):
        raw = values.get(knob)
        raw = "" if raw is None else str(raw).strip()
        if knob in SUPERADMIN_KNOBS and not actor.is_superadmin:
            if raw and parse_knob(session, layer, knob, raw, org_id) != before.get(knob):
                raise Forbidden(f"Only a super-admin can change {layer}.{knob}.")
            if knob in before:  # kept as the super-admin set it
                new[knob] = before[knob]
            continue
        if raw:
            new[knob] = parse_knob(session, layer, knob, raw, org_id)
    return _store(session, actor, org, app, layer, row, before, new)


def reset_override(session: Session, actor: Actor, org_id: int, app_id: int | None, layer: str) -> None:
    """Back to what the org (for an app) or the config says; super-admin-only knobs stay unless a
    super-admin resets."""
    org, app = _scope(session, actor, org_id, app_id)
    layer = _layer(layer)
    row = _row(session, org_id, app_id, layer)
    if row is None:
        return
    before = dict(row.settings or {})
    kept = {} if actor.is_superadmin else {k: v for k, v in before.items() if k in SUPERADMIN_KNOBS}
    _store(session, actor, org, app, layer, row, before, kept, action="savings.reset")


def parse_knob(session: Session, layer: str, knob: str, raw: str, org_id: int) -> Any:
    """A form value as the config's `savings:` block would hold it; AdminError names the knob."""
    typ = knob_type(layer, knob)
    label = f"{layer}.{knob}"
    bad = AdminError(f"{label}: '{raw}' is not valid: expected {TYPE_HINTS.get(typ, 'a value')}.")
    value: Any
    if typ is bool:
        if raw.lower() not in TRUE + FALSE:
            raise bad
        value = raw.lower() in TRUE
    elif typ in (int, "count"):
        if not re.fullmatch(r"\d{1,12}", raw) or (typ is int and int(raw) == 0):
            raise bad
        value = int(raw)
    elif typ == "number":
        try:
            number = float(raw)
        except ValueError:
            raise bad from None
        if not math.isfinite(number) or number < 0:
            raise bad
        value = int(number) if number.is_integer() and re.fullmatch(r"\d+", raw) else number
    else:
        if len(raw) > 160:
            raise AdminError(f"{label}: at most 160 characters.")
        value = raw
    choices = CHOICES.get(knob)
    if choices and value not in choices:
        raise AdminError(f"{label}: '{raw}' is not one of: {', '.join(choices)}.")
    if knob == "threshold" and not 0 < value <= 1:
        raise AdminError(f"{label}: '{raw}' must be above 0 and at most 1 (a cosine similarity).")
    if knob == "shared_scope" and not SCOPE_NAME.match(value):
        raise AdminError(f"{label}: use letters, digits and . _ - (up to 64 characters), "
                         "starting with a letter or digit.")
    if knob in MODEL_KNOBS and value not in _model_names(session, org_id):
        raise AdminError(f"{label}: unknown model '{raw}': pick a slug from Available Models.")
    return value


def _model_names(session: Session, org_id: int) -> set[str]:
    slugs = set(session.scalars(select(Model.slug)).all())
    return slugs | set(session.scalars(select(Alias.name).where(
        Alias.org_id.is_(None) | (Alias.org_id == org_id))).all())


def _scope(session: Session, actor: Actor, org_id: int, app_id: int | None) -> tuple[Org, App | None]:
    if not may_edit(actor, org_id):
        raise Forbidden("You can only change your own org's savings settings.")
    org = session.get(Org, org_id)
    if org is None:
        raise AdminError("That org does not exist.")
    app = None
    if app_id is not None and ((app := session.get(App, app_id)) is None or app.org_id != org_id):
        raise AdminError("That app does not exist in this org.")
    return org, app


def _layer(layer: str) -> str:
    if layer not in seed.SAVINGS_LAYERS:
        raise AdminError(f"Unknown savings layer '{layer}' (known: {', '.join(seed.SAVINGS_LAYERS)}).")
    return layer


def _row(session: Session, org_id: int, app_id: int | None, layer: str) -> SavingsOverride | None:
    return session.scalar(select(SavingsOverride).where(
        SavingsOverride.org_id == org_id, SavingsOverride.layer == layer,
        SavingsOverride.app_id.is_(None) if app_id is None else SavingsOverride.app_id == app_id))


def _store(session: Session, actor: Actor, org: Org, app: App | None, layer: str, row: SavingsOverride | None,
           before: dict[str, Any], new: dict[str, Any], action: str | None = None) -> SavingsOverride | None:
    if new == before:
        return row
    if new:
        row = row or SavingsOverride(org_id=org.id, app_id=app.id if app else None, layer=layer)
        row.settings = new
        session.add(row)
    elif row is not None:
        session.delete(row)
        row = None
    session.flush()
    target = f"org {org.name}" + (f", app {app.name}" if app else "") + f": {layer}"
    detail = (override_text(new) or "inherits") + (f" (was {override_text(before)})" if before else "")
    action = action or ("savings.update" if before else "savings.create")
    audit(session, actor.email, action, target, detail, org.id)
    announce(session, "policy")
    return row


def override_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in values.items())


def _show(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)
