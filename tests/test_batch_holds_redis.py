"""A batch's hold in Redis (GATEWAY_REDIS_URL) lives until the batch is settled, not for a synchronous
request's HOLD_TTL_SECONDS: it is named after the batch, kept for the completion window plus margin,
put back at a start when Redis lost it, settled from any worker, and never settled twice.

Real parts: Debian's redis-server on a private port (skipped when it is not installed), the live
in-process gateway on it, the fake OpenAI batch API, the official `openai` SDK.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway import boot, db, jobs
from gateway.models import Batch, utcnow
from gateway.services import batch_settle
from gateway.stores import counters, shared
from gateway.stores.counters import COUNTERS, MemoryCounters
from gateway.stores.shared_counters import HOLD_TTL_SECONDS
from tests.redis_server import running_redis
from tests.test_batches import line, poll_until, submit


@pytest.fixture
def redis_url(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian's redis-server package)")
    folder = tmp_path / "redis"
    folder.mkdir()
    with running_redis(folder) as server:
        yield server.url


@pytest.fixture
def rgw(redis_url, gateway_factory, fake_openai_batches):
    gw = gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0, redis_url=redis_url)
    yield gw
    boot.stop_background(gw.app)
    shared.configure(None)
    counters.use(MemoryCounters())


def org_held(org_id: int) -> int:
    return COUNTERS.held(("org", org_id))


def other_request_at(org_id: int, when) -> None:
    """A synchronous request's hold and settle at `when`: its script purges the holds expired by then."""
    hold = COUNTERS.hold(org_id, 1, 10**12, (("org", org_id),), [], when)
    COUNTERS.settle(hold, 0, when)


def test_a_batch_hold_lives_its_window_not_a_request_ttl(rgw, fake_openai_batches):
    fake_openai_batches.hold = True  # the provider keeps the batch in progress
    org = rgw.org()
    b = submit(rgw.sdk(), [line("a"), line("b")])
    with db.session_scope() as s:
        batch = s.scalar(select(Batch).where(Batch.public_id == b.id))
    assert org_held(org.id) == batch.held_micros > 0
    for hours in (1, 12, 23.5):  # far past a request's hold TTL, within the 24h window
        assert hours * 3600 > HOLD_TTL_SECONDS
        other_request_at(org.id, utcnow() + timedelta(hours=hours))
        assert org_held(org.id) == batch.held_micros
    jobs.poll_batches()
    assert org_held(org.id) == batch.held_micros  # still running: still held


def test_restart_restores_settles_once_from_any_worker(rgw, fake_openai_batches):
    fake_openai_batches.hold = True
    org = rgw.org()
    sdk = rgw.sdk()
    b = submit(sdk, [line("a"), line("b")])
    with db.session_scope() as s:
        held = s.scalar(select(Batch.held_micros).where(Batch.public_id == b.id))
    redis = shared.client()

    def restart(lose_data: bool = False) -> None:
        boot.stop_background(rgw.app)
        batch_settle.HOLDS.clear()
        if lose_data:
            redis.flushall()
        boot.start_background(rgw.app)

    restart()  # Redis kept it: restored once, not twice
    assert org_held(org.id) == held
    restart(lose_data=True)  # Redis lost everything: the hold is put back from the database
    assert org_held(org.id) == held
    other_request_at(org.id, utcnow() + timedelta(hours=20))
    assert org_held(org.id) == held

    balance = int(redis.get(f"gw:bal:{org.id}"))
    fake_openai_batches.hold = False
    batch_settle.HOLDS.clear()  # settled by a worker that did not take the hold
    done = poll_until(sdk, b.id)
    assert done.status == "completed"
    charged = sum(r.charge_micros for r in rgw.rows(endpoint="batches"))
    assert len(rgw.rows(endpoint="batches")) == 2 and charged > 0
    assert org_held(org.id) == 0
    assert int(redis.get(f"gw:bal:{org.id}")) == balance - charged

    # Settled again (a crash before the batch row said so): no second charge, nothing held again
    with db.write_lock, db.session_scope() as s:
        s.scalar(select(Batch).where(Batch.public_id == b.id)).settled = False
    restart()
    jobs.poll_batches()
    assert org_held(org.id) == 0
    assert int(redis.get(f"gw:bal:{org.id}")) == balance - charged
    assert len(rgw.rows(endpoint="batches")) == 2
