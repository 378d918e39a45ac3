"""Exact cache: what it saves, when it answers (and when not), tenant isolation, persistence,
and that a failing cache never fails a request. Clients are the official SDKs."""

import json

import anthropic
import pytest
from sqlalchemy import select

from gateway import boot, db
from gateway.models import CacheEntry
from gateway.stores.exact_cache import STORE
from tests.conftest import chat_calls, configure_savings, database_statements, savings_override, wait_for
from tests.openapi import validate

MSG = [{"role": "user", "content": "hello there"}]
FAKE = "test/fake-gpt"
CLAUDE = "anthropic-test/claude-fake"


# ---- helpers ----------------------------------------------------------------------------------

def ask(gw, key=None, headers=None, **kw):
    """One chat completion through the OpenAI SDK: (parsed, headers)."""
    params = {"model": FAKE, "messages": MSG, "temperature": 0, **kw}
    raw = gw.sdk(key).chat.completions.with_raw_response.create(extra_headers=headers or {}, **params)
    return raw.parse(), raw.headers


def ask_stream(gw, key=None, headers=None, **kw):
    """A streamed chat completion: (text, chunks, headers)."""
    params = {"model": FAKE, "messages": MSG, "temperature": 0, "stream": True, **kw}
    raw = gw.sdk(key).chat.completions.with_raw_response.create(extra_headers=headers or {}, **params)
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, raw.headers


def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)


def assert_free_hit(headers, row) -> None:
    """A free hit: charge 0, everything saved (= the benchmark), attributed to the exact cache."""
    assert headers["x-gateway-cache"] == "hit"
    assert headers["x-gateway-cost-status"] == "final"
    assert headers["x-gateway-charge"] == "0.000000"
    assert float(headers["x-gateway-benchmark-cost"]) > 0
    assert headers["x-gateway-saved"] == headers["x-gateway-benchmark-cost"]
    assert (row.cache, row.charge_micros, row.status) == ("hit", 0, 200)
    assert row.saved_micros == row.benchmark_micros > 0
    assert row.saved_by == f"exact_cache={row.benchmark_micros}"


# ---- hits -------------------------------------------------------------------------------------

def test_openai_non_stream_hit_after_miss(gateway, fake_openai):
    first, h1 = ask(gateway)
    assert h1["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 1
    second, h2 = ask(gateway)
    assert chat_calls(fake_openai) == 1  # served from the cache
    assert second.choices[0].message.content == first.choices[0].message.content
    assert first.choices[0].message.content == "Hello from fake fake-gpt."
    assert second.usage.prompt_tokens == first.usage.prompt_tokens and second.model == FAKE
    miss, hit = gateway.rows()
    assert (miss.cache, miss.charge_micros) == ("miss", 13000)
    assert_free_hit(h2, hit)
    assert hit.benchmark_micros == miss.benchmark_micros  # the benchmark of the answer replayed
    assert (hit.input_tokens, hit.output_tokens) == (miss.input_tokens, miss.output_tokens)


def test_openai_stream_hit_after_miss(gateway, fake_openai):
    text, _, h1 = ask_stream(gateway)
    assert h1["x-gateway-cache"] == "miss"
    again, chunks, h2 = ask_stream(gateway, stream_options={"include_usage": True})
    assert chat_calls(fake_openai) == 1
    assert again == text == "Hello from fake fake-gpt."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.prompt_tokens == 5 and chunks[-1].usage.completion_tokens == 4
    miss, hit = gateway.rows()
    assert_free_hit(h2, hit)
    assert hit.stream and hit.benchmark_micros == miss.benchmark_micros


def test_stream_replay_ends_with_done_and_the_hits_own_cost_comment(gateway):
    ask_stream(gateway)
    body = {"model": FAKE, "messages": MSG, "temperature": 0, "stream": True}
    r = gateway.post("/v1/chat/completions", body, stream=True)
    events = [e for e in r.content.decode().split("\n\n") if e]
    assert events[-2] == "data: [DONE]"
    assert events[-1].startswith(": gateway-cost request_id=" + r.headers["x-request-id"])
    assert "charge=0.000000" in events[-1] and "cache=hit" in events[-1]


def test_anthropic_non_stream_and_stream_hits(gateway, fake_anthropic):
    sdk = claude(gateway)
    params = {"model": CLAUDE, "max_tokens": 100, "messages": MSG, "extra_body": {"temperature": 0}}
    first = sdk.messages.with_raw_response.create(**params)
    assert first.headers["x-gateway-cache"] == "miss"
    second = sdk.messages.with_raw_response.create(**params)
    assert len(fake_anthropic.requests) == 1
    message = second.parse()
    assert message.content[0].text == "Hello from fake claude-fake." and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)
    # the same request streamed: answered from the same entry, as an Anthropic event stream
    raw = sdk.messages.with_raw_response.create(stream=True, **params)
    events = list(raw.parse())
    assert len(fake_anthropic.requests) == 1
    assert [e.type for e in events][:1] == ["message_start"] and events[-1].type == "message_stop"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "Hello from fake claude-fake."
    miss, hit, streamed = gateway.rows()
    assert miss.charge_micros == 75000
    assert_free_hit(second.headers, hit)
    assert_free_hit(raw.headers, streamed)


