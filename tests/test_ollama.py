"""The Ollama provider (native /api/chat, NDJSON streams) driven through the gateway by the official SDKs."""

import base64
import json

import anthropic
import openai
import orjson
import pytest

from gateway.memo import MEMO
from gateway.providers import ollama
from tests.conftest import assemble, wait_for
from tests.fakes import LEAK_MARKER
from tests.fakes.ollama_upstream import TAGS
from tests.openapi import validate

MSG = [{"role": "user", "content": "hello there"}]
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image bytes").decode()


@pytest.fixture
def gw(fake_ollama, gateway_factory):
    return gateway_factory()


def sent(fake_ollama) -> dict:
    return fake_ollama.requests[-1]["body"]


def test_text_round_trip_with_usage_and_options(gw, fake_ollama):
    raw = gw.sdk().chat.completions.with_raw_response.create(
        model="ollama-test/llama3.2", messages=[{"role": "system", "content": "be brief"}, *MSG],
        temperature=0.2, top_p=0.9, seed=7, stop=["zzz"], max_tokens=50)
    body = json.loads(raw.content)
    validate(body, "CreateChatCompletionResponse")
    assert body["model"] == "ollama-test/llama3.2"
    assert body["choices"][0]["message"]["content"] == "Hello from ollama llama3.2."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == (3 + 2 + 3 + 2, 4)
    # Ollama's native request: explicit stream flag, sampling settings under `options`, nothing invented
    assert sent(fake_ollama) == {
        "model": "llama3.2", "stream": False,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "options": {"temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["zzz"], "num_predict": 50}}
    assert fake_ollama.requests[-1]["path"] == "/api/chat"
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.upstream_model, row.input_tokens, row.output_tokens) == ("fakeollama", "llama3.2", 10, 4)
    assert row.charge_micros == 10 * 1000 + 4 * 2000


def test_num_predict_cut_is_finish_reason_length(gw):
    completion = gw.sdk().chat.completions.create(model="ollama-test/llama3.2", messages=MSG, max_tokens=2)
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Hello from"


def test_json_mode_becomes_format(gw, fake_ollama):
    gw.sdk().chat.completions.create(model="ollama-test/llama3.2", messages=MSG,
                                     response_format={"type": "json_object"})
    assert sent(fake_ollama)["format"] == "json"
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    gw.sdk().chat.completions.create(model="ollama-test/llama3.2", messages=MSG, response_format={
        "type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    assert sent(fake_ollama)["format"] == schema


def test_stream_text_and_usage(gw, fake_ollama):
    raw = gw.sdk().chat.completions.with_raw_response.create(
        model="ollama-test/llama3.2", messages=MSG, stream=True, stream_options={"include_usage": True})
    chunks = list(raw.parse())
    for c in chunks:
        validate(c.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionStreamResponse")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from ollama llama3.2."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.prompt_tokens == 5 and chunks[-1].usage.completion_tokens == 4
    assert sent(fake_ollama)["stream"] is True
    (row,) = wait_for(lambda: gw.rows(stream=True))
    assert (row.input_tokens, row.output_tokens, row.status, row.usage_estimated) == (5, 4, 200, False)


def test_tool_call_round_trip(gw, fake_ollama):
    sdk = gw.sdk()
    messages = [{"role": "user", "content": "weather in Paris?"}]
    first = sdk.chat.completions.create(model="ollama-test/tool", messages=messages, tools=WEATHER)
    validate(first.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Paris"}
    assert call.id  # Ollama sends no id: the gateway makes one so the client can answer the call
    assert sent(fake_ollama)["tools"] == WEATHER
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    second = sdk.chat.completions.create(model="ollama-test/tool", messages=messages, tools=WEATHER)
    assert second.choices[0].message.content == "Tool result: sunny, 21C (get_weather)"
    history = sent(fake_ollama)["messages"]
    # arguments go back to Ollama as an object; the result names its tool, as Ollama matches by name
    assert history[1]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"location": "Paris"}}}]
    assert history[2] == {"role": "tool", "content": "sunny, 21C", "tool_name": "get_weather"}


def test_tool_choice_none_sends_no_tools(gw, fake_ollama):
    completion = gw.sdk().chat.completions.create(model="ollama-test/tool", messages=MSG, tools=WEATHER,
                                                  tool_choice="none")
    assert completion.choices[0].message.content == "Hello from ollama tool."
    assert "tools" not in sent(fake_ollama)


def test_streamed_parallel_tool_calls_arrive_intact(gw):
    tools = [{"type": "function", "function": {"name": n, "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}
        for n in ("a", "b")]
    stream = gw.sdk().chat.completions.create(model="ollama-test/tool-parallel", messages=MSG, tools=tools,
                                              stream=True, stream_options={"include_usage": True})
    got = assemble(stream)
    calls, finish, usage = got.calls, got.finish, got.usage
    assert [c["name"] for c in calls.values()] == ["a", "b"]
    assert [json.loads(c["args"]) for c in calls.values()] == [{"city": "Paris", "days": 42},
                                                               {"city": "London", "days": 42}]
    assert all(c["id"] for c in calls.values()) and calls[0]["id"] != calls[1]["id"]
    assert finish == "tool_calls" and usage.completion_tokens > 0


def test_inline_images_go_as_base64(gw, fake_ollama):
    gw.sdk().chat.completions.create(model="ollama-test/llama3.2", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    assert sent(fake_ollama)["messages"] == [{"role": "user", "content": "what is this?", "images": [PNG]}]


def test_image_by_url_is_400(gw, fake_ollama):
    before = len(fake_ollama.requests)
    with pytest.raises(openai.BadRequestError) as e:
        gw.sdk().chat.completions.create(model="ollama-test/llama3.2", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert "inline" in e.value.message
    assert len(fake_ollama.requests) == before


def test_truncated_ndjson_stream_ends_in_an_error_event(gw):
    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in gw.sdk().chat.completions.create(model="ollama-test/truncate", messages=MSG, stream=True):
            got.append(chunk)
    assert got and "ended the stream" in e.value.message
    (row,) = wait_for(lambda: gw.rows(stream=True))
    assert row.status == 502 and row.usage_estimated  # what was generated is still metered


def test_midstream_error_object_ends_the_stream_without_leaking(gw):
    r = gw.post("/v1/chat/completions", {"model": "ollama-test/midstream-error", "messages": MSG, "stream": True},
                stream=True)
    body = r.content.decode()
    assert r.status_code == 200 and LEAK_MARKER not in body
    events = [json.loads(e[len("data: "):]) for e in body.split("\n\n") if e.startswith("data: {")]
    assert events[-1]["error"]["message"] == "The upstream provider reported an error during the stream."
    validate(events[-1], "ErrorResponse")
    assert "[DONE]" not in body


@pytest.mark.parametrize("model, status", [("ollama-test/error-400", 400), ("ollama-test/error-429", 429),
                                           ("ollama-test/error-500", 502), ("ollama-test/missing", 502)])
def test_upstream_errors_are_mapped_and_not_leaked(gw, model, status):
    for stream in (False, True):
        r = gw.post("/v1/chat/completions", {"model": model, "messages": MSG, "stream": stream})
        assert r.status_code == status
        validate(r.json(), "ErrorResponse")
        assert LEAK_MARKER not in r.text and "not found" not in r.text


def test_zero_priced_local_model_costs_nothing(gw):
    raw = gw.sdk().chat.completions.with_raw_response.create(model="ollama-test/free", messages=MSG)
    assert raw.parse().choices[0].message.content == "Hello from ollama llama3.2."
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    assert (row.input_tokens, row.output_tokens, row.charge_micros, row.benchmark_micros) == (5, 4, 0, 0)
    assert raw.headers["x-gateway-charge"] == "0.000000"


def test_list_models_reads_api_tags(gw, fake_ollama):
    provider = MEMO.catalog.providers["fakeollama"]
    assert ollama.list_models(provider) == TAGS
    assert fake_ollama.requests[-1]["path"] == "/api/tags"


# ---- the Anthropic SDK against the same Ollama provider ----------------------------------------------

def claude(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)


def test_anthropic_sdk_text_and_thinking(gw, fake_ollama):
    msg = claude(gw).messages.create(model="ollama-test/think", max_tokens=100, system="be brief", messages=MSG)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Let me think." and msg.content[1].text == "Hello from ollama think."
    assert msg.stop_reason == "end_turn" and (msg.usage.input_tokens, msg.usage.output_tokens) == (10, 7)
    assert sent(fake_ollama)["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent(fake_ollama)["options"] == {"num_predict": 100}


def test_anthropic_sdk_stream_with_tool_use(gw):
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]
    with claude(gw).messages.stream(model="ollama-test/tool", max_tokens=100, messages=MSG, tools=tools) as stream:
        final = stream.get_final_message()
    (block,) = [b for b in final.content if b.type == "tool_use"]
    assert block.name == "get_weather" and block.input == {"location": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens > 0


def test_anthropic_sdk_errors_have_anthropic_shape(gw):
    with pytest.raises(anthropic.RateLimitError) as e:
        claude(gw).messages.create(model="ollama-test/error-429", max_tokens=10, messages=MSG)
    body = orjson.loads(e.value.response.content)
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert LEAK_MARKER not in e.value.response.text


# ---- pure wire conversion ----------------------------------------------------------------------------

def test_decode_stream_handles_any_chunking():
    lines = [{"model": "m", "message": {"role": "assistant", "content": "Hi"}, "done": False},
             {"model": "m", "message": {"role": "assistant", "content": " there"}, "done": False},
             {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "length",
              "prompt_eval_count": 3, "eval_count": 2}]
    raw = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    events = list(ollama.decode_stream(iter([raw[i:i + 7] for i in range(0, len(raw), 7)])))
    assert [e.kind for e in events] == ["start", "text", "text", "finish", "usage", "end"]
    assert events[3].finish_reason == "length" and (events[4].usage.input_tokens, events[4].usage.output_tokens) == (3, 2)
