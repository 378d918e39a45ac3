"""Across dialects: OpenAI SDK -> Anthropic provider, and Anthropic SDK -> OpenAI provider.

What each SDK assembles is compared with what the fake upstream sent.
"""

import json

import anthropic
import openai
import orjson
import pytest

from tests.conftest import assemble, configure_routing, wait_for
from tests.fakes.openai_upstream import _hash as openai_fake_hash
from tests.openapi import validate

pytestmark = pytest.mark.usefixtures("fake_anthropic")
MSG = [{"role": "user", "content": "hello there"}]
CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
OPENAI_TOOLS = [{"type": "function", "function": {"name": n, "parameters": CITY}} for n in ("a", "b")]
ANTHROPIC_TOOLS = [{"name": n, "input_schema": CITY} for n in ("a", "b")]
FAKE = "anthropic-test/claude-fake"
THINKING_TOOL = "anthropic-test/claude-thinking-redacted-tool"


def claude(gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)


def upstream_events(fake) -> list[dict]:
    return [json.loads(e.split(b"\ndata: ", 1)[1]) for e in fake.streams[-1]["sent"]]


def check_anthropic_stream(payload: bytes) -> list[dict]:
    """Parse an Anthropic SSE body and check its grammar: message_start, ping, then start/delta/stop
    groups with consecutive indexes and matching delta types, message_delta, message_stop."""
    events = []
    for block in payload.decode().split("\n\n"):
        if block and not block.startswith(":"):
            name_line, data_line = block.split("\n")
            data = json.loads(data_line.removeprefix("data: "))
            assert name_line == "event: " + data["type"]
            events.append(data)
    assert [e["type"] for e in events[:2]] == ["message_start", "ping"]
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    open_block, next_index = None, 0
    allowed = {"text": ("text_delta",), "tool_use": ("input_json_delta",),
               "thinking": ("thinking_delta", "signature_delta")}
    for e in events[2:-2]:
        if e["type"] == "content_block_start":
            assert open_block is None and e["index"] == next_index
            open_block, next_index = e["content_block"]["type"], next_index + 1
        elif e["type"] == "content_block_delta":
            assert e["index"] == next_index - 1 and e["delta"]["type"] in allowed[open_block]
        else:
            assert e == {"type": "content_block_stop", "index": next_index - 1} and open_block
            open_block = None
    assert open_block is None
    return events


# ---- OpenAI client -> Anthropic provider ---------------------------------------------------------

def test_openai_client_text_and_cached_usage(gateway, fake_anthropic):
    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="anthropic-test/claude-cached", messages=[{"role": "system", "content": "be brief"}, *MSG],
        temperature=0.2, stop=["zzz"], user="u-7")
    body = json.loads(raw.content)
    validate(body, "CreateChatCompletionResponse")
    reply = json.loads(fake_anthropic.replies[-1])
    text = body["choices"][0]["message"]["content"]
    assert text == reply["content"][0]["text"] == "Hello from fake claude-cached."
    assert body["choices"][0]["finish_reason"] == "stop" and body["model"] == "anthropic-test/claude-cached"
    u = reply["usage"]  # 7 prompt tokens: 3 cache reads, 1 cache write, 3 uncached
    total = u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    assert body["usage"]["prompt_tokens"] == total == 7
    assert body["usage"]["completion_tokens"] == u["output_tokens"]
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == u["cache_read_input_tokens"] == 3
    sent = fake_anthropic.requests[-1]
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert sent["body"] == {"model": "claude-cached", "max_tokens": 1024, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]}], "system": "be brief",
        "temperature": 0.2, "stop_sequences": ["zzz"], "metadata": {"user_id": "u-7"}}
    (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
    assert row.endpoint == "chat.completions"
    assert (row.input_tokens, row.cached_tokens, row.cache_write_tokens) == (7, 3, 1)
    # 3 cache reads at the cached price, 1 cache write at Anthropic's 1.25x premium
    assert row.charge_micros == 3 * 3000 + 1 * 3750 + 3 * 300 + 4 * 15000


@pytest.mark.parametrize("kwargs, finish, text", [
    ({"max_tokens": 2}, "length", "Hello from"),
    ({"stop": ["fake"]}, "stop", "Hello from "),
])
def test_openai_client_finish_reasons(gateway, fake_anthropic, kwargs, finish, text):
    completion = gateway.sdk().chat.completions.create(model=FAKE, messages=MSG, **kwargs)
    assert completion.choices[0].finish_reason == finish and completion.choices[0].message.content == text
    assert json.loads(fake_anthropic.replies[-1])["content"][0]["text"] == text


def test_openai_client_streamed_parallel_tool_calls_arrive_intact(gateway, fake_anthropic):
    stream = gateway.sdk().chat.completions.create(
        model="anthropic-test/claude-tool-parallel", messages=MSG, tools=OPENAI_TOOLS, stream=True,
        stream_options={"include_usage": True})
    got = assemble(stream, lambda chunk: validate(chunk.model_dump(mode="json", exclude_unset=True),
                                                  "CreateChatCompletionStreamResponse"))
    calls, text, finish, usage = got.calls, got.text, got.finish, got.usage
    sent = {}
    for e in upstream_events(fake_anthropic):
        if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use":
            block = e["content_block"]
            sent[e["index"]] = {"id": block["id"], "name": block["name"], "args": ""}
        elif e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta":
            sent[e["index"]]["args"] += e["delta"]["partial_json"]
    assert list(calls.values()) == list(sent.values())  # every fragment, in order
    assert [json.loads(c["args"]) for c in calls.values()] == [{"city": "Paris"}, {"city": "London"}]
    assert text == "Let me check." and finish == "tool_calls"
    last = upstream_events(fake_anthropic)[-2]["usage"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (last["input_tokens"], last["output_tokens"])


def test_openai_client_tool_results_are_one_user_turn(gateway, fake_anthropic):
    """Parallel tool results (consecutive tool messages) become one user message of tool_result blocks."""
    sdk = gateway.sdk()
    messages = [*MSG]
    first = sdk.chat.completions.create(model="anthropic-test/claude-tool-parallel", messages=messages,
                                        tools=OPENAI_TOOLS)
    calls = first.choices[0].message.tool_calls
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
                 {"role": "tool", "tool_call_id": calls[1].id, "content": "rain"}]
    second = sdk.chat.completions.create(model="anthropic-test/claude-tool-parallel", messages=messages,
                                         tools=OPENAI_TOOLS)
    assert second.choices[0].message.content == "Tool result: sunny | rain"
    sent = fake_anthropic.requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][1:] == [{"type": "tool_use", "id": c.id, "name": c.function.name,
                                       "input": json.loads(c.function.arguments)} for c in calls]
    assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "sunny"},
                                  {"type": "tool_result", "tool_use_id": calls[1].id, "content": "rain"}]