def test_anthropic_stream_miss_answers_a_later_non_stream_request(gateway, fake_anthropic):
    sdk = claude(gateway)
    params = {"model": CLAUDE, "max_tokens": 100, "messages": MSG, "extra_body": {"temperature": 0}}
    with sdk.messages.stream(**params) as stream:
        streamed = stream.get_final_message()
    message = sdk.messages.create(**params)
    assert len(fake_anthropic.requests) == 1
    assert message.content[0].text == streamed.content[0].text == "Hello from fake claude-fake."
    assert message.usage.output_tokens == streamed.usage.output_tokens == 4


def test_cross_replays_stream_to_whole_and_whole_to_stream(gateway, fake_openai):
    text, _, _ = ask_stream(gateway, messages=[{"role": "user", "content": "first"}])
    whole, headers = ask(gateway, messages=[{"role": "user", "content": "first"}])
    assert whole.choices[0].message.content == text and headers["x-gateway-cache"] == "hit"
    assert whole.usage.completion_tokens == 4  # the usage the relay hid from the client was kept
    ask(gateway, messages=[{"role": "user", "content": "second"}])
    again, _, headers = ask_stream(gateway, messages=[{"role": "user", "content": "second"}])
    assert again == "Hello from fake fake-gpt." and headers["x-gateway-cache"] == "hit"
    assert chat_calls(fake_openai) == 2


def test_translated_answers_are_cached_in_the_clients_dialect(gateway, fake_openai):
    """An Anthropic client on an OpenAI-kind route: the reply was translated, the hit is rendered."""
    sdk = claude(gateway)
    params = {"model": FAKE, "max_tokens": 100, "messages": MSG, "extra_body": {"temperature": 0}}
    with sdk.messages.stream(**params) as stream:
        first = stream.get_final_message()
    raw = sdk.messages.with_raw_response.create(**params)
    assert chat_calls(fake_openai) == 1 and raw.headers["x-gateway-cache"] == "hit"
    assert raw.parse().content[0].text == first.content[0].text == "Hello from fake fake-gpt."


def test_tool_calls_survive_the_cache(gateway, fake_openai):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    first, _ = ask(gateway, model="test/fake-tool", tools=tools)
    _, chunks, headers = ask_stream(gateway, model="test/fake-tool", tools=tools)
    assert headers["x-gateway-cache"] == "hit" and chat_calls(fake_openai) == 1
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices
                   for tc in c.choices[0].delta.tool_calls or [])
    call = first.choices[0].message.tool_calls[0]
    assert json.loads(args) == json.loads(call.function.arguments) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


def test_charge_full_charges_the_original_price(gateway, fake_openai):
    configure_savings(gateway, exact_cache={"charge": "full"})
    ask(gateway)
    _, headers = ask(gateway)
    miss, hit = gateway.rows()
    assert chat_calls(fake_openai) == 1 and hit.cache == "hit"
    assert hit.charge_micros == miss.charge_micros == 13000
    assert headers["x-gateway-charge"] == "0.013000" and hit.saved_micros == hit.benchmark_micros - 13000


# ---- eligibility and switches ------------------------------------------------------------------

def test_sampled_requests_are_not_cached_unless_seeded_or_forced(gateway, fake_openai):
    for _ in range(2):
        _, headers = ask(gateway, temperature=0.7)
        assert headers["x-gateway-cache"] == "miss"
    assert chat_calls(fake_openai) == 2
    ask(gateway, temperature=0.7, seed=7)
    _, headers = ask(gateway, temperature=0.7, seed=7)
    assert headers["x-gateway-cache"] == "hit" and chat_calls(fake_openai) == 3
    ask(gateway, temperature=0.9, headers={"x-gateway-cache": "force"})
    _, headers = ask(gateway, temperature=0.9, headers={"x-gateway-cache": "force"})
    assert headers["x-gateway-cache"] == "hit" and chat_calls(fake_openai) == 4


