"""Typed settings, parsed once from GATEWAY_* variables and the instance folder.

The only module that reads os.environ. Overrides (tests, the CLI) win over the environment.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)
# Environment variables a provider's `api_key_env` may name (GATEWAY_KEY_ENV_ALLOW): a key, a token.
KEY_ENV_ALLOW = ("*_API_KEY", "*_TOKEN", "*_KEY")

# Provider keys picked up from the environment on first run, by provider kind.
ENV_PROVIDER_KEYS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}


@dataclass(frozen=True)
class Settings:
    instance: Path
    database_url: str
    secret_key: str
    config_path: Path | None = None
    redis_url: str | None = None
    metrics_token: str | None = None  # GET /metrics wants it as a bearer token (without it: loopback only)
    metrics_multiproc_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR under gunicorn
    # Processes sharing the work (GATEWAY_WORKERS or gunicorn's WEB_CONCURRENCY): divides limits during a Redis outage.
    workers: int = 1
    budget_webhook_url: str | None = None  # soft-budget alerts when the org sets none
    topup_url: str | None = None  # GATEWAY_TOPUP_URL: top-up requests and decisions are POSTed here
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    upstream_connect_timeout: float = 5.0
    upstream_idle_timeout: float = 120.0
    # How often a server notices writes made by another process (CLI, another worker).
    sync_interval: float = 0.25
    ledger_batch_size: int = 500
    # The writer writes at least every sync_interval, and at once when this many rows are queued.
    ledger_flush_rows: int = 500
    # On SIGTERM/SIGINT, how long requests in flight may run before they are ended (GATEWAY_DRAIN_SECONDS).
    drain_seconds: float = 30.0
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    start_jobs: bool = True
    # Reverse proxies in front of the gateway whose X-Forwarded-For/-Proto/-Host are believed.
    trusted_proxies: int = 0
    # POST /v1/error-reports accepted per key per minute (GATEWAY_ERROR_REPORTS_PER_MINUTE).
    error_reports_per_minute: int = 60
    openrouter_referer: str = "https://github.com/gateway"  # OpenRouter app attribution
    openrouter_title: str = "Gateway"
    env_provider_keys: Mapping[str, str] = field(default_factory=dict)
    # Batches: provider batches are polled after this many seconds, backing off (x2) to the cap.
    batch_poll_min_seconds: float = 5.0
    batch_poll_max_seconds: float = 600.0
    batch_max_lines: int = 50_000  # lines in one input file (OpenAI's limit)
    batch_retention_days: int = 29  # files and results kept (OpenAI keeps batch files 30 days)
    # Batches the gateway runs itself (providers without a batch API): at most this many requests at
    # once, and none started while this many synchronous requests are waiting on their upstreams.
    batch_concurrency: int = 4
    batch_yield_in_flight: int = 32
    # Arbitrage: a chat request whose `x-gateway-deadline` is at least this many seconds is answered 202
    # and sent in the next provider batch of its org, flushed at this many requests or this age.
    batch_arbitrage_min_seconds: float = 86400.0
    batch_arbitrage_max_requests: int = 1000
    batch_arbitrage_max_age_seconds: float = 60.0
    # Webhooks of deferred results: loopback and private addresses refused unless allowed
    # (GATEWAY_WEBHOOK_ALLOW_PRIVATE); failed deliveries retried from this many seconds, doubling,
    # at most this many attempts.
    webhook_allow_private: bool = False
    webhook_retry_seconds: float = 30.0
    webhook_max_attempts: int = 8
    # OpenTelemetry traces over OTLP/HTTP to this base URL (`/v1/traces` is added); unset: tracing off
    otel_endpoint: str | None = None
    otel_service_name: str = "gateway"
    # `gateway serve` looks for a local Ollama here at start and offers it in the console (never
    # adds it by itself); GATEWAY_OLLAMA_PROBE_URL, empty to skip the look.
    ollama_probe_url: str = "http://127.0.0.1:11434"

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        overrides = dict(overrides or {})
        env = os.environ
        instance = Path(overrides.pop("instance", None) or env.get("GATEWAY_INSTANCE") or ROOT / "instance")
        instance = instance.resolve()
        private_dir(instance)
        database_url = overrides.pop("database_url", None) or env.get("GATEWAY_DATABASE_URL") or (
            f"sqlite:///{instance / 'gateway.db'}"
        )
        secret_key = overrides.pop("secret_key", None) or env.get("GATEWAY_SECRET_KEY") or _instance_secret(instance)
        config = overrides.pop("config_path", None) or env.get("GATEWAY_CONFIG")
        values: dict[str, Any] = {
            "instance": instance,
            "database_url": database_url,
            "secret_key": secret_key,
            "config_path": Path(config) if config else None,
            "redis_url": env.get("GATEWAY_REDIS_URL") or None,
            "budget_webhook_url": env.get("GATEWAY_BUDGET_WEBHOOK_URL") or None,
            "topup_url": env.get("GATEWAY_TOPUP_URL") or None,
            "env_provider_keys": {
                kind: env[var] for kind, var in ENV_PROVIDER_KEYS.items() if env.get(var)
            },
        }
        for name in ("openrouter_referer", "openrouter_title"):
            if env.get(f"GATEWAY_{name.upper()}"):
                values[name] = env[f"GATEWAY_{name.upper()}"]
        if "GATEWAY_OLLAMA_PROBE_URL" in env:
            values["ollama_probe_url"] = env["GATEWAY_OLLAMA_PROBE_URL"].strip()
        values["metrics_token"] = env.get("GATEWAY_METRICS_TOKEN") or None
        values["otel_endpoint"] = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
        values["otel_service_name"] = env.get("OTEL_SERVICE_NAME") or "gateway"
        values["metrics_multiproc_dir"] = env.get("PROMETHEUS_MULTIPROC_DIR") or None
        workers = env.get("GATEWAY_WORKERS") or env.get("WEB_CONCURRENCY")
        if workers and workers.isdigit() and int(workers) > 0:
            values["workers"] = int(workers)
        if "GATEWAY_HOST" in env:
            values["host"] = env["GATEWAY_HOST"]
        if "GATEWAY_PORT" in env:
            values["port"] = int(env["GATEWAY_PORT"])
        if env.get("GATEWAY_TRUSTED_PROXIES"):
            values["trusted_proxies"] = _count("GATEWAY_TRUSTED_PROXIES", env["GATEWAY_TRUSTED_PROXIES"])
        if env.get("GATEWAY_ERROR_REPORTS_PER_MINUTE"):
            values["error_reports_per_minute"] = max(1, _count("GATEWAY_ERROR_REPORTS_PER_MINUTE",
                                                               env["GATEWAY_ERROR_REPORTS_PER_MINUTE"]))
        for name in ("batch_poll_min_seconds", "batch_poll_max_seconds", "batch_arbitrage_min_seconds",
                     "batch_arbitrage_max_age_seconds"):
            if env.get(f"GATEWAY_{name.upper()}"):
                values[name] = max(0.0, float(env[f"GATEWAY_{name.upper()}"]))
        for name in ("batch_max_lines", "batch_retention_days", "batch_concurrency", "batch_yield_in_flight",
                     "batch_arbitrage_max_requests"):
            if env.get(f"GATEWAY_{name.upper()}"):
                values[name] = max(1, _count(f"GATEWAY_{name.upper()}", env[f"GATEWAY_{name.upper()}"]))
        if env.get("GATEWAY_WEBHOOK_ALLOW_PRIVATE"):
            values["webhook_allow_private"] = env["GATEWAY_WEBHOOK_ALLOW_PRIVATE"].strip().lower() in (
                "1", "true", "yes", "on")
        if env.get("GATEWAY_WEBHOOK_RETRY_SECONDS"):
            values["webhook_retry_seconds"] = max(0.0, float(env["GATEWAY_WEBHOOK_RETRY_SECONDS"]))
        if env.get("GATEWAY_WEBHOOK_MAX_ATTEMPTS"):
            values["webhook_max_attempts"] = max(1, _count("GATEWAY_WEBHOOK_MAX_ATTEMPTS",
                                                           env["GATEWAY_WEBHOOK_MAX_ATTEMPTS"]))
        if env.get("GATEWAY_DRAIN_SECONDS"):
            values["drain_seconds"] = max(0.0, float(env["GATEWAY_DRAIN_SECONDS"]))
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return replace(cls(**values), **overrides)


def _count(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"{name} must be a whole number >= 0 (the number of proxies in front), got {value!r}")
    return n


def private_dir(path: Path) -> None:
    """Create `path` readable by this user only (0700); tighten it if it exists (a clone's
    instance/ is 0755). It holds the database, stored responses and caches of every org."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as e:  # not ours (a mounted volume): say so, keep going
        log.warning("cannot make %s private (0700): %s", path, e.strerror)


