"""Batches the gateway runs itself, for routes whose provider has no batch API (here OpenRouter, and an
Anthropic-shaped batch on an OpenAI-only model): same files, ids, statuses and results as OpenAI's
API, at most `batch_concurrency` requests at once, charged at the route's normal price."""

from __future__ import annotations

import io

import anthropic
import gevent
import orjson
import pytest

from gateway import jobs
from gateway.pipeline import dispatch
from gateway.services import batch_runner
from gateway.stores.counters import COUNTERS
from tests.conftest import wait_for
from tests.test_batches import finish_here as finish
from tests.test_batches import jsonl, line


@pytest.fixture
def rgw(gateway_factory, fake_openrouter):
    return gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0, batch_concurrency=2)


def test_openrouter_batch_run_by_the_gateway(rgw, monkeypatch):
    running, peak = [0], [0]
    real = dispatch.call_route

    def counted(ctx, route, deadline=None):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        try:
            gevent.sleep(0.02)  # overlap the calls, so that a missing limit would show
            return real(ctx, route, deadline)
        finally:
            running[0] -= 1

    monkeypatch.setattr(dispatch, "call_route", counted)
    sdk = rgw.sdk()
    lines = [line(f"r{i}", "openrouter-test/fake-gpt") for i in range(6)] + [line("bad", "openrouter-test/error-400")]
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert b.id.startswith("batch_") and b.status in ("in_progress", "validating")
    done = finish(sdk, b.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (6, 1)
    assert peak[0] == 2  # never more than batch_concurrency at once
    out = [orjson.loads(x) for x in sdk.files.content(done.output_file_id).content.splitlines()]
    assert sorted(o["custom_id"] for o in out) == [f"r{i}" for i in range(6)]
    assert out[0]["response"]["body"]["object"] == "chat.completion"
    errs = [orjson.loads(x) for x in sdk.files.content(done.error_file_id).content.splitlines()]
    assert errs[0]["custom_id"] == "bad" and errs[0]["response"]["status_code"] == 400
    rows = rgw.rows(endpoint="batches")
    assert len(rows) == 6
    assert all(r.charge_micros == r.benchmark_micros and r.saved_micros == 0 for r in rows)  # normal price
    assert all(r.provider == "fakeopenrouter" for r in rows)
    assert COUNTERS.holds.get(rgw.org().id, 0) == 0


def ended(client, batch_id: str):
    """Poll a message batch until it has ended, letting the gateway's own runs finish between ticks."""
    for _ in range(5):
        for glet in list(batch_runner.RUNNING.values()):
            glet.join(10)
        jobs.poll_batches()
        b = client.messages.batches.retrieve(batch_id)
        if b.processing_status == "ended":
            break
    return b


def test_anthropic_batch_on_an_openai_model_is_translated(rgw):
    c = anthropic.Anthropic(base_url=rgw.url, api_key=rgw.api_key, max_retries=0)
    b = c.messages.batches.create(requests=[{"custom_id": "a", "params": {
        "model": "test/fake-gpt", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}}])
    b = ended(c, b.id)
    assert b.processing_status == "ended" and b.request_counts.succeeded == 1
    (result,) = list(c.messages.batches.results(b.id))
    assert result.result.type == "succeeded" and result.result.message.type == "message"
    assert result.result.message.content[0].text.startswith("Hello from fake")


def held_batch(rgw, monkeypatch, lines: int):
    """A gateway-run batch of `lines` requests whose upstream calls wait for `gate`; returns
    (sdk, the batch, gate, started: one entry per call begun)."""
    gate = gevent.event.Event()
    real = dispatch.call_route
    started = []

    def held(ctx, route, deadline=None):
        started.append(1)
        gate.wait(10)
        return real(ctx, route, deadline)

    monkeypatch.setattr(dispatch, "call_route", held)
    sdk = rgw.sdk()
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl([line(f"r{i}", "openrouter-test/fake-gpt")
                                                              for i in range(lines)]))), purpose="batch")
    b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    return sdk, b, gate, started


def test_cancel_stops_what_has_not_started(rgw, monkeypatch):
    sdk, b, gate, started = held_batch(rgw, monkeypatch, 5)
    wait_for(lambda: len(started) == 2)  # two requests are running (batch_concurrency), the rest wait
    assert sdk.batches.cancel(b.id).status == "cancelling"
    gate.set()
    done = finish(sdk, b.id)
    assert done.status == "cancelled"
    assert done.request_counts.completed == 2 and done.request_counts.failed == 3
    assert len(rgw.rows(endpoint="batches")) == 2


