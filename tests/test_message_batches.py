"""Anthropic Message Batches through the gateway, driven by the official `anthropic` SDK against a fake
of Anthropic's batch API (tests/fakes/anthropic_batch_upstream.py): submit, poll, results (JSONL with
succeeded | errored | canceled | expired), cancel, expiry; the Atlas paths; errors in Anthropic's
shape; tenant isolation; charges at the batch price, once."""

from __future__ import annotations

import anthropic
import pytest
import requests

from gateway import jobs
from gateway.stores.counters import COUNTERS


@pytest.fixture
def agw(gateway_factory, fake_anthropic_batches):
    return gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0)


def client(gw, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key or gw.api_key, max_retries=0)


def req(custom_id: str, model: str = "abatch-test/claude-batch", text: str = "hello there") -> dict:
    return {"custom_id": custom_id,
            "params": {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}}


def poll_until_ended(c: anthropic.Anthropic, batch_id: str, rounds: int = 10):
    for _ in range(rounds):
        jobs.poll_batches()
        b = c.messages.batches.retrieve(batch_id)
        if b.processing_status == "ended":
            return b
    raise AssertionError(f"batch still {b.processing_status}")


def test_submit_poll_results_with_the_sdk(agw, fake_anthropic_batches):
    c = client(agw)
    b = c.messages.batches.create(requests=[req("a"), req("b"), req("c", "abatch-test/error-400"),
                                            req("d", "abatch-test/batch-expire")])
    assert b.id.startswith("msgbatch_") and b.type == "message_batch"
    assert b.processing_status == "in_progress" and b.request_counts.processing == 4
    assert b.results_url is None
    assert b.id not in fake_anthropic_batches.batches  # the gateway's own id
    sent = next(iter(fake_anthropic_batches.batches.values()))["requests"]
    assert {r["params"]["model"] for r in sent} == {"claude-batch", "error-400", "batch-expire"}
    done = poll_until_ended(c, b.id)
    assert done.request_counts.succeeded == 2 and done.request_counts.errored == 1
    assert done.request_counts.expired == 1 and done.ended_at is not None
    results = {r.custom_id: r.result for r in c.messages.batches.results(b.id)}
    assert results["a"].type == "succeeded" and results["a"].message.content[0].text.startswith("Hello")
    assert results["c"].type == "errored" and results["c"].error.error.type == "invalid_request_error"
    assert results["d"].type == "expired"
    rows = agw.rows(endpoint="messages.batches")
    assert len(rows) == 2
    for r in rows:
        full = (r.input_tokens * 3000 + r.output_tokens * 15000)
        assert r.benchmark_micros == full and r.charge_micros == (full * 50 + 99) // 100
        assert "batch=" in r.saved_by
    assert COUNTERS.holds.get(agw.org().id, 0) == 0
    assert [x.id for x in c.messages.batches.list()] == [b.id]
    # Atlas: status, counts and the usage written back
    got = requests.get(f"{agw.url}/api/v1/llm/batch/{b.id}", headers={"Authorization": f"Bearer {agw.api_key}"})
    body = got.json()
    assert got.status_code == 200 and body["status"] == "expired" and body["processing_status"] == "ended"
    assert body["counts"]["succeeded"] == 2 and body["usage"]["output_tokens"] == sum(r.output_tokens for r in rows)
    assert body["cost"]["charge"] == f"{sum(r.charge_micros for r in rows) / 1e6:.6f}"


def test_cancel_with_the_sdk(agw, fake_anthropic_batches):
    fake_anthropic_batches.hold = True
    c = client(agw)
    b = c.messages.batches.create(requests=[req("a"), req("b")])
    cancelling = c.messages.batches.cancel(b.id)
    assert cancelling.processing_status == "canceling" and cancelling.cancel_initiated_at is not None
    fake_anthropic_batches.hold = False
    done = poll_until_ended(c, b.id)
    assert (done.request_counts.succeeded, done.request_counts.canceled) == (1, 1)
    assert {r.custom_id: r.result.type for r in c.messages.batches.results(b.id)} == {"a": "succeeded",
                                                                                       "b": "canceled"}
    assert len(agw.rows(endpoint="messages.batches")) == 1
    with pytest.raises(anthropic.ConflictError):
        c.messages.batches.cancel(b.id)


