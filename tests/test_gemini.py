"""The Gemini adapter: OpenAI and Anthropic SDK clients in, Google's Gemini API wire out, and back.

The fake (tests/fakes/gemini_upstream.py) answers as Google does and rejects what Google rejects:
schema keys outside the OpenAPI subset, function responses that don't answer the previous turn's calls.
"""

import base64
import json

import anthropic
import openai
import pytest
import requests

from gateway.memo import ProviderInfo, RouteInfo
from gateway.providers import gemini
from gateway.providers.base import Call
from gateway.wire.canonical import ChatRequest, Message, Part, Tool, ToolCall
from tests.conftest import GEMINI_UPSTREAM_KEY, assemble, wait_for
from tests.fakes.gemini_upstream import LEAK_MARKER, prompt_tokens
from tests.openapi import validate

pytestmark = pytest.mark.usefixtures("fake_gemini")
MSG = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now", "parameters": {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": False,
        "properties": {"city": {"type": "string", "format": "uri-reference"},
                       "days": {"type": ["integer", "null"]}},
        "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "enum": ["utc", "local"]}}}}}


def test_non_stream_text_round_trip(gateway, fake_gemini):
    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="gemini-test/gemini-fake", messages=MSG, temperature=0.2, top_p=0.9, max_tokens=50,
        stop=["zzz"], seed=7)
    body = json.loads(raw.content)
    validate(body, "CreateChatCompletionResponse")
    assert body["model"] == "gemini-test/gemini-fake"
    assert body["choices"][0]["message"]["content"] == "Hello from fake gemini gemini-fake."
    assert body["choices"][0]["finish_reason"] == "stop"
    sent = fake_gemini.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-fake:generateContent"
    assert sent["headers"]["x-goog-api-key"] == GEMINI_UPSTREAM_KEY and "authorization" not in sent["headers"]
    assert sent["body"] == {
        "contents": [{"role": "user", "parts": [{"text": "hello there"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["zzz"],
                             "seed": 7}}
    prompt = prompt_tokens(sent["body"])
    assert body["usage"]["prompt_tokens"] == prompt and body["usage"]["completion_tokens"] == 5
    (row,) = wait_for(lambda: gateway.rows(request_id=raw.headers["x-request-id"]))
    assert (row.provider, row.upstream_model, row.input_tokens, row.output_tokens, row.status) == (
        "fakegemini", "gemini-fake", prompt, 5, 200)


def test_stream_text_matches_what_the_upstream_sent(gateway, fake_gemini):
    stream = gateway.sdk().chat.completions.create(model="gemini-test/gemini-fake", messages=MSG, stream=True,
                                                   stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        validate(chunk.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionStreamResponse")
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    sent = fake_gemini.streams[-1]
    assert sent["completed"] and fake_gemini.requests[-1]["query"] == {"alt": ["sse"]}
    assert fake_gemini.requests[-1]["path"] == "/v1beta/models/gemini-fake:streamGenerateContent"
    assert text == "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in sent["chunks"])
    assert finish == "stop"
    last = sent["chunks"][-1]["usageMetadata"]
    counts = (usage.prompt_tokens, usage.completion_tokens)
    assert counts == (last["promptTokenCount"], last["candidatesTokenCount"])
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert (row.input_tokens, row.output_tokens, row.status) == (*counts, 200)


def test_tool_call_and_its_result_round_trip(gateway, fake_gemini):
    sdk = gateway.sdk()
    first = sdk.chat.completions.create(model="gemini-test/gemini-tool", messages=MSG, tools=[TIME, WEATHER],
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    sent = fake_gemini.requests[-1]["body"]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY",
                                                            "allowedFunctionNames": ["get_weather"]}}
    params = sent["tools"][0]["functionDeclarations"][1]["parameters"]
    assert params == {"type": "OBJECT", "required": ["city"], "properties": {
        "city": {"type": "STRING"}, "days": {"type": "INTEGER", "nullable": True}}}
    (call,) = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 42}
    assert call.id.startswith("call_")
    second = sdk.chat.completions.create(model="gemini-test/gemini-tool", tools=[TIME, WEATHER], messages=[
        *MSG, first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}])
    assert second.choices[0].message.content == "Tool result: sunny, 21C"
    contents = fake_gemini.requests[-1]["body"]["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": 42}}}]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny, 21C"}}}]}


