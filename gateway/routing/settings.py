"""Routing settings in force: config `routing:` and console changes, over the defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gateway.memo import MEMO
from gateway.routing.health import HEALTH
from gateway.routing.retry import RetryPolicy


@dataclass(frozen=True)
class RoutingSettings:
    strategy: str = "priority"
    retries: int = 1
    backoff_base_ms: int = 250
    backoff_max_ms: int = 8000
    deadline_seconds: float = 60.0
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 30.0
    # Providers (by name) whose requests are always translated through the canonical types, even
    # where the client's dialect is theirs: for upstreams whose native endpoint is incomplete.
    translate: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "translate", tuple(self.translate or ()))

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.retries, self.backoff_base_ms / 1000, self.backoff_max_ms / 1000,
                           self.deadline_seconds)


_cache: tuple[Any, RoutingSettings] | None = None  # (the raw dict it came from, compared by identity)
_EMPTY: dict[str, Any] = {}
_NAMES = {f.name for f in fields(RoutingSettings)}


def current() -> RoutingSettings:
    """Rebuilt only when the policy snapshot changes (memo swaps the whole object on reload)."""
    global _cache
    raw: Any = MEMO.policy.settings.get("routing") or _EMPTY
    if _cache is None or _cache[0] is not raw:
        value = RoutingSettings(**{k: v for k, v in raw.items() if k in _NAMES})
        HEALTH.configure(value.breaker_failures, value.breaker_cooldown_seconds)
        _cache = (raw, value)
    return _cache[1]
