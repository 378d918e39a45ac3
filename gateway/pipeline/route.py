"""Route: agent/alias -> model -> ordered routes incl. fallback chain, within the caller's rules (enforcing).

Everything here reads memory (memo.py, the health board); no database query.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from gateway.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, PermissionDenied
from gateway.memo import MEMO, Catalog, ModelInfo, Principal, RouteInfo
from gateway.pipeline import prompt
from gateway.pipeline.context import Reply, RequestContext
from gateway.routing import settings as routing_settings
from gateway.routing.health import HEALTH
from gateway.routing.strategies import ORDER

name, enforcing = "route", True

TIERS = ("normal", "heavy", "max")
_rng = random.Random()


def before(ctx: RequestContext) -> Reply | None:
    catalog = MEMO.catalog
    principal = ctx.principal
    org_id = principal.org_id if principal else None
    slug, strategy, candidates = resolve_name(ctx.requested_model, org_id, catalog)
    models = [m for m in (catalog.models.get(s) for s in candidates) if m is not None and m.routes]
    if not models:
        raise ModelNotFound(f"The model `{ctx.requested_model}` does not exist or you do not have access to it.",
                            param="model")
    ctx.model = models[0] if strategy is None else _primary(models, strategy)
    if principal is not None:
        models = _allowed_models(models, principal, ctx.requested_model)
    pinned = pins(ctx)
    strategy = strategy or routing_settings.current().strategy
    plan: list[RouteInfo] = []
    seen: set[str] = set()
    for model in _with_fallbacks(models, catalog, allow=pinned.get("allow_fallbacks", True)):
        if model.slug not in seen:
            seen.add(model.slug)
            plan.extend(ORDER[strategy](model.routes, HEALTH, _rng))
    plan = _within_rules(plan, principal, ctx) if principal else plan
    plan = _pinned(plan, pinned)
    plan = _capable(plan, needs(ctx))
    plan = _fitting(plan, ctx)
    ctx.plan = plan
    return None


def resolve_name(requested: str, org_id: int | None, catalog: Catalog) -> tuple[str, str | None, list[str]]:
    """(slug, strategy, candidate slugs) for what the client asked for: `agent:<name>[:tier]`, an alias
    (the org's beats the global one), or a slug."""
    if requested.startswith("agent:"):
        _, _, rest = requested.partition(":")
        agent_name, _, tier = rest.partition(":")
        tier = tier or "normal"
        agents = MEMO.policy.agents
        agent = agents.get((org_id, agent_name)) or agents.get((None, agent_name))
        if agent is None or tier not in TIERS:
            raise ModelNotFound(f"The agent `{requested}` does not exist.", param="model")
        slug = getattr(agent, tier)
        if not slug:
            raise ModelNotFound(f"The agent `{agent_name}` has no {tier} model.", param="model")
        requested = slug
    alias = catalog.alias(requested, org_id)
    if alias is None:
        return requested, None, [requested]
    if alias.strategy:
        return alias.target, alias.strategy, list(alias.targets)
    return alias.target, None, [alias.target]


def _primary(models: list[ModelInfo], strategy: str) -> ModelInfo:
    """For a strategy alias, order the candidate models by their best route."""
    ranked = ORDER[strategy]([m.reference for m in models if m.reference], HEALTH, _rng)
    by_slug = {m.slug: m for m in models}
    models[:] = [by_slug[r.model_slug] for r in ranked]
    return models[0]


def _with_fallbacks(models: list[ModelInfo], catalog: Catalog, allow: bool) -> Iterable[ModelInfo]:
    yield from models
    if not allow:
        return
    chain = catalog.fallbacks.get(models[0].slug) or catalog.fallbacks.get("*", ())
    for slug in chain:
        if (m := catalog.models.get(slug)) is not None:
            yield m


def _allowed_models(models: list[ModelInfo], principal: Principal, requested: str) -> list[ModelInfo]:
    rules = MEMO.policy.access_rules(principal)
    kept = [m for m in models
            if all(r.allowed_models is None or m.slug in r.allowed_models or requested in r.allowed_models
                   for _, r in rules)]
    if not kept:
        denied_by = next(label for label, r in rules if r.allowed_models is not None)
        raise PermissionDenied(f"The model `{requested}` is not allowed by this {denied_by}'s access policy.")
    return kept


def _within_rules(plan: list[RouteInfo], principal: Principal, ctx: RequestContext) -> list[RouteInfo]:
    rules = MEMO.policy.access_rules(principal)
    if not rules:
        return plan
    kept = []
    reasons: list[str] = []
    for route in plan:
        why = _denied(route, rules, ctx.requested_model)
        if why is None:
            kept.append(route)
        elif why not in reasons:
            reasons.append(why)
    if not kept:
        raise PermissionDenied(f"No route for `{ctx.requested_model}` is allowed: {'; '.join(reasons)}.")
    return kept


def _denied(route: RouteInfo, rules, requested: str) -> str | None:
    for label, r in rules:
        if (r.allowed_models is not None and route.model_slug not in r.allowed_models
                and requested not in r.allowed_models):  # a rule may name the alias the client uses
            return f"model {route.model_slug} is not in the {label}'s allowed models"
        if r.allowed_providers is not None and route.provider.name not in r.allowed_providers:
            return f"provider {route.provider.name} is not in the {label}'s allowed providers"
        if r.max_input_micros_per_mtok is not None and route.input_micros_per_mtok > r.max_input_micros_per_mtok:
            return (f"{route.provider.name}/{route.upstream_model} costs more per input Mtok than the "
                    f"{label}'s price cap")
        if (r.max_output_micros_per_mtok is not None
                and route.output_micros_per_mtok > r.max_output_micros_per_mtok):
            return (f"{route.provider.name}/{route.upstream_model} costs more per output Mtok than the "
                    f"{label}'s price cap")
    return None


def pins(ctx: RequestContext) -> dict:
    """Provider preferences: the `x-gateway-provider` header (comma list, in order) or an
    OpenRouter-style `provider` object in the body ({order, only, ignore, allow_fallbacks}).
    The body field is a gateway directive: it is removed before the request goes upstream."""
    prefs: dict = {}
    body_prefs = ctx.body.pop("provider", None) if isinstance(ctx.body, dict) else None
    if body_prefs is not None:
        if not isinstance(body_prefs, dict):
            raise InvalidRequest("'provider' must be an object with order, only, ignore.", param="provider")
        for key in ("order", "only", "ignore"):
            value = body_prefs.get(key)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise InvalidRequest(f"'provider.{key}' must be a list of provider names.", param=f"provider.{key}")
            if value is not None:
                prefs[key] = value
        if body_prefs.get("allow_fallbacks") is False:
            prefs["allow_fallbacks"] = False
    header = ctx.headers.get("x-gateway-provider")
    if header:
        names = [n.strip() for n in header.split(",") if n.strip()]
        prefs["order"], prefs["only"] = names, names
    return prefs


def _pinned(plan: list[RouteInfo], prefs: dict) -> list[RouteInfo]:
    if not prefs:
        return plan
    if "only" in prefs:
        plan = [r for r in plan if r.provider.name in prefs["only"]]
    if "ignore" in prefs:
        plan = [r for r in plan if r.provider.name not in prefs["ignore"]]
    if "order" in prefs:
        rank = {n: i for i, n in enumerate(prefs["order"])}
        plan = sorted(plan, key=lambda r: rank.get(r.provider.name, len(rank)))
    if not plan:
        raise ModelNotFound("No route of this model matches the requested providers.", param="provider")
    return plan


WINDOWED = frozenset({"chat.completions", "messages", "responses"})


def _fitting(plan: list[RouteInfo], ctx: RequestContext) -> list[RouteInfo]:
    """The routes whose context window holds the prompt plus the requested output; 400
    context_length_exceeded before any upstream call when none does. The body's size settles the
    common case; tokens are counted only when it does not, and no further than the largest window."""
    windows = [r.context_window for r in plan if r.context_window]
    if not windows or ctx.endpoint not in WINDOWED:
        return plan
    output = prompt.requested_output(ctx.body)
    bound = prompt.upper_bound(ctx.raw, ctx.body)
    if bound is not None and bound + output <= min(windows):
        return plan
    largest = max(windows)
    need = prompt.count(ctx.body, limit=max(largest - output, 0), history=ctx.history) + output
    kept = [r for r in plan if not r.context_window or need <= r.context_window]
    if kept:
        return kept
    param = "input" if ctx.endpoint == "responses" else "messages"
    raise ContextLengthExceeded(
        f"This model's maximum context length is {largest} tokens. However, you requested "
        f"{'more than ' if need > largest else ''}{need} tokens ({need - output} in the {param}, {output} in "
        f"the completion). Please reduce the length of the {param} or completion.", param=param)


def needs(ctx: RequestContext) -> frozenset[str]:
    """Capabilities the request needs from a route."""
    body = ctx.body
    found = set()
    if ctx.stream:
        found.add("streaming")
    if body.get("tools") or body.get("functions"):
        found.add("tools")
    text = body.get("text")  # the Responses API's output settings
    fmt = body.get("response_format") or (text.get("format") if isinstance(text, dict) else None)
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        found.add("json_mode")
    if _has_image(body):
        found.add("vision")
    return frozenset(found)


def _has_image(body: dict) -> bool:
    items = next((v for v in (body.get("messages"), body.get("input")) if isinstance(v, list)), ())
    for m in items:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(
                isinstance(p, dict) and p.get("type") in ("image_url", "image", "input_image") for p in content):
            return True
    return False


def _capable(plan: list[RouteInfo], need: frozenset[str]) -> list[RouteInfo]:
    if not need:
        return plan
    kept = [r for r in plan if r.supports(need)]
    if not kept:
        raise InvalidRequest(f"No route of this model supports what the request needs ({', '.join(sorted(need))}).",
                             param="model")
    return kept