def test_streamed_parallel_tool_calls_arrive_intact_and_answer_in_one_turn(gateway, fake_gemini):
    sdk = gateway.sdk()
    stream = sdk.chat.completions.create(model="gemini-test/gemini-tool-parallel", messages=MSG,
                                         tools=[WEATHER, TIME], stream=True)
    got = assemble(stream)
    calls, finish = got.calls, got.finish
    upstream = [p["functionCall"] for c in fake_gemini.streams[-1]["chunks"]
                for p in c["candidates"][0]["content"]["parts"]]
    assert [{"name": c["name"], "args": json.loads(c["args"])} for c in calls.values()] == upstream
    assert finish == "tool_calls" and len({c["id"] for c in calls.values()}) == 2
    answer = sdk.chat.completions.create(model="gemini-test/gemini-tool-parallel", tools=[WEATHER, TIME],
                                         messages=[
        *MSG, {"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["args"]}}
            for c in calls.values()]},
        *[{"role": "tool", "tool_call_id": c["id"], "content": f"result {i}"} for i, c in calls.items()]])
    assert answer.choices[0].message.content == "Tool result: result 0; result 1"
    turn = fake_gemini.requests[-1]["body"]["contents"][-1]
    assert [p["functionResponse"]["name"] for p in turn["parts"]] == ["get_weather", "get_time"]


def test_thought_signature_survives_the_client_round_trip(gateway, fake_gemini):
    sdk = gateway.sdk()
    first = sdk.chat.completions.create(model="gemini-test/gemini-tool-thinking", messages=MSG,
                                        tools=[WEATHER])
    (call,) = first.choices[0].message.tool_calls
    signature = "c2lnbmF0dXJlLW9mLXRoZS10aG91Z2h0"  # what the fake put on the functionCall part
    assert call.id.endswith("__thought__" + signature)
    assert first.usage.completion_tokens == 5 + 1 + 7  # the call, its compact args, and the thoughts
    sdk.chat.completions.create(model="gemini-test/gemini-tool-thinking", tools=[WEATHER], messages=[
        *MSG, first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "rain"}])
    model_turn = fake_gemini.requests[-1]["body"]["contents"][1]
    assert model_turn["parts"][0]["thoughtSignature"] == signature


def test_cached_tokens_and_finish_reasons(gateway):
    sdk = gateway.sdk()
    cached = sdk.chat.completions.create(model="gemini-test/gemini-cached", messages=MSG)
    assert cached.usage.prompt_tokens_details.cached_tokens == cached.usage.prompt_tokens // 2 > 0
    (row,) = wait_for(lambda: gateway.rows(model="gemini-test/gemini-cached"))
    assert row.cached_tokens == cached.usage.prompt_tokens // 2
    short = sdk.chat.completions.create(model="gemini-test/gemini-fake", messages=MSG, max_tokens=2)
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == ("Hello from", "length")
    blocked = sdk.chat.completions.create(model="gemini-test/gemini-safety", messages=MSG)
    assert blocked.choices[0].finish_reason == "content_filter"


