"""Spend and rate counters: open holds, window spend and token buckets, behind one small interface.

`Counters` is what the gate and the meter call; `MemoryCounters` is the single-process version.
Every method runs without yielding to the gevent hub (no I/O, no locks that can block), so a
check-and-hold is atomic against every other request in the process. A scaled-out version keeps
the same methods over atomic Redis scripts.

Failure mode: the counters are memory only. A restart starts with no open holds: a request's hold
dies with it, and a batch's hold (which lives until the batch is settled, up to its completion
window) is put back from the database with `restore` (services/batch_settle.py); window spend is
seeded once from the ledger (`seed`). Spend from other processes is seen only with the Redis version.

A hold may carry a `ref` its owner can rebuild after a restart (a batch's: `batch:<id>`) and a
`ttl_seconds` (how long Redis keeps it when nobody settles it; a request's default, a batch's
window). Memory ignores both.

Entities are ("org", id), ("user", id), ("app", id) and ("key", id). Windows are UTC: "day",
"week" (from Monday) and "month". Spend is kept for the current and the previous window of each
(entity, window) pair, which is what rollover needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

Entity = tuple[str, int]
WINDOWS = ("day", "week", "month")


def window_start(window: str, now: datetime) -> datetime:
    """The start of the UTC window holding `now` (naive UTC datetimes)."""
    key = (window, now.year, now.month, now.day)
    start = _STARTS.get(key)
    if start is None:
        if len(_STARTS) > 4096:
            _STARTS.clear()
        start = _STARTS[key] = _window_start(window, now)
    return start


_STARTS: dict[tuple[str, int, int, int], datetime] = {}  # every request asks for today's starts
_DAY_STARTS: dict[tuple[int, int, int], tuple[tuple[str, datetime], ...]] = {}  # a day's every window


def _window_start(window: str, now: datetime) -> datetime:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return day
    if window == "week":
        return day - timedelta(days=day.weekday())
    if window == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown window {window!r}")


def previous_start(window: str, start: datetime) -> datetime:
    return window_start(window, start - timedelta(seconds=1))


def next_start(window: str, start: datetime) -> datetime:
    if window == "day":
        return start + timedelta(days=1)
    if window == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """A hard cap to respect while holding: the budget's id, its entity and window, and the cap in
    force for the current window (rollover included)."""

    budget_id: int
    entity: Entity
    window: str
    cap_micros: int


@dataclass(slots=True)
class Hold:
    """Money set aside for one request: released (and the actual charge counted) at settle."""

    org_id: int
    micros: int
    entities: tuple[Entity, ...]
    tokens: int = 0  # what the token buckets were charged at admission
    buckets: tuple[str, ...] = ()
    settled: bool = False
    ref: str | None = None  # the shared hold's id when Redis holds it (stores/shared_counters.py)
    named: bool = False  # `ref` was chosen by the owner (rebuilt after a restart): settled at most once


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # "credits" | "budget"
    budget_id: int | None = None


@dataclass(slots=True)
class Bucket:
    """A token bucket: `capacity` per minute, refilled continuously."""

    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60.0)
        self.updated = now

    def reset_seconds(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) * 60.0 / self.capacity)


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket to take from: its key, capacity per minute, and what to take."""

    key: str
    per_minute: int
    amount: int


@dataclass(frozen=True, slots=True)
class LimitState:
    key: str
    limit: int
    remaining: int
    reset_seconds: float
    retry_after: float  # 0 when admitted


class Counters(Protocol):
    def available(self, org_id: int, balance: int) -> int: ...
    def hold(self, org_id: int, micros: int, balance: int, entities: tuple[Entity, ...],
             budgets: list[BudgetCheck], now: datetime, *, ref: str | None = None,
             ttl_seconds: float | None = None) -> Hold | Refusal: ...
    def restore(self, hold: Hold, now: datetime, ttl_seconds: float) -> None: ...
    def settle(self, hold: Hold, charge_micros: int, now: datetime) -> None: ...
    def spent(self, entity: Entity, window: str, start: datetime) -> int: ...
    def held(self, entity: Entity) -> int: ...
    def take(self, limits: list[Limit], now: float) -> list[LimitState]: ...
    def adjust(self, keys: tuple[str, ...], tokens: int, now: float) -> None: ...
    def peek(self, key: str, per_minute: int, now: float) -> LimitState: ...
    def credit(self, org_id: int, delta_micros: int, balance_micros: int) -> None: ...