def test_openai_client_truncated_stream_ends_in_an_error(gateway):
    with pytest.raises(openai.APIError):
        for _ in gateway.sdk().chat.completions.create(model="anthropic-test/reset", messages=MSG,
                                                       stream=True):
            pass
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert (row.status, row.input_tokens) == (502, 5)  # the prompt count from message_start


def test_openai_client_gets_openai_errors_from_an_anthropic_upstream(gateway):
    with pytest.raises(openai.RateLimitError) as e:
        gateway.sdk().chat.completions.create(model="anthropic-test/error-429", messages=MSG)
    assert e.value.body["type"] == "rate_limit_error"


# ---- Anthropic client -> OpenAI provider ---------------------------------------------------------

def test_anthropic_client_text_non_stream(gateway, fake_openai):
    message = claude(gateway).messages.create(model="test/fake-cached", max_tokens=50, system="be brief",
                                              messages=MSG, stop_sequences=["zzz"],
                                              extra_body={"temperature": 0.5})  # this SDK has no such arg
    assert message.content[0].text == "Hello from fake fake-cached." and message.stop_reason == "end_turn"
    assert message.model == "test/fake-cached" and message.id.startswith("msg_")
    # OpenAI counts 10 prompt tokens, 5 cached: Anthropic reports the uncached part as input_tokens
    u = message.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.output_tokens) == (5, 5, 4)
    assert fake_openai.requests[-1]["body"] == {
        "model": "fake-cached", "messages": [{"role": "system", "content": "be brief"},
                                             {"role": "user", "content": "hello there"}],
        "max_tokens": 50, "temperature": 0.5, "stop": ["zzz"]}
    (row,) = gateway.rows(endpoint="messages")
    assert (row.input_tokens, row.cached_tokens, row.provider) == (10, 5, "fake")


def test_anthropic_client_max_tokens_is_stop_reason_max_tokens(gateway):
    message = claude(gateway).messages.create(model="test/fake-gpt", max_tokens=2, messages=MSG)
    assert message.stop_reason == "max_tokens" and message.content[0].text == "Hello from"