def test_json_mode_and_images_are_translated(gateway, fake_gemini):
    pixel = base64.b64encode(b"\x89PNG fake").decode()
    gateway.sdk().chat.completions.create(
        model="gemini-test/gemini-fake",
        response_format={"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": {
            "type": "object", "additionalProperties": False, "properties": {"name": {"type": "string"}},
            "required": ["name"]}}},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
    sent = fake_gemini.requests[-1]["body"]
    assert sent["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"name": {"type": "STRING"}}, "required": ["name"]}}
    assert sent["contents"][0]["parts"] == [
        {"text": "what is this"}, {"inlineData": {"mimeType": "image/png", "data": pixel}},
        {"fileData": {"fileUri": "https://example.com/cat.jpg", "mimeType": "image/jpeg"}}]


@pytest.mark.parametrize("model, exc, status", [
    ("gemini-test/error-429", openai.RateLimitError, 429),
    ("gemini-test/error-400", openai.BadRequestError, 400),
    ("gemini-test/error-500", openai.InternalServerError, 502),
    ("gemini-test/bad-key", openai.InternalServerError, 502),  # Google's 400 API_KEY_INVALID is our fault
])
def test_upstream_errors_are_mapped_and_never_leak(gateway, model, exc, status):
    with pytest.raises(exc) as err:
        gateway.sdk().chat.completions.create(model=model, messages=MSG)
    response = err.value.response
    assert response.status_code == status
    validate(response.json(), "ErrorResponse")
    assert LEAK_MARKER not in response.text and "AIza" not in response.text
    assert "RESOURCE_EXHAUSTED" not in response.text and "googleapis" not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "7"  # from Google's RetryInfo


def test_stream_cut_before_its_finish_reason_ends_in_an_error(gateway, fake_gemini):
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in gateway.sdk().chat.completions.create(model="gemini-test/reset", messages=MSG,
                                                           stream=True):
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == "Hello from fake gemini"  # the two chunks that did arrive
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert row.status == 502 and row.input_tokens > 0  # the upstream's own prompt count, from the chunks


def test_anthropic_sdk_against_gemini(gateway, fake_gemini):
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    message = client.messages.create(model="gemini-test/gemini-fake", max_tokens=100, system="be brief",
                                     messages=[{"role": "user", "content": "hello there"}])
    assert message.content[0].text == "Hello from fake gemini gemini-fake."
    assert message.stop_reason == "end_turn"
    assert fake_gemini.requests[-1]["body"]["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    tools = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]
    with client.messages.stream(model="gemini-test/gemini-tool", max_tokens=100, tools=tools,
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and use.input == {"city": "Paris", "days": 42}
    follow = client.messages.create(model="gemini-test/gemini-tool", max_tokens=100, tools=tools, messages=[
        {"role": "user", "content": "weather?"}, {"role": "assistant", "content": final.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "hail"}]}])
    assert follow.content[0].text == "Tool result: hail"


def test_embeddings_seam(fake_gemini):
    from gateway.providers import egress

    egress.allow_private_for([fake_gemini.url])  # the adapter alone, without a loaded catalog
    provider = ProviderInfo(1, "fakegemini", "gemini", fake_gemini.url, GEMINI_UPSTREAM_KEY)
    route = RouteInfo(1, "s", provider, "text-embedding-004", 1, 1, None, None, 0)
    request = {"model": "gemini-test/text-embedding-004", "input": ["hello world", "bye"], "dimensions": 4}
    body, usage = gemini.embeddings(Call("embeddings", request), route)
    validate(body, "CreateEmbeddingResponse")
    sent = fake_gemini.requests[-1]
    assert sent["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent["body"]["requests"][0] == {"model": "models/text-embedding-004", "outputDimensionality": 4,
                                           "content": {"parts": [{"text": "hello world"}]}}
    assert [len(d["embedding"]) for d in body["data"]] == [4, 4] and body["model"] == request["model"]
    assert usage.input_tokens == body["usage"]["prompt_tokens"] > 0 and usage.estimated
    with pytest.raises(Exception) as err:
        gemini.embeddings(Call("embeddings", {"model": "x", "input": [1, 2, 3]}), route)
    assert err.value.status == 400


def test_embeddings_through_the_endpoint(gateway, fake_gemini):
    model = "gemini-test/text-embedding-004"
    reply = gateway.sdk().embeddings.create(model=model, input=["one two", "three"], dimensions=6)
    assert [len(d.embedding) for d in reply.data] == [6, 6] and reply.model == model
    sent = fake_gemini.requests[-1]["body"]["requests"]
    assert [r["content"]["parts"][0]["text"] for r in sent] == ["one two", "three"]
    (row,) = wait_for(lambda: gateway.rows(endpoint="embeddings"))
    assert (row.input_tokens, row.usage_estimated, row.status) == (reply.usage.prompt_tokens, True, 200)


# ---- pure wire conversions ----------------------------------------------------------------------------

def test_schema_conversion_inlines_refs_and_drops_what_gemini_rejects():
    schema = {"$defs": {"Unit": {"type": "string", "enum": ["c", "f"]}}, "type": "object",
              "additionalProperties": False, "properties": {
                  "unit": {"$ref": "#/$defs/Unit"}, "n": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                  "tags": {"type": "array", "items": {"type": "string", "format": "email"}, "maxItems": 3},
                  "kind": {"const": "x"}},
              "required": ["unit", "missing"]}
    assert gemini.schema_to_wire(schema) == {"type": "OBJECT", "required": ["unit"], "properties": {
        "unit": {"type": "STRING", "enum": ["c", "f"]}, "n": {"type": "NUMBER", "nullable": True},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3},
        "kind": {"type": "STRING", "enum": ["x"]}}}


