"""Prometheus metrics: counted from ledger rows as the writer drains them, never on the request path.

Every request leaves exactly one ledger row, so counting rows in the ledger writer's loop counts
every request once, off the hot path (at most one writer interval late). Counters and histograms:
requests by endpoint, model, provider, status and cache result; latency and time to first byte;
tokens by direction; USD charged, at benchmark and saved; upstream errors and extra attempts.
Gauges read at scrape time: the ledger writer's queue depth, open credit holds, route breaker
states and, scaled out, whether the answering worker reaches Redis (`gateway_shared_redis_up`).

`GET /metrics` (Prometheus text format) needs `Authorization: Bearer $GATEWAY_METRICS_TOKEN` when
that is set, and otherwise answers only clients on loopback. Under gunicorn set
PROMETHEUS_MULTIPROC_DIR to an empty folder shared by the workers: each writes its own files and a
scrape adds them up (prometheus_client's multiprocess mode).

Failure mode: a metrics error is logged and dropped; it never touches a ledger row.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REGISTRY = CollectorRegistry(auto_describe=True)
LABELS = ("endpoint", "model", "provider", "status", "cache")
REQUESTS = Counter("gateway_requests", "Requests answered", LABELS, registry=REGISTRY)
LATENCY = Histogram("gateway_request_seconds", "Whole request time", ("endpoint", "model", "provider"),
                    buckets=LATENCY_BUCKETS, registry=REGISTRY)
TTFB = Histogram("gateway_time_to_first_byte_seconds", "Time to the upstream's first byte",
                 ("endpoint", "model", "provider"), buckets=LATENCY_BUCKETS, registry=REGISTRY)
TOKENS = Counter("gateway_tokens", "Tokens metered", ("model", "provider", "direction"), registry=REGISTRY)
USD = Counter("gateway_usd", "US dollars: charged, benchmark (a direct call), saved (saved_negative: rows "
              "that cost more than a direct call)",
              ("model", "kind"), registry=REGISTRY)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors", "Requests that ended in an error", ("provider", "type"),
                          registry=REGISTRY)
RETRIES = Counter("gateway_upstream_retries", "Upstream attempts beyond the first", ("provider",),
                  registry=REGISTRY)


def observe(rows: Iterable[dict[str, Any]]) -> None:
    """Count ledger rows (the writer's fresh batches). Rows are summed per label set first (most of
    a batch shares a few), so a batch costs one increment per distinct label set, not one per row."""
    try:
        groups: dict[tuple, list] = {}
        for row in rows:
            key = (row["endpoint"], row.get("model") or "", row.get("provider") or "", row["status"],
                   row.get("cache") or "miss", row.get("error_type"), row.get("attempts") or 0)
            g = groups.get(key)
            if g is None:
                # requests, input, output, cached tokens, then USD micros: charge, benchmark, saved as
                # (positive, negative) pairs; latencies, times to first byte (seconds)
                g = groups[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, [], []]
            g[0] += 1
            g[1] += row.get("input_tokens") or 0
            g[2] += row.get("output_tokens") or 0
            g[3] += row.get("cached_tokens") or 0
            for i, value in ((4, row.get("charge_micros")), (6, row.get("benchmark_micros")),
                             (8, row.get("saved_micros"))):
                if value:
                    # a counter only grows: a row that saved less than nothing (a cache write never
                    # read, a verifier's cost, a dearer fallback) counts under kind "saved_negative"
                    g[i if value > 0 else i + 1] += abs(value)
            g[10].append((row.get("latency_ms") or 0) / 1000)
            if row.get("ttfb_ms") is not None:
                g[11].append(row["ttfb_ms"] / 1000)
        counts: dict[tuple, float] = defaultdict(float)
        seconds: dict[tuple, list[float]] = defaultdict(list)
        for (endpoint, model, provider, status, cache, error_type, attempts), g in groups.items():
            counts[(REQUESTS, endpoint, model, provider, str(status), cache)] += g[0]
            for direction, n in (("input", g[1]), ("output", g[2]), ("cached", g[3])):
                if n:
                    counts[(TOKENS, model, provider, direction)] += n
            for i, kind in ((4, "charge"), (6, "benchmark"), (8, "saved")):
                if g[i]:
                    counts[(USD, model, kind)] += g[i] / 1_000_000
                if g[i + 1]:
                    counts[(USD, model, kind + "_negative")] += g[i + 1] / 1_000_000
            if error_type:
                counts[(UPSTREAM_ERRORS, provider, error_type)] += g[0]
            if attempts > 1:
                counts[(RETRIES, provider)] += (attempts - 1) * g[0]
            seconds[(LATENCY, (endpoint, model, provider))] += g[10]
            if g[11]:
                seconds[(TTFB, (endpoint, model, provider))] += g[11]
        for (metric, *labels), amount in counts.items():
            _child(metric, tuple(labels)).inc(amount)
        for (metric, labels), values in seconds.items():
            _observe_all(_child(metric, labels), values)
    except Exception:
        log.warning("metrics not counted for a ledger batch", exc_info=True)


def _observe_all(hist, values: list[float]) -> None:
    """`hist.observe(v)` for every value, as one increment per bucket and one of the sum (the same
    counts prometheus_client's observe keeps: a value lands in the first bucket it fits)."""
    bounds = hist._upper_bounds
    per_bucket = [0] * len(bounds)
    for v in values:
        per_bucket[bisect_left(bounds, v)] += 1
    for i, n in enumerate(per_bucket):
        if n:
            hist._buckets[i].inc(n)
    hist._sum.inc(sum(values))


_CHILDREN: dict[tuple, Any] = {}
_MAX_CHILDREN = 50_000  # label sets are bounded by models x providers x statuses; this is a guard


def _child(metric, labels: tuple):
    """`metric.labels(*labels)`, remembered (prometheus_client validates and locks on every call)."""
    key = (id(metric), labels)
    child = _CHILDREN.get(key)
    if child is None:
        if len(_CHILDREN) >= _MAX_CHILDREN:
            _CHILDREN.clear()
        child = _CHILDREN[key] = metric.labels(*labels)
    return child


class _Gauges:
    """Values read when Prometheus scrapes: nothing to keep up to date on the request path."""

    def describe(self):
        return []  # read at scrape time only (registering must not import the writer)

    def collect(self):
        from gateway.routing.health import HEALTH

        queue = GaugeMetricFamily("gateway_ledger_queue_rows", "Ledger rows queued, not yet written")
        queue.add_metric([], queue_depth())
        yield queue
        holds = GaugeMetricFamily("gateway_credit_holds_usd", "Credits held for requests in flight", labels=["org"])
        for org_id, micros in _holds().items():
            holds.add_metric([str(org_id)], micros / 1_000_000)
        yield holds
        breakers = GaugeMetricFamily("gateway_route_breaker_open", "1 while a route's breaker is open or half-open",
                                     labels=["route"])
        for route_id in list(HEALTH.routes):
            breakers.add_metric([str(route_id)], 0 if HEALTH.state(route_id) == "closed" else 1)
        yield breakers
        from gateway.stores import shared

        if shared.enabled():  # scaled out: 0 while this worker cannot reach Redis (per-worker limits)
            up = GaugeMetricFamily("gateway_shared_redis_up", "1 while this worker reaches Redis, 0 during an outage")
            up.add_metric([], 0 if shared.down_since is not None else 1)
            yield up


def queue_depth() -> int:
    """Rows queued for the ledger writer: the writer puts its own counter here (it imports this module)."""
    return 0


def _holds() -> dict[int, int]:
    try:
        from gateway.stores.counters import COUNTERS

        backend = COUNTERS.backend
        local = getattr(backend, "local", backend)  # the Redis counters keep theirs shared; this worker's view
        return {org: micros for org, micros in getattr(local, "holds", {}).items() if micros}
    except Exception:
        return {}


REGISTRY.register(_Gauges())


def exposition(multiproc_dir: str | None) -> bytes:
    """The scrape body: this process's registry, or every gunicorn worker's in multiprocess mode."""
    folder = multiproc_dir
    if not folder:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=folder)
    merged.register(_Gauges())
    return generate_latest(merged)
