"""Route ordering strategies: priority, cheapest, fastest, weighted, least busy.

Each takes the candidate routes in catalog order and returns them in the order to try. Pure
functions of their inputs (health and a random source are passed in), so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from gateway.memo import RouteInfo
from gateway.routing.health import HealthBoard

STRATEGIES = ("priority", "cheapest", "fastest", "weighted", "least_busy")


def blended_price(route: RouteInfo) -> int:
    """Input plus output price per Mtok: a simple, explainable ranking key."""
    return route.input_micros_per_mtok + route.output_micros_per_mtok


def priority(routes: Sequence[RouteInfo], health: HealthBoard, rng: random.Random) -> list[RouteInfo]:
    return list(routes)


def cheapest(routes: Sequence[RouteInfo], health: HealthBoard, rng: random.Random) -> list[RouteInfo]:
    return sorted(routes, key=blended_price)  # sorted() is stable: ties keep catalog order


def fastest(routes: Sequence[RouteInfo], health: HealthBoard, rng: random.Random) -> list[RouteInfo]:
    """Lowest measured latency first; routes never measured go after, in catalog order."""
    def key(r: RouteInfo) -> tuple[int, float]:
        latency = health.get(r.id).ewma_latency_ms if r.id in health.routes else None
        return (1, 0.0) if latency is None else (0, latency)

    return sorted(routes, key=key)


def weighted(routes: Sequence[RouteInfo], health: HealthBoard, rng: random.Random) -> list[RouteInfo]:
    """First route drawn in proportion to its weight; the rest follow in catalog order."""
    weights = [max(r.weight, 0) for r in routes]
    if not routes or sum(weights) == 0:
        return list(routes)
    first = rng.choices(range(len(routes)), weights=weights, k=1)[0]
    return [routes[first], *(r for i, r in enumerate(routes) if i != first)]


def least_busy(routes: Sequence[RouteInfo], health: HealthBoard, rng: random.Random) -> list[RouteInfo]:
    return sorted(routes, key=lambda r: health.routes[r.id].in_flight if r.id in health.routes else 0)


ORDER: dict[str, Callable[[Sequence[RouteInfo], HealthBoard, random.Random], list[RouteInfo]]] = {
    "priority": priority, "cheapest": cheapest, "fastest": fastest, "weighted": weighted,
    "least_busy": least_busy,
}
