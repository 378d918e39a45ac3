"""POST /v1/messages through the official anthropic SDK to an Anthropic provider: bytes pass through."""

import json
import re

import anthropic
import pytest
import requests

from tests.conftest import ANTHROPIC_UPSTREAM_KEY, wait_for
from tests.fakes.anthropic_upstream import prompt_tokens

pytestmark = pytest.mark.usefixtures("fake_anthropic")
MSG = [{"role": "user", "content": "hello there"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = [{"name": "get_weather", "description": "Weather now", "input_schema": CITY}]
FAKE = "anthropic-test/claude-fake"


def as_served(upstream: bytes, name: str | None = None, slug: str | None = None) -> bytes:
    """The upstream's bytes with its model name replaced by the slug that served, as the gateway relays them."""
    if name is None:
        found = re.search(rb'"model":"([^"]*)"', upstream)
        if found is None:
            return upstream
        name = found.group(1).decode()
        slug = "anthropic-test/" + name
    return upstream.replace(f'"model":"{name}"'.encode(), f'"model":"{slug}"'.encode())
THINKING_TOOL = "anthropic-test/claude-thinking-redacted-tool"


def client(gateway, key=None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key or gateway.api_key, max_retries=0)


def raw_post(gateway, body, path="/v1/messages", **headers) -> requests.Response:
    h = {"x-api-key": gateway.api_key, "anthropic-version": "2023-06-01", **headers}
    return requests.post(gateway.url + path, json=body, headers=h, stream=bool(body.get("stream")))


def assistant_turn(message) -> dict:
    """The SDK's message, sent back as the assistant turn (every block as received)."""
    return {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]}


def tool_results(*results: tuple[str, str]) -> dict:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": content}
                                        for tool_id, content in results]}


