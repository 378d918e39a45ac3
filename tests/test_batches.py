"""OpenAI Files + Batches through the gateway, driven by the official `openai` SDK against a fake of
OpenAI's batch API (tests/fakes/openai_batch_upstream.py): submit, poll, results, cancel, expiry;
money (holds at the batch price, one ledger row per succeeded request, exactly once across a
restart); the plan's batch permission; Idempotency-Key; hostile input and upstream; tenant isolation."""

from __future__ import annotations

import io

import openai
import orjson
import pytest
import requests
import yaml
from sqlalchemy import select

from gateway import boot, db, jobs, seed
from gateway.memo import MEMO
from gateway.models import Batch, BatchRequest, LedgerEntry
from gateway.services import batch_settle
from gateway.stores.counters import COUNTERS
from tests.openapi import validate

PRICES_IN, PRICES_OUT = 1000, 2000  # the test catalog's $ per Mtok


@pytest.fixture
def bgw(gateway_factory, fake_openai_batches):
    return gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0)


def jsonl(lines: list[dict]) -> bytes:
    return b"".join(orjson.dumps(x) + b"\n" for x in lines)


def line(custom_id: str, model: str = "batchy", text: str = "hello there", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 50, **body}}


def submit(sdk: openai.OpenAI, lines: list[dict], **kw):
    f = sdk.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    return sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", **kw)


def poll_until(sdk, batch_id: str, done=("completed", "failed", "expired", "cancelled"), rounds: int = 10):
    for _ in range(rounds):
        jobs.poll_batches()
        b = sdk.batches.retrieve(batch_id)
        if b.status in done:
            return b
    raise AssertionError(f"batch still {b.status}")


def raw(gw, path: str) -> dict:
    """A /v1 JSON body as the gateway sent it (for the schema checks, not the SDK's model)."""
    resp = requests.get(gw.v1 + path, headers={"Authorization": f"Bearer {gw.api_key}"})
    assert resp.status_code == 200, resp.text
    return resp.json()


def held(org_id: int) -> int:
    return COUNTERS.holds.get(org_id, 0)


def test_submit_poll_results_at_batch_price(bgw, fake_openai_batches):
    sdk = bgw.sdk()
    org = bgw.org()
    before = MEMO.balance(org.id)
    f = sdk.files.create(file=("input.jsonl", io.BytesIO(jsonl([line("a"), line("b", "batch-test/gpt-batch"),
                                                                line("c", "batch-test/error-400")]))),
                         purpose="batch")
    validate(raw(bgw, f"/files/{f.id}"), "OpenAIFile")
    assert f.id.startswith("file-") and f.purpose == "batch"
    assert sdk.files.retrieve(f.id).bytes == f.bytes
    created = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                 metadata={"job": "eval"})
    validate(raw(bgw, f"/batches/{created.id}"), "Batch")
    assert created.id.startswith("batch_") and created.status in ("validating", "in_progress")
    assert created.request_counts.total == 3 and created.metadata == {"job": "eval"}
    assert held(org.id) > 0  # the worst case is held while the batch runs
    # The provider got the upstream model names, under its own ids
    with db.session_scope() as s:
        part_upstream = s.scalar(select(Batch).where(Batch.public_id == created.id))
        assert part_upstream.org_id == org.id
    sent = next(iter(fake_openai_batches.files.values()))["content"]
    assert {orjson.loads(x)["body"]["model"] for x in sent.splitlines()} == {"gpt-batch", "error-400"}
    assert created.id not in fake_openai_batches.batches

    done = poll_until(sdk, created.id)
    validate(raw(bgw, f"/batches/{done.id}"), "Batch")
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    out = [orjson.loads(x) for x in sdk.files.content(done.output_file_id).content.splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["a", "b"]
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in out)
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"].startswith("Hello from fake")
    errs = [orjson.loads(x) for x in sdk.files.content(done.error_file_id).content.splitlines()]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errs] == [("c", 400)]

    rows = bgw.rows(endpoint="batches")
    assert len(rows) == 2  # one per succeeded request
    for r in rows:
        listed = (r.input_tokens * PRICES_IN + r.output_tokens * PRICES_OUT + 500_000) // 1_000_000 * 1
        full = (r.input_tokens * PRICES_IN * 1_000_000 + r.output_tokens * PRICES_OUT * 1_000_000 + 500_000) // 1_000_000
        assert r.benchmark_micros == full and r.charge_micros == (full * 50 + 99) // 100
        assert r.saved_micros == r.benchmark_micros - r.charge_micros > 0 and "batch=" in r.saved_by
        assert listed >= 0
    assert held(org.id) == 0  # the hold is released
    charged = sum(r.charge_micros for r in rows)
    assert MEMO.balance(org.id) == before - charged
    listing = sdk.batches.list()
    validate(raw(bgw, "/batches"), "ListBatchesResponse")
    assert [b.id for b in listing.data] == [created.id]


