"""Admin writes on providers and model routes (super-admins only): the console's Providers page and
the model editor of Available Models.

As in catalog_admin.py, each function validates, writes, audits and announces "catalog" inside the
caller's short transaction; AdminError (its message is for the user) means nothing was written.
Provider keys are stored as seed.apply stores them (AES-256-GCM under GATEWAY_SECRET_KEY, the
provider's name as associated data) so memo.py decrypts them; no key ever reaches an audit detail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import crypto, seed
from gateway.ledger.pricing import usd
from gateway.memo import announce
from gateway.models import AgentConfig, Alias, Fallback, Model, Provider, Route
from gateway.providers import egress
from gateway.services.errors import Actor, AdminError, require_superadmin, row_or_gone
from gateway.services.routing import NAME, parse_price
from gateway.services.tenancy import audit
from gateway.settings import key_env_refusal

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESPONSES_API = {"auto": None, "yes": True, "no": False}
MAX_TOKENS = 100_000_000
# base_url as each provider's own SDK takes it (the README's table).
BASE_URL_EXAMPLES = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "openrouter": "https://openrouter.ai/api/v1",
    "ollama": "http://localhost:11434",
    "gemini": "https://generativelanguage.googleapis.com",
    "bedrock": "https://bedrock-runtime.us-east-1.amazonaws.com",
}


def kinds() -> list[str]:
    from gateway.providers.registry import kinds as registered

    return sorted(registered())


def truthy(value: Any) -> bool:
    """A checkbox or a YAML-ish flag: 'on', 'true', 'yes', '1'."""
    return value is True or str(value or "").strip().lower() in ("on", "true", "yes", "1")


# ---- providers -----------------------------------------------------------------------------------

@dataclass
class ProviderChange:
    provider: Provider
    created: bool
    added_models: list[str] = field(default_factory=list)
    skipped_models: list[str] = field(default_factory=list)  # defaults whose slug already has routes


def check_base_url(raw: str | None) -> str:
    url = (raw or "").strip()
    if not url:
        raise AdminError("Enter the base URL (as the provider's own SDK takes it, e.g. https://api.openai.com/v1).")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise AdminError(f"Base URL '{url[:200]}' is not a valid URL.") from None
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise AdminError(f"Base URL '{url[:200]}' has an invalid port.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not url.isprintable() or " " in url:
        raise AdminError(f"Base URL '{url}' is not an http(s) URL (e.g. https://api.openai.com/v1).")
    if parts.username or parts.password:
        # the URL is shown in the console; credentials belong in the key, which is stored encrypted
        raise AdminError("Put credentials in the API key field, not in the base URL.")
    if len(url) > 512:
        raise AdminError("Base URL is too long (512 characters at most).")
    return url.rstrip("/")


def shown_url(url: str) -> str:
    """The base URL without any credentials in it (a config file may have put some there)."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _check_env_name(raw: str | None) -> str | None:
    name = (raw or "").strip().lstrip("$")
    if not name:
        return None
    if not ENV_NAME.match(name):
        raise AdminError(f"'{name}' is not an environment variable name (letters, digits and _, e.g. OPENAI_API_KEY).")
    if reason := key_env_refusal(name):  # GATEWAY_* and names outside GATEWAY_KEY_ENV_ALLOW (HOME, PATH)
        raise AdminError(f"{reason[:1].upper()}{reason[1:]}.")
    return name


def key_status(p: Provider) -> str:
    """How the provider's key is held, in words (never the key)."""
    if p.console_key_enc:
        return f"set in console (…{p.console_key_hint or ''})"
    if p.api_key_enc:
        return "stored, encrypted"
    if p.api_key_env:
        return f"from env ${p.api_key_env}"
    return "none"


# ---- the key's source: console > environment / config ---------------------------------------------
# The config (`api_key` or `api_key_env`) and the environment (a first run's OPENAI_API_KEY...) are
# re-applied at every start into api_key_enc / api_key_env; a key saved in the console lives apart
# (console_key_enc) and wins over both, at every start, until it is reset.

