"""In-memory maps for keys, config and org balances, refreshed when an admin write is seen.

The hot path reads only from here. Every admin write (console or CLI, in any process) appends a
ChangeEvent; the sync loop (ledger/writer.py) polls for new events and reloads the topics named.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import event, func, or_, select
from sqlalchemy.orm import Session

from gateway import crypto
from gateway.models import (
    AccessPolicy,
    AgentConfig,
    Alias,
    ApiKey,
    App,
    Budget,
    ChangeEvent,
    DlpCustomRule,
    DlpSetting,
    Fallback,
    FeatureOptIn,
    GatewaySetting,
    Model,
    Org,
    Plan,
    Provider,
    Route,
    SavingsOverride,
    User,
)
from gateway.providers import egress
from gateway.routing.routes import ProviderInfo, RouteInfo  # noqa: F401  (re-exported: the catalog's values)
from gateway.scrub import SCRUB
from gateway.settings import environ_value
from gateway.stores import shared, shared_bus

log = logging.getLogger(__name__)

TOPICS = ("keys", "catalog", "orgs", "policy", "budgets", "byok", "dlp")
GAP_SECONDS = 60.0  # how long a skipped change-event id is awaited (a transaction commits well within it)
MAX_GAPS = 1000


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    org_id: int
    org_name: str
    scope: str
    key_name: str = ""
    user_id: int | None = None
    app_id: int | None = None
    # What the caller's spend counts against (see entities()): asked on every request, built once.
    spends: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        out: list[tuple[str, int]] = [("org", self.org_id)]
        if self.user_id is not None:
            out.append(("user", self.user_id))
        if self.app_id is not None:
            out.append(("app", self.app_id))
        out.append(("key", self.key_id))
        object.__setattr__(self, "spends", tuple(out))


@dataclass(frozen=True, slots=True)
class PlanInfo:
    """Plan limits; None is unlimited. `features`: savings layers allowed (None: all)."""

    name: str
    rpm: int | None = None
    tpm: int | None = None
    key_rpm: int | None = None
    key_tpm: int | None = None
    max_keys: int | None = None
    batch: bool = True
    features: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class OrgMoney:
    """How an org is charged and limited: pricing policy, plan, soft-budget webhook."""

    pricing: str = "list"  # list | markup | discount | byok
    pricing_bps: int = 0
    request_fee_micros: int = 0
    plan: PlanInfo | None = None
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetInfo:
    id: int
    org_id: int
    entity: tuple[str, int]  # ("org"|"user"|"app"|"key", id)
    amount_micros: int
    window: str
    hard: bool
    rollover: bool


NO_MONEY = OrgMoney()


@dataclass(frozen=True, slots=True)
class AliasInfo:
    target: str  # the slug, or the first of `targets`
    strategy: str | None = None
    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentInfo:
    name: str
    normal: str
    heavy: str | None
    max: str | None


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    allowed_models: frozenset[str] | None
    allowed_providers: frozenset[str] | None
    max_input_micros_per_mtok: int | None
    max_output_micros_per_mtok: int | None


@dataclass(frozen=True)
class Policy:
    """Run-time policy: settings, agents, access rules and savings overrides."""

    settings: dict[str, Any] = field(default_factory=dict)
    agents: dict[tuple[int | None, str], AgentInfo] = field(default_factory=dict)
    access: dict[tuple[int, int | None, int | None], PolicyInfo] = field(default_factory=dict)
    savings: dict[tuple[int, int | None], dict[str, dict[str, Any]]] = field(default_factory=dict)
    opt_ins: dict[int, dict[str, bool]] = field(default_factory=dict)  # org -> layer -> its own choice

    def access_rules(self, principal: Principal) -> list[tuple[str, PolicyInfo]]:
        """The org's, the app's and the key's rules that apply to a caller (all must allow)."""
        found = []
        for label, k in (("org", (principal.org_id, None, None)),
                         ("app", (principal.org_id, principal.app_id, None)),
                         ("key", (principal.org_id, None, principal.key_id))):
            if (label != "app" or principal.app_id is not None) and (rule := self.access.get(k)) is not None:
                found.append((label, rule))
        return found


