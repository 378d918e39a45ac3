"""Route health: rolling error rate and latency (EWMA), in-flight counts and a circuit breaker.

Per process and in memory: the hot path never waits on shared state for this. A breaker opens
after `failures` consecutive failures, lets one probe through after `cooldown` seconds
(half-open), and closes on that probe's success (re-opens on its failure).

Scaled out, `share` (routing/shared_health.py) is set: failures are also counted across workers
in a short window, and a breaker opened or closed by one worker is opened or closed on all of
them. Only failures and recoveries reach it, never a plain success, so the happy path stays local.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class Minute:
    minute: int
    requests: int = 0
    errors: int = 0
    latency_ms: float = 0.0


@dataclass(slots=True)
class RouteHealth:
    ewma_latency_ms: float | None = None
    ewma_error: float = 0.0
    consecutive_failures: int = 0
    state: str = CLOSED
    opened_at: float = 0.0
    probing: bool = False
    in_flight: int = 0
    minutes: deque = field(default_factory=lambda: deque(maxlen=60))
    # The same counts per org: an API caller is shown its own org's traffic only.
    org_minutes: dict[int, deque] = field(default_factory=dict)


class HealthBoard:
    def __init__(self, failures: int = 5, cooldown: float = 30.0, alpha: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.alpha = alpha
        self.clock = clock
        self.routes: dict[int, RouteHealth] = {}
        self.share = None  # the cross-worker breaker link when scaled out (routing/shared_health.py)

    def configure(self, failures: int, cooldown: float) -> None:
        self.failures, self.cooldown = failures, cooldown

    def reset(self) -> None:
        self.routes.clear()

    def forget(self, route_ids) -> None:
        """Start these routes afresh (their provider's key or address changed: old failures say nothing)."""
        for route_id in route_ids:
            self.routes.pop(route_id, None)

    def get(self, route_id: int) -> RouteHealth:
        h = self.routes.get(route_id)
        if h is None:
            h = self.routes[route_id] = RouteHealth()
        return h

    def state(self, route_id: int) -> str:
        h = self.routes.get(route_id)
        if h is None:
            return CLOSED
        if h.state == OPEN and self.clock() - h.opened_at >= self.cooldown:
            return HALF_OPEN
        return h.state

    def allow(self, route_id: int) -> bool:
        """May a request use this route now? A half-open route admits one probe at a time."""
        h = self.routes.get(route_id)
        if h is None or h.state == CLOSED:
            return True
        if h.state == OPEN:
            if self.clock() - h.opened_at < self.cooldown:
                return False
            h.state = HALF_OPEN
            h.probing = False
        if h.probing:
            return False
        h.probing = True
        return True

    def started(self, route_id: int) -> None:
        self.get(route_id).in_flight += 1

    def succeeded(self, route_id: int, latency_ms: float, org_id: int | None = None) -> None:
        h = self.get(route_id)
        h.in_flight = max(0, h.in_flight - 1)
        if self.share is not None and (h.consecutive_failures or h.state != CLOSED):
            self.share.recovered(route_id)
        h.consecutive_failures = 0
        h.ewma_error *= 1 - self.alpha
        h.ewma_latency_ms = latency_ms if h.ewma_latency_ms is None else (
            self.alpha * latency_ms + (1 - self.alpha) * h.ewma_latency_ms)
        h.state, h.probing = CLOSED, False
        self._count(h, latency_ms, False, org_id)

    def failed(self, route_id: int, latency_ms: float, org_id: int | None = None) -> None:
        h = self.get(route_id)
        h.in_flight = max(0, h.in_flight - 1)
        h.consecutive_failures += 1
        h.ewma_error = self.alpha + (1 - self.alpha) * h.ewma_error
        was = h.state
        if h.state == HALF_OPEN or h.consecutive_failures >= self.failures or (
                self.share is not None and self.share.failed(route_id, self.failures, self.cooldown)):
            h.state, h.opened_at, h.probing = OPEN, self.clock(), False
            if self.share is not None and was != OPEN:
                self.share.opened(route_id, self.cooldown)
        self._count(h, latency_ms, True, org_id)

    def open_here(self, route_id: int) -> None:
        """Another worker opened this route's breaker: open it here too, from now."""
        h = self.get(route_id)
        if h.state != OPEN:
            h.state, h.opened_at, h.probing = OPEN, self.clock(), False

    def close_here(self, route_id: int) -> None:
        """Another worker saw this route recover: close its breaker here too."""
        h = self.routes.get(route_id)
        if h is not None:
            h.state, h.probing, h.consecutive_failures = CLOSED, False, 0

    def released(self, route_id: int) -> None:
        """The call ended without a verdict on the route (e.g. the client's own 4xx)."""
        h = self.get(route_id)
        h.in_flight = max(0, h.in_flight - 1)
        if h.state == HALF_OPEN:
            h.probing = False

    def _count(self, h: RouteHealth, latency_ms: float, error: bool, org_id: int | None) -> None:
        minute = int(time.time() // 60)
        if h.org_minutes and (not h.minutes or h.minutes[-1].minute != minute):
            # once a minute per route: forget orgs with no traffic on it in the last hour
            h.org_minutes = {o: m for o, m in h.org_minutes.items() if m and m[-1].minute > minute - 60}
        series = [h.minutes]
        if org_id is not None:
            series.append(h.org_minutes.get(org_id) or h.org_minutes.setdefault(org_id, deque(maxlen=60)))
        for minutes in series:
            if not minutes or minutes[-1].minute != minute:
                minutes.append(Minute(minute))
            m = minutes[-1]
            m.requests += 1
            m.errors += int(error)
            m.latency_ms += latency_ms

    def last_hour(self, route_id: int, org_id: int | None = None) -> dict[str, Any]:
        """Requests, errors and mean latency over the last hour: every org's, or `org_id`'s only."""
        h = self.routes.get(route_id)
        since = int(time.time() // 60) - 60
        series = () if h is None else h.minutes if org_id is None else h.org_minutes.get(org_id, ())
        minutes = [m for m in series if m.minute > since]
        requests = sum(m.requests for m in minutes)
        return {
            "requests": requests,
            "errors": sum(m.errors for m in minutes),
            "avg_latency_ms": round(sum(m.latency_ms for m in minutes) / requests, 1) if requests else None,
        }

    def describe(self, route_id: int) -> dict[str, Any]:
        h = self.routes.get(route_id) or RouteHealth()
        return {
            "state": self.state(route_id),
            "error_rate": round(h.ewma_error, 4),
            "latency_ms": None if h.ewma_latency_ms is None else round(h.ewma_latency_ms, 1),
            "in_flight": h.in_flight,
            "consecutive_failures": h.consecutive_failures,
            "last_hour": self.last_hour(route_id),
        }

    def describe_for_org(self, route_id: int, org_id: int) -> dict[str, Any]:
        """What an API caller may see: the route's health, and its own org's traffic only (no
        in-flight count or request totals, which would tell one org about another's load)."""
        h = self.routes.get(route_id) or RouteHealth()
        return {
            "state": self.state(route_id),
            "error_rate": round(h.ewma_error, 4),
            "latency_ms": None if h.ewma_latency_ms is None else round(h.ewma_latency_ms, 1),
            "consecutive_failures": h.consecutive_failures,
            "last_hour": self.last_hour(route_id, org_id),
        }


HEALTH = HealthBoard()
