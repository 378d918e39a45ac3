"""The last 60 minutes in memory: per-minute sums per org, fed from ledger rows by the writer.

The console's Home shows requests per minute, errors, spend, saved, p50/p99 latency and tokens
for the last hour, refreshed every few seconds. Reading rollups for that would hit the database on
every poll and lag by an hour's resolution, so the writer adds each batch here (next to the
Prometheus counters, off the request path) and the page reads memory only. Latency percentiles
come from a fixed log-spaced histogram per minute (bounded memory: 60 minutes x active orgs x
BUCKETS integers), so p50/p99 are the upper bound of the bucket they fall in (about 15% wide).

Per process: with several workers each shows what it served (like Provider load). Failure mode: an
error here is logged and the batch's rows are simply not counted live; the ledger is untouched.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gevent.lock import Semaphore

log = logging.getLogger(__name__)

WINDOW = 60  # minutes
# Latency bucket upper bounds in ms: 1 ms to ~10 min, each 15% above the one before.
BOUNDS: tuple[float, ...] = tuple(round(1.15 ** i, 1) for i in range(0, 95))
FIELDS = ("requests", "errors", "charge_micros", "saved_micros", "benchmark_micros", "input_tokens",
          "output_tokens")


@dataclass(slots=True)
class MinuteSums:
    sums: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    latency: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))


class LiveWindow:
    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self.minutes: dict[int, dict[int, MinuteSums]] = {}  # minute -> org id -> sums
        self._lock = Semaphore(1)

    def observe(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add ledger rows (the writer's fresh batch). Rows are counted at their own minute."""
        try:
            with self._lock:
                now = int(self.clock() // 60)
                last, m = None, None
                for row in rows:
                    minute = _minute(row.get("created_at"), now)
                    if minute <= now - WINDOW:
                        continue
                    if (minute, row["org_id"]) != last:  # a batch is mostly one org's, one minute's
                        last = (minute, row["org_id"])
                        orgs = self.minutes.setdefault(minute, {})
                        m = orgs.get(row["org_id"])
                        if m is None:
                            m = orgs[row["org_id"]] = MinuteSums()
                    s = m.sums
                    s["requests"] += 1
                    s["errors"] += int(row["status"] >= 400)
                    for name in FIELDS[2:]:
                        s[name] += row.get(name) or 0
                    m.latency[bisect.bisect_left(BOUNDS, row.get("latency_ms") or 0)] += 1
                for old in [k for k in self.minutes if k <= now - WINDOW]:
                    del self.minutes[old]
        except Exception:
            log.warning("live window not updated for a ledger batch", exc_info=True)

    def snapshot(self, org_ids: Iterable[int] | None) -> dict[str, Any]:
        """The last hour for `org_ids` (None: every org): totals, per-minute requests (oldest
        first, 60 values), and p50/p99 latency in ms (None without requests)."""
        wanted = None if org_ids is None else set(org_ids)
        now = int(self.clock() // 60)
        totals = dict.fromkeys(FIELDS, 0)
        latency = [0] * (len(BOUNDS) + 1)
        per_minute = [0] * WINDOW
        with self._lock:
            items = [(k, dict(v)) for k, v in self.minutes.items() if k > now - WINDOW]
        for minute, orgs in items:
            for org_id, m in orgs.items():
                if wanted is not None and org_id not in wanted:
                    continue
                for name in FIELDS:
                    totals[name] += m.sums[name]
                for i, n in enumerate(m.latency):
                    latency[i] += n
                per_minute[minute - (now - WINDOW + 1)] += m.sums["requests"]
        busy = [n for n in per_minute if n]
        return {**totals, "per_minute": per_minute, "requests_per_minute": round(totals["requests"] / WINDOW, 2),
                "peak_per_minute": max(busy, default=0), "current_minute": per_minute[-1],
                "p50_ms": _percentile(latency, 0.50), "p99_ms": _percentile(latency, 0.99)}

    def reset(self) -> None:
        with self._lock:
            self.minutes.clear()


def _minute(at, now: int) -> int:
    """Ledger times are naive UTC; a row without one counts in the current minute."""
    return now if at is None else (at - _EPOCH) // _MINUTE


_EPOCH, _MINUTE = datetime(1970, 1, 1), timedelta(minutes=1)


def _percentile(counts: list[int], q: float) -> float | None:
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank and n:
            return BOUNDS[i] if i < len(BOUNDS) else float("inf")
    return None


LIVE = LiveWindow()