def test_tool_results_find_their_function_by_call_id():
    req = ChatRequest(model="m", messages=[
        Message("user", [Part("text", text="go")]),
        Message("assistant", tool_calls=[ToolCall("a1", "f", '{"x": 1}'),
                                         ToolCall("b2__thought__c2ln", "g", "{}")]),
        Message("tool", [Part("text", text="two")], tool_call_id="b2__thought__c2ln", is_error=True),
        Message("tool", [Part("text", text="one")], tool_call_id="a1")],
        tools=[Tool("f"), Tool("g")], tool_choice="required")
    wire = gemini.to_wire(req)
    assert wire["contents"][1]["parts"][1] == {"functionCall": {"name": "g", "args": {}},
                                               "thoughtSignature": "c2ln"}
    assert wire["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "g", "response": {"error": "two"}}},
        {"functionResponse": {"name": "f", "response": {"output": "one"}}}]}
    assert wire["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert wire["tools"] == [{"functionDeclarations": [{"name": "f"}, {"name": "g"}]}]  # no empty OBJECTs


def test_stream_without_a_finish_reason_is_an_error():
    chunk = {"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}}],
             "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "thoughtsTokenCount": 2,
                               "cachedContentTokenCount": 1}, "responseId": "r1", "modelVersion": "g"}
    events = list(gemini.decode_stream(iter([b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"]), "g"))
    assert [e.kind for e in events] == ["start", "text", "usage", "error"]
    assert (events[2].usage.output_tokens, events[2].usage.cached_tokens) == (3, 1)
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    events = list(gemini.decode_stream(iter([b"data: " + json.dumps(blocked).encode() + b"\n\n"]), "g"))
    assert [(e.kind, e.finish_reason) for e in events][-3:] == [
        ("finish", "content_filter"), ("usage", None), ("end", None)]


def test_url_for_the_sdk_base_url_and_a_versioned_one():
    def route(base, model):
        return RouteInfo(1, "s", ProviderInfo(1, "p", "gemini", base, "k"), model, 1, 1, None, None, 0)
    assert gemini.url_for(route("https://generativelanguage.googleapis.com", "gemini-2.5-flash"),
                          "generateContent") == \
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    assert gemini.url_for(route("https://proxy.local/v1", "tunedModels/mine"), "generateContent") == \
        "https://proxy.local/v1/tunedModels/mine:generateContent"
    assert requests.utils.urlparse(gemini.url_for(route("http://h", "m"), "x")).path == "/v1beta/models/m:x"