def test_cancel_charges_only_what_finished(bgw, fake_openai_batches):
    sdk = bgw.sdk()
    b = submit(sdk, [line("one"), line("two"), line("three")])
    jobs.poll_batches()  # validating -> in_progress
    assert sdk.batches.retrieve(b.id).status == "in_progress"
    cancelled = sdk.batches.cancel(b.id)
    assert cancelled.status == "cancelling"
    done = poll_until(sdk, b.id)
    assert done.status == "cancelled"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    errs = [orjson.loads(x) for x in sdk.files.content(done.error_file_id).content.splitlines()]
    assert {e["error"]["code"] for e in errs} == {"batch_cancelled"}
    assert len(bgw.rows(endpoint="batches")) == 1
    assert held(bgw.org().id) == 0
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(b.id)


def test_expiry_charges_nothing_for_expired_requests(bgw):
    sdk = bgw.sdk()
    b = submit(sdk, [line("ok"), line("late", "batch-test/batch-expire")])
    done = poll_until(sdk, b.id)
    assert done.status == "expired"
    errs = [orjson.loads(x) for x in sdk.files.content(done.error_file_id).content.splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errs] == [("late", "batch_expired")]
    rows = bgw.rows(endpoint="batches")
    assert [r.requested_model for r in rows] == ["batchy"]