CONSOLE, CONFIG, ENVIRONMENT, NONE = "set in console", "from config", "from environment", "none"


def key_source(p: Provider, in_config: bool) -> str:
    """Where the key in force comes from: CONSOLE, CONFIG, ENVIRONMENT or NONE. A stored key of a
    provider the config does not declare was saved in the console before keys had a source."""
    if p.console_key_enc:
        return CONSOLE
    if p.api_key_enc:
        return CONFIG if in_config else CONSOLE
    if p.api_key_env:
        return ENVIRONMENT
    return NONE


def hint(key: str) -> str:
    """All the console shows of a saved key: its last 4 characters (fewer for a short key)."""
    return key[-4:] if len(key) >= 12 else key[-2:] if len(key) >= 6 else ""


def _check_key(raw: Any) -> str:
    if not isinstance(raw, str):
        raise AdminError("Enter the API key.")
    key = raw.strip()  # a pasted key often brings a newline along
    if not key:
        raise AdminError("Enter the API key.")
    if any(c.isspace() for c in key) or not key.isprintable():
        raise AdminError("The API key contains spaces or control characters; paste it again.")
    if len(key) > 4096:
        raise AdminError("The API key is too long (4096 characters at most).")
    return key


def _store_console_key(p: Provider, key: str, secret_key: str) -> None:
    p.console_key_enc = crypto.encrypt(crypto.derive_key(secret_key), key, aad=b"console:" + p.name.encode())
    p.console_key_hint = hint(key)


def set_console_key(session: Session, actor: Actor, provider_id: int, raw_key: Any, secret_key: str) -> Provider:
    """Save a key in the console: it is used from the next request and at every start, over the
    config and the environment, until reset_console_key."""
    require_superadmin(actor, "provider credentials")
    p = row_or_gone(session, Provider, provider_id, "provider")
    key = _check_key(raw_key)
    replaced = bool(p.console_key_enc)
    _store_console_key(p, key, secret_key)
    audit(session, actor.email, "provider.key_set", p.name,
          f"key set in console (…{p.console_key_hint}){'; replaced the previous console key' if replaced else ''}")
    announce(session, "catalog")
    return p


def reset_console_key(session: Session, actor: Actor, provider_id: int) -> Provider:
    """Forget the console's key: the config's or the environment's applies again from the next request."""
    require_superadmin(actor, "provider credentials")
    p = row_or_gone(session, Provider, provider_id, "provider")
    if not p.console_key_enc:
        raise AdminError(f"{p.name} has no key set in the console.")
    was = p.console_key_hint
    p.console_key_enc, p.console_key_hint = None, None
    now = "from env $" + p.api_key_env if p.api_key_env else ("the stored key" if p.api_key_enc else "no key")
    audit(session, actor.email, "provider.key_reset", p.name, f"console key (…{was}) removed; now {now}")
    announce(session, "catalog")
    return p


def _yes(value: bool | None) -> str:
    return {None: "auto", True: "yes", False: "no"}[value]


def _provider_text(p: Provider) -> str:
    return (f"kind {p.kind}, {shown_url(p.base_url)}, key {key_status(p)}, {'enabled' if p.enabled else 'disabled'}, "
            f"responses_api {_yes(p.responses_api)}, batch_api {_yes(p.batch_api)}, "
            f"allow_private {'yes' if p.allow_private else 'no'}")