def sse_events(payload: bytes) -> list[tuple[str | None, dict | str]]:
    """(event name, parsed data) for each SSE event; comments come back as (None, text)."""
    out = []
    for block in payload.decode().split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            out.append((None, block))
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_non_stream_passes_through_unchanged_and_is_metered(gateway, fake_anthropic):
    raw = client(gateway).messages.with_raw_response.create(model=FAKE, max_tokens=100, messages=MSG)
    message = raw.parse()
    assert message.content[0].text == "Hello from fake claude-fake."
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)
    # the upstream's bytes, as sent, but for `model`: the slug that served (README, "The model field")
    assert raw.http_response.content == as_served(fake_anthropic.replies[-1], "claude-fake", FAKE)
    assert raw.http_response.headers["x-gateway-route"] == "fakeanthropic/claude-fake"
    sent = fake_anthropic.requests[-1]
    assert sent["path"] == "/v1/messages"
    # only the model was rewritten
    assert sent["body"] == {"model": "claude-fake", "max_tokens": 100, "messages": MSG}
    assert sent["headers"]["x-api-key"] == ANTHROPIC_UPSTREAM_KEY
    assert sent["headers"]["anthropic-version"] == raw.http_response.request.headers["anthropic-version"]
    assert raw.headers["x-gateway-charge"] == "0.075000"  # 5 x $3000/Mtok + 4 x $15000/Mtok
    (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
    assert (row.endpoint, row.model, row.provider, row.upstream_model) == (
        "messages", "anthropic-test/claude-fake", "fakeanthropic", "claude-fake")
    assert (row.input_tokens, row.output_tokens, row.status, row.charge_micros) == (5, 4, 200, 75000)


def test_missing_max_tokens_is_filled_and_client_headers_are_forwarded(gateway, fake_anthropic):
    r = raw_post(gateway, {"model": FAKE, "messages": MSG, "top_k": 5,
                           "metadata": {"user_id": "u-1"}},
                 **{"anthropic-version": "2023-01-01", "anthropic-beta": "prompt-caching-2024-07-31"})
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "Hello from fake claude-fake."
    sent = fake_anthropic.requests[-1]
    # max_tokens comes from the model's max_output_tokens (1024 in the test catalog); the rest as sent
    assert sent["body"] == {"model": "claude-fake", "messages": MSG, "top_k": 5,
                            "metadata": {"user_id": "u-1"}, "max_tokens": 1024}
    assert sent["headers"]["anthropic-version"] == "2023-01-01"
    assert sent["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "authorization" not in sent["headers"]  # the client's gateway key never goes upstream
    assert sent["headers"]["x-api-key"] == ANTHROPIC_UPSTREAM_KEY


def test_stream_with_the_sdk_helper(gateway):
    with client(gateway).messages.stream(model=FAKE, max_tokens=100, messages=MSG) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == "Hello from fake claude-fake."
    assert final.stop_reason == "end_turn" and (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert (row.endpoint, row.input_tokens, row.output_tokens, row.status) == ("messages", 5, 4, 200)


def test_stream_bytes_are_the_upstream_bytes_plus_a_cost_comment(gateway, fake_anthropic):
    r = raw_post(gateway, {"model": FAKE, "max_tokens": 100, "stream": True,
                           "messages": MSG})
    assert r.headers["content-type"].startswith("text/event-stream")
    payload = r.content
    upstream = as_served(b"".join(fake_anthropic.streams[-1]["sent"]))
    assert payload.startswith(upstream)
    events = sse_events(payload)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["message_delta", "message_stop", None]
    assert events[-1][1].startswith(": gateway-cost ")
    assert payload[len(upstream):].startswith(b": gateway-cost")
    assert all(data["type"] == name for name, data in events[:-1])


def test_tool_use_round_trip(gateway, fake_anthropic):
    sdk = client(gateway)
    first = sdk.messages.create(model="anthropic-test/claude-tool", max_tokens=200, messages=MSG,
                                tools=WEATHER)
    call = first.content[-1]
    assert first.stop_reason == "tool_use" and first.content[0].text == "Let me check."
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Paris"})
    messages = MSG + [assistant_turn(first), tool_results((call.id, "sunny, 21C"))]
    second = sdk.messages.create(model="anthropic-test/claude-tool", max_tokens=200, messages=messages,
                                 tools=WEATHER)
    assert second.content[0].text == "Tool result: sunny, 21C"
    assert fake_anthropic.requests[-1]["body"]["messages"][1]["content"][1]["id"] == call.id


def test_thinking_blocks_and_signatures_pass_through_byte_for_byte(gateway, fake_anthropic):
    """The streamed thinking, its signature and the redacted block reach the client as the upstream sent
    them; sent back on the next turn, the upstream accepts them (it rejects any altered signature)."""
    sdk = client(gateway)
    with sdk.messages.with_streaming_response.create(
            model=THINKING_TOOL, max_tokens=500, messages=MSG, tools=WEATHER,
            thinking={"type": "enabled", "budget_tokens": 256}, stream=True) as raw:
        payload = raw.read()
    upstream = as_served(b"".join(fake_anthropic.streams[-1]["sent"]))
    assert payload[:len(upstream)] == upstream and payload[len(upstream):].startswith(b": gateway-cost")
    assert fake_anthropic.requests[-1]["body"]["thinking"] == {"type": "enabled", "budget_tokens": 256}

    with sdk.messages.stream(model=THINKING_TOOL, max_tokens=500, messages=MSG, tools=WEATHER) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "redacted_thinking", "text", "tool_use"]
    thinking = final.content[0]
    assert thinking.signature.startswith("EqQBCgIYAh") and thinking.thinking.startswith("The user wrote")
    messages = MSG + [assistant_turn(final), tool_results((final.content[-1].id, "rain"))]
    second = sdk.messages.create(model=THINKING_TOOL, max_tokens=500, messages=messages, tools=WEATHER)
    assert second.content[-1].text == "Tool result: rain"
    assert fake_anthropic.requests[-1]["body"]["messages"][1]["content"][0]["signature"] == thinking.signature


def test_cached_tokens_are_counted_and_priced_at_the_cached_price(gateway):
    message = client(gateway).messages.create(model="anthropic-test/claude-cached", max_tokens=100,
                                              messages=MSG)
    u = message.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (2, 2, 1)
    (row,) = gateway.rows(endpoint="messages")
    # all 5 prompt tokens count as input; 2 were cache reads ($300/Mtok instead of $3000/Mtok)
    assert (row.input_tokens, row.cached_tokens, row.cache_write_tokens, row.output_tokens) == (5, 2, 1, 4)
    # ... and 1 was a cache write, at Anthropic's 1.25x write premium
    assert row.charge_micros == 2 * 3000 + 1 * 3750 + 2 * 300 + 4 * 15000
    # the gateway placed no breakpoint (the prompt is short): these reads and writes are the
    # client's, a direct call would have had them too, so the benchmark is the same bill
    assert row.benchmark_micros == row.charge_micros and row.saved_by == ""


def test_count_tokens_passes_through_and_is_recorded_uncharged(gateway, fake_anthropic):
    body = {"model": FAKE, "messages": MSG, "system": "be brief", "tools": WEATHER}
    count = client(gateway).messages.count_tokens(**body)
    assert count.input_tokens == prompt_tokens(body)  # the upstream's own count
    sent = fake_anthropic.requests[-1]
    assert sent["path"] == "/v1/messages/count_tokens" and sent["body"] == {**body, "model": "claude-fake"}
    (row,) = gateway.rows(endpoint="messages.count_tokens")
    assert (row.status, row.charge_micros, row.input_tokens, row.provider) == (200, 0, 0, "fakeanthropic")


def test_count_tokens_passes_auth_and_the_gate(gateway, fake_anthropic):
    before = len(fake_anthropic.requests)
    with pytest.raises(anthropic.AuthenticationError):
        client(gateway, key="gw-not-a-key").messages.count_tokens(model=FAKE, messages=MSG)
    gateway.new_org("broke", usd=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        client(gateway, key=gateway.new_key("broke")).messages.count_tokens(model=FAKE, messages=MSG)
    assert e.value.status_code == 402 and e.value.body["error"]["type"] == "billing_error"
    assert len(fake_anthropic.requests) == before


def test_count_tokens_for_another_provider_is_estimated_locally(gateway, fake_openai):
    before = len(fake_openai.requests)
    count = client(gateway).messages.count_tokens(model="test/fake-gpt", messages=MSG, system="be brief")
    assert 5 <= count.input_tokens <= 20
    assert len(fake_openai.requests) == before  # no upstream call
    (row,) = gateway.rows(endpoint="messages.count_tokens")
    assert (row.status, row.charge_micros) == (200, 0)


def test_truncated_stream_ends_in_an_error_event_and_a_502_row(gateway, fake_anthropic):
    r = raw_post(gateway, {"model": "anthropic-test/reset", "max_tokens": 100, "stream": True,
                           "messages": MSG})
    payload = r.content
    upstream = as_served(b"".join(fake_anthropic.streams[-1]["sent"]))
    assert payload.startswith(upstream)  # what arrived was relayed before the error
    events = [(n, d) for n, d in sse_events(payload) if n is not None]
    name, data = events[-1]
    assert name == "error" and data["type"] == "error" and data["error"]["type"] == "api_error"
    assert "message_stop" not in [n for n, _ in events]
    with pytest.raises(anthropic.APIStatusError):
        with client(gateway).messages.stream(model="anthropic-test/reset", max_tokens=100, messages=MSG) as s:
            s.get_final_message()
    rows = wait_for(lambda: len(gateway.rows(stream=True)) == 2 and gateway.rows(stream=True))
    for row in rows:
        # input from message_start, output counted from the deltas relayed before the cut
        assert (row.status, row.input_tokens, row.output_tokens, row.usage_estimated) == (502, 5, 2, True)
        assert row.charge_micros == 5 * 3000 + 2 * 15000


def test_upstream_error_event_mid_stream_reaches_the_client_and_the_ledger(gateway):
    with pytest.raises(anthropic.APIStatusError) as e:
        with client(gateway).messages.stream(model="anthropic-test/midstream-error", max_tokens=100,
                                             messages=MSG) as s:
            s.get_final_message()
    assert e.value.body["error"]["type"] == "overloaded_error"
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert row.status == 502 and row.input_tokens == 5


def test_anthropic_key_in_the_environment_enables_claude_models_on_first_run(gateway_factory):
    gateway = gateway_factory(config_path=None, env_provider_keys={"anthropic": "sk-ant-from-env"})
    r = requests.get(gateway.v1 + "/models", headers={"Authorization": f"Bearer {gateway.api_key}"})
    claude = {m["id"]: m for m in r.json()["data"] if m["id"].startswith("anthropic/")}
    assert {"anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5"} <= set(claude)
    sonnet = claude["anthropic/claude-sonnet-4-5"]
    assert sonnet["pricing"] == {"input_per_mtok": "3.000000", "output_per_mtok": "15.000000",
                                 "cached_input_per_mtok": "0.300000"}
    assert sonnet["max_output_tokens"] == 64000 and sonnet["routes"][0]["provider"] == "anthropic"
    assert not any(m["id"].startswith("openai/") for m in r.json()["data"])  # only the kind whose key is set
