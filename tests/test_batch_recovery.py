"""A batch stored but never submitted (its process died between the database and the provider) is
submitted by the poller once the submitter's lease runs out, by one worker, and charged once; an
OpenAI batch the provider had already accepted is found by the part's name in its metadata (the
provider's list read page by page) and adopted, not sent twice; an Anthropic one is sent again and
still charged once. A part that falls back to the gateway's own run has its hold topped up to the
normal price first.

The crash is simulated at its exact point: the submission step raises (before the provider call,
or right after the provider accepted), then the process's memory is started afresh (holds rebuilt
from the database, as a start does) and the poller runs with the clock past the lease. Real parts:
the gateway on loopback, the fakes of OpenAI's and Anthropic's batch APIs, the official SDKs.
"""

from __future__ import annotations

from datetime import timedelta

import anthropic
import gevent
import openai
import pytest
from sqlalchemy import select

from gateway import db, jobs
from gateway.memo import MEMO
from gateway.models import Batch, BatchPart, BatchRequest, utcnow
from gateway.providers import anthropic_batch, openai_batch
from gateway.services import arbitrage, batch_runner, batch_settle, batch_submit, budgets
from gateway.stores.counters import COUNTERS
from tests.test_batches import declare_batch_api, finish_here, held, line, poll_until, submit

LATER = timedelta(seconds=batch_submit.SUBMIT_LEASE_SECONDS + 1)


class Crash(BaseException):
    """The process dies here (not an error the code could handle)."""


@pytest.fixture
def rgw(gateway_factory, fake_openai_batches, fake_anthropic_batches):
    fake_openai_batches.reset()
    fake_anthropic_batches.reset()
    yield gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0)
    fake_openai_batches.reset()
    fake_anthropic_batches.reset()


def fresh_start() -> None:
    """What a new process has after a crash: no holds but those the database names."""
    COUNTERS.reset()
    with db.session_scope() as session:
        budgets.seed_spend(session, COUNTERS)
        batch_settle.restore_holds(session)
        arbitrage.restore(session)


def crash_on_submit(monkeypatch, adapter=None) -> None:
    """Die in the submission step: before any provider call, or (`adapter`) right after its
    provider accepted the batch, before the gateway recorded the provider's id."""
    if adapter is None:
        def dead(*a, **kw):
            raise Crash()
        monkeypatch.setattr(batch_submit, "submit_parts", dead)
        return
    real = adapter.submit

    def accepted_then_dead(*a, **kw):
        real(*a, **kw)
        raise Crash()
    monkeypatch.setattr(adapter, "submit", accepted_then_dead)


def the_part(public_id: str) -> BatchPart:
    with db.session_scope() as s:
        batch = s.scalar(select(Batch).where(Batch.public_id == public_id))
        return s.scalar(select(BatchPart).where(BatchPart.batch_id == batch.id))


def stored_batch(org_id: int) -> Batch:
    with db.session_scope() as s:
        return s.scalar(select(Batch).where(Batch.org_id == org_id).order_by(Batch.id.desc()))


def check_charged_once(gw, public_id: str, endpoint: str, before: int) -> None:
    with db.session_scope() as s:
        batch = s.scalar(select(Batch).where(Batch.public_id == public_id))
        succeeded = set(s.scalars(select(BatchRequest.request_id).where(BatchRequest.batch_id == batch.id,
                                                                        BatchRequest.status == "succeeded")))
    rows = gw.rows(endpoint=endpoint)
    assert succeeded and sorted(r.request_id for r in rows) == sorted(succeeded)  # one row each, none twice
    assert held(gw.org().id) == 0
    assert MEMO.balance(gw.org().id) == before - sum(r.charge_micros for r in rows)