def test_atlas_create_is_the_anthropic_shape(agw):
    resp = requests.post(f"{agw.url}/api/v1/llm/batch", json={"requests": [req("x")]},
                         headers={"Authorization": f"Bearer {agw.api_key}"})
    assert resp.status_code == 200 and resp.json()["type"] == "message_batch"
    got = requests.get(f"{agw.url}/api/v1/llm/batch/{resp.json()['id']}",
                       headers={"Authorization": f"Bearer {agw.api_key}"}).json()
    assert got["status"] in ("in_progress", "validating") and got["counts"]["total"] == 1
    assert float(got["cost"]["held"]) > 0


@pytest.mark.parametrize("body, message", [
    ({"requests": []}, "requests: must be a non-empty list"),
    ({"requests": [req("a"), req("a")]}, "duplicate custom_id 'a'"),
    ({"requests": [{"custom_id": "bad id!", "params": {}}]}, "custom_id: must be 1 to 64"),
    ({"requests": [{"custom_id": "a", "params": "x"}]}, "params: must be a Messages request"),
    ({"requests": [req("a", "nope/model")]}, "Line 1 (custom_id 'a'): The model `nope/model` does not exist"),
    ({"requests": [{"custom_id": "a", "params": {"model": "abatch-test/claude-batch", "messages": "hi",
                                                 "max_tokens": 5}}]}, "Line 1 (custom_id 'a')"),
])
def test_hostile_requests_are_anthropic_400s(agw, body, message):
    resp = requests.post(f"{agw.url}/v1/messages/batches", json=body, headers={"x-api-key": agw.api_key})
    assert resp.status_code == 400
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"
    assert message in resp.json()["error"]["message"]
    assert COUNTERS.holds.get(agw.org().id, 0) == 0


def test_upstream_failures_leave_a_clear_state_and_no_charge(agw, fake_anthropic_batches):
    c = client(agw)
    fake_anthropic_batches.fail_create = 500
    b = c.messages.batches.create(requests=[req("a")])
    assert b.processing_status == "ended" and b.request_counts.errored == 1
    assert [r.result.type for r in c.messages.batches.results(b.id)] == ["errored"]
    fake_anthropic_batches.fail_create = None
    fake_anthropic_batches.malformed = True
    b2 = c.messages.batches.create(requests=[req("b")])
    done = poll_until_ended(c, b2.id)
    assert done.request_counts.errored == 1
    assert agw.rows(endpoint="messages.batches") == []
    assert COUNTERS.holds.get(agw.org().id, 0) == 0


def test_other_org_cannot_read_or_cancel(agw):
    c = client(agw)
    b = c.messages.batches.create(requests=[req("a")])
    agw.new_org("other")
    other = client(agw, agw.new_key("other"))
    for call in (lambda: other.messages.batches.retrieve(b.id), lambda: other.messages.batches.cancel(b.id)):
        with pytest.raises(anthropic.NotFoundError) as err:
            call()
        assert err.value.body["error"]["type"] == "not_found_error"
    resp = requests.get(f"{agw.url}/v1/messages/batches/{b.id}/results", headers={"x-api-key": other.api_key})
    assert resp.status_code == 404
    assert requests.get(f"{agw.url}/api/v1/llm/batch/{b.id}",
                        headers={"Authorization": f"Bearer {other.api_key}"}).status_code == 404
    assert list(other.messages.batches.list()) == []


def test_cache_reads_and_writes_priced_as_the_provider_bills_them(agw):
    """Anthropic's cache reads and writes in a batch result: the benchmark holds them as the provider
    bills them (reads at the cached price, writes at the write premium), the batch discount is the
    only saving, and the shares sum to the row's saved."""
    from gateway.ledger.pricing import CACHE_WRITE_PREMIUM

    c = client(agw)
    b = c.messages.batches.create(requests=[req("k", "abatch-test/claude-batch-cached",
                                                 "a long shared system preamble " * 40)])
    poll_until_ended(c, b.id)
    (r,) = agw.rows(endpoint="messages.batches")
    assert r.cached_tokens > 0 and r.cache_write_tokens > 0
    num, den = CACHE_WRITE_PREMIUM["anthropic"]
    plain = r.input_tokens - r.cached_tokens - r.cache_write_tokens
    full = (plain * 3000 + r.cached_tokens * 300 + r.output_tokens * 15000) + r.cache_write_tokens * 3000 * num // den
    assert r.benchmark_micros == full and r.charge_micros == (full * 50 + 99) // 100
    assert r.saved_by == f"batch={r.benchmark_micros - r.charge_micros}"
