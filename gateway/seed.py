"""Upserts providers, models, aliases, fallbacks and plans from the GATEWAY_CONFIG YAML.

The file is checked against a schema before anything is written: an unknown key or a bad value
stops the start with a message naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway import crypto
from gateway.ledger.pricing import usd_to_micros
from gateway.memo import announce
from gateway.models import AgentConfig, Alias, Fallback, GatewaySetting, Model, Provider, Route
from gateway.providers import egress
from gateway.settings import key_env_refusal

DEFAULT_CATALOG = Path(__file__).resolve().parent / "default_catalog.yaml"


class ConfigError(ValueError):
    pass


# ---- schema ------------------------------------------------------------------------------------
# A field is (type, required). Types: str, int, number, bool, list-of-X, map-of-X, or a nested dict.

@dataclass(frozen=True)
class F:
    type: Any
    required: bool = False


@dataclass(frozen=True)
class OneOf:
    """A scalar of one schema, or a mapping of another (e.g. an alias: a slug or a strategy)."""

    scalar: Any
    mapping: Any


CAPABILITIES = ("tools", "vision", "streaming", "json_mode")
ROUTE = {
    "provider": F(str, True), "upstream_model": F(str, True),
    "input_per_mtok": F("number", True), "output_per_mtok": F("number", True),
    "cached_input_per_mtok": F("number"), "context_window": F(int),
    "weight": F("count"), "capabilities": F([str]), "reference": F(bool), "batch_price_pct": F("count"),
}
ALIAS = OneOf(str, {"strategy": F(str, True), "models": F([str], True)})
ROUTING = {
    "strategy": F(str), "retries": F("count"), "backoff_base_ms": F("count"), "backoff_max_ms": F("count"),
    "deadline_seconds": F("number"), "breaker_failures": F(int), "breaker_cooldown_seconds": F("number"),
    "translate": F([str]),
}
AGENT = {"name": F(str, True), "normal": F(str, True), "heavy": F(str), "max": F(str), "agent_id": F(str),
         "role": F(str)}
# One block per savings layer; every layer takes `enabled`, the rest are its own knobs.
SAVINGS_LAYERS: dict[str, dict[str, F]] = {
    "exact_cache": {"ttl_seconds": F(int), "max_entries": F(int), "charge": F(str), "shared_scope": F(str)},
    "semantic_cache": {"threshold": F("number"), "max_turns": F(int), "ttl_seconds": F(int),
                       "max_entries": F(int), "embeddings_model": F(str), "shared_scope": F(str),
                       "verifier_model": F(str), "verifier_timeout_seconds": F("number")},
    "inflight_dedupe": {"max_wait_seconds": F("number")},
    "prompt_cache": {"min_tokens": F(int)},
    "compression": {"budget_tokens": F(int), "keep_last_turns": F(int), "summary_model": F(str),
                    "mode": F(str)},
    "context_dedupe": {"min_chars": F(int)},
    "output_budget": {"default_max_tokens": F(int)},
}
SAVINGS = {layer: F({"enabled": F(bool), **knobs}) for layer, knobs in SAVINGS_LAYERS.items()}
MODEL = {"slug": F(str, True), "routes": F([ROUTE], True), "context_window": F(int), "max_output_tokens": F(int)}
PROVIDER = {"name": F(str, True), "kind": F(str, True), "base_url": F(str, True), "api_key": F(str),
            "api_key_env": F(str), "enabled": F(bool), "responses_api": F(bool), "allow_private": F(bool),
            "batch_api": F(bool),
            # the provider's admin (usage and cost report) key, for reconciliation
            "admin_api_key": F(str), "admin_api_key_env": F(str)}
RECONCILIATION = {"drift_threshold_percent": F("number")}
# Omitted limits are unlimited; `features` lists the savings layers the plan allows (omitted: all).
PLAN = {"name": F(str, True), "rpm": F(int), "tpm": F(int), "key_rpm": F(int), "key_tpm": F(int),
        "max_keys": F(int), "batch": F(bool), "monthly_usd": F("number"), "features": F([str])}
ROOT_SCHEMA = {
    "providers": F([PROVIDER]), "models": F([MODEL]), "aliases": F({"*": ALIAS}), "fallbacks": F({"*": [str]}),
    "routing": F(ROUTING), "agents": F([AGENT]), "savings": F(SAVINGS), "plans": F([PLAN]),
    "reconciliation": F(RECONCILIATION),
}


def _where(node: yaml.Node, source: str) -> str:
    return f"{source}, line {node.start_mark.line + 1}"


def _check(node: yaml.Node, schema: Any, source: str, path: str) -> Any:
    """Validate a composed YAML node against `schema`, returning plain Python values."""
    if isinstance(schema, OneOf):
        return _check(node, schema.mapping if isinstance(node, yaml.MappingNode) else schema.scalar, source, path)
    if isinstance(schema, dict) and "*" in schema:  # a mapping of free keys
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"{_where(node, source)}: '{path}' must be a mapping")
        return {_scalar(k, str, source, f"{path} key"): _check(v, schema["*"], source, f"{path}.{k.value}")
                for k, v in node.value}
    if isinstance(schema, dict):
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"{_where(node, source)}: '{path}' must be a mapping")
        out = {}
        for k, v in node.value:
            key = _scalar(k, str, source, f"{path} key")
            if key not in schema:
                raise ConfigError(f"{_where(k, source)}: unknown key '{key}' in {path or 'the top level'}"
                                  f" (expected one of: {', '.join(schema)})")
            out[key] = _check(v, schema[key].type, source, f"{path}.{key}".strip("."))
        for key, field in schema.items():
            if field.required and key not in out:
                raise ConfigError(f"{_where(node, source)}: '{path}' is missing required key '{key}'")
        return out
    if isinstance(schema, list):
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError(f"{_where(node, source)}: '{path}' must be a list")
        return [_check(item, schema[0], source, f"{path}[{i}]") for i, item in enumerate(node.value)]
    return _scalar(node, schema, source, path)


def _scalar(node: yaml.Node, typ: Any, source: str, path: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"{_where(node, source)}: '{path}' must be a single value")
    value = yaml.safe_load(yaml.serialize(node)) if node.tag != "tag:yaml.org,2002:str" else node.value
    ok = {
        str: lambda v: isinstance(v, str) and v != "",
        int: lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        bool: lambda v: isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
    }[typ](value)
    if not ok:
        expected = {str: "a non-empty string", int: "a positive integer", "count": "a whole number >= 0",
                    bool: "true or false",
                    "number": "a non-negative number"}[typ]
        raise ConfigError(f"{_where(node, source)}: '{path}' must be {expected}, got {node.value!r}")
    return value


def parse(text: str, source: str = "config") -> dict[str, Any]:
    try:
        node = yaml.compose(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    if node is None:
        return {}
    config = _check(node, ROOT_SCHEMA, source, "")
    _check_references(config, source)
    return config


def _check_references(config: dict[str, Any], source: str) -> None:
    from gateway.providers.registry import kinds

    names = {p["name"] for p in config.get("providers", [])}
    for p in config.get("providers", []):
        if p["kind"] not in kinds():
            raise ConfigError(f"{source}: provider '{p['name']}' has unknown kind '{p['kind']}'"
                              f" (known: {', '.join(sorted(kinds()))})")
        if "api_key" in p and "api_key_env" in p:
            raise ConfigError(f"{source}: provider '{p['name']}' sets both api_key and api_key_env")
        if "admin_api_key" in p and "admin_api_key_env" in p:
            raise ConfigError(f"{source}: provider '{p['name']}' sets both admin_api_key and admin_api_key_env")
        if "api_key_env" in p and (reason := key_env_refusal(p["api_key_env"])):
            raise ConfigError(f"{source}: provider '{p['name']}': api_key_env {reason}")
        if reason := egress.check_url(p["base_url"], p.get("allow_private", False)):
            raise ConfigError(f"{source}: provider '{p['name']}': base_url refused: {reason}")
    for m in config.get("models", []):
        for r in m["routes"]:
            if r["provider"] not in names:
                raise ConfigError(f"{source}: model '{m['slug']}' routes to provider '{r['provider']}',"
                                  " which is not in providers (config providers must be declared in the same file)")
            for cap in r.get("capabilities", []):
                if cap not in CAPABILITIES:
                    raise ConfigError(f"{source}: model '{m['slug']}': unknown capability '{cap}'"
                                      f" (known: {', '.join(CAPABILITIES)})")
        if sum(bool(r.get("reference")) for r in m["routes"]) > 1:
            raise ConfigError(f"{source}: model '{m['slug']}' marks more than one route as reference")
    from gateway.routing.strategies import STRATEGIES

    strategies = [(f"alias '{n}'", a["strategy"]) for n, a in config.get("aliases", {}).items() if isinstance(a, dict)]
    if "strategy" in config.get("routing", {}):
        strategies.append(("routing", config["routing"]["strategy"]))
    for where, strategy in strategies:
        if strategy not in STRATEGIES:
            raise ConfigError(f"{source}: {where}: unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    savings = config.get("savings", {})
    threshold = savings.get("semantic_cache", {}).get("threshold")
    if threshold is not None and not 0 < threshold <= 1:
        raise ConfigError(f"{source}: savings.semantic_cache.threshold must be in (0, 1]")
    if savings.get("exact_cache", {}).get("charge", "free") not in ("free", "full"):
        raise ConfigError(f"{source}: savings.exact_cache.charge must be 'free' or 'full'")
    if savings.get("compression", {}).get("mode", "summary") not in ("summary", "trim"):
        raise ConfigError(f"{source}: savings.compression.mode must be 'summary' or 'trim'")
    from gateway.pipeline.savings import LAYERS

    seen = set()
    for p in config.get("plans", []):
        if p["name"] in seen:
            raise ConfigError(f"{source}: plan '{p['name']}' is declared twice")
        seen.add(p["name"])
        unknown = sorted(set(p.get("features", [])) - set(LAYERS))
        if unknown:
            raise ConfigError(f"{source}: plan '{p['name']}': unknown features {', '.join(unknown)}"
                              f" (savings layers: {', '.join(LAYERS)})")


def load_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read GATEWAY_CONFIG {path}: {e.strerror}") from None
    return parse(text, str(path))


# ---- apply -------------------------------------------------------------------------------------

def apply(session: Session, config: dict[str, Any], secret_key: str) -> None:
    """Upsert everything in `config` (one transaction, caller commits)."""
    cipher = crypto.derive_key(secret_key)
    providers = {p.name: p for p in session.scalars(select(Provider)).all()}
    for spec in config.get("providers", []):
        p = providers.get(spec["name"]) or Provider(name=spec["name"])
        p.kind, p.base_url = spec["kind"], spec["base_url"].rstrip("/")
        p.enabled = spec.get("enabled", True)
        p.responses_api = spec.get("responses_api")
        p.batch_api = spec.get("batch_api")
        p.allow_private = spec.get("allow_private", False)
        if "api_key" in spec:
            p.api_key_enc, p.api_key_env = crypto.encrypt(cipher, spec["api_key"], aad=p.name.encode()), None
        elif "api_key_env" in spec:
            p.api_key_enc, p.api_key_env = None, spec["api_key_env"]
        if "admin_api_key" in spec:
            p.admin_api_key_enc = crypto.encrypt(cipher, spec["admin_api_key"], aad=b"admin:" + p.name.encode())
            p.admin_api_key_env = None
        elif "admin_api_key_env" in spec:
            p.admin_api_key_enc, p.admin_api_key_env = None, spec["admin_api_key_env"]
        session.add(p)
        providers[p.name] = p
    session.flush()
    for spec in config.get("models", []):
        model = session.scalar(select(Model).where(Model.slug == spec["slug"])) or Model(slug=spec["slug"])
        model.context_window = spec.get("context_window")
        model.max_output_tokens = spec.get("max_output_tokens")
        session.add(model)
        session.flush()
        session.execute(delete(Route).where(Route.model_id == model.id))
        # The reference route (the benchmark price) goes first; the others keep their order.
        ordered = sorted(spec["routes"], key=lambda r: not r.get("reference", False))
        for position, r in enumerate(ordered):
            cached = r.get("cached_input_per_mtok")
            session.add(Route(
                model_id=model.id, provider_id=providers[r["provider"]].id, upstream_model=r["upstream_model"],
                input_micros_per_mtok=usd_to_micros(r["input_per_mtok"]),
                output_micros_per_mtok=usd_to_micros(r["output_per_mtok"]),
                cached_input_micros_per_mtok=None if cached is None else usd_to_micros(cached),
                context_window=r.get("context_window") or spec.get("context_window"), position=position,
                weight=r.get("weight", 1),
                capabilities=",".join(r["capabilities"]) if "capabilities" in r else None,
                batch_price_pct=r.get("batch_price_pct"),
            ))
    for name, target in config.get("aliases", {}).items():
        alias = session.scalar(select(Alias).where(Alias.name == name, Alias.org_id.is_(None))) or Alias(
            name=name, org_id=None)
        if isinstance(target, dict):
            alias.target, alias.strategy = target["models"][0], target["strategy"]
            alias.targets = orjson.dumps(target["models"]).decode()
        else:
            alias.target, alias.strategy, alias.targets = target, None, None
        session.add(alias)
    for slug, chain in config.get("fallbacks", {}).items():
        fb = session.scalar(select(Fallback).where(Fallback.model_slug == slug)) or Fallback(model_slug=slug)
        fb.chain = orjson.dumps(chain).decode()
        session.add(fb)
    for spec in config.get("agents", []):
        agent = session.scalar(select(AgentConfig).where(AgentConfig.name == spec["name"],
                                                         AgentConfig.org_id.is_(None))) or AgentConfig(
            name=spec["name"], org_id=None)
        agent.normal, agent.heavy, agent.max = spec["normal"], spec.get("heavy"), spec.get("max")
        agent.agent_id, agent.role = spec.get("agent_id"), spec.get("role")
        session.add(agent)
    if config.get("plans"):
        from gateway.services import plans

        for spec in config["plans"]:  # the config's plans win; plans made in the console stay
            plans.upsert(session, spec, actor="config")
    for key in ("routing", "savings", "reconciliation"):
        if key in config:  # the config's keys win; console changes to other keys survive a restart
            current = session.scalar(select(GatewaySetting.value).where(GatewaySetting.key == key)) or {}
            merged = {**current, **config[key]}
            if key == "savings":
                merged = {layer: {**current.get(layer, {}), **config[key].get(layer, {})}
                          for layer in {*current, *config[key]}}
            put_setting(session, key, merged, actor="config")
    announce(session, "catalog", "policy")


def put_setting(session: Session, key: str, value: Any, actor: str) -> None:
    """Upsert a run-time setting (caller announces "policy")."""
    row = session.scalar(select(GatewaySetting).where(GatewaySetting.key == key)) or GatewaySetting(key=key)
    row.value, row.updated_by = value, actor
    session.add(row)


def env_providers(session: Session, env_keys: dict[str, str]) -> list[str]:
    """First run without a config: providers whose key is in the environment, with a default catalog.

    The key stays in the environment (api_key_env); it is not copied into the database.
    """
    from gateway.settings import ENV_PROVIDER_KEYS

    if not env_keys:
        return []
    existing_kinds = set(session.scalars(select(Provider.kind)).all())
    catalog = parse(DEFAULT_CATALOG.read_text(), str(DEFAULT_CATALOG))
    wanted = [p for p in catalog["providers"] if p["kind"] in env_keys and p["kind"] not in existing_kinds]
    if not wanted:
        return []
    names = {p["name"] for p in wanted}
    config = {
        "providers": [{**p, "api_key_env": ENV_PROVIDER_KEYS[p["kind"]]} for p in wanted],
        "models": [m for m in catalog["models"] if all(r["provider"] in names for r in m["routes"])],
    }
    apply(session, config, secret_key="")  # nothing is encrypted: keys are referenced by name
    return sorted(names)
