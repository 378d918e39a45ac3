"""Start-up: migrate, load the config, first-run bootstrap; then the background loops."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import func, select

from gateway import db, jobs, seed, tokens
from gateway.ledger.pricing import usd_to_micros
from gateway.ledger.writer import WRITER
from gateway.memo import MEMO
from gateway.migrate import schema_current  # noqa: F401  (boot.schema_current: callers and tests)
from gateway.models import Org, Provider, SemanticEntry, User
from gateway.pipeline import gate
from gateway.pipeline.savings import compress
from gateway.routing import shared_health
from gateway.routing.health import HEALTH
from gateway.services import arbitrage, batch_runner, batch_settle, batches, budgets, tenancy, webhooks
from gateway.stores import byok as byok_store  # noqa: F401  (listens for byok changes before the first load)
from gateway.stores import counters, shared, shared_bus
from gateway.stores import exact_cache as cache_store
from gateway.stores import idempotency as idempotency_store
from gateway.stores.counters import COUNTERS, MemoryCounters
from gateway.stores.prefixes import PREFIXES
from gateway.stores.shared_counters import RedisCounters

log = logging.getLogger(__name__)

FIRST_ORG = "default"
FIRST_ADMIN = "admin@localhost"
FIRST_CREDITS_USD = 10


@dataclass(frozen=True)
class FirstRun:
    email: str
    password: str
    org: str
    api_key: str
    providers: list[str]


def prepare(app: Flask) -> FirstRun | None:
    """Upgrade the schema, upsert GATEWAY_CONFIG, and on a fresh instance create the first
    admin, org and key. Raises seed.ConfigError on a bad config (before anything is written)."""
    settings = app.extensions["settings"]
    config = seed.load_file(settings.config_path) if settings.config_path else None
    if not schema_current():
        from gateway import migrate  # Alembic only when there is something to upgrade, and not here

        migrate.upgrade_in_child()
    with db.write_lock, db.session_scope() as session:
        if config is not None:
            seed.apply(session, config, settings.secret_key)
        env_added = []
        if session.scalar(select(func.count()).select_from(Provider)) == 0:
            env_added = seed.env_providers(session, dict(settings.env_provider_keys))
        if session.scalar(select(func.count()).select_from(User)) > 0:
            return None
        password = tenancy.one_time_password()
        tenancy.create_admin(session, FIRST_ADMIN, password, superadmin=True, actor="first-run", one_time=True)
        org = session.scalar(select(Org).where(Org.name == FIRST_ORG)) or tenancy.create_org(
            session, FIRST_ORG, usd_to_micros(FIRST_CREDITS_USD), actor="first-run")
        key = tenancy.create_key(session, org, name="first key", actor="first-run")
        providers = list(session.scalars(select(Provider.name)).all())
        return FirstRun(FIRST_ADMIN, password, org.name, key.secret, providers or env_added)


def connect_shared(settings) -> None:
    """With GATEWAY_REDIS_URL, holds, budgets, rate limits and breakers are shared by every worker."""
    shared.configure(settings.redis_url)
    if settings.redis_url:  # a fresh client state for this start (its scripts, its fallback's holds)
        counters.use(RedisCounters(settings.workers))
    elif isinstance(COUNTERS.backend, RedisCounters):
        counters.use(MemoryCounters())
    shared_health.install(HEALTH)


def _semantic_entry(payload: bytes) -> None:
    from gateway.stores import semantic_index  # numpy once another worker has a semantic entry to share

    semantic_index.INDEX.receive(payload)


def _listen_shared() -> None:
    """Scaled out: this worker hears the others (change-log nudges, semantic entries; the responses
    store and the breakers subscribe themselves) and catches up on the change log at each connect."""
    if not shared.enabled():
        return
    shared_bus.subscribe("changes", lambda _: WRITER.poll_soon(), own=True)
    shared_bus.subscribe("semantic", _semantic_entry)
    shared_bus.on_connect(WRITER.poll_soon)
    shared_bus.start()


def start_background(app: Flask) -> None:
    """Load the in-memory maps and the tokenizer, then start the ledger writer and the scheduler."""
    tokens.load()  # once, here: a request that needs a count never waits for it
    batches.configure(app.extensions["settings"])
    webhooks.configure(app.extensions["settings"])
    connect_shared(app.extensions["settings"])
    with db.session_scope() as session:
        MEMO.load_all(session)
        # A (re)start has no open holds; window spend is seeded once from the ledger.
        COUNTERS.reset()
        gate.ALERTED.clear()
        budgets.seed_spend(session, COUNTERS)
        batch_settle.restore_holds(session)  # open batches hold their worst case across restarts
        arbitrage.restore(session)  # so do deferred requests not yet in a batch
        cache_store.STORE.load(session)  # the exact cache, back in memory
        idempotency_store.STORE.load(session)  # idempotency records, back in memory
        idempotency_store.STORE.lookup = idempotency_store.lookup_stored  # and other workers' records
        if "gateway.stores.semantic_index" in sys.modules or session.scalar(
                select(func.count()).select_from(SemanticEntry)):
            from gateway.stores import semantic_index  # numpy only when there is a semantic cache to load

            semantic_index.INDEX.load(session)  # the semantic cache, back in memory
        compress.load(session)  # conversation summaries, back in memory
        PREFIXES.clear()  # prompt prefixes seen: memory only, a start has seen none
        if session.scalar(select(Provider.id).where(Provider.kind == "bedrock").limit(1)) is not None:
            from gateway.providers import bedrock

            bedrock.preload()  # botocore only for a gateway that has a Bedrock provider
    HEALTH.reset()
    WRITER.start()
    _listen_shared()
    arbitrage.start()
    jobs.start(app)


def stop_background(app: Flask) -> None:
    shared_bus.stop()
    jobs.stop()
    arbitrage.stop()  # deferred requests stay queued in the database for the next process
    batch_runner.stop()
    WRITER.stop()
