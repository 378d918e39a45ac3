"""Idempotency-Key: a retry replays the first reply (stream or not) without a second upstream call
or charge; another body is 422; a key still running is 409 with retry-after; keys are per org;
a failure releases the key; records survive a restart. Clients are the official SDKs or plain HTTP."""

import anthropic
import gevent
import openai
import pytest
import requests

from gateway import db
from gateway.stores import idempotency as store
from tests.conftest import chat_calls, configure_savings, wait_for

MSG = [{"role": "user", "content": "say something idempotent"}]


@pytest.fixture
def gw(gateway):
    """No exact cache and no in-flight dedupe: nothing but idempotency may spare an upstream call."""
    configure_savings(gateway, exact_cache={"enabled": False}, inflight={"enabled": False},
                      semantic_cache={"enabled": False})
    return gateway


def chat(gw, key="k-1", api_key=None, **kw):
    params = {"model": "test/fake-gpt", "messages": MSG, **kw}
    return gw.sdk(api_key).chat.completions.with_raw_response.create(
        extra_headers={"Idempotency-Key": key} if key else {}, **params)


def test_replay_returns_the_same_reply_without_a_second_call_or_charge(gw, fake_openai):
    first = chat(gw)
    second = chat(gw)
    assert chat_calls(fake_openai) == 1
    assert second.status_code == first.status_code == 200
    assert second.http_response.content == first.http_response.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["x-gateway-charge"] == "0.000000"
    assert second.headers["x-gateway-cache"] == "replay"
    assert second.headers["x-gateway-original-request-id"] == first.headers["x-request-id"]
    rows = gw.rows()
    assert len(rows) == 2  # the replay has its own row
    original, replayed = rows
    assert original.charge_micros > 0 and replayed.charge_micros == 0
    assert replayed.cache == "replay" and replayed.status == 200
    assert "idempotent_replay=" in replayed.saved_by
    assert replayed.input_tokens == original.input_tokens  # the benchmark is what the original cost


def test_stream_is_replayed_as_a_stream(gw, fake_openai):
    def text(stream):
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    client = gw.sdk()
    first = text(client.chat.completions.create(model="test/fake-gpt", messages=MSG, stream=True,
                                                extra_headers={"Idempotency-Key": "s-1"}))
    raw = requests.post(gw.v1 + "/chat/completions", stream=True,
                        json={"model": "test/fake-gpt", "messages": MSG, "stream": True},
                        headers={"Authorization": f"Bearer {gw.api_key}", "Idempotency-Key": "s-1"})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["idempotent-replayed"] == "true"
    body = raw.content
    assert body.count(b"data: ") > 2 and b"data: [DONE]" in body
    second = text(client.chat.completions.create(model="test/fake-gpt", messages=MSG, stream=True,
                                                 extra_headers={"Idempotency-Key": "s-1"}))
    assert first == second == "Hello from fake fake-gpt."
    assert chat_calls(fake_openai) == 1
    rows = gw.rows()
    assert [r.charge_micros > 0 for r in rows] == [True, False, False]


def test_same_key_with_another_body_is_422(gw, fake_openai):
    chat(gw)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        chat(gw, messages=[{"role": "user", "content": "something else"}])
    assert err.value.code == "idempotency_key_reused"
    assert err.value.body["param"] == "Idempotency-Key"
    assert chat_calls(fake_openai) == 1


def test_same_key_while_the_first_runs_is_409_with_retry_after(gw, fake_openai):
    first = gevent.spawn(chat, gw, model="test/slow-1000")
    wait_for(lambda: chat_calls(fake_openai) == 1)
    with pytest.raises(openai.ConflictError) as err:
        chat(gw, model="test/slow-1000")
    assert err.value.code == "idempotency_key_in_use"
    assert err.value.response.headers["retry-after"] == "1"
    first.get()
    assert chat(gw, model="test/slow-1000").headers["idempotent-replayed"] == "true"
    assert chat_calls(fake_openai) == 1


def test_twenty_concurrent_identical_requests_make_one_upstream_call(gw, fake_openai):
    def attempt():
        try:
            return chat(gw, key="burst", model="test/slow-1000").status_code
        except openai.ConflictError:
            return 409

    results = [g.get() for g in gevent.joinall([gevent.spawn(attempt) for _ in range(20)], raise_error=True)]
    assert chat_calls(fake_openai) == 1
    assert sorted(results) == [200] + [409] * 19
    charged = [r for r in gw.rows() if r.charge_micros > 0]
    assert len(charged) == 1


