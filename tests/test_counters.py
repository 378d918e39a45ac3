"""The in-memory counters: atomic check-and-hold, settle once, window spend and token buckets."""

from datetime import datetime

from gateway.stores.counters import BudgetCheck, Limit, MemoryCounters, Refusal, next_start, previous_start, window_start

NOW = datetime(2026, 3, 4, 15, 30)  # a Wednesday


def test_windows_are_utc_day_monday_week_and_month():
    assert window_start("day", NOW) == datetime(2026, 3, 4)
    assert window_start("week", NOW) == datetime(2026, 3, 2)
    assert window_start("month", NOW) == datetime(2026, 3, 1)
    assert previous_start("month", datetime(2026, 3, 1)) == datetime(2026, 2, 1)
    assert next_start("month", datetime(2026, 12, 1)) == datetime(2027, 1, 1)
    assert next_start("week", datetime(2026, 3, 2)) == datetime(2026, 3, 9)


def test_holds_count_against_the_balance_and_settle_exactly_once():
    c = MemoryCounters()
    org = ("org", 1)
    first = c.hold(1, 600, balance=1000, entities=(org,), budgets=[], now=NOW)
    assert not isinstance(first, Refusal) and c.available(1, 1000) == 400
    assert c.hold(1, 600, balance=1000, entities=(org,), budgets=[], now=NOW) == Refusal("credits")
    c.settle(first, 250, NOW)
    c.settle(first, 250, NOW)  # a second settle changes nothing
    assert c.available(1, 1000) == 1000 and c.spent(org, "day", window_start("day", NOW)) == 250
    assert c.hold(1, 0, balance=0, entities=(org,), budgets=[], now=NOW) == Refusal("credits")


def test_hard_budgets_count_open_holds():
    c = MemoryCounters()
    key = ("key", 7)
    cap = [BudgetCheck(3, key, "week", 1000)]
    h = c.hold(1, 700, balance=10_000, entities=(("org", 1), key), budgets=cap, now=NOW)
    assert c.hold(1, 400, balance=10_000, entities=(("org", 1), key), budgets=cap, now=NOW) == Refusal("budget", 3)
    c.settle(h, 100, NOW)
    assert not isinstance(c.hold(1, 400, balance=10_000, entities=(("org", 1), key), budgets=cap, now=NOW),
                          Refusal)


def test_spend_keeps_the_previous_window_for_rollover():
    c = MemoryCounters()
    e = ("user", 2)
    c.seed([(e, datetime(2026, 2, 20), 300), (e, datetime(2026, 3, 3), 50)])
    assert c.spent(e, "month", datetime(2026, 2, 1)) == 300
    assert c.spent(e, "month", datetime(2026, 3, 1)) == 50
    assert c.spent(e, "day", datetime(2026, 3, 4)) == 0


def test_token_buckets_take_all_or_nothing_and_refill():
    c = MemoryCounters()
    limits = [Limit("org:1:rpm", 2, 1), Limit("org:1:tpm", 100, 60)]
    assert all(s.retry_after == 0 for s in c.take(limits, 0.0))
    refused = c.take(limits, 0.0)  # the tokens bucket has 40 left: refused, and nothing taken
    assert [s.retry_after > 0 for s in refused] == [False, True]
    assert c.peek("org:1:rpm", 2, 0.0).remaining == 1
    assert all(s.retry_after == 0 for s in c.take(limits, 60.0))  # a minute later: full again
    c.adjust(("org:1:tpm",), -500, 60.0)  # far fewer tokens used than estimated: back to full, no more
    assert c.peek("org:1:tpm", 100, 60.0).remaining == 100