def test_a_batch_stored_before_a_crash_is_submitted_once_by_the_poller(rgw, fake_openai_batches, monkeypatch):
    org = rgw.org()
    before = MEMO.balance(org.id)
    sdk = rgw.sdk()
    crash_on_submit(monkeypatch)
    with pytest.raises(openai.APIError):
        submit(sdk, [line("a"), line("b")])
    monkeypatch.undo()
    stored = stored_batch(org.id)
    assert fake_openai_batches.batches == {} and stored.status == "validating"

    fresh_start()
    assert held(org.id) == stored.held_micros > 0  # the batch's hold, rebuilt from its row
    jobs.poll_batches()  # the submitter's lease still runs: nobody else submits it
    assert fake_openai_batches.batches == {} and the_part(stored.public_id).upstream_id is None

    # Two workers' pollers find it at once, past the lease: one claims and submits it
    claims = [gevent.spawn(batch_submit.recover_due, utcnow() + LATER) for _ in range(2)]
    gevent.joinall(claims, raise_error=True)
    assert sorted(g.value for g in claims) == [0, 1]
    assert len(fake_openai_batches.batches) == 1
    (upstream,) = fake_openai_batches.batches.values()
    assert upstream["object"]["metadata"] == {"gateway_part_id": f"{stored.public_id}/{the_part(stored.public_id).id}"}
    assert batch_submit.recover_due(utcnow() + LATER) == 0  # submitted: nothing left to recover

    done = poll_until(sdk, stored.public_id)
    assert done.status == "completed" and done.request_counts.completed == 2
    assert len(fake_openai_batches.batches) == 1
    check_charged_once(rgw, stored.public_id, "batches", before)


def test_an_openai_batch_accepted_before_the_crash_is_adopted_not_sent_again(rgw, fake_openai_batches,
                                                                            monkeypatch):
    org = rgw.org()
    before = MEMO.balance(org.id)
    sdk = rgw.sdk()
    crash_on_submit(monkeypatch, openai_batch)
    with pytest.raises(openai.APIError):
        submit(sdk, [line("a"), line("b")])
    monkeypatch.undo()
    stored = stored_batch(org.id)
    (accepted,) = fake_openai_batches.batches
    assert the_part(stored.public_id).upstream_id is None
    # The account's newer batches push ours onto a later page of the provider's list
    for i in range(130):
        obj = dict(fake_openai_batches.batches[accepted]["object"], id=f"batch_other{i:03d}",
                   metadata={"gateway_part_id": f"batch_someone_else/{i}"})
        fake_openai_batches.batches[obj["id"]] = {"object": obj, "lines": [], "done": 0}

    fresh_start()
    assert batch_submit.recover_due(utcnow() + LATER) == 1
    assert the_part(stored.public_id).upstream_id == accepted  # adopted
    creates = [r for r in fake_openai_batches.requests if r["method"] == "POST" and r["path"] == "/v1/batches"]
    assert len(creates) == 1  # the one before the crash
    lists = [r["query"] for r in fake_openai_batches.requests if r["path"] == "/v1/batches" and r["method"] == "GET"]
    assert any("after=" in q for q in lists)  # read past the first page

    done = poll_until(sdk, stored.public_id)
    assert done.status == "completed" and done.request_counts.completed == 2
    assert len(fake_openai_batches.batches) == 131  # ours once, and the others
    check_charged_once(rgw, stored.public_id, "batches", before)


def test_the_fake_lists_batches_as_openai_does(rgw, fake_openai_batches):
    sdk = rgw.sdk()
    for i in range(3):
        submit(sdk, [line(f"x{i}")])
    upstream = openai.OpenAI(base_url=fake_openai_batches.url, api_key=fake_openai_batches.api_key, max_retries=0)
    first = upstream.batches.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    assert [b.id for b in first.data] == list(reversed(fake_openai_batches.batches))[:2]
    everything = [b.id for b in upstream.batches.list(limit=2).iter_pages() for b in b.data]
    assert everything == list(reversed(fake_openai_batches.batches))
    assert all(b.metadata and b.metadata["gateway_part_id"].startswith("batch_") for b in first.data)


def test_an_anthropic_batch_is_sent_again_and_charged_once(rgw, fake_anthropic_batches, monkeypatch):
    org = rgw.org()
    before = MEMO.balance(org.id)
    claude = anthropic.Anthropic(base_url=rgw.url, api_key=rgw.api_key, max_retries=0)
    crash_on_submit(monkeypatch, anthropic_batch)
    reqs = [{"custom_id": c, "params": {"model": "abatch-test/claude-batch", "max_tokens": 64,
                                        "messages": [{"role": "user", "content": f"hello {c}"}]}} for c in "xy"]
    with pytest.raises(anthropic.APIError):
        claude.messages.batches.create(requests=reqs)
    monkeypatch.undo()
    stored = stored_batch(org.id)
    (first,) = fake_anthropic_batches.batches

    fresh_start()
    assert batch_submit.recover_due(utcnow() + LATER) == 1
    assert len(fake_anthropic_batches.batches) == 2  # no metadata to find it by: submitted again
    second = the_part(stored.public_id).upstream_id
    assert second is not None and second != first
    for _ in range(10):
        jobs.poll_batches()
        if claude.messages.batches.retrieve(stored.public_id).processing_status == "ended":
            break
    assert claude.messages.batches.retrieve(stored.public_id).request_counts.succeeded == 2
    check_charged_once(rgw, stored.public_id, "messages.batches", before)