def test_gateway_batch_yields_to_synchronous_traffic(rgw, monkeypatch):
    from gateway.pipeline import drain

    busy = [True]
    calls = []
    real = dispatch.call_route
    asked = []
    monkeypatch.setattr(drain, "in_flight", lambda: asked.append(1) or (1000 if busy[0] else 0))
    monkeypatch.setattr(dispatch, "call_route", lambda ctx, route, deadline=None: calls.append(1) or real(
        ctx, route, deadline))
    sdk = rgw.sdk()
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl([line("a", "openrouter-test/fake-gpt")]))),
                         purpose="batch")
    b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: len(asked) >= 2)  # the runner looked, more than once, and found the server busy
    assert calls == []  # the server is busy with synchronous requests: the batch waits
    busy[0] = False
    assert finish(sdk, b.id).status == "completed" and calls == [1]


def test_restart_resumes_the_pending_requests(rgw, monkeypatch):
    from gateway import boot
    from gateway.services import batch_settle

    sdk, b, gate, started = held_batch(rgw, monkeypatch, 3)
    wait_for(lambda: started)  # the batch is running
    boot.stop_background(rgw.app)  # the runner is stopped mid-batch, its lease given up
    batch_settle.HOLDS.clear()
    COUNTERS.reset()
    boot.start_background(rgw.app)
    assert COUNTERS.holds.get(rgw.org().id, 0) > 0
    gate.set()
    done = finish(sdk, b.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    rows = rgw.rows(endpoint="batches")
    assert len(rows) == 3 and len({r.request_id for r in rows}) == 3
    assert COUNTERS.holds.get(rgw.org().id, 0) == 0


def test_embeddings_batch_run_by_the_gateway(rgw):
    sdk = rgw.sdk()
    lines = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "openrouter-test/embed", "input": f"text number {i}"}} for i in range(3)]
    f = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    done = finish(sdk, b.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    out = [orjson.loads(x) for x in sdk.files.content(done.output_file_id).content.splitlines()]
    assert all(o["response"]["body"]["object"] == "list" for o in out)
    rows = rgw.rows(endpoint="batches")
    assert len(rows) == 3 and all(r.input_tokens > 0 and r.output_tokens == 0 for r in rows)
    with pytest.raises(Exception) as err:  # a chat file cannot go to the embeddings endpoint
        g = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl([line("x")]))), purpose="batch")
        sdk.batches.create(input_file_id=g.id, endpoint="/v1/embeddings", completion_window="24h")
    assert "does not match the batch's endpoint" in str(err.value)


def test_requests_not_run_within_the_window_expire_uncharged(rgw, monkeypatch):
    """The gateway's own batch honours completion_window: what is running when the window ends
    finishes and is charged; what has not started is `expired`, not charged; the batch is `expired`
    with OpenAI's shape (expired_at, request_counts) and an error file of `batch_expired` lines."""
    from sqlalchemy import select

    from gateway import db
    from gateway.models import Batch

    sdk, b, gate, started = held_batch(rgw, monkeypatch, 5)
    wait_for(lambda: len(started) == 2)  # two running (batch_concurrency), three waiting
    from gateway.models import utcnow

    with db.write_lock, db.session_scope() as s:  # the 24 hours are over
        s.scalar(select(Batch).where(Batch.public_id == b.id)).expires_at = utcnow()
    gate.set()
    done = finish(sdk, b.id)
    assert done.status == "expired" and done.expired_at is not None and done.expires_at is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 2, 3)
    assert len(started) == 2
    errs = [orjson.loads(x) for x in sdk.files.content(done.error_file_id).content.splitlines()]
    assert {e["error"]["code"] for e in errs} == {"batch_expired"} and len(errs) == 3
    rows = rgw.rows(endpoint="batches")
    assert len(rows) == 2  # only what ran
    assert COUNTERS.holds.get(rgw.org().id, 0) == 0


def test_message_batch_past_its_window_has_expired_results(rgw, monkeypatch):
    """A short window (the config object's test-only override): nothing starts, every request's
    result type is `expired`, nothing is charged."""
    from gateway.services.batch_common import CONFIG

    monkeypatch.setattr(CONFIG, "window_seconds", 0)
    c = anthropic.Anthropic(base_url=rgw.url, api_key=rgw.api_key, max_retries=0)
    b = c.messages.batches.create(requests=[{"custom_id": f"x{i}", "params": {
        "model": "openrouter-test/fake-gpt", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}}
        for i in range(2)])
    b = ended(c, b.id)
    assert b.processing_status == "ended" and b.request_counts.expired == 2 and b.request_counts.succeeded == 0
    assert {r.result.type for r in c.messages.batches.results(b.id)} == {"expired"}
    assert rgw.rows(endpoint="messages.batches") == []
    assert COUNTERS.holds.get(rgw.org().id, 0) == 0
