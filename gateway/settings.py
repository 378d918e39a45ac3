"""Typed settings, parsed once from GATEWAY_* variables and the instance folder.

The only module that reads os.environ. Overrides (tests, the CLI) win over the environment.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

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
    workers: int = 1  # processes sharing the work (GATEWAY_WORKERS or gunicorn's WEB_CONCURRENCY): divides limits during a Redis outage
    budget_webhook_url: str | None = None  # soft-budget alerts when the org sets none
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    upstream_connect_timeout: float = 5.0
    upstream_idle_timeout: float = 120.0
    # How often a server notices writes made by another process (CLI, another worker).
    sync_interval: float = 0.25
    ledger_batch_size: int = 500
    shutdown_grace_seconds: float = 20.0
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    start_jobs: bool = True
    openrouter_referer: str = "https://github.com/gateway"  # OpenRouter app attribution
    openrouter_title: str = "Gateway"
    env_provider_keys: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None) -> Settings:
        overrides = dict(overrides or {})
        env = os.environ
        instance = Path(overrides.pop("instance", None) or env.get("GATEWAY_INSTANCE") or ROOT / "instance")
        instance = instance.resolve()
        instance.mkdir(parents=True, exist_ok=True)
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
            "env_provider_keys": {
                kind: env[var] for kind, var in ENV_PROVIDER_KEYS.items() if env.get(var)
            },
        }
        for name in ("openrouter_referer", "openrouter_title"):
            if env.get(f"GATEWAY_{name.upper()}"):
                values[name] = env[f"GATEWAY_{name.upper()}"]
        values["metrics_token"] = env.get("GATEWAY_METRICS_TOKEN") or None
        values["metrics_multiproc_dir"] = env.get("PROMETHEUS_MULTIPROC_DIR") or None
        workers = env.get("GATEWAY_WORKERS") or env.get("WEB_CONCURRENCY")
        if workers and workers.isdigit() and int(workers) > 0:
            values["workers"] = int(workers)
        if "GATEWAY_HOST" in env:
            values["host"] = env["GATEWAY_HOST"]
        if "GATEWAY_PORT" in env:
            values["port"] = int(env["GATEWAY_PORT"])
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return replace(cls(**values), **overrides)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _instance_secret(instance: Path) -> str:
    """Key material generated once into the instance folder when GATEWAY_SECRET_KEY is unset."""
    path = instance / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def environ_value(name: str) -> str | None:
    """Read a provider key named by `api_key_env` in the config (the one other env read)."""
    return os.environ.get(name)
