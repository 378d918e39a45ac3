"""Savings layers: settings per layer (config `savings:` < org < app < request headers) and the
shared helpers the layers use. Every layer is advisory: a failure skips it, never the request.

An org's own choice from its dashboard (services/features.py) sets a layer's `enabled` over the
org's override, only for a layer a super-admin opened to self-service (`features` setting).

Request headers: `x-gateway-<layer>: on|off` (e.g. `x-gateway-semantic-cache: on`) turns one layer
on or off for this request; `x-gateway-cache: bypass|force` and `Cache-Control: no-store` steer the
caches (see exact_cache and semantic_cache).
"""

from __future__ import annotations

from typing import Any

from gateway.memo import MEMO
from gateway.pipeline.context import RequestContext
from gateway.pipeline.dispatch import decode

LAYERS = ("exact_cache", "semantic_cache", "inflight_dedupe", "prompt_cache", "compression",
          "context_dedupe", "output_budget")

DEFAULTS: dict[str, dict[str, Any]] = {
    "exact_cache": {"enabled": True, "ttl_seconds": 3600, "max_entries": 10_000, "charge": "free",
                    "shared_scope": None},
    "semantic_cache": {"enabled": False, "threshold": 0.50, "max_turns": 1, "ttl_seconds": 3600,
                       "max_entries": 10_000, "embeddings_model": None, "shared_scope": None,
                       "verifier_model": None, "verifier_timeout_seconds": 5.0},
    "inflight_dedupe": {"enabled": True, "max_wait_seconds": 120.0},
    "prompt_cache": {"enabled": True, "min_tokens": 1024},
    "compression": {"enabled": False, "budget_tokens": 8000, "keep_last_turns": 4, "summary_model": None,
                    "mode": "trim"},
    "context_dedupe": {"enabled": False, "min_chars": 200},
    "output_budget": {"enabled": True, "default_max_tokens": None},
}
HEADERS = {layer: "x-gateway-" + layer.replace("_", "-") for layer in LAYERS}

_merged: dict[tuple[int | None, int | None], dict[str, dict[str, Any]]] = {}
_snapshot: object = None  # the policy object the merged settings were built from (compared by identity)


def self_service(policy: Any) -> frozenset[str]:
    """The layers a super-admin opened to self-service (the `features` setting's `allowed` list)."""
    value = policy.settings.get("features")
    names = value.get("allowed") if isinstance(value, dict) else None
    return frozenset(n for n in names or () if n in LAYERS)


def _base(org_id: int | None, app_id: int | None) -> dict[str, dict[str, Any]]:
    """Defaults < config `savings:` < the org's overrides < the org's own opt-in < the app's overrides;
    rebuilt per policy snapshot."""
    global _snapshot
    policy = MEMO.policy
    if _snapshot is not policy:
        _merged.clear()
        _snapshot = policy
    key = (org_id, app_id)
    merged = _merged.get(key)
    if merged is None:
        config = policy.settings.get("savings") or {}
        merged = {}
        opened = self_service(policy)
        chosen = policy.opt_ins.get(org_id, {}) if org_id is not None else {}
        for layer in LAYERS:
            values = {**DEFAULTS[layer], **config.get(layer, {})}
            if org_id is not None:
                values.update(policy.savings.get((org_id, None), {}).get(layer, {}))
                if layer in chosen and layer in opened:  # a choice for a layer no longer open is ignored
                    values["enabled"] = chosen[layer]
                if app_id is not None:
                    values.update(policy.savings.get((org_id, app_id), {}).get(layer, {}))
            merged[layer] = values
        _merged[key] = merged
    return merged


def org_layers(org_id: int) -> dict[str, dict[str, Any]]:
    """Every layer's settings for the org's requests, before app overrides and request headers."""
    return _base(org_id, None)


def settings(ctx: RequestContext, layer: str) -> dict[str, Any]:
    """The layer's settings for this request, request headers applied last."""
    cache = ctx.extra.setdefault("savings", {})
    if layer in cache:
        return cache[layer]
    p = ctx.principal
    values = _base(p.org_id if p else None, p.app_id if p else None)[layer]
    switch = (ctx.headers.get(HEADERS[layer]) or "").strip().lower()
    if switch in ("on", "off", "true", "false", "1", "0"):
        values = {**values, "enabled": switch in ("on", "true", "1")}
    cache[layer] = values
    return values


def enabled(ctx: RequestContext, layer: str) -> bool:
    """On in the settings, and allowed by the org's plan (a plan's `features` lists the layers it
    includes; no plan, or a plan without the list, allows them all)."""
    if not settings(ctx, layer)["enabled"]:
        return False
    plan = MEMO.org_money(ctx.principal.org_id).plan if ctx.principal else None
    return plan is None or plan.features is None or layer in plan.features


def canonical(ctx: RequestContext):
    """The request as a canonical ChatRequest, decoded once. A layer that edits it sets
    `ctx.changed`, so dispatch sends the rewritten messages: in the client's own body on a
    same-dialect route (every other field as sent, wire/rewrite.py), translated on any other."""
    if ctx.canonical is None:
        ctx.canonical = decode(ctx)
    return ctx.canonical


def scope(ctx: RequestContext, layer: str) -> str:
    """Where a layer's stored answers live: the org's own scope, or a shared scope the org opted into."""
    shared = settings(ctx, layer).get("shared_scope")
    assert ctx.principal is not None
    return f"shared:{shared}" if shared else f"org:{ctx.principal.org_id}"