def put_provider(session: Session, actor: Actor, form: Mapping[str, Any], secret_key: str,
                 provider_id: int | None = None) -> ProviderChange:
    """Create a provider, or edit `provider_id`. A blank api_key keeps the stored key (it is
    write-only); `clear_key` removes it. On create, `add_defaults` imports the default catalog's
    models of the same kind, routed to this provider."""
    require_superadmin(actor, "providers")
    existing = None
    if provider_id is not None:
        existing = row_or_gone(session, Provider, provider_id, "provider")
    name = (form.get("name") or "").strip() if existing is None else existing.name
    if existing is None:
        if not NAME.match(name) or len(name) > 64:
            raise AdminError(f"Provider name '{name}' is not valid: up to 64 letters, digits and . _ / @ + - "
                             "(no spaces, commas or ':'), starting with a letter or digit.")
        if session.scalar(select(Provider.id).where(Provider.name == name)) is not None:
            raise AdminError(f"A provider named '{name}' already exists: edit it, or choose another name.")
    elif (form.get("name") or name).strip() != name:
        raise AdminError("A provider's name cannot be changed (access rules and pins refer to it, and its "
                         "stored key is bound to it): add a new provider instead.")
    kind = (form.get("kind") or "").strip()
    if kind not in kinds():
        raise AdminError(f"Unknown kind '{kind}' (known: {', '.join(kinds())}).")
    base_url = check_base_url(form.get("base_url"))
    allow_private = truthy(form.get("allow_private"))
    if reason := egress.check_url(base_url, allow_private):
        raise AdminError(f"Base URL refused: {reason}.")
    api_key = (form.get("api_key") or "").strip()  # a pasted key often brings a newline along
    if api_key:
        api_key = _check_key(api_key)
    env_name = _check_env_name(form.get("api_key_env"))
    if api_key and env_name:
        raise AdminError("Give either an API key or an environment variable name, not both.")
    responses = (form.get("responses_api") or "auto").strip()
    if responses not in RESPONSES_API:
        raise AdminError("Responses API must be auto, yes or no.")
    batch_api = (form.get("batch_api") or "auto").strip()
    if batch_api not in RESPONSES_API:
        raise AdminError("Batch API must be auto, yes or no.")

    p = existing or Provider(name=name)
    before = _provider_text(p) if existing else None
    had_key = bool(p.console_key_enc or p.api_key_enc)
    p.kind, p.base_url, p.enabled = kind, base_url, truthy(form.get("enabled"))
    p.responses_api = RESPONSES_API[responses]
    p.batch_api = RESPONSES_API[batch_api]
    p.allow_private = allow_private
    if api_key:  # the console's key: it wins over the config and the environment until reset
        _store_console_key(p, api_key, secret_key)
    elif env_name:
        p.console_key_enc = p.console_key_hint = p.api_key_enc = None
        p.api_key_env = env_name
    elif truthy(form.get("clear_key")) or existing is None:
        p.console_key_enc = p.console_key_hint = p.api_key_enc = p.api_key_env = None
    else:  # blank on edit: the stored key stays (an env name left blank is dropped: that field shows it)
        p.api_key_env = None
    session.add(p)
    session.flush()
    change = ProviderChange(p, created=existing is None)
    if existing is None and truthy(form.get("add_defaults")):
        change.added_models, change.skipped_models = _add_default_models(session, p, secret_key)

    detail = _provider_text(p)
    if before is not None:
        detail += f" (was {before})"
        if api_key and had_key:
            detail += "; key replaced"
    if change.added_models:
        detail += f"; default models added: {', '.join(change.added_models)}"
    if change.skipped_models:
        detail += f"; defaults skipped (already routed): {', '.join(change.skipped_models)}"
    audit(session, actor.email, "provider.create" if existing is None else "provider.update", name, detail)
    announce(session, "catalog")
    return change


@cache
def _default_catalog() -> dict[str, Any]:
    """gateway/default_catalog.yaml, parsed once (it ships with the code)."""
    return seed.parse(seed.DEFAULT_CATALOG.read_text(), str(seed.DEFAULT_CATALOG))


def default_kinds() -> set[str]:
    """Kinds the default catalog has models for."""
    return {p["kind"] for p in _default_catalog()["providers"]}