def private_file(path: Path) -> None:
    """Create `path` empty if missing, and make it 0600 (SQLite gives its -wal and -shm files
    the database file's mode, so the database is created this way before SQLite opens it)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    os.close(fd)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError as e:
        log.warning("cannot make %s private (0600): %s", path, e.strerror)


def _instance_secret(instance: Path) -> str:
    """Key material generated once into the instance folder when GATEWAY_SECRET_KEY is unset."""
    path = instance / "secret_key"
    private_file(path)
    if not path.read_text().strip():
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def key_env_patterns() -> tuple[str, ...]:
    """GATEWAY_KEY_ENV_ALLOW: the globs an `api_key_env` name must match (empty: none may be named)."""
    raw = os.environ.get("GATEWAY_KEY_ENV_ALLOW")
    if raw is None:
        return KEY_ENV_ALLOW
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def key_env_refusal(name: str) -> str | None:
    """Why `api_key_env` may not name `name` (None: it may). Names are matched case-sensitively,
    as the environment is; the gateway's own GATEWAY_* settings are never a provider key."""
    if name.upper().startswith("GATEWAY_"):
        return f"{name} is one of the gateway's own settings; it cannot be sent upstream as a key"
    patterns = key_env_patterns()
    if not any(fnmatchcase(name, p) for p in patterns):
        allowed = ", ".join(patterns) or "none"
        return (f"{name} is not an allowed key variable (GATEWAY_KEY_ENV_ALLOW: {allowed}); "
                "name a variable that holds only the provider's key, e.g. OPENAI_API_KEY")
    return None


def environ_value(name: str) -> str | None:
    """Read a provider key named by `api_key_env` (the one other env read): only names allowed by
    GATEWAY_KEY_ENV_ALLOW, so a stored name like HOME or PATH is never sent upstream."""
    reason = key_env_refusal(name)
    if reason is not None:
        log.error("provider key not read: %s", reason)
        return None
    return os.environ.get(name)
