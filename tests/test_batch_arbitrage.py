"""Batch arbitrage: chat requests that say they can wait (`x-gateway-deadline`) are answered 202, kept in
the database, grouped across the org into one provider batch, and each caller fetches its result from
`GET /v1/requests/{id}/result`; savings under `batch_arbitrage`. Requests without the header are never
delayed. (A real restart and two processes sharing one database: tests/test_arbitrage_durable.py.)"""

from __future__ import annotations

import time

import gevent
import pytest
import requests
from sqlalchemy import func, select

from gateway import db, jobs
from gateway.models import DeferredRequest
from gateway.services import arbitrage
from gateway.stores.counters import COUNTERS
from tests.conftest import wait_for

DEFER = {"x-gateway-deadline": "86400"}


@pytest.fixture
def agw(gateway_factory, fake_openai_batches):
    return gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0, batch_arbitrage_min_seconds=3600,
                           batch_arbitrage_max_requests=100, batch_arbitrage_max_age_seconds=3600)


def queued_rows() -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(DeferredRequest).where(DeferredRequest.status == "queued"))


def chat(gw, text: str, model: str = "batchy", headers=None, key=None) -> requests.Response:
    return gw.post("/v1/chat/completions", {"model": model, "max_tokens": 20,
                                            "messages": [{"role": "user", "content": text}]},
                   key=key, headers=dict(headers or {}))


def result(gw, request_id: str, key=None) -> requests.Response:
    return requests.get(f"{gw.v1}/requests/{request_id}/result",
                        headers={"Authorization": f"Bearer {key or gw.api_key}"})


def test_hundred_deferrable_requests_become_one_provider_batch(agw, fake_openai_batches):
    second_key = agw.new_key()  # two keys of the same org: grouped into the same batch
    replies = [chat(agw, f"question {i}", headers=DEFER, key=second_key if i % 2 else None) for i in range(100)]
    assert {r.status_code for r in replies} == {202}
    ids = [r.json()["id"] for r in replies]
    assert len(set(ids)) == 100 and all(r.headers["x-request-id"] == r.json()["id"] for r in replies)
    wait_for(lambda: len(fake_openai_batches.batches) == 1)
    (upstream,) = fake_openai_batches.batches.values()
    assert len(upstream["lines"]) == 100  # one provider batch for all of them
    assert result(agw, ids[0]).status_code == 202  # not yet
    def finished() -> bool:  # the job's ticks, as the scheduler would run them
        jobs.poll_batches()
        agw.flush()
        return result(agw, ids[-1], key=second_key).status_code == 200

    wait_for(finished, timeout=60)
    texts = set()
    for i, rid in enumerate(ids):
        got = result(agw, rid, key=second_key if i % 2 else None)
        assert got.status_code == 200, got.text
        texts.add(got.json()["choices"][0]["message"]["content"])
        assert float(got.headers["x-gateway-saved"]) > 0
    assert len(texts) == 1 and texts.pop().startswith("Hello from fake")
    rows = agw.rows(endpoint="batches")
    assert sorted(r.request_id for r in rows) == sorted(ids)  # each caller's own request id, one row each
    assert {r.key_id for r in rows} == {rows[0].key_id, rows[1].key_id} and len({r.key_id for r in rows}) == 2
    assert all("batch_arbitrage=" in r.saved_by for r in rows)
    summary = requests.get(f"{agw.v1}/usage/summary", headers={"Authorization": f"Bearer {agw.api_key}"}).json()
    arb = {m["mechanism"]: m for m in summary["by_mechanism"]}["batch_arbitrage"]
    assert arb["requests"] == 100 and float(arb["saved"]) > 0
    assert COUNTERS.holds.get(agw.org().id, 0) == 0