def test_keys_are_scoped_to_the_org(gw, fake_openai):
    gw.new_org("other")
    other_key = gw.new_key("other")
    chat(gw, key="shared")
    theirs = chat(gw, key="shared", api_key=other_key)
    assert "idempotent-replayed" not in theirs.headers
    assert chat_calls(fake_openai) == 2
    with pytest.raises(openai.UnprocessableEntityError):  # org B's record is its own
        chat(gw, key="shared", api_key=other_key, messages=[{"role": "user", "content": "different"}])
    assert chat(gw, key="shared").headers["idempotent-replayed"] == "true"


def test_a_failed_request_releases_its_key(gw, fake_openai):
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            chat(gw, key="fails", model="test/error-400")
    assert chat_calls(fake_openai) == 2  # the retry ran again: failures are not replayed


def test_records_survive_a_restart(gw, fake_openai):
    first = chat(gw, key="kept")
    gw.flush()  # the ledger writer stores the record
    store.STORE.clear()
    with db.session_scope() as session:
        store.STORE.load(session)
    again = chat(gw, key="kept")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.http_response.content == first.http_response.content
    assert chat_calls(fake_openai) == 1


def test_an_expired_record_is_not_replayed(gw, fake_openai):
    chat(gw, key="old")
    clock = store.STORE.clock
    store.STORE.clock = lambda: clock() + store.TTL_SECONDS + 1
    try:
        assert "idempotent-replayed" not in chat(gw, key="old").headers
    finally:
        store.STORE.clock = clock
    assert chat_calls(fake_openai) == 2


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9\x7f"])
def test_a_bad_key_is_400_in_the_openai_shape(gw, fake_openai, value):
    r = gw.post("/v1/chat/completions", {"model": "test/fake-gpt", "messages": MSG},
                headers={"Authorization": f"Bearer {gw.api_key}", "Idempotency-Key": value})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "Idempotency-Key"
    assert chat_calls(fake_openai) == 0


def test_embeddings_and_the_llm_alias_replay(gw, fake_openai):
    for path, body in (("/v1/embeddings", {"model": "test/embed", "input": "hello"}),
                       ("/api/v1/llm/chat", {"model": "test/fake-gpt", "messages": MSG})):
        headers = {"Authorization": f"Bearer {gw.api_key}", "Idempotency-Key": "alias-" + path}
        first = requests.post(gw.url + path, json=body, headers=headers)
        second = requests.post(gw.url + path, json=body, headers=headers)
        assert first.status_code == second.status_code == 200
        assert second.headers["idempotent-replayed"] == "true"
        assert second.content == first.content
    assert len(fake_openai.requests) == 2


def test_messages_replay_in_the_anthropic_dialect(gw, fake_openai):
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)
    params = {"model": "test/fake-gpt", "max_tokens": 50, "messages": MSG,
              "extra_headers": {"Idempotency-Key": "m-1"}}
    first = client.messages.with_raw_response.create(**params)
    second = client.messages.with_raw_response.create(**params)
    assert second.headers["idempotent-replayed"] == "true"
    assert second.http_response.content == first.http_response.content
    with pytest.raises(anthropic.UnprocessableEntityError) as err:
        client.messages.create(**{**params, "max_tokens": 51})
    assert err.value.body["type"] == "error"
    assert chat_calls(fake_openai) == 1


def test_a_key_without_the_inference_scope_gets_no_replay(gw, fake_openai):
    chat(gw, key="scoped")
    with pytest.raises(openai.PermissionDeniedError):
        chat(gw, key="scoped", api_key=gw.new_key(scope="read"))
    assert chat_calls(fake_openai) == 1


def test_a_reply_completed_by_another_worker_is_replayed(gw, fake_openai):
    """Another worker's memory is not ours: a key memory does not hold is looked up in the table."""
    first = chat(gw, key="elsewhere")
    gw.flush()
    store.STORE.clear()  # as a worker that never saw the request (no reload)
    again = chat(gw, key="elsewhere")
    assert again.headers["idempotent-replayed"] == "true"
    assert again.http_response.content == first.http_response.content
    assert chat_calls(fake_openai) == 1
    with pytest.raises(openai.UnprocessableEntityError):
        store.STORE.clear()
        chat(gw, key="elsewhere", messages=[{"role": "user", "content": "another"}])


def test_no_query_without_the_header(gw):
    from tests.conftest import database_statements

    chat(gw, key=None)  # warm
    with database_statements() as statements:
        chat(gw, key=None)
    assert statements == []