@dataclass
class MemoryCounters:
    holds: dict[int, int] = field(default_factory=dict)  # org -> open holds
    entity_holds: dict[Entity, int] = field(default_factory=dict)
    # (entity, window) -> [current start, spent, previous start, spent]
    spend: dict[tuple[Entity, str], list] = field(default_factory=dict)
    buckets: dict[str, Bucket] = field(default_factory=dict)

    # ---- credits and budgets ------------------------------------------------------------------
    def available(self, org_id: int, balance: int) -> int:
        """What the org may still commit: its balance (persisted minus queued charges) minus holds."""
        return balance - self.holds.get(org_id, 0)

    def held(self, entity: Entity) -> int:
        return self.entity_holds.get(entity, 0)

    def credit(self, org_id: int, delta_micros: int, balance_micros: int) -> None:
        """A committed credit change: in one process the balance is the database's (memo reloads it)."""

    def hold(self, org_id: int, micros: int, balance: int, entities: tuple[Entity, ...],
             budgets: list[BudgetCheck], now: datetime, *, ref: str | None = None,
             ttl_seconds: float | None = None) -> Hold | Refusal:
        """Set `micros` aside if the credits and every hard budget can cover it (check and hold in
        one step, with no yield in between). An org at zero or below is refused even a free request."""
        available = self.available(org_id, balance)
        if available <= 0 or micros > available:
            return Refusal("credits")
        for b in budgets:
            used = self.spent(b.entity, b.window, window_start(b.window, now)) + self.held(b.entity)
            if used + micros > b.cap_micros or used >= b.cap_micros:
                return Refusal("budget", b.budget_id)
        self.holds[org_id] = self.holds.get(org_id, 0) + micros
        for e in entities:
            self.entity_holds[e] = self.entity_holds.get(e, 0) + micros
        return Hold(org_id, micros, entities)

    def restore(self, hold: Hold, now: datetime, ttl_seconds: float) -> None:
        """A hold granted before this process started (a batch's), counted again, never refused."""
        self.holds[hold.org_id] = self.holds.get(hold.org_id, 0) + hold.micros
        for e in hold.entities:
            self.entity_holds[e] = self.entity_holds.get(e, 0) + hold.micros

    def settle(self, hold: Hold, charge_micros: int, now: datetime) -> None:
        """Release the hold and count the actual charge as spend, once."""
        if hold.settled:
            return
        hold.settled = True
        self.holds[hold.org_id] = self.holds.get(hold.org_id, 0) - hold.micros
        for e in hold.entities:
            self.entity_holds[e] = self.entity_holds.get(e, 0) - hold.micros
        if charge_micros:
            self.add_spend(hold.entities, charge_micros, now)

    def add_spend(self, entities: tuple[Entity, ...], micros: int, at: datetime) -> None:
        starts = _DAY_STARTS.get((at.year, at.month, at.day))
        if starts is None:
            if len(_DAY_STARTS) > 64:
                _DAY_STARTS.clear()
            starts = _DAY_STARTS[(at.year, at.month, at.day)] = tuple(
                (window, window_start(window, at)) for window in WINDOWS)
        for e in entities:
            for window, start in starts:
                slot = self.spend.get((e, window))
                if slot is None:
                    self.spend[(e, window)] = [start, micros, None, 0]
                elif slot[0] == start:
                    slot[1] += micros
                elif slot[0] < start:  # a new window: the current one becomes the previous
                    slot[2], slot[3] = (slot[0], slot[1]) if previous_start(window, start) == slot[0] else (None, 0)
                    slot[0], slot[1] = start, micros
                elif slot[2] == start:  # seeding an older row into the previous window
                    slot[3] += micros
                elif slot[2] is None and previous_start(window, slot[0]) == start:
                    slot[2], slot[3] = start, micros

    def spent(self, entity: Entity, window: str, start: datetime) -> int:
        slot = self.spend.get((entity, window))
        if slot is None:
            return 0
        if slot[0] == start:
            return slot[1]
        if slot[2] == start:
            return slot[3]
        return 0

    def seed(self, rows: list[tuple[Entity, datetime, int]]) -> None:
        """Window spend from persisted rows (entity, when, micros), once at start."""
        self.spend.clear()
        for entity, at, micros in sorted(rows, key=lambda r: r[1]):
            self.add_spend((entity,), micros, at)

    # ---- rate limits --------------------------------------------------------------------------
    def take(self, limits: list[Limit], now: float) -> list[LimitState]:
        """Take from every bucket, or from none: a refused request costs nothing. The states say
        what is left; a refused one carries `retry_after` (seconds until it would be admitted)."""
        states = []
        refused = False
        for lim in limits:
            b = self._bucket(lim.key, lim.per_minute, now)
            short = lim.amount - b.level
            retry = 0.0
            if short > 0:
                refused = True
                # A request larger than the whole bucket waits for a full bucket, then goes through.
                retry = min(short, b.capacity) * 60.0 / b.capacity
            states.append(LimitState(lim.key, lim.per_minute, int(b.level), b.reset_seconds(), retry))
        if refused:
            return states
        out = []
        for lim in limits:
            b = self.buckets[lim.key]
            b.level -= min(lim.amount, b.level)
            out.append(LimitState(lim.key, lim.per_minute, max(0, math.floor(b.level)), b.reset_seconds(), 0.0))
        return out

    def adjust(self, keys: tuple[str, ...], tokens: int, now: float) -> None:
        """Correct token buckets by the difference between actual and estimated tokens (may go
        below zero: the next requests wait for it)."""
        for key in keys:
            b = self.buckets.get(key)
            if b is not None:
                b.refill(now)
                b.level = min(b.capacity, max(-b.capacity, b.level - tokens))

    def peek(self, key: str, per_minute: int, now: float) -> LimitState:
        b = self._bucket(key, per_minute, now)
        return LimitState(key, per_minute, max(0, math.floor(b.level)), b.reset_seconds(), 0.0)

    def _bucket(self, key: str, per_minute: int, now: float) -> Bucket:
        b = self.buckets.get(key)
        if b is None or b.capacity != per_minute:  # a new plan's limit starts with a full bucket
            b = self.buckets[key] = Bucket(float(per_minute), float(per_minute), now)
        else:
            b.refill(now)
        return b

    def reset(self) -> None:
        self.holds.clear()
        self.entity_holds.clear()
        self.spend.clear()
        self.buckets.clear()


class ActiveCounters:
    """The counters in use: this process's memory, or Redis when scaled out (`use`, at start)."""

    def __init__(self) -> None:
        self.backend: Counters = MemoryCounters()

    def __getattr__(self, name: str):
        value = getattr(self.backend, name)
        if callable(value):  # kept: every request calls a few, and this lookup is Python code
            self.__dict__[name] = value
        return value


COUNTERS = ActiveCounters()


def use(backend: Counters) -> None:
    COUNTERS.__dict__.clear()
    COUNTERS.backend = backend