def test_requests_without_the_header_are_never_delayed(agw, fake_openai_batches):
    queued = chat(agw, "later", headers=DEFER)
    assert queued.status_code == 202
    now = chat(agw, "now", model="test/fake-gpt")
    assert now.status_code == 200 and now.json()["object"] == "chat.completion"
    short = chat(agw, "soon", model="test/fake-gpt", headers={"x-gateway-deadline": "30"})
    assert short.status_code == 200  # shorter than a batch window: served at once
    assert queued_rows() == 1 and fake_openai_batches.batches == {}
    assert arbitrage.flush_due(force=True)  # flushed by age (forced here)
    assert len(fake_openai_batches.batches) == 1


def test_deferred_results_are_the_orgs_own(agw):
    rid = chat(agw, "mine", headers=DEFER).json()["id"]
    agw.new_org("other")
    other = agw.new_key("other")
    assert result(agw, rid, key=other).status_code == 404
    assert result(agw, rid).json()["status"] == "queued"
    arbitrage.flush_due(force=True)
    assert result(agw, rid, key=other).status_code == 404
    assert result(agw, rid).json()["status"] == "in_progress"


@pytest.mark.parametrize("value", ["soon", "-5", "nan", "inf", "-inf", "0", "1e999", "", "0x10", "1" * 5000])
def test_bad_deadline_is_400(agw, value):
    r = chat(agw, "x", headers={"x-gateway-deadline": value})
    assert r.status_code == 400 and "x-gateway-deadline" in r.json()["error"]["message"]


def test_unauthenticated_deferral_is_401(agw):
    r = requests.post(f"{agw.v1}/chat/completions", json={"model": "batchy", "messages": []},
                      headers={**DEFER, "Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_concurrent_deferrals_are_all_grouped(agw, fake_openai_batches):
    replies = [gevent.spawn(chat, agw, f"q{i}", "batchy", DEFER) for i in range(20)]
    gevent.joinall(replies)
    assert {g.value.status_code for g in replies} == {202}
    arbitrage.flush_due(force=True)
    (upstream,) = fake_openai_batches.batches.values()
    assert len(upstream["lines"]) == 20


def deferred(rid: str) -> DeferredRequest:
    with db.session_scope() as s:
        return s.scalar(select(DeferredRequest).where(DeferredRequest.request_id == rid))


def test_a_deferred_request_is_stored_before_its_202(agw):
    rid = chat(agw, "kept", headers=DEFER).json()["id"]
    row = deferred(rid)  # in the database, not only in this process
    assert row.status == "queued" and row.org_id == agw.org().id and row.provider == "fakebatch"
    assert row.held_micros > 0 and COUNTERS.holds.get(agw.org().id, 0) == row.held_micros
    assert arbitrage.orjson.loads(arbitrage.unz(row.body_z))["messages"][0]["content"] == "kept"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"model": 5}', b"", b'{"model": "batchy"}',
                                  b'{"model": "test/fake-gpt", "stream": true, "messages": []}'])