def _add_default_models(session: Session, provider: Provider, secret_key: str) -> tuple[list[str], list[str]]:
    """The default catalog's models served by a provider of this kind, routed to `provider` instead.
    A slug that already exists with routes is left alone (reported as skipped)."""
    catalog = _default_catalog()
    same_kind = {p["name"] for p in catalog["providers"] if p["kind"] == provider.kind}
    routed = set(session.scalars(select(Model.slug).join(Route, Route.model_id == Model.id)).all())
    models, skipped = [], []
    for m in catalog["models"]:
        routes = [{**r, "provider": provider.name} for r in m["routes"] if r["provider"] in same_kind]
        if not routes:
            continue
        if m["slug"] in routed:
            skipped.append(m["slug"])
            continue
        models.append({**m, "routes": routes})
    if models:
        seed.apply(session, {"models": models}, secret_key)  # the config's own upsert, so both agree
    return [m["slug"] for m in models], skipped


def set_provider_enabled(session: Session, actor: Actor, provider_id: int, enabled: bool) -> Provider:
    """Take a provider out of routing (its routes are skipped; its models with no other route are
    not served) or put it back."""
    require_superadmin(actor, "providers")
    p = row_or_gone(session, Provider, provider_id, "provider")
    was = p.enabled
    p.enabled = enabled
    audit(session, actor.email, "provider.enable" if enabled else "provider.disable", p.name,
          f"enabled: {'yes' if was else 'no'} -> {'yes' if enabled else 'no'}")
    announce(session, "catalog")
    return p


def delete_provider(session: Session, actor: Actor, provider_id: int) -> list[str]:
    """Delete a provider with its routes; models left with no route go too. Returns those slugs."""
    require_superadmin(actor, "providers")
    p = row_or_gone(session, Provider, provider_id, "provider")
    routes = session.execute(select(Route, Model.slug).join(Model, Model.id == Route.model_id)
                             .where(Route.provider_id == p.id).order_by(Model.slug)).all()
    for route, _ in routes:
        session.delete(route)
    session.flush()
    removed = _drop_unrouted(session, {route.model_id for route, _ in routes})
    session.delete(p)
    detail = (f"was {_provider_text(p)}; {len(routes)} route{'s' if len(routes) != 1 else ''} removed"
              + (f" ({', '.join(f'{slug} via {r.upstream_model}' for r, slug in routes)})" if routes else "")
              + (f"; models removed (no route left): {', '.join(removed)}" if removed else ""))
    audit(session, actor.email, "provider.delete", p.name, detail)
    announce(session, "catalog")
    return removed


def _drop_unrouted(session: Session, model_ids: Iterable[int]) -> list[str]:
    """Delete those of `model_ids` that have no route left (returns their slugs); renumber the
    routes of the others, so the next one becomes the reference if the reference went."""
    removed = []
    for model_id in sorted(set(model_ids)):
        rest = session.scalars(select(Route).where(Route.model_id == model_id)
                               .order_by(Route.position, Route.id)).all()
        if rest:
            for position, r in enumerate(rest):
                r.position = position
            continue
        model = session.get(Model, model_id)
        if model is not None:
            removed.append(model.slug)
            session.delete(model)
    return sorted(removed)


def still_named(session: Session, slugs: Iterable[str]) -> list[str]:
    """Aliases, fallback chains and agents that still name one of `slugs` (they now resolve to nothing)."""
    gone = set(slugs)
    if not gone:
        return []
    found = []
    for a in session.scalars(select(Alias)).all():
        if gone & ({a.target} | set(orjson.loads(a.targets) if a.targets else ())):
            found.append(f"alias {a.name}")
    for f in session.scalars(select(Fallback)).all():
        if f.model_slug in gone or gone & set(orjson.loads(f.chain)):
            found.append(f"fallback chain of {f.model_slug}")
    for ag in session.scalars(select(AgentConfig)).all():
        if gone & {ag.normal, ag.heavy, ag.max}:
            found.append(f"agent {ag.name}")
    return found