def test_several_choices_are_not_cached(gateway, fake_openai):
    for _ in range(2):
        _, headers = ask(gateway, n=2, headers={"x-gateway-cache": "force"})
        assert headers["x-gateway-cache"] == "miss"
    assert chat_calls(fake_openai) == 2


@pytest.mark.parametrize("skip", [{"x-gateway-cache": "bypass"}, {"Cache-Control": "no-store"}])
def test_bypass_and_no_store_neither_read_nor_write(gateway, fake_openai, skip):
    ask(gateway, headers=skip)  # not written...
    _, headers = ask(gateway)
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 2
    _, headers = ask(gateway, headers=skip)  # ...and not read, though an entry exists now
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 3
    _, headers = ask(gateway)
    assert headers["x-gateway-cache"] == "hit" and chat_calls(fake_openai) == 3


def test_disabled_globally(gateway, fake_openai):
    configure_savings(gateway, exact_cache={"enabled": False})
    ask(gateway)
    _, headers = ask(gateway)
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 2
    _, headers = ask(gateway, headers={"x-gateway-exact-cache": "on"})  # a request may turn it on
    ask(gateway, headers={"x-gateway-exact-cache": "on"})
    assert chat_calls(fake_openai) == 3


def test_disabled_per_request_and_per_org(gateway, fake_openai):
    ask(gateway, headers={"x-gateway-exact-cache": "off"})
    ask(gateway, headers={"x-gateway-exact-cache": "off"})
    assert chat_calls(fake_openai) == 2
    gateway.new_org("quiet")
    key = gateway.new_key("quiet")
    savings_override(gateway, "quiet", "exact_cache", enabled=False)
    ask(gateway, key=key)
    _, headers = ask(gateway, key=key)
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 4
    _, headers = ask(gateway)  # the default org still caches
    ask(gateway)
    assert chat_calls(fake_openai) == 5


def test_only_successful_answers_are_cached(gateway, fake_openai):
    for _ in range(2):
        body = {"model": "test/error-400", "messages": MSG, "temperature": 0}
        r = gateway.post("/v1/chat/completions", body)
        assert r.status_code == 400
    for _ in range(2):  # a stream the upstream cut short
        body = {"model": "test/reset", "messages": MSG, "temperature": 0, "stream": True}
        r = gateway.post("/v1/chat/completions", body, stream=True)
        assert b'"error"' in r.content
    assert chat_calls(fake_openai) == 4
    assert STORE.size() == 0


def test_other_endpoints_are_not_cached(gateway, fake_openai):
    body = {"model": FAKE, "input": "hello there", "temperature": 0}
    for _ in range(2):
        r = gateway.post("/v1/responses", body)
        assert r.status_code == 200 and r.headers["x-gateway-cache"] == "miss"
    assert STORE.size() == 0


# ---- TTL, size, persistence -------------------------------------------------------------------

def test_entries_expire_after_their_ttl(gateway, fake_openai, monkeypatch):
    configure_savings(gateway, exact_cache={"ttl_seconds": 60})
    now = [1_800_000_000.0]
    monkeypatch.setattr(STORE, "clock", lambda: now[0])
    ask(gateway)
    now[0] += 59
    _, headers = ask(gateway)
    assert headers["x-gateway-cache"] == "hit" and chat_calls(fake_openai) == 1
    now[0] += 2
    _, headers = ask(gateway)
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 2


def test_max_entries_evicts_the_least_recently_used(gateway, fake_openai):
    configure_savings(gateway, exact_cache={"max_entries": 2})

    def say(word):
        return ask(gateway, messages=[{"role": "user", "content": word}])[1]["x-gateway-cache"]

    assert [say("a"), say("b"), say("a")] == ["miss", "miss", "hit"]  # a is now the most recent
    assert say("c") == "miss"  # evicts b
    assert [say("a"), say("c"), say("b")] == ["hit", "hit", "miss"]
    assert STORE.size() == 2