def test_a_fallback_to_the_gateway_run_holds_the_full_price(rgw, fake_openai, monkeypatch):
    declare_batch_api(rgw, fake_openai.url)  # says it has a batch API; answers /files 404
    org = rgw.org()
    before = MEMO.balance(org.id)
    sdk = rgw.sdk()
    started = []
    monkeypatch.setattr(batch_runner, "ensure_running", started.append)  # held still, to look at the holds
    b = submit(sdk, [line("a", "declared/fake-gpt"), line("b", "declared/fake-gpt")])
    with db.session_scope() as s:
        batch = s.scalar(select(Batch).where(Batch.public_id == b.id))
        part = s.scalar(select(BatchPart).where(BatchPart.batch_id == batch.id))
        reqs = list(s.scalars(select(BatchRequest).where(BatchRequest.batch_id == batch.id)))
    full = sum(r.held_micros for r in reqs)
    assert part.kind == batch_runner.KIND and started == [part.id]
    assert part.topup_micros == full - batch.held_micros > 0  # the normal price, less the batch price held
    assert held(org.id) == full  # the open holds cover what the run will be charged

    fresh_start()  # a restart rebuilds the top-up by its name too
    assert held(org.id) == full

    monkeypatch.undo()
    done = finish_here(sdk, b.id)
    assert done.status == "completed" and done.request_counts.completed == 2
    rows = rgw.rows(endpoint="batches")
    assert len(rows) == 2 and all(r.charge_micros == r.benchmark_micros for r in rows)  # charged the full price
    assert sum(r.charge_micros for r in rows) <= full
    assert held(org.id) == 0
    assert MEMO.balance(org.id) == before - sum(r.charge_micros for r in rows)


def test_a_fallback_a_hard_budget_cannot_cover_fails_that_part(rgw, fake_openai):
    from gateway.services import budgets as budget_service
    from gateway.services import tenancy
    from gateway.services.batch_common import at_pct

    declare_batch_api(rgw, fake_openai.url)
    sdk = rgw.sdk()
    probe = submit(sdk, [line("p", "declared/fake-gpt")])  # the same line's normal-price worst case
    finish_here(sdk, probe.id)
    with db.session_scope() as s:
        worst = s.scalar(select(BatchRequest.held_micros).where(BatchRequest.custom_id == "p"))
    tight = rgw.new_org("tight", usd=100)
    # Its day's hard budget covers the line at the batch price, not at the normal price
    with db.write_lock, db.session_scope() as s:
        budget_service.set_budget(s, budget_service.target(s, tenancy.org_by_name(s, "tight")),
                                  at_pct(worst, 50) + (worst - at_pct(worst, 50)) // 2, "day")
    rgw.flush()
    b = submit(rgw.sdk(rgw.new_key("tight")), [line("q", "declared/fake-gpt")])
    assert b.status == "failed" and "cannot cover" in b.errors.data[0].message
    assert "budget" in b.errors.data[0].message
    assert held(tight.id) == 0 and rgw.rows(endpoint="batches", org_id=tight.id) == []


def test_a_gateway_run_batch_stored_before_a_crash_is_run_after_the_lease(rgw, fake_openai, monkeypatch):
    # test/fake-gpt's provider has no batch API: the gateway runs these lines itself
    org = rgw.org()
    before = MEMO.balance(org.id)
    sdk = rgw.sdk()
    crash_on_submit(monkeypatch)
    with pytest.raises(openai.APIError):
        submit(sdk, [line("a", "test/fake-gpt"), line("b", "test/fake-gpt")])
    monkeypatch.undo()
    stored = stored_batch(org.id)
    assert the_part(stored.public_id).kind == batch_runner.KIND and the_part(stored.public_id).upstream_id is None

    fresh_start()
    assert held(org.id) == stored.held_micros > 0
    assert batch_submit.recover_due(utcnow() + LATER) == 1
    done = finish_here(sdk, stored.public_id)
    assert done.status == "completed" and done.request_counts.completed == 2
    check_charged_once(rgw, stored.public_id, "batches", before)
