"""Admin writes on routing policy: aliases, fallback chains, agents, access rules, routing settings.

Each function validates, writes, audits and announces inside the caller's short transaction
(`with db.write_lock, db.session_scope() as s:`), so every server process reloads the change within
a second. Validation happens before any write: on AdminError (its message is meant for the user,
as is) the caller's transaction rolls back and nothing changed. Forbidden is the 403 case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import seed
from gateway.ledger.pricing import usd_to_micros
from gateway.memo import announce
from gateway.models import (
    AccessPolicy,
    AgentConfig,
    Alias,
    ApiKey,
    App,
    Fallback,
    GatewaySetting,
    Model,
    Org,
    Provider,
)
from gateway.routing.settings import RoutingSettings
from gateway.routing.strategies import STRATEGIES
from gateway.services.errors import Actor, AdminError, require, require_superadmin, row_or_gone
from gateway.services.tenancy import audit

# Names clients type as `model`: no spaces, no ':' (that is the `agent:<name>:<tier>` syntax).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@+-]{0,119}$")
TIERS = ("normal", "heavy", "max")
MAX_PRICE_USD = Decimal(1_000_000)  # per Mtok; far above any list price, well inside BIGINT micros


def split_list(text: str | Iterable[str] | None) -> list[str]:
    """'a, b\\nc' -> ['a', 'b', 'c'] (order kept, duplicates dropped)."""
    items = re.split(r"[\s,]+", text) if isinstance(text, str) else list(text or ())
    return list(dict.fromkeys(i.strip() for i in items if i and i.strip()))


def _slugs(session: Session) -> set[str]:
    return set(session.scalars(select(Model.slug)).all())


def _alias_names(session: Session, org_id: int | None) -> set[str]:
    owners = Alias.org_id.is_(None) if org_id is None else (Alias.org_id.is_(None) | (Alias.org_id == org_id))
    return set(session.scalars(select(Alias.name).where(owners)).all())


def _org(session: Session, org_id: int | None) -> Org | None:
    if org_id is None:
        return None
    org = session.get(Org, org_id)
    if org is None:
        raise AdminError("That org does not exist.")
    return org


def _check_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not NAME.match(name):
        raise AdminError(f"{what} name '{name}' is not valid: use letters, digits and . _ / @ + - "
                         "(no spaces or ':'), starting with a letter or digit.")
    return name


def _unknown_model(slug: str) -> AdminError:
    return AdminError(f"Unknown model '{slug}': pick a slug from Available Models.")


def _known(chosen: list[str], slugs: set[str], when_empty: str) -> list[str]:
    """`chosen`, at least one and each a model slug; AdminError says which is not."""
    if not chosen:
        raise AdminError(when_empty)
    for slug in chosen:
        if slug not in slugs:
            raise _unknown_model(slug)
    return chosen


def _scope(org: Org | None) -> str:
    return f"org {org.name}" if org else "global"


def _delete_scoped(session: Session, actor: Actor, row: Alias | AgentConfig, what: str, action: str,
                   was: str, topic: str) -> None:
    """Delete a named row of one scope (global or an org's): allowed, audited with what it was, announced."""
    require(actor, row.org_id, what)
    session.delete(row)
    audit(session, actor.email, action, row.name, f"{_scope(_org(session, row.org_id))}: was {was}", row.org_id)
    announce(session, topic)


# ---- aliases (catalog) -------------------------------------------------------------------------

def put_alias(session: Session, actor: Actor, name: str, org_id: int | None, targets: Iterable[str] | str,
              strategy: str | None = None) -> Alias:
    """Create or replace the alias `name` in one scope: one slug, or a strategy over several."""
    require(actor, org_id, "aliases")
    org = _org(session, org_id)
    name = _check_name(name, "Alias")
    slugs = _slugs(session)
    if name in slugs:
        raise AdminError(f"'{name}' is a model slug; an alias needs a name of its own.")
    targets = _known(split_list(targets), slugs, "Choose the model this alias points to.")
    strategy = (strategy or "").strip() or None
    if strategy is not None and strategy not in STRATEGIES:
        raise AdminError(f"Unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)}).")
    if len(targets) > 1 and strategy is None:
        raise AdminError("An alias over several models needs a strategy to choose between them.")
    owner = Alias.org_id.is_(None) if org_id is None else Alias.org_id == org_id
    alias = session.scalar(select(Alias).where(Alias.name == name, owner))
    before = _alias_text(alias) if alias else None
    if alias is None:
        alias = Alias(name=name, org_id=org_id)
    alias.target, alias.strategy = targets[0], strategy
    alias.targets = orjson.dumps(targets).decode() if strategy else None
    session.add(alias)
    session.flush()
    detail = f"{_scope(org)}: {_alias_text(alias)}" + (f" (was {before})" if before else "")
    audit(session, actor.email, "alias.update" if before else "alias.create", name, detail, org_id)
    announce(session, "catalog")
    return alias


def _alias_text(alias: Alias) -> str:
    if alias.strategy:
        return f"{alias.strategy} over {', '.join(orjson.loads(alias.targets or '[]') or [alias.target])}"
    return alias.target


def alias_targets(alias: Alias) -> list[str]:
    return list(orjson.loads(alias.targets)) if alias.targets else [alias.target]


def delete_alias(session: Session, actor: Actor, alias_id: int) -> None:
    alias = row_or_gone(session, Alias, alias_id, "alias")
    _delete_scoped(session, actor, alias, "aliases", "alias.delete", _alias_text(alias), "catalog")


# ---- fallback chains (catalog, global) ---------------------------------------------------------

def put_fallback(session: Session, actor: Actor, model_slug: str, chain: Iterable[str] | str) -> Fallback:
    """The chain of slugs tried after every route of `model_slug` failed ("*": any model without one)."""
    require_superadmin(actor, "fallback chains")
    model_slug = (model_slug or "").strip()
    slugs = _slugs(session)
    if model_slug != "*" and model_slug not in slugs:
        raise _unknown_model(model_slug)
    chain = _known(split_list(chain), slugs, "A fallback chain needs at least one model.")
    if model_slug in chain:
        raise AdminError(f"'{model_slug}' cannot fall back to itself.")
    fb = session.scalar(select(Fallback).where(Fallback.model_slug == model_slug))
    before = ", ".join(orjson.loads(fb.chain)) if fb else None
    fb = fb or Fallback(model_slug=model_slug)
    fb.chain = orjson.dumps(chain).decode()
    session.add(fb)
    session.flush()
    audit(session, actor.email, "fallback.update" if before else "fallback.create", model_slug,
          ", ".join(chain) + (f" (was {before})" if before else ""))
    announce(session, "catalog")
    return fb


def delete_fallback(session: Session, actor: Actor, fallback_id: int) -> None:
    require_superadmin(actor, "fallback chains")
    fb = row_or_gone(session, Fallback, fallback_id, "fallback chain")
    session.delete(fb)
    audit(session, actor.email, "fallback.delete", fb.model_slug, f"was {', '.join(orjson.loads(fb.chain))}")
    announce(session, "catalog")


# ---- agents (policy) -----------------------------------------------------------------------------

def put_agent(session: Session, actor: Actor, name: str, org_id: int | None, normal: str,
              heavy: str | None = None, max: str | None = None, agent_id: str | None = None,
              role: str | None = None) -> AgentConfig:
    """Create or replace the agent `name` in one scope; each tier names a slug or an alias.
    `agent_id` (the client's own id for the agent) and `role` (what it does) are optional labels."""
    require(actor, org_id, "agents")
    org = _org(session, org_id)
    spec = _agent_spec(name, normal, heavy, max, _slugs(session) | _alias_names(session, org_id),
                       agent_id=agent_id, role=role)
    agent, created = _upsert_agent(session, org_id, spec)
    audit(session, actor.email, "agent.create" if created else "agent.update", agent.name,
          f"{_scope(org)}: {_agent_text(agent)}", org_id)
    announce(session, "policy")
    return agent


AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,119}$")