def test_anthropic_client_tool_use_round_trip(gateway, fake_openai):
    sdk = claude(gateway)
    first = sdk.messages.create(model="test/fake-tool-parallel", max_tokens=100, messages=MSG,
                                tools=ANTHROPIC_TOOLS, tool_choice={"type": "any"})
    sent = fake_openai.requests[-1]["body"]
    assert sent["tool_choice"] == "required" and sent["tools"][0]["function"]["parameters"] == CITY
    assert first.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in first.content] == [
        ("tool_use", "call_" + openai_fake_hash(sent, i)[:24], name, {"city": city})
        for i, (name, city) in enumerate([("a", "Paris"), ("b", "London")])]
    assistant = {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]}
    messages = MSG + [assistant, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": first.content[0].id, "content": "sunny"}]}]
    second = sdk.messages.create(model="test/fake-tool", max_tokens=100, messages=messages,
                                 tools=ANTHROPIC_TOOLS)
    assert second.content[0].text == "Tool result: sunny"
    history = fake_openai.requests[-1]["body"]["messages"]
    assert history[1]["tool_calls"][1] == {"id": first.content[1].id, "type": "function",
                                           "function": {"name": "b", "arguments": '{"city":"London"}'}}
    assert history[-1] == {"role": "tool", "tool_call_id": first.content[0].id, "content": "sunny"}


def test_anthropic_client_stream_raw_events_and_sdk_helper(gateway, fake_openai):
    r = claude(gateway).messages.with_streaming_response.create(
        model="test/fake-tool-parallel", max_tokens=100, messages=MSG, tools=ANTHROPIC_TOOLS, stream=True)
    with r as raw:
        events = check_anthropic_stream(raw.read())
    starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
    assert [(b["type"], b["name"]) for b in starts] == [("tool_use", "a"), ("tool_use", "b")]
    args = {}
    for e in events:
        if e["type"] == "content_block_delta":
            args[e["index"]] = args.get(e["index"], "") + e["delta"]["partial_json"]
    assert [json.loads(a) for a in args.values()] == [{"city": "Paris"}, {"city": "London"}]
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}

    with claude(gateway).messages.stream(model="test/fake-gpt", max_tokens=100, messages=MSG) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from fake fake-gpt." and final.stop_reason == "end_turn"
    # from the usage chunk the gateway asked for
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)
    assert fake_openai.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    rows = wait_for(lambda: len(gateway.rows(stream=True)) == 2 and gateway.rows(stream=True))
    row = rows[1]
    assert (row.endpoint, row.input_tokens, row.output_tokens, row.status) == ("messages", 5, 4, 200)


def test_anthropic_client_truncated_stream_gets_an_error_event(gateway):
    r = claude(gateway).messages.with_streaming_response.create(model="test/reset", max_tokens=100,
                                                                messages=MSG, stream=True)
    with r as raw:
        payload = raw.read()
    error = [b for b in payload.split(b"\n\n") if b.startswith(b"event: error")]
    message = "The upstream provider ended the stream before it was complete."
    assert len(error) == 1 and json.loads(error[0].split(b"data: ", 1)[1]) == {
        "type": "error", "error": {"type": "api_error", "message": message}}
    assert b"message_stop" not in payload
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert row.status == 502 and row.usage_estimated and row.output_tokens == 2  # two deltas relayed


def test_anthropic_client_gets_anthropic_errors_from_an_openai_upstream(gateway):
    with pytest.raises(anthropic.RateLimitError) as e:
        claude(gateway).messages.create(model="test/error-429", max_tokens=10, messages=MSG)
    message = "The upstream provider is rate limiting requests; retry later."
    assert e.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": message}}


# ---- Anthropic on both ends, translation forced (a stage changed the request) ---------------------

@pytest.fixture
def translating(gateway):
    configure_routing(gateway, translate=["fakeanthropic"])
    return gateway


def test_forced_translation_keeps_thinking_signatures_and_tools(translating, fake_anthropic):
    sdk = claude(translating)
    first = sdk.messages.create(model=THINKING_TOOL, max_tokens=300, messages=MSG, tools=ANTHROPIC_TOOLS[:1],
                                thinking={"type": "enabled", "budget_tokens": 100})
    reply = orjson.loads(fake_anthropic.replies[-1])
    assert [b.model_dump(exclude_none=True) for b in first.content] == reply["content"]
    assert fake_anthropic.requests[-1]["body"]["thinking"] == {"type": "enabled", "budget_tokens": 100}
    messages = MSG + [{"role": "assistant", "content": reply["content"]},
                      {"role": "user", "content": [
                          {"type": "tool_result", "tool_use_id": first.content[-1].id,
                           "content": [{"type": "text", "text": "cold"}], "is_error": True},
                          {"type": "text", "text": "and?"}]}]
    with sdk.messages.stream(model=THINKING_TOOL, max_tokens=300, messages=messages,
                             tools=ANTHROPIC_TOOLS[:1]) as stream:
        final = stream.get_final_message()
    sent = fake_anthropic.requests[-1]["body"]["messages"]
    assert sent[1]["content"] == reply["content"]  # signed thinking went back intact (else the fake says 400)
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": first.content[-1].id, "content": "cold", "is_error": True},
        {"type": "text", "text": "and?"}]
    streamed = [b.model_dump(exclude_none=True) for b in final.content]
    assert streamed[0]["type"] == "thinking" and streamed[-1] == {"type": "text", "text": "Tool result: cold"}
    sent_events = upstream_events(fake_anthropic)
    assert streamed[0]["signature"] == next(e["delta"]["signature"] for e in sent_events
                                            if e.get("delta", {}).get("type") == "signature_delta")