# ---- routes (the model editor) ------------------------------------------------------------------

def _count(label: str, raw: Any, *, minimum: int, default: int | None) -> int | None:
    text = str(raw if raw is not None else "").strip().replace(",", "").replace("_", "")
    if not text:
        return default
    if not re.fullmatch(r"\d+", text) or not minimum <= int(text) <= MAX_TOKENS:
        raise AdminError(f"{label} must be a whole number from {minimum:,} to {MAX_TOKENS:,}.")
    return int(text)


def _capabilities(form: Mapping[str, Any]) -> str | None:
    """None: not declared (every request may use the route); else the declared ones, comma-separated."""
    if (form.get("capabilities_mode") or "all") == "all":
        return None
    raw = form.get("capabilities") or []
    caps = [c.strip() for c in (raw.split(",") if isinstance(raw, str) else raw) if c and c.strip()]
    for c in caps:
        if c not in seed.CAPABILITIES:
            raise AdminError(f"Unknown capability '{c}' (known: {', '.join(seed.CAPABILITIES)}).")
    return ",".join(c for c in seed.CAPABILITIES if c in caps)


def route_text(route: Route, provider: Provider) -> str:
    cached = route.cached_input_micros_per_mtok
    caps = "all (not declared)" if route.capabilities is None else (route.capabilities or "none")
    return (f"{provider.name}/{route.upstream_model}: in ${usd(route.input_micros_per_mtok)}"
            f" out ${usd(route.output_micros_per_mtok)}"
            f" cached {'-' if cached is None else '$' + usd(cached)} per Mtok, weight {route.weight},"
            f" capabilities {caps}" + (", reference" if route.position == 0 else ""))


def put_route(session: Session, actor: Actor, form: Mapping[str, Any], route_id: int | None = None) -> Route:
    """Add a route to a model (created if new), or edit route `route_id`. The model's context window
    and max output tokens are set from the form too. `reference` makes it the model's first route,
    whose list price is the benchmark."""
    require_superadmin(actor, "models and routes")
    route = None
    if route_id is not None:
        route = row_or_gone(session, Route, route_id, "route")
    model = session.get(Model, route.model_id) if route else None
    slug = (form.get("slug") or "").strip()
    if model is not None and slug and slug != model.slug:
        raise AdminError("A route stays with its model: to serve another slug, add a route to that one.")
    if model is None:
        if not NAME.match(slug) or len(slug) > 160:
            raise AdminError(f"Model slug '{slug}' is not valid: use letters, digits and . _ / @ + - "
                             "(no spaces or ':'), starting with a letter or digit.")
        model = session.scalar(select(Model).where(Model.slug == slug))
        if model is None and session.scalar(select(Alias.id).where(Alias.name == slug).limit(1)) is not None:
            raise AdminError(f"'{slug}' is an alias name; a model needs a slug of its own.")
    provider = session.scalar(select(Provider).where(Provider.name == (form.get("provider") or "").strip()))
    if provider is None:
        raise AdminError("Choose a provider (add one on the Providers page first).")
    upstream = (form.get("upstream_model") or "").strip()
    if not upstream or len(upstream) > 160 or any(c.isspace() for c in upstream):
        raise AdminError("Enter the upstream model: the provider's own name for it (no spaces), e.g. gpt-4.1-mini.")
    input_price = parse_price("Input price", form.get("input_per_mtok"), True)
    output_price = parse_price("Output price", form.get("output_per_mtok"), True)
    cached_price = parse_price("Cached input price", form.get("cached_input_per_mtok"))
    # Left blank when adding a route to an existing model, the model's own values stay; on edit
    # the form shows them, so blank there clears them.
    keep = route is None and model is not None
    context_window = _count("Context window", form.get("context_window"), minimum=1,
                            default=model.context_window if keep else None)
    max_output = _count("Max output tokens", form.get("max_output_tokens"), minimum=1,
                        default=model.max_output_tokens if keep else None)
    weight = _count("Weight", form.get("weight"), minimum=0, default=1)
    capabilities = _capabilities(form)
    reference = truthy(form.get("reference"))

    if model is not None:
        clash = select(Route.id).where(Route.model_id == model.id, Route.provider_id == provider.id,
                                       Route.upstream_model == upstream)
        if route is not None:
            clash = clash.where(Route.id != route.id)
        if session.scalar(clash) is not None:
            raise AdminError(f"{model.slug} already has a route to {provider.name}/{upstream}: edit that one.")
    created_model = model is None
    model = model or Model(slug=slug)
    model.context_window, model.max_output_tokens = context_window, max_output
    session.add(model)
    session.flush()
    before = route_text(route, session.get(Provider, route.provider_id)) if route else None
    route = route or Route(model_id=model.id)
    route.provider_id, route.upstream_model = provider.id, upstream
    route.input_micros_per_mtok, route.output_micros_per_mtok = input_price, output_price
    route.cached_input_micros_per_mtok, route.context_window = cached_price, context_window
    route.weight, route.capabilities = weight, capabilities
    session.add(route)
    session.flush()
    _order(session, model.id, route, reference, new=before is None)
    detail = route_text(route, provider) + (f" (was {before})" if before else "")
    if created_model:
        detail = "new model; " + detail
    audit(session, actor.email, "route.update" if before else "route.create", model.slug, detail)
    announce(session, "catalog")
    return route