def _agent_label(value: Any, what: str) -> str | None:
    """An agent's optional id or role: None when blank; AdminError when not a short printable text."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise AdminError(f"{what} must be text.")
    value = value.strip()
    if not value:
        return None
    if what == "Agent ID" and not AGENT_ID.match(value):
        raise AdminError("Agent ID: up to 120 letters, digits and . _ : @ / + - (no spaces), starting with a "
                         "letter or digit.")
    if len(value) > 120 or not value.isprintable():
        raise AdminError(f"{what}: up to 120 printable characters.")
    return value


def _agent_spec(name: str, normal: str | None, heavy: str | None, max: str | None, known: set[str],
                where: str = "", agent_id: Any = None, role: Any = None) -> dict[str, Any]:
    try:
        spec = {"name": _check_name(name, "Agent"), "agent_id": _agent_label(agent_id, "Agent ID"),
                "role": _agent_label(role, "Role")}
        for tier, value in (("normal", normal), ("heavy", heavy), ("max", max)):
            value = (value or "").strip() or None
            if value is None and tier == "normal":
                raise AdminError("An agent needs a normal model.")
            if value is not None and value not in known:
                raise AdminError(f"{tier}: unknown model or alias '{value}'.")
            spec[tier] = value
        return spec
    except AdminError as e:
        raise AdminError(f"{where}{e}") from None


def _upsert_agent(session: Session, org_id: int | None, spec: dict[str, Any]) -> tuple[AgentConfig, bool]:
    owner = AgentConfig.org_id.is_(None) if org_id is None else AgentConfig.org_id == org_id
    agent = session.scalar(select(AgentConfig).where(AgentConfig.name == spec["name"], owner))
    created = agent is None
    agent = agent or AgentConfig(name=spec["name"], org_id=org_id)
    agent.normal, agent.heavy, agent.max = spec["normal"], spec["heavy"], spec["max"]
    agent.agent_id, agent.role = spec.get("agent_id"), spec.get("role")
    session.add(agent)
    session.flush()
    return agent, created


AGENT_FIELDS = (*TIERS, "agent_id", "role")


def _agent_text(agent: AgentConfig) -> str:
    return ", ".join(f"{t}={getattr(agent, t)}" for t in AGENT_FIELDS if getattr(agent, t))


def delete_agent(session: Session, actor: Actor, agent_id: int) -> None:
    agent = row_or_gone(session, AgentConfig, agent_id, "agent")
    _delete_scoped(session, actor, agent, "agents", "agent.delete", _agent_text(agent), "policy")


def export_agents(session: Session, org_id: int | None) -> str:
    """The agents of one scope as YAML, in the shape import_agents (and the config's `agents:`) takes."""
    owner = AgentConfig.org_id.is_(None) if org_id is None else AgentConfig.org_id == org_id
    rows = session.scalars(select(AgentConfig).where(owner).order_by(AgentConfig.name)).all()
    agents = [{"name": a.name, **{t: getattr(a, t) for t in AGENT_FIELDS if getattr(a, t)}} for a in rows]
    org = _org(session, org_id)
    header = f"# Gateway agent configurations ({_scope(org)})\n"
    return header + yaml.safe_dump({"agents": agents}, sort_keys=False, default_flow_style=False)


def import_agents(session: Session, actor: Actor, text: str, org_id: int | None) -> list[str]:
    """Upsert every agent in the YAML (all or nothing); returns their names. Errors name the line."""
    require(actor, org_id, "agents")
    org = _org(session, org_id)
    try:
        node = yaml.compose(text or "")
    except yaml.YAMLError as e:
        raise AdminError(f"Invalid YAML: {e}") from None
    if node is None:
        raise AdminError("Paste YAML with an 'agents:' list (as exported).")
    try:
        # The config file's own schema for agents, so an export loads as config too.
        parsed = seed._check(node, {"agents": seed.F([seed.AGENT], True)}, "YAML", "")
    except seed.ConfigError as e:
        raise AdminError(str(e)) from None
    known = _slugs(session) | _alias_names(session, org_id)
    specs, seen = [], set()
    for i, a in enumerate(parsed["agents"]):
        where = f"agents[{i}] ({a.get('name')}): "
        if a["name"] in seen:
            raise AdminError(f"{where}the name appears twice.")
        seen.add(a["name"])
        specs.append(_agent_spec(a["name"], a["normal"], a.get("heavy"), a.get("max"), known, where,
                                 agent_id=a.get("agent_id"), role=a.get("role")))
    for spec in specs:
        _upsert_agent(session, org_id, spec)
    names = [s["name"] for s in specs]
    audit(session, actor.email, "agent.import", _scope(org), f"{len(names)} agents: {', '.join(names)}",
          org_id)
    announce(session, "policy")
    return names


# ---- access rules (policy) -----------------------------------------------------------------------

def put_access_rule(session: Session, actor: Actor, org_id: int, app_id: int | None = None,
                    key_id: int | None = None, allowed_models: Iterable[str] | str | None = None,
                    allowed_providers: Iterable[str] | str | None = None,
                    max_input_per_mtok: str | None = None,
                    max_output_per_mtok: str | None = None) -> AccessPolicy:
    """What an org, one of its apps or one key may use. An empty list leaves that dimension open;
    a list denies what it does not name. An org-wide rule is the super-admins' to set; an org's
    admins may narrow it further for their apps and keys (every applicable rule must allow)."""
    org = _org(session, org_id)
    assert org is not None
    if app_id is not None and key_id is not None:
        raise AdminError("A rule applies to the whole org, one app or one key, not several.")
    if app_id is None and key_id is None:
        require_superadmin(actor, "an org-wide access rule")
    else:
        require(actor, org_id, "access rules")
    if app_id is not None and ((app := session.get(App, app_id)) is None or app.org_id != org_id):
        raise AdminError("That app does not exist in this org.")
    if key_id is not None and ((key := session.get(ApiKey, key_id)) is None or key.org_id != org_id):
        raise AdminError("That key does not exist in this org.")
    models = split_list(allowed_models) or None
    known = _slugs(session) | _alias_names(session, org_id)
    for m in models or ():
        if m not in known:
            raise AdminError(f"Allowed models: unknown model or alias '{m}'.")
    providers = split_list(allowed_providers) or None
    provider_names = set(session.scalars(select(Provider.name)).all())
    for p in providers or ():
        if p not in provider_names:
            raise AdminError(f"Allowed providers: unknown provider '{p}'"
                             f" (known: {', '.join(sorted(provider_names))}).")
    max_in = parse_price("Max input price", max_input_per_mtok)
    max_out = parse_price("Max output price", max_output_per_mtok)
    if models is None and providers is None and max_in is None and max_out is None:
        raise AdminError("This rule sets no limit: name allowed models or providers, or a price cap.")
    rule = session.scalar(select(AccessPolicy).where(
        AccessPolicy.org_id == org_id,
        AccessPolicy.app_id.is_(None) if app_id is None else AccessPolicy.app_id == app_id,
        AccessPolicy.key_id.is_(None) if key_id is None else AccessPolicy.key_id == key_id))
    created = rule is None
    rule = rule or AccessPolicy(org_id=org_id, app_id=app_id, key_id=key_id)
    rule.allowed_models, rule.allowed_providers = models, providers
    rule.max_input_micros_per_mtok, rule.max_output_micros_per_mtok = max_in, max_out
    session.add(rule)
    session.flush()
    audit(session, actor.email, "access.create" if created else "access.update", rule_target(session, rule),
          rule_text(rule), org_id)
    announce(session, "policy")
    return rule


def parse_price(label: str, raw: Any, required: bool = False) -> int | None:
    """A price typed in USD per million tokens -> micro-dollars; blank is None unless required."""
    text = str(raw if raw is not None else "").strip().lstrip("$")
    if not text:
        if required:
            raise AdminError(f"{label}: enter a price in USD per million tokens (0 for free).")
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise AdminError(f"{label}: '{text}' is not a number (USD per million tokens, e.g. 2.50).") from None
    if not amount.is_finite() or amount < 0:
        raise AdminError(f"{label} must be 0 or more (USD per million tokens).")
    if amount > MAX_PRICE_USD:
        raise AdminError(f"{label} is over ${MAX_PRICE_USD:,} per million tokens.")
    return usd_to_micros(amount)


def rule_target(session: Session, rule: AccessPolicy) -> str:
    org = session.get(Org, rule.org_id)
    name = org.name if org else str(rule.org_id)
    if rule.app_id is not None:
        app = session.get(App, rule.app_id)
        return f"org {name}, app {app.name if app else rule.app_id}"
    if rule.key_id is not None:
        key = session.get(ApiKey, rule.key_id)
        return f"org {name}, key {key.prefix + '…' if key else rule.key_id}"
    return f"org {name}"


def rule_text(rule: AccessPolicy) -> str:
    from gateway.ledger.pricing import usd

    parts = []
    if rule.allowed_models is not None:
        parts.append(f"models={', '.join(rule.allowed_models)}")
    if rule.allowed_providers is not None:
        parts.append(f"providers={', '.join(rule.allowed_providers)}")
    if rule.max_input_micros_per_mtok is not None:
        parts.append(f"max input ${usd(rule.max_input_micros_per_mtok)}/Mtok")
    if rule.max_output_micros_per_mtok is not None:
        parts.append(f"max output ${usd(rule.max_output_micros_per_mtok)}/Mtok")
    return "; ".join(parts)


def delete_access_rule(session: Session, actor: Actor, rule_id: int) -> None:
    rule = row_or_gone(session, AccessPolicy, rule_id, "access rule")
    if rule.app_id is None and rule.key_id is None:
        require_superadmin(actor, "an org-wide access rule")
    else:
        require(actor, rule.org_id, "access rules")
    target = rule_target(session, rule)
    session.delete(rule)
    audit(session, actor.email, "access.delete", target, f"was {rule_text(rule)}", rule.org_id)
    announce(session, "policy")


# ---- routing settings (policy, super-admin) ------------------------------------------------------

# field -> (label, type, minimum, maximum)
ROUTING_FIELDS: dict[str, tuple[str, type, float, float]] = {
    "retries": ("Retries per route", int, 0, 10),
    "backoff_base_ms": ("Backoff base (ms)", int, 0, 60_000),
    "backoff_max_ms": ("Backoff max (ms)", int, 0, 600_000),
    "deadline_seconds": ("Deadline (s)", float, 1, 3600),
    "breaker_failures": ("Breaker: failures to open", int, 1, 1000),
    "breaker_cooldown_seconds": ("Breaker: cooldown (s)", float, 1, 3600),
}


def routing_values(session: Session) -> dict[str, Any]:
    """The stored `routing` setting over the defaults (what the form shows)."""
    row = session.scalar(select(GatewaySetting).where(GatewaySetting.key == "routing"))
    defaults = RoutingSettings()
    stored = dict(row.value or {}) if row else {}
    return {f: stored.get(f, getattr(defaults, f)) for f in ("strategy", *ROUTING_FIELDS)}


def put_routing_settings(session: Session, actor: Actor, form: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and store the routing strategy, retries, backoff, deadline and breaker settings."""
    require_superadmin(actor, "the routing strategy")
    current = routing_values(session)
    new: dict[str, Any] = dict(current)
    strategy = str(form.get("strategy", current["strategy"])).strip()
    if strategy not in STRATEGIES:
        raise AdminError(f"Unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)}).")
    new["strategy"] = strategy
    for name, (label, typ, low, high) in ROUTING_FIELDS.items():
        raw = str(form.get(name, current[name])).strip()
        try:
            value: Any = typ(raw) if typ is int else float(raw)
        except ValueError:
            kind = "a whole number" if typ is int else "a number"
            raise AdminError(f"{label}: '{raw}' is not {kind}.") from None
        if not low <= value <= high:
            raise AdminError(f"{label} must be between {low:g} and {high:g}.")
        new[name] = value
    if new["backoff_max_ms"] < new["backoff_base_ms"]:
        raise AdminError("Backoff max must be at least the backoff base.")
    changed = {k: v for k, v in new.items() if current.get(k) != v}
    row = session.scalar(select(GatewaySetting).where(GatewaySetting.key == "routing"))
    stored = dict(row.value or {}) if row else {}
    seed.put_setting(session, "routing", {**stored, **new}, actor=actor.email)
    detail = ", ".join(f"{k}: {current.get(k)} -> {v}" for k, v in changed.items()) or "no change"
    audit(session, actor.email, "routing.update", "routing", detail)
    announce(session, "policy")
    return new