def test_entries_persist_across_a_restart(gateway, fake_openai):
    ask(gateway)
    ask_stream(gateway, messages=[{"role": "user", "content": "streamed"}])
    gateway.flush()
    with db.session_scope() as s:
        rows = list(s.scalars(select(CacheEntry)))
        assert {r.scope for r in rows} == {f"org:{gateway.org().id}"} and len(rows) == 2
        assert rows[0].model == FAKE and rows[0].response["content"][0]["text"] == "Hello from fake fake-gpt."
        expired = CacheEntry(org_id=rows[0].org_id, scope=rows[0].scope, key="0" * 64, model=FAKE,
                             response=rows[0].response, expires_at=rows[0].created_at)
    with db.write_lock, db.session_scope() as s:
        s.add(expired)
    STORE.clear()
    boot.stop_background(gateway.app)
    boot.start_background(gateway.app)  # what a restart does: load the table into memory
    assert STORE.size() == 2
    with db.session_scope() as s:  # and the expired row is gone
        assert s.scalar(select(CacheEntry).where(CacheEntry.key == "0" * 64)) is None
    _, headers = ask(gateway)
    text, _, stream_headers = ask_stream(gateway, messages=[{"role": "user", "content": "streamed"}])
    assert (headers["x-gateway-cache"], stream_headers["x-gateway-cache"]) == ("hit", "hit")
    assert text == "Hello from fake fake-gpt." and chat_calls(fake_openai) == 2


# ---- isolation ---------------------------------------------------------------------------------

def test_never_crosses_orgs(gateway, fake_openai):
    gateway.new_org("other")
    other = gateway.new_key("other")
    ask(gateway)
    _, headers = ask(gateway, key=other)
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 2
    _, headers = ask(gateway, key=other)
    assert headers["x-gateway-cache"] == "hit" and chat_calls(fake_openai) == 2
    (row,) = [r for r in gateway.rows(cache="hit")]
    assert row.org_id == gateway.org("other").id


def test_a_shared_scope_is_shared_only_by_orgs_that_opted_in(gateway, fake_openai):
    for name in ("alpha", "beta", "gamma"):
        gateway.new_org(name)
    keys = {name: gateway.new_key(name) for name in ("alpha", "beta", "gamma")}
    savings_override(gateway, "alpha", "exact_cache", shared_scope="team")
    savings_override(gateway, "beta", "exact_cache", shared_scope="team")
    ask(gateway, key=keys["alpha"])
    _, headers = ask(gateway, key=keys["beta"])
    assert headers["x-gateway-cache"] == "hit" and chat_calls(fake_openai) == 1
    _, headers = ask(gateway, key=keys["gamma"])  # not in the scope
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 2
    _, headers = ask(gateway)  # nor is the default org
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 3


# ---- failure and the hot path ------------------------------------------------------------------

def test_a_failing_cache_does_not_fail_the_request(gateway, fake_openai, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cache is down")

    monkeypatch.setattr(STORE, "get", broken)
    monkeypatch.setattr(STORE, "put", broken)
    for _ in range(2):
        reply, headers = ask(gateway)
        assert reply.choices[0].message.content == "Hello from fake fake-gpt."
        assert headers["x-gateway-cache"] == "miss"
    text, _, _ = ask_stream(gateway)
    assert text == "Hello from fake fake-gpt." and chat_calls(fake_openai) == 3
    assert [r.status for r in gateway.rows()] == [200, 200, 200]


def test_no_database_query_on_a_miss_or_a_hit(gateway):
    gateway.flush()
    with database_statements() as statements:
        caches = [ask(gateway)[1]["x-gateway-cache"], ask(gateway)[1]["x-gateway-cache"],
                  ask_stream(gateway, messages=MSG * 2)[2]["x-gateway-cache"],
                  ask_stream(gateway, messages=MSG * 2)[2]["x-gateway-cache"]]
    assert statements == []
    assert caches == ["miss", "hit", "miss", "hit"]
    wait_for(lambda: len(gateway.rows()) == 4)


def test_hits_are_valid_openai_wire_format(gateway):
    body = {"model": FAKE, "messages": MSG, "temperature": 0}
    gateway.post("/v1/chat/completions", body)
    hit = gateway.post("/v1/chat/completions", body)
    assert hit.headers["x-gateway-cache"] == "hit" and hit.headers["content-type"] == "application/json"
    validate(hit.json(), "CreateChatCompletionResponse")
    streamed = gateway.post("/v1/chat/completions", {**body, "stream": True}, stream=True)
    assert streamed.headers["x-gateway-cache"] == "hit"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    datas = [e[len("data: "):] for e in streamed.content.decode().split("\n\n") if e.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    for d in datas[:-1]:
        validate(json.loads(d), "CreateChatCompletionStreamResponse")