@dataclass(frozen=True, slots=True)
class ModelInfo:
    slug: str
    context_window: int | None
    max_output_tokens: int | None
    routes: tuple[RouteInfo, ...]

    @property
    def reference(self) -> RouteInfo | None:
        return self.routes[0] if self.routes else None


@dataclass(frozen=True)
class Catalog:
    models: dict[str, ModelInfo] = field(default_factory=dict)
    aliases: dict[tuple[int | None, str], AliasInfo] = field(default_factory=dict)  # (org_id|None, name)
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    providers: dict[str, ProviderInfo] = field(default_factory=dict)

    def alias(self, name: str, org_id: int | None = None) -> AliasInfo | None:
        """The org's alias first, then the global one."""
        return self.aliases.get((org_id, name)) or self.aliases.get((None, name))

    def resolve(self, name: str, org_id: int | None = None) -> ModelInfo | None:
        """Alias (the org's first, then global) -> slug -> model; None if unknown."""
        alias = self.alias(name, org_id)
        return self.models.get(alias.target if alias else name)


class Memo:
    def __init__(self) -> None:
        self.keys: dict[str, Principal] = {}
        self.catalog = Catalog()
        self.policy = Policy()
        self.org_names: dict[int, str] = {}
        self.money: dict[int, OrgMoney] = {}
        self.budgets: dict[tuple[str, int], BudgetInfo] = {}
        # Balance = committed credits (as last read from the database) minus charges queued for
        # the ledger writer but not yet committed. The writer moves amounts from one to the other.
        self.committed: dict[int, int] = {}
        self.uncommitted: dict[int, int] = {}
        self.dlp: dict[tuple[int, int | None], Any] = {}  # (org, app|None) -> gateway.dlp.engine.Policy
        self.app_deferral: dict[int, int] = {}  # app -> its default x-gateway-deadline (apps with one)
        self.last_event_id = 0
        self.gaps: dict[int, float] = {}  # change-event ids skipped over, still awaited -> when first missed
        self.loaded = False
        self._cipher_key: bytes | None = None
        self.listeners: dict[str, list[Callable[[Session, bytes], None]]] = {}

    # ---- hot path reads -------------------------------------------------------------------
    def principal(self, digest: str) -> Principal | None:
        return self.keys.get(digest)

    def org_money(self, org_id: int) -> OrgMoney:
        return self.money.get(org_id, NO_MONEY)

    def budgets_for(self, principal: Principal) -> list[BudgetInfo]:
        """The budgets that apply to a caller: its org's, user's, app's and key's."""
        if not self.budgets:
            return []
        found = []
        for entity in entities(principal):
            if (b := self.budgets.get(entity)) is not None:
                found.append(b)
        return found

    def dlp_policy(self, org_id: int, app_id: int | None):
        """The data-protection policy for a caller: its app's, else its org's; None if never set."""
        if app_id is not None and (policy := self.dlp.get((org_id, app_id))) is not None:
            return policy
        return self.dlp.get((org_id, None))

    def balance(self, org_id: int) -> int:
        return self.committed.get(org_id, 0) - self.uncommitted.get(org_id, 0)

    def hold(self, org_id: int, micros: int) -> None:
        """A charge has been queued for the ledger: count it against the balance at once."""
        self.uncommitted[org_id] = self.uncommitted.get(org_id, 0) + micros

    def committed_charges(self, charges: dict[int, int], balances: dict[int, int]) -> None:
        """The writer committed these charges; `balances` are the database values after commit."""
        for org_id, micros in charges.items():
            self.uncommitted[org_id] = self.uncommitted.get(org_id, 0) - micros
        self.committed.update(balances)

    # ---- loading ----------------------------------------------------------------------------
    def configure(self, secret_key: str) -> None:
        self._cipher_key = crypto.derive_key(secret_key)

    def load_all(self, session: Session) -> None:
        self.last_event_id = session.scalar(select(func.max(ChangeEvent.id))) or 0
        self.uncommitted = {}
        for topic in TOPICS:
            self.reload(session, topic)
        self.loaded = True

    def poll(self, session: Session) -> set[str]:
        """Reload topics with change events newer than the last seen; returns what changed.

        On PostgreSQL ids are handed out at insert but become visible at commit, so with several
        writers (workers, the CLI) id 12 can appear before id 11. Ids skipped over are asked for
        again for GAP_SECONDS; a rolled-back insert leaves a gap that simply expires."""
        newer = ChangeEvent.id > self.last_event_id
        where = or_(newer, ChangeEvent.id.in_(list(self.gaps))) if self.gaps else newer
        rows = session.execute(select(ChangeEvent.id, ChangeEvent.topic).where(where)).all()
        now = time.monotonic()
        self.gaps = {i: t for i, t in self.gaps.items() if now - t < GAP_SECONDS}
        if not rows:
            return set()
        ids = {i for i, _ in rows}
        for i in ids:
            self.gaps.pop(i, None)
        top = max(ids)
        if top > self.last_event_id:
            skipped = [i for i in range(self.last_event_id + 1, top) if i not in ids]
            for i in skipped[-MAX_GAPS:]:
                self.gaps[i] = now
            self.last_event_id = top
        topics = {topic for _, topic in rows}
        for topic in topics:
            self.reload(session, topic)
        return topics

    def listen(self, topic: str, load: Callable[[Session, bytes], None]) -> None:
        """`load(session, cipher_key)` runs whenever `topic` is (re)loaded: for maps kept by the
        modules above this one (stores/byok.py), which import memo and not the other way round."""
        assert topic in TOPICS, topic
        self.listeners.setdefault(topic, []).append(load)

    def reload(self, session: Session, topic: str) -> None:
        for load in self.listeners.get(topic, ()):
            load(session, self._cipher_key or b"")
        if topic == "keys":
            self._load_keys(session)
        elif topic == "catalog":
            self._load_catalog(session)
        elif topic == "orgs":
            self._load_orgs(session)
            self._load_keys(session)  # principals carry the org name
        elif topic == "policy":
            self._load_policy(session)
        elif topic == "budgets":
            self._load_budgets(session)
        elif topic == "dlp":
            self._load_dlp(session)

    def _load_budgets(self, session: Session) -> None:
        self.budgets = {}
        for b in session.scalars(select(Budget)).all():
            entity = (("user", b.user_id) if b.user_id is not None else ("app", b.app_id) if b.app_id is not None
                      else ("key", b.key_id) if b.key_id is not None else ("org", b.org_id))
            self.budgets[entity] = BudgetInfo(b.id, b.org_id, entity, b.amount_micros, b.window, b.hard, b.rollover)

    def _load_dlp(self, session: Session) -> None:
        """Compile every scope's rules once, here, never per request. A stored custom rule that no
        longer compiles makes its scopes refuse requests (fail closed) until an admin fixes it."""
        from gateway.dlp import engine
        from gateway.dlp.custom import CustomRuleError, compile_rule
        from gateway.dlp.detectors import DEFAULT_REGIONS

        customs: dict[int, dict[str, Any]] = {}
        for r in session.scalars(select(DlpCustomRule)).all():
            try:
                customs.setdefault(r.org_id, {})[f"custom:{r.name}"] = compile_rule(r.name, r.kind, r.pattern)
            except CustomRuleError as e:
                log.error("dlp custom rule %s of org %s is unusable: %s", r.name, r.org_id, e)
                customs.setdefault(r.org_id, {})[f"custom:{r.name}"] = None
        policies = {}
        for s in session.scalars(select(DlpSetting)).all():
            rules = dict(s.rules or {})
            own = customs.get(s.org_id, {})
            wanted = [rid for rid in rules if rid.startswith("custom:")]
            broken = [rid for rid in wanted if own.get(rid) is None]
            policies[(s.org_id, s.app_id)] = engine.Policy(
                enabled=bool(s.enabled), actions=rules,
                custom=tuple(own[rid] for rid in wanted if own.get(rid) is not None),
                regions=tuple(s.regions) if s.regions else DEFAULT_REGIONS,
                scope=f"app:{s.app_id}" if s.app_id is not None else f"org:{s.org_id}",
                error=f"custom rule {broken[0]} is missing or unusable" if broken else "",
            )
        self.dlp = policies

    def _load_policy(self, session: Session) -> None:
        savings: dict[tuple[int, int | None], dict[str, dict[str, Any]]] = {}
        for o in session.scalars(select(SavingsOverride)).all():
            savings.setdefault((o.org_id, o.app_id), {})[o.layer] = dict(o.settings or {})
        opt_ins: dict[int, dict[str, bool]] = {}
        for f in session.scalars(select(FeatureOptIn)).all():
            opt_ins.setdefault(f.org_id, {})[f.layer] = bool(f.enabled)
        self.policy = Policy(
            settings={s.key: s.value for s in session.scalars(select(GatewaySetting)).all()},
            agents={(a.org_id, a.name): AgentInfo(a.name, a.normal, a.heavy, a.max)
                    for a in session.scalars(select(AgentConfig)).all()},
            access={(p.org_id, p.app_id, p.key_id): PolicyInfo(
                None if p.allowed_models is None else frozenset(p.allowed_models),
                None if p.allowed_providers is None else frozenset(p.allowed_providers),
                p.max_input_micros_per_mtok, p.max_output_micros_per_mtok)
                for p in session.scalars(select(AccessPolicy)).all()},
            savings=savings,
            opt_ins=opt_ins,
        )

    def _load_orgs(self, session: Session) -> None:
        rows = session.scalars(select(Org)).all()
        plans = {p.id: PlanInfo(p.name, p.rpm, p.tpm, p.key_rpm, p.key_tpm, p.max_keys, p.batch,
                                None if p.features is None else frozenset(p.features))
                 for p in session.scalars(select(Plan)).all()}
        self.org_names = {r.id: r.name for r in rows}
        self.committed = {r.id: r.credits_micros for r in rows}
        self.money = {r.id: OrgMoney(r.pricing, r.pricing_bps, r.request_fee_micros, plans.get(r.plan_id),
                                     r.budget_webhook_url) for r in rows}

    def _load_keys(self, session: Session) -> None:
        if not self.org_names:
            self.org_names = dict(session.execute(select(Org.id, Org.name)).tuples().all())
        # A disabled user's or an inactive app's keys are left out: they answer 401.
        disabled_users = select(User.id).where(User.status != "active")
        inactive_apps = select(App.id).where(App.active.is_(False))
        rows = session.scalars(select(ApiKey).where(
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.user_id.is_(None), ApiKey.user_id.not_in(disabled_users)),
            or_(ApiKey.app_id.is_(None), ApiKey.app_id.not_in(inactive_apps)))).all()
        self.keys = {
            k.digest: Principal(k.id, k.org_id, self.org_names.get(k.org_id, ""), k.scope, k.name, k.user_id, k.app_id)
            for k in rows
        }
        self.app_deferral = dict(session.execute(select(App.id, App.arbitrage_deadline_seconds).where(
            App.arbitrage_deadline_seconds.is_not(None))).tuples().all())

    def _load_catalog(self, session: Session) -> None:
        providers = {p.id: self._provider_info(p) for p in session.scalars(select(Provider)).all()}
        routes: dict[int, list[RouteInfo]] = {}
        models = session.scalars(select(Model)).all()
        slugs = {m.id: m.slug for m in models}
        for r in session.scalars(select(Route).order_by(Route.model_id, Route.position, Route.id)).all():
            provider = providers.get(r.provider_id)
            if provider is None or not provider.enabled:
                continue
            routes.setdefault(r.model_id, []).append(RouteInfo(
                r.id, slugs[r.model_id], provider, r.upstream_model, r.input_micros_per_mtok,
                r.output_micros_per_mtok, r.cached_input_micros_per_mtok, r.context_window, r.position,
                r.weight, frozenset(c for c in r.capabilities.split(",") if c) if r.capabilities else None,
                r.batch_price_pct,
            ))
        self._forget_changed_providers(providers, routes)
        SCRUB.update(p.api_key for p in providers.values())  # before any request can use a new key
        egress.allow_private_for(p.base_url for p in providers.values() if p.allow_private)
        self.catalog = Catalog(
            models={m.slug: ModelInfo(m.slug, m.context_window, m.max_output_tokens, tuple(routes.get(m.id, ())))
                    for m in models},
            aliases={(a.org_id, a.name): AliasInfo(a.target, a.strategy,
                                                    tuple(orjson.loads(a.targets)) if a.targets else (a.target,))
                     for a in session.scalars(select(Alias)).all()},
            fallbacks={f.model_slug: tuple(orjson.loads(f.chain)) for f in session.scalars(select(Fallback)).all()},
            providers={p.name: p for p in providers.values()},
        )

    def _forget_changed_providers(self, providers: dict[int, ProviderInfo],
                                  routes: dict[int, list[RouteInfo]]) -> None:
        """A provider whose key, address or kind changed gets its routes' breakers closed: an operator
        fixing a wrong key should not wait out the cooldown of failures the old key caused."""
        from gateway.routing.health import HEALTH  # routing imports memo

        before = self.catalog.providers
        changed = {p.id for p in providers.values() if (old := before.get(p.name)) is not None
                   and (old.api_key, old.base_url, old.kind) != (p.api_key, p.base_url, p.kind)}
        if changed:
            HEALTH.forget(r.id for rs in routes.values() for r in rs if r.provider.id in changed)

    def _provider_info(self, p: Provider) -> ProviderInfo:
        api_key = None
        if p.console_key_enc:  # saved in the console: wins over the config and the environment
            try:
                api_key = crypto.decrypt(self._cipher_key or b"", p.console_key_enc, aad=b"console:" + p.name.encode())
            except Exception:
                log.error("provider %s: console key cannot be decrypted with this secret key", p.name)
        elif p.api_key_enc:
            try:
                api_key = crypto.decrypt(self._cipher_key or b"", p.api_key_enc, aad=p.name.encode())
            except Exception:  # wrong GATEWAY_SECRET_KEY: the route fails upstream, the process stays up
                log.error("provider %s: stored key cannot be decrypted with this secret key", p.name)
        elif p.api_key_env:
            api_key = environ_value(p.api_key_env)
        return ProviderInfo(p.id, p.name, p.kind, p.base_url.rstrip("/"), api_key, p.enabled, p.responses_api,
                            bool(p.allow_private), p.batch_api)


def entities(principal: Principal) -> tuple[tuple[str, int], ...]:
    """What a caller's spend counts against: its org, and its user, app and key."""
    return principal.spends


def announce(session: Session, *topics: str) -> None:
    """Record that `topics` changed, so every server process reloads them (call inside the write).
    Scaled out, the commit also nudges every worker over Redis to poll at once (stores/shared_bus.py)."""
    for topic in topics:
        assert topic in TOPICS, topic
        session.add(ChangeEvent(topic=topic))
    if shared.enabled() and not session.info.get("announce_nudge"):
        session.info["announce_nudge"] = True
        event.listen(session, "after_commit", _nudge, once=True)


def _nudge(session: Session) -> None:
    session.info.pop("announce_nudge", None)
    shared_bus.publish("changes", b"")


def snapshot(memo: Memo) -> dict[str, Any]:
    """A summary for /readyz and the console."""
    return {"keys": len(memo.keys), "models": len(memo.catalog.models), "orgs": len(memo.org_names)}


MEMO = Memo()
