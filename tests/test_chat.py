"""POST /v1/chat/completions through the official openai SDK: non-stream, stream, tools, pass-through."""

import json

import orjson

from tests.conftest import assemble, wait_for
from tests.openapi import validate


def ask(sdk, model="test/fake-gpt", **kw):
    return sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello there"}], **kw)


def test_non_stream_completes_and_carries_cost_headers(gateway, fake_openai):
    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": "hello there"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from fake fake-gpt."
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 4
    validate(orjson.loads(raw.content), "CreateChatCompletionResponse")
    h = raw.headers
    assert h["x-request-id"].startswith("req_")
    # 5 prompt tokens at $1000/Mtok + 4 completion tokens at $2000/Mtok = $0.013
    assert h["x-gateway-benchmark-cost"] == "0.013000"
    assert h["x-gateway-charge"] == "0.013000"
    assert h["x-gateway-saved"] == "0.000000"
    assert h["x-gateway-cache"] == "miss"
    # the model was rewritten to the route's upstream model, nothing else changed
    assert fake_openai.requests[-1]["body"] == {"model": "fake-gpt",
                                                "messages": [{"role": "user", "content": "hello there"}]}
    assert fake_openai.requests[-1]["headers"]["authorization"] == "Bearer sk-upstream-test"


def test_alias_resolves_to_its_slug(gateway, fake_openai):
    assert ask(gateway.sdk(), model="fast").choices[0].message.content == "Hello from fake fake-gpt."
    assert gateway.rows()[-1].model == "test/fake-gpt"
    assert gateway.rows()[-1].requested_model == "fast"


def test_everything_the_client_sends_passes_through(gateway, fake_openai):
    extra = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
             "tool_choice": "auto", "response_format": {"type": "json_object"}, "seed": 7, "logprobs": True,
             "top_logprobs": 2, "temperature": 0.3, "x_vendor_field": {"nested": [1, 2]}}
    completion = gateway.sdk().chat.completions.create(
        model="test/echo", messages=[{"role": "user", "content": "hi"}],
        tools=extra["tools"], tool_choice="auto", response_format={"type": "json_object"}, seed=7,
        logprobs=True, top_logprobs=2, temperature=0.3, extra_body={"x_vendor_field": {"nested": [1, 2]}})
    received = json.loads(completion.choices[0].message.content)
    assert received["model"] == "echo"
    for k, v in extra.items():
        assert received[k] == v, k


def test_stream_relays_chunks_and_hides_the_usage_it_asked_for(gateway, fake_openai):
    stream = ask(gateway.sdk(), stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from fake fake-gpt."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    # ...but the gateway asked upstream, so the stream is metered
    assert fake_openai.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert (row.stream, row.input_tokens, row.output_tokens, row.status) == (True, 5, 4, 200)


def test_stream_with_usage_requested_by_client(gateway):
    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": "hello there"}], stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-gateway-cache"] == "miss"
    chunks = list(raw.parse())
    for c in chunks:
        validate(c.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionStreamResponse")
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 9


def test_stream_events_arrive_in_wire_format(gateway):
    """Raw SSE: every data event is a valid chunk, the stream ends with [DONE] and a cost comment."""
    r = gateway.post("/v1/chat/completions", {"model": "test/fake-gpt", "stream": True,
                                               "messages": [{"role": "user", "content": "hello there"}]},
                     stream=True)
    body = r.content.decode()
    events = [e for e in body.split("\n\n") if e]
    datas = [e[len("data: "):] for e in events if e.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    for d in datas[:-1]:
        validate(json.loads(d), "CreateChatCompletionStreamResponse")
    trailer = events[-1]
    assert trailer.startswith(": gateway-cost ") and "charge=0.013000" in trailer
    assert r.headers["x-gateway-cost-status"] == "estimate"


def test_tool_call_round_trip(gateway, fake_openai):
    sdk = gateway.sdk()
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                                              "required": ["location"]}}}]
    messages = [{"role": "user", "content": "weather in Paris?"}]
    first = sdk.chat.completions.create(model="test/fake-tool", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    second = sdk.chat.completions.create(model="test/fake-tool", messages=messages, tools=tools)
    assert second.choices[0].message.content == "Tool result: sunny, 21C"
    assert fake_openai.requests[-1]["body"]["messages"][1]["tool_calls"][0]["id"] == call.id


def test_streamed_parallel_tool_calls_arrive_intact(gateway):
    tools = [{"type": "function", "function": {"name": n, "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}} for n in ("a", "b")]
    stream = gateway.sdk().chat.completions.create(
        model="test/fake-tool-parallel", messages=[{"role": "user", "content": "go"}], tools=tools, stream=True)
    calls = assemble(stream).calls
    assert [c["name"] for c in calls.values()] == ["a", "b"]
    assert [json.loads(c["args"]) for c in calls.values()] == [{"city": "Paris"}, {"city": "London"}]