def _order(session: Session, model_id: int, route: Route, reference: bool, new: bool) -> None:
    """Renumber the model's routes 0..n-1: the reference first, the others in their order. A new
    route goes last unless it is the reference; un-marking the reference moves it last."""
    others = [r for r in session.scalars(select(Route).where(Route.model_id == model_id)
                                         .order_by(Route.position, Route.id)).all() if r.id != route.id]
    if reference:
        ordered = [route, *others]
    elif new or (route.position == 0 and others):
        ordered = [*others, route]
    else:
        ordered = sorted([route, *others], key=lambda r: (r.position, r.id))
    for position, r in enumerate(ordered):
        r.position = position
    session.flush()


def delete_route(session: Session, actor: Actor, route_id: int) -> str | None:
    """Delete one route; a model left with no route is deleted too (its slug is returned)."""
    require_superadmin(actor, "models and routes")
    route = row_or_gone(session, Route, route_id, "route")
    model = session.get(Model, route.model_id)
    detail = f"was {route_text(route, session.get(Provider, route.provider_id))}"
    session.delete(route)
    session.flush()
    removed = _drop_unrouted(session, [route.model_id])
    if removed:
        detail += "; model removed (no route left)"
    audit(session, actor.email, "route.delete", model.slug if model else str(route.model_id), detail)
    announce(session, "catalog")
    return removed[0] if removed else None


def route_form(route: Route, model: Model, provider: Provider) -> dict[str, Any]:
    """A stored route as the editor's form values."""
    def dollars(micros: int | None) -> str:
        return "" if micros is None else format((Decimal(micros) / 1_000_000).normalize(), "f")

    return {
        "route_id": route.id, "slug": model.slug, "provider": provider.name, "upstream_model": route.upstream_model,
        "input_per_mtok": dollars(route.input_micros_per_mtok), "output_per_mtok": dollars(route.output_micros_per_mtok),
        "cached_input_per_mtok": dollars(route.cached_input_micros_per_mtok),
        "context_window": model.context_window or route.context_window or "",
        "max_output_tokens": model.max_output_tokens or "", "weight": route.weight,
        "capabilities_mode": "all" if route.capabilities is None else "declared",
        "capabilities": [c for c in (route.capabilities or "").split(",") if c],
        "reference": route.position == 0,
    }