def test_hostile_bodies_with_a_deadline_are_served_or_refused_never_queued(agw, body):
    r = requests.post(f"{agw.v1}/chat/completions", data=body,
                      headers={**DEFER, "Authorization": f"Bearer {agw.api_key}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"  # the pipeline's own answer
    assert queued_rows() == 0


def test_a_huge_deadline_is_a_deferral(agw):
    assert chat(agw, "whenever", headers={"x-gateway-deadline": "1e300"}).status_code == 202


def test_a_request_whose_route_went_away_fails_alone_and_is_not_charged(agw, fake_openai_batches):
    good = chat(agw, "fine", headers=DEFER).json()["id"]
    gone = chat(agw, "orphan", headers=DEFER).json()["id"]
    with db.write_lock, db.session_scope() as s:  # its model is no longer in the catalog by the flush
        row = s.scalar(select(DeferredRequest).where(DeferredRequest.request_id == gone))
        row.body_z = arbitrage.z(b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}')
    assert arbitrage.flush_due(force=True)
    (upstream,) = fake_openai_batches.batches.values()
    assert [line["custom_id"] for line in upstream["lines"]] == [good]
    failed = result(agw, gone)
    assert failed.status_code == 400 and "no-such-model" in failed.json()["error"]["message"]
    assert failed.headers["x-gateway-charge"] == "0.000000" or float(failed.headers["x-gateway-charge"]) == 0
    assert deferred(gone).status == "failed"
    assert COUNTERS.holds.get(agw.org().id, 0) == deferred(good).held_micros  # only the submitted one held


def test_a_row_claimed_elsewhere_releases_this_processs_hold(agw):
    rid = chat(agw, "mine", headers=DEFER).json()["id"]
    assert COUNTERS.holds.get(agw.org().id, 0) > 0
    with db.write_lock, db.session_scope() as s:  # another process claimed and submitted it
        s.execute(arbitrage.update(DeferredRequest).where(DeferredRequest.request_id == rid)
                  .values(status="submitted", claimed_by="another", claim_token="another-1"))
    arbitrage.flush_due()
    assert COUNTERS.holds.get(agw.org().id, 0) == 0 and rid not in arbitrage.LOCAL  # the claimer holds it


def test_a_flush_that_died_after_its_claim_is_taken_back(agw, fake_openai_batches):
    from datetime import timedelta

    from gateway.models import utcnow

    rid = chat(agw, "stuck", headers=DEFER).json()["id"]
    with db.write_lock, db.session_scope() as s:  # a process claimed it, then died before submitting
        s.execute(arbitrage.update(DeferredRequest).where(DeferredRequest.request_id == rid).values(
            status="claimed", claimed_by="dead", claim_token="dead-1",
            claimed_at=utcnow() - timedelta(seconds=arbitrage.CLAIM_LEASE_SECONDS + 5)))
    assert result(agw, rid).json()["status"] == "queued"
    assert arbitrage.flush_due(force=True)  # taken back, then sent once
    (upstream,) = fake_openai_batches.batches.values()
    assert [line["custom_id"] for line in upstream["lines"]] == [rid]
    assert deferred(rid).status == "submitted"
    with db.write_lock, db.session_scope() as s:  # claimed again and "died" after its batch was stored
        s.execute(arbitrage.update(DeferredRequest).where(DeferredRequest.request_id == rid).values(
            status="claimed", batch_id=None, claimed_at=utcnow() - timedelta(hours=1)))
    assert arbitrage.flush_due(force=True) == []  # not sent twice: its batch is found
    assert deferred(rid).status == "submitted" and deferred(rid).batch_id is not None
    assert len(fake_openai_batches.batches) == 1


def test_the_loop_looks_for_stale_claims_now_and_then_not_every_tick(agw, fake_openai_batches, monkeypatch):
    import time as clock
    from datetime import timedelta

    from gateway.models import utcnow

    rid = chat(agw, "stale", headers=DEFER).json()["id"]
    with db.write_lock, db.session_scope() as s:  # a claim whose process died long ago
        s.execute(arbitrage.update(DeferredRequest).where(DeferredRequest.request_id == rid).values(
            status="claimed", claimed_by="dead", claim_token="dead-2", claimed_at=utcnow() - timedelta(hours=1)))
    monkeypatch.setattr(arbitrage, "_reclaimed", clock.monotonic())  # looked a moment ago
    assert arbitrage.flush_due() == [] and deferred(rid).status == "claimed"
    monkeypatch.setattr(arbitrage, "_reclaimed", clock.monotonic() - arbitrage.RECLAIM_EVERY_SECONDS)
    arbitrage.flush_due()
    assert deferred(rid).status == "queued"  # taken back: the next flush sends it


def test_old_answered_rows_are_pruned(agw):
    from datetime import timedelta

    from gateway.models import utcnow

    rid = chat(agw, "old", headers=DEFER).json()["id"]
    arbitrage.flush_due(force=True)
    with db.write_lock, db.session_scope() as s:
        s.execute(arbitrage.update(DeferredRequest).values(created_at=utcnow() - timedelta(days=400)))
    jobs.prune_batches()
    assert deferred(rid) is None


@pytest.fixture
def redis_srv(tmp_path_factory):
    from tests.redis_server import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def test_over_redis_another_worker_flushes_with_the_shared_hold(redis_srv, gateway_factory, fake_openai_batches):
    """Scaled out, the hold taken at the 202 lives in Redis: the worker that flushes the row (here:
    this process with its own memory of the hold forgotten) settles that very hold, by its id."""
    gw = gateway_factory(redis_url=redis_srv.url, batch_poll_min_seconds=0, batch_poll_max_seconds=0,
                         batch_arbitrage_min_seconds=3600, batch_arbitrage_max_requests=100,
                         batch_arbitrage_max_age_seconds=3600)
    org = ("org", gw.org().id)
    rid = chat(gw, "shared", headers=DEFER).json()["id"]
    assert deferred(rid).hold_ref and COUNTERS.held(org) == deferred(rid).held_micros > 0
    import redis

    expiries = redis.Redis.from_url(redis_srv.url).zrange(f"gw:holds:org:{org[1]}", 0, -1, withscores=True)
    # the hold outlives the wait for the flush and the batch's window (a request's lives 15 minutes)
    assert expiries and min(at for _, at in expiries) - time.time() > 3600 + 24 * 3600
    arbitrage.LOCAL.clear()  # as another worker: it never saw this request
    assert arbitrage.flush_due(force=True)
    assert COUNTERS.held(org) == deferred(rid).held_micros  # the same hold, not a second one

    def finished() -> bool:
        jobs.poll_batches()
        gw.flush()
        return result(gw, rid).status_code == 200

    wait_for(finished, timeout=60)
    assert COUNTERS.held(org) == 0 and len(gw.rows(request_id=rid)) == 1


def test_over_redis_a_restart_keeps_the_requests_holds_not_a_second_batch_hold(redis_srv, gateway_factory,
                                                                                 fake_openai_batches):
    """After a restart, an arbitrage batch over Redis is still held once: by its requests' own shared
    holds (their ids on the deferred rows), not by those plus a batch-wide hold put back beside them."""
    from gateway.services import batch_settle

    gw = gateway_factory(redis_url=redis_srv.url, batch_poll_min_seconds=0, batch_poll_max_seconds=0,
                         batch_arbitrage_min_seconds=3600, batch_arbitrage_max_requests=100,
                         batch_arbitrage_max_age_seconds=3600)
    org = ("org", gw.org().id)
    rids = [chat(gw, f"restart {i}", headers=DEFER).json()["id"] for i in range(3)]
    assert arbitrage.flush_due(force=True)
    held = COUNTERS.held(org)
    assert held == sum(deferred(r).held_micros for r in rids) > 0
    assert all(deferred(r).hold_ref for r in rids)  # held in Redis, by id
    with db.session_scope() as s:  # as a new process does at start
        batch_settle.restore_holds(s)
    assert COUNTERS.held(org) == held

    def finished() -> bool:
        jobs.poll_batches()
        gw.flush()
        return all(result(gw, r).status_code == 200 for r in rids)

    wait_for(finished, timeout=60)
    assert COUNTERS.held(org) == 0
    assert sum(len(gw.rows(request_id=r)) for r in rids) == 3


def test_a_flush_that_fails_midway_gives_its_rows_back(agw, fake_openai_batches, monkeypatch):
    rids = [chat(agw, f"retry {i}", headers=DEFER).json()["id"] for i in range(3)]
    held = COUNTERS.holds.get(agw.org().id, 0)

    def broken(*a, **kw):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(arbitrage.batches, "submit", broken)
    with pytest.raises(RuntimeError):
        arbitrage.flush_group(agw.org().id, "fakebatch")
    assert queued_rows() == 3 and COUNTERS.holds.get(agw.org().id, 0) == held  # queued again, held once
    assert set(rids) <= set(arbitrage.LOCAL)
    monkeypatch.undo()
    assert arbitrage.flush_due(force=True)
    (upstream,) = fake_openai_batches.batches.values()
    assert sorted(line["custom_id"] for line in upstream["lines"]) == sorted(rids)
    assert COUNTERS.holds.get(agw.org().id, 0) == held  # the batch holds the same amounts, not twice
