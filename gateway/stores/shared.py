"""The Redis link for state shared across workers (`GATEWAY_REDIS_URL`), and what an outage means.

One client (a connection pool) per process, made on first use from the settings; under gevent's
monkey-patching its sockets cooperate. Callers ask `client()` for a connection and report failures
with `failed()`: a Redis error marks the link down for RETRY_SECONDS, during which `client()`
answers None without trying, so a dead Redis costs one timeout, not one per request.

Failure mode: never a failed request. Enforcing users (holds, budgets, rate limits) fall back to
their per-worker limits while the link is down; advisory users (caches, dedupe) skip. `down_since`
is what the console shows as a warning.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
SOCKET_TIMEOUT = 0.5  # a Redis slower than this is treated as down: requests must not wait on it

_url: str | None = None
_client: Any = None
down_since: float | None = None  # the first failure of the current outage
_last_failure: float = 0.0  # the latest one: the link is retried RETRY_SECONDS after it


def configure(url: str | None) -> None:
    """Bind the link to a Redis URL (None: no Redis, single-worker state only)."""
    global _url, _client, down_since
    _url, _client, down_since = url, None, None


def enabled() -> bool:
    return _url is not None


def url() -> str | None:
    return _url


def status() -> dict | None:
    """For /healthz and the console: None without Redis, else whether the link is up and since when down."""
    if _url is None:
        return None
    if down_since is None:
        return {"redis": "up"}
    return {"redis": "down", "down_seconds": round(time.monotonic() - down_since, 1),
            "effect": "per-worker limits; shared caches and dedupe skipped"}


def client() -> Any:
    """The Redis client, or None when none is configured or the link is down."""
    global _client
    if _url is None or (down_since is not None and time.monotonic() - _last_failure < RETRY_SECONDS):
        return None
    if _client is None:
        import redis  # only when scaled out

        _client = redis.Redis.from_url(_url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
                                       health_check_interval=30)
    return _client


def failed(error: BaseException) -> None:
    """Report a Redis error: the link is down until RETRY_SECONDS have passed."""
    global down_since, _last_failure
    _last_failure = time.monotonic()
    if down_since is None:
        log.warning("Redis unreachable (%s): per-worker limits apply until it is back", error)
        down_since = _last_failure


def recovered() -> None:
    global down_since
    if down_since is not None:
        log.warning("Redis reachable again: shared limits apply")
    down_since = None