@pytest.mark.parametrize("content, message", [
    (b"{not json\n", "Line 1: not valid JSON"),
    (jsonl([line("a"), line("a")]), "duplicate custom_id 'a'"),
    (jsonl([{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}]), "'method' must be"),
    (jsonl([{"custom_id": 5, "method": "POST", "url": "/v1/chat/completions", "body": {}}]), "'custom_id' must"),
    (jsonl([{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": []}]), "'body' must"),
    (b"\xff\xfe", "not UTF-8"),
    (b"\n\n", "no requests"),
])
def test_hostile_files_are_400(bgw, content, message):
    with pytest.raises(openai.BadRequestError) as err:
        bgw.sdk().files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch")
    assert message in err.value.message
    assert err.value.body["type"] == "invalid_request_error"


@pytest.mark.parametrize("bad, message", [
    (line("x", "no/such-model"), "Line 1 (custom_id 'x'): The model `no/such-model` does not exist"),
    ({**line("x"), "body": {"model": "batchy", "messages": "hi"}}, "Line 1 (custom_id 'x')"),
])
def test_bad_lines_are_400_at_create_and_hold_nothing(bgw, bad, message):
    sdk = bgw.sdk()
    with pytest.raises(openai.BadRequestError) as err:
        submit(sdk, [bad])
    assert message in err.value.message
    assert held(bgw.org().id) == 0
    with db.session_scope() as s:
        assert s.scalar(select(Batch)) is None


def test_huge_file_is_413(gateway_factory, fake_openai_batches):
    gw = gateway_factory(max_body_bytes=4096)
    with pytest.raises(openai.APIStatusError) as err:
        gw.sdk().files.create(file=("input.jsonl", io.BytesIO(jsonl([line(str(i)) for i in range(100)]))),
                              purpose="batch")
    assert err.value.status_code == 413


def test_upstream_create_500_fails_the_batch_without_charge(bgw, fake_openai_batches):
    fake_openai_batches.fail_create = 500
    sdk = bgw.sdk()
    b = submit(sdk, [line("a")])
    assert b.status == "failed"
    assert b.errors.data[0].code == "provider_failed"
    assert held(bgw.org().id) == 0
    assert bgw.rows(endpoint="batches") == []


def finish_here(sdk, batch_id: str):
    """Poll until done, letting the gateway's own runs finish between ticks."""
    from gateway.services import batch_runner

    for _ in range(10):
        for glet in list(batch_runner.RUNNING.values()):
            glet.join(10)
        jobs.poll_batches()
        b = sdk.batches.retrieve(batch_id)
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b
    raise AssertionError(b.status)


def test_openai_kind_provider_elsewhere_is_run_by_the_gateway(bgw, fake_openai):
    # `fake` is OpenAI-kind on another address, batch_api undeclared: no batch API is assumed, so
    # the gateway runs the batch without asking it for /files or /batches, at the normal price
    fake_openai.reset()
    sdk = bgw.sdk()
    b = submit(sdk, [line("a", "test/fake-gpt"), line("b", "test/fake-gpt")])
    done = finish_here(sdk, b.id)
    assert done.status == "completed" and done.request_counts.completed == 2
    assert {r["path"] for r in fake_openai.requests} == {"/v1/chat/completions"}
    rows = bgw.rows(endpoint="batches")
    assert len(rows) == 2 and all(r.charge_micros == r.benchmark_micros for r in rows)
    assert held(bgw.org().id) == 0


def declare_batch_api(gw, base_url: str, status_note: str = "") -> None:
    """A provider that says it has a batch API (batch_api: true) at `base_url`, model `declared/fake-gpt`."""
    config = yaml.safe_load(gw.config_path.read_text())
    config["providers"].append({"name": "declared", "kind": "openai", "base_url": base_url, "api_key": "sk-upstream-test",
                                "allow_private": True, "batch_api": True})
    config["models"].append({"slug": "declared/fake-gpt", "routes": [
        {"provider": "declared", "upstream_model": "fake-gpt", "input_per_mtok": 1000, "output_per_mtok": 2000}]})
    gw.config_path.write_text(yaml.safe_dump(config))
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, seed.load_file(gw.config_path), "test-secret")
    gw.flush()


def test_declared_batch_api_that_answers_404_falls_back_to_the_gateway(bgw, fake_openai, caplog):
    # `declared` says it has a batch API, but it is the chat-only fake: its 404 on /files moves the
    # part to the gateway's own run (logged), never a failure for the client
    declare_batch_api(bgw, fake_openai.url)
    fake_openai.reset()
    sdk = bgw.sdk()
    b = submit(sdk, [line("a", "declared/fake-gpt"), line("b", "declared/fake-gpt"), line("c")])
    assert b.status in ("validating", "in_progress")
    assert any("has no batch API" in r.getMessage() for r in caplog.records)
    done = finish_here(sdk, b.id)
    assert done.status == "completed" and done.request_counts.completed == 3 and not done.errors
    assert [r["path"] for r in fake_openai.requests].count("/v1/chat/completions") == 2
    rows = {r.requested_model: r for r in bgw.rows(endpoint="batches")}
    assert rows["declared/fake-gpt"].charge_micros == rows["declared/fake-gpt"].benchmark_micros  # normal price
    assert rows["batchy"].charge_micros < rows["batchy"].benchmark_micros  # the real batch API: batch price
    assert held(bgw.org().id) == 0


def test_fallback_the_org_cannot_afford_fails_only_that_part(bgw, fake_openai):
    declare_batch_api(bgw, fake_openai.url)
    org = bgw.new_org("tight", usd=0.1)
    sdk = bgw.sdk(bgw.new_key("tight"))
    b = submit(sdk, [line("a", "declared/fake-gpt", max_tokens=60)])  # fits at half price, not at full
    assert b.status == "failed" and "cannot cover" in b.errors.data[0].message
    assert held(org.id) == 0 and bgw.rows(endpoint="batches", org_id=org.id) == []


def test_has_batch_api_follows_the_catalog():
    from gateway.providers.batch_api import has_batch_api
    from gateway.routing.routes import ProviderInfo

    def p(kind, url, declared=None):
        return ProviderInfo(1, "p", kind, url, None, batch_api=declared)

    assert has_batch_api(p("openai", "https://api.openai.com/v1"))
    assert has_batch_api(p("anthropic", "https://api.anthropic.com"))
    assert not has_batch_api(p("openai", "http://vllm.internal:8000/v1"))
    assert has_batch_api(p("openai", "http://vllm.internal:8000/v1", True))
    assert not has_batch_api(p("openai", "https://api.openai.com/v1", False))
    for kind in ("openrouter", "ollama", "gemini", "bedrock"):
        assert not has_batch_api(p(kind, "https://openrouter.ai/api/v1", True))


def test_malformed_results_fail_without_charge(bgw, fake_openai_batches):
    fake_openai_batches.malformed = True
    sdk = bgw.sdk()
    b = submit(sdk, [line("a")])
    done = poll_until(sdk, b.id)
    assert done.status == "failed"
    assert "could not be read" in done.errors.data[0].message
    assert bgw.rows(endpoint="batches") == []
    assert held(bgw.org().id) == 0


def test_other_org_cannot_see_or_cancel(bgw):
    sdk = bgw.sdk()
    f = sdk.files.create(file=("input.jsonl", io.BytesIO(jsonl([line("a")]))), purpose="batch")
    b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    bgw.new_org("other")
    other = bgw.sdk(bgw.new_key("other"))
    for call in (lambda: other.batches.retrieve(b.id), lambda: other.batches.cancel(b.id),
                 lambda: other.files.retrieve(f.id), lambda: other.files.content(f.id),
                 lambda: other.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                              completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert other.batches.list().data == []


def test_plan_without_batch_is_403(bgw):
    config = yaml.safe_load(bgw.config_path.read_text())
    config["plans"] = [{"name": "nobatch", "batch": False}]
    bgw.config_path.write_text(yaml.safe_dump(config))
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, seed.load_file(bgw.config_path), "test-secret")
    bgw.cli("org", "plan", "--org", "default", "--plan", "nobatch")
    bgw.flush()
    with pytest.raises(openai.PermissionDeniedError) as err:
        submit(bgw.sdk(), [line("a")])
    assert "does not include batch" in err.value.message


def test_idempotency_key_makes_submission_safe_to_retry(bgw, fake_openai_batches):
    sdk = bgw.sdk()
    f = sdk.files.create(file=("input.jsonl", io.BytesIO(jsonl([line("a")]))), purpose="batch")
    args = dict(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    first = sdk.batches.create(**args, extra_headers={"Idempotency-Key": "k1"})
    again = sdk.batches.create(**args, extra_headers={"Idempotency-Key": "k1"})
    assert again.id == first.id and len(fake_openai_batches.batches) == 1
    g = sdk.files.create(file=("input.jsonl", io.BytesIO(jsonl([line("b")]))), purpose="batch")
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.batches.create(**{**args, "input_file_id": g.id}, extra_headers={"Idempotency-Key": "k1"})


def test_insufficient_credits_refuse_the_whole_batch(bgw):
    bgw.new_org("poor", usd=0.001)
    poor = bgw.sdk(bgw.new_key("poor"))
    with pytest.raises(openai.APIStatusError) as err:
        submit(poor, [line("a")])
    assert err.value.status_code == 402


def test_restart_mid_batch_completes_and_charges_once(bgw, fake_openai_batches):
    sdk = bgw.sdk()
    org = bgw.org()
    b = submit(sdk, [line("a"), line("b")])
    jobs.poll_batches()
    assert sdk.batches.retrieve(b.id).status == "in_progress"
    open_hold = held(org.id)
    assert open_hold > 0
    # Stop: the scheduler and the writer stop, and the process's memory (holds) is gone.
    boot.stop_background(bgw.app)
    batch_settle.HOLDS.clear()
    COUNTERS.reset()
    boot.start_background(bgw.app)  # the same database: the open batch's hold is restored
    assert held(org.id) == open_hold
    done = poll_until(sdk, b.id)
    assert done.status == "completed"
    rows = bgw.rows(endpoint="batches")
    assert len(rows) == 2 and held(org.id) == 0
    # A crash after the rows were written but before the batch was marked settled: settling again
    # writes nothing twice.
    with db.write_lock, db.session_scope() as s:
        s.scalar(select(Batch).where(Batch.public_id == b.id)).settled = False
    jobs.poll_batches()
    bgw.flush()
    with db.session_scope() as s:
        ids = list(s.scalars(select(LedgerEntry.request_id).where(LedgerEntry.endpoint == "batches")))
        assert sorted(ids) == sorted(s.scalars(select(BatchRequest.request_id).where(
            BatchRequest.status == "succeeded")))


def test_hard_budget_refuses_the_batch(bgw):
    from gateway.services import budgets, tenancy

    with db.write_lock, db.session_scope() as s:
        org = tenancy.org_by_name(s, "default")
        budgets.set_budget(s, budgets.target(s, org), 1, "day")
    bgw.flush()
    with pytest.raises(openai.RateLimitError) as err:
        submit(bgw.sdk(), [line("a")])
    assert err.value.code == "budget_exceeded"
    assert held(bgw.org().id) == 0


def test_concurrent_retries_with_one_key_make_one_batch(bgw, fake_openai_batches):
    import gevent

    sdk = bgw.sdk()
    f = sdk.files.create(file=("input.jsonl", io.BytesIO(jsonl([line("a")]))), purpose="batch")
    calls = [gevent.spawn(sdk.batches.create, input_file_id=f.id, endpoint="/v1/chat/completions",
                          completion_window="24h", extra_headers={"Idempotency-Key": "same"}) for _ in range(5)]
    gevent.joinall(calls, raise_error=True)
    assert len({c.value.id for c in calls}) == 1
    assert len(fake_openai_batches.batches) == 1
    with db.session_scope() as s:
        (b,) = s.scalars(select(Batch)).all()
    assert held(bgw.org().id) == b.held_micros  # the retries' holds were given back


def test_provider_validation_failure_is_a_failed_batch(bgw):
    sdk = bgw.sdk()
    b = submit(sdk, [line("a"), line("b", "batch-test/batch-invalid")])
    done = poll_until(sdk, b.id)
    assert done.status == "failed" and "not available for batch" in done.errors.data[0].message
    validate(raw(bgw, f"/batches/{b.id}"), "Batch")
    assert bgw.rows(endpoint="batches") == [] and held(bgw.org().id) == 0


def test_polling_backs_off_to_the_cap(gateway_factory, fake_openai_batches):
    from gateway.models import BatchPart

    gw = gateway_factory(batch_poll_min_seconds=1, batch_poll_max_seconds=4)
    b = submit(gw.sdk(), [line("a")])
    with db.write_lock, db.session_scope() as s:
        s.scalar(select(BatchPart)).next_poll_at = None  # due now
    jobs.poll_batches()  # validating -> in_progress
    fake_openai_batches.hold = True  # and there it stays, for good
    seen = []
    for _ in range(4):
        with db.write_lock, db.session_scope() as s:
            part = s.scalar(select(BatchPart))
            part.next_poll_at = None  # due now
        jobs.poll_batches()
        with db.session_scope() as s:
            seen.append(s.scalar(select(BatchPart.poll_seconds)))
    assert seen == [4, 4, 4, 4]
    assert gw.sdk().batches.retrieve(b.id).status == "in_progress"


def test_files_list_and_delete_within_the_org(bgw):
    sdk = bgw.sdk()
    ids = [sdk.files.create(file=(f"in{i}.jsonl", io.BytesIO(jsonl([line("a")]))), purpose="batch").id
           for i in range(3)]
    listing = raw(bgw, "/files?purpose=batch&limit=2")
    validate(listing, "ListFilesResponse")
    assert [f["id"] for f in listing["data"]] == ids[::-1][:2] and listing["has_more"] is True
    assert [f.id for f in sdk.files.list(order="asc")] == ids
    bgw.new_org("other")
    other = bgw.sdk(bgw.new_key("other"))
    assert list(other.files.list()) == []
    with pytest.raises(openai.NotFoundError):
        other.files.delete(ids[0])
    deleted = sdk.files.delete(ids[0])
    assert deleted.deleted is True and deleted.id == ids[0]
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(ids[0])


def test_provider_down_while_polling_is_retried_later(bgw, fake_openai_batches):
    sdk = bgw.sdk()
    b = submit(sdk, [line("a")])
    fake_openai_batches.fail_poll = 503
    for _ in range(3):
        jobs.poll_batches()  # nothing changes, nothing fails: asked again on the next tick
    assert sdk.batches.retrieve(b.id).status == "validating"
    fake_openai_batches.fail_poll = None
    assert poll_until(sdk, b.id).status == "completed"
    assert len(bgw.rows(endpoint="batches")) == 1


def test_files_and_results_are_stored_compressed(bgw):
    import zlib

    from gateway.models import BatchFile

    sdk = bgw.sdk()
    b = submit(sdk, [line(f"r{i}", text="the same words again " * 20) for i in range(20)])
    poll_until(sdk, b.id)
    with db.session_scope() as s:
        files = list(s.scalars(select(BatchFile)))
        results = [r.result_z for r in s.scalars(select(BatchRequest))]
    assert {f.purpose for f in files} == {"batch", "batch_output"}
    for f in files:
        assert len(f.content_z) < f.bytes and zlib.decompress(f.content_z)[:1] == b"{"
    assert all(orjson.loads(zlib.decompress(r))["status_code"] == 200 for r in results)


def test_provider_caching_is_in_the_benchmark_not_a_prompt_cache_saving(bgw):
    """As on the synchronous path (ledger/attribution.py): the provider's own caching is part of the
    benchmark, the batch discount is `batch`'s, and the shares sum exactly to the row's saved."""
    sdk = bgw.sdk()
    long = "the same long preamble again and again " * 40
    b = submit(sdk, [line("c", "batch-test/gpt-batch-cached", text=long), line("p", text=long)])
    assert poll_until(sdk, b.id).status == "completed"
    rows = {r.requested_model: r for r in bgw.rows(endpoint="batches")}
    cached, plain = rows["batch-test/gpt-batch-cached"], rows["batchy"]
    assert cached.cached_tokens > 0 and plain.cached_tokens == 0
    for r in (cached, plain):
        uncached = r.input_tokens - r.cached_tokens
        full = (uncached * PRICES_IN * 1_000_000 + r.cached_tokens * 250 * 1_000_000
                + r.output_tokens * PRICES_OUT * 1_000_000 + 500_000) // 1_000_000
        assert r.benchmark_micros == full  # with the provider's caching, as the request would cost directly
        assert r.charge_micros == (full * 50 + 99) // 100
        shares = dict(kv.split("=") for kv in r.saved_by.split(","))
        assert set(shares) == {"batch"}  # no prompt_cache: the gateway placed no breakpoint
        assert sum(map(int, shares.values())) == r.saved_micros == r.benchmark_micros - r.charge_micros


def test_results_with_bad_lines_charge_what_can_be_read(bgw, fake_openai_batches):
    """A line that is not JSON, one of the wrong shape and a result for a custom_id nobody sent are
    passed over; a success whose usage is wrong-typed is charged on estimated counts (flagged)."""
    fake_openai_batches.garbage = True
    sdk = bgw.sdk()
    b = submit(sdk, [line("a"), line("b")])
    done = poll_until(sdk, b.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 0)
    out = [orjson.loads(x) for x in sdk.files.content(done.output_file_id).content.splitlines()]
    assert sorted(o["custom_id"] for o in out) == ["a", "b"]
    rows = bgw.rows(endpoint="batches")
    assert len(rows) == 2 and len({r.request_id for r in rows}) == 2
    (estimated,) = [r for r in rows if r.usage_estimated]
    assert estimated.input_tokens > 0 and estimated.output_tokens > 0 and estimated.charge_micros > 0
    assert all(r.saved_micros == r.benchmark_micros - r.charge_micros for r in rows)
    assert held(bgw.org().id) == 0


def test_a_reset_during_the_results_download_is_retried_and_charged_once(bgw, fake_openai_batches):
    sdk = bgw.sdk()
    b = submit(sdk, [line("a"), line("b"), line("c", "batch-test/error-400")])
    fake_openai_batches.reset_downloads = 2  # the first two downloads break off mid-body
    done = poll_until(sdk, b.id)
    assert fake_openai_batches.reset_downloads == 0
    assert done.status == "completed" and not done.errors
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    rows = bgw.rows(endpoint="batches")
    assert sorted(r.requested_model for r in rows) == ["batchy", "batchy"]
    assert len({r.request_id for r in rows}) == 2
    assert held(bgw.org().id) == 0
