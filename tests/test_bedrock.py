"""The Bedrock adapter: OpenAI and Anthropic SDK clients in, Converse / ConverseStream out, and back.

The fake (tests/fakes/bedrock_upstream.py) verifies every SigV4 signature with botocore, so a test
that gets an answer proves the gateway signed exactly the bytes it sent; its streams are real AWS
event-stream frames (prelude, headers, CRCs).
"""

import base64
import json
import struct

import anthropic
import openai
import orjson
import pytest
import requests

from gateway.memo import ProviderInfo, RouteInfo
from gateway.providers import bedrock
from gateway.providers.base import Call
from gateway.wire.canonical import ChatRequest, Message, Part, Tool, ToolCall
from tests.conftest import BEDROCK_SECRET, BEDROCK_TOKEN, assemble, wait_for
from tests.fakes.bedrock_upstream import LEAK_MARKER, SIGNATURE_MISMATCH, event, exception
from tests.openapi import validate

pytestmark = pytest.mark.usefixtures("fake_bedrock")
MSG = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "enum": ["utc", "local"]}}}}}
SIGV4_KEY = f"AKIDFAKEBEDROCK00001:{BEDROCK_SECRET}:{BEDROCK_TOKEN}"


def route(fake, model: str, key: str = SIGV4_KEY, query: str = "?region=eu-central-1") -> RouteInfo:
    provider = ProviderInfo(1, "p", "bedrock", fake.url + query, key)
    return RouteInfo(1, "s", provider, model, 1, 1, None, None, 0)


def test_non_stream_text_is_signed_and_round_trips(gateway, fake_bedrock):
    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="bedrock-test/claude-fake", messages=MSG, temperature=0.2, top_p=0.9, max_tokens=50,
        stop=["zzz"])
    body = json.loads(raw.content)
    validate(body, "CreateChatCompletionResponse")
    assert body["choices"][0]["message"]["content"] == "Hello from fake bedrock fake.claude-fake-v1:0."
    assert body["choices"][0]["finish_reason"] == "stop" and body["model"] == "bedrock-test/claude-fake"
    sent = fake_bedrock.requests[-1]
    assert sent["auth"] == "sigv4" and sent["raw_path"] == "/model/fake.claude-fake-v1%3A0/converse"
    assert sent["headers"]["x-amz-security-token"] == BEDROCK_TOKEN
    assert "/eu-central-1/bedrock/aws4_request" in sent["headers"]["authorization"]
    assert sent["body"] == {"messages": [{"role": "user", "content": [{"text": "hello there"}]}],
                            "system": [{"text": "be brief"}],
                            "inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "topP": 0.9,
                                                "stopSequences": ["zzz"]}}
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == (5 + 2, 5)
    (row,) = wait_for(lambda: gateway.rows(request_id=raw.headers["x-request-id"]))
    assert (row.provider, row.input_tokens, row.output_tokens, row.status) == ("fakebedrock", 7, 5, 200)


def test_bedrock_api_key_is_sent_as_a_bearer_token(gateway, fake_bedrock):
    reply = gateway.sdk().chat.completions.create(model="bedrock-test/api-key", messages=MSG)
    assert reply.choices[0].message.content.startswith("Hello from fake bedrock")
    sent = fake_bedrock.requests[-1]
    assert sent["auth"] == "bearer" and sent["headers"]["authorization"] == "Bearer bedrock-api-key-test"
    assert "x-amz-date" not in sent["headers"]


def test_a_wrong_secret_is_caught_by_the_signature_check(gateway, fake_bedrock):
    with pytest.raises(openai.InternalServerError) as err:
        gateway.sdk().chat.completions.create(model="bedrock-test/bad-secret", messages=MSG)
    assert err.value.status_code == 502  # our credentials, not the client's fault
    assert fake_bedrock.requests[-1]["auth"] is None
    assert "signature" not in err.value.response.text and "SECRET" not in err.value.response.text


def test_the_signature_covers_the_exact_bytes_sent(fake_bedrock):
    r = route(fake_bedrock, "fake.claude-fake-v1:0")
    base, region = bedrock.endpoint(r.provider.base_url)
    url = f"{base}/model/fake.claude-fake-v1%3A0/converse"
    payload = orjson.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    headers = bedrock.signed_headers(r, url, payload, region)
    assert requests.post(url, data=payload, headers=headers).status_code == 200
    tampered = requests.post(url, data=payload.replace(b"hi", b"yo"), headers=headers)
    assert tampered.status_code == 403 and tampered.json() == {"message": SIGNATURE_MISMATCH}
    assert tampered.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    wrong_region = bedrock.signed_headers(r, url, payload, "us-east-1")
    assert requests.post(url, data=payload, headers=wrong_region).status_code == 403


def test_stream_text_matches_the_frames_sent(gateway, fake_bedrock):
    stream = gateway.sdk().chat.completions.create(model="bedrock-test/claude-cached", messages=MSG,
                                                   stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        validate(chunk.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionStreamResponse")
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    frames = fake_bedrock.streams[-1]["frames"]
    assert fake_bedrock.requests[-1]["raw_path"] == "/model/fake.claude-cached-v1%3A0/converse-stream"
    assert text == "".join(p["delta"]["text"] for name, p in frames if name == "contentBlockDelta")
    assert finish == "stop"
    sent = dict(frames)["metadata"]["usage"]
    inclusive = sent["inputTokens"] + sent["cacheReadInputTokens"] + sent["cacheWriteInputTokens"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (inclusive, sent["outputTokens"])
    assert usage.prompt_tokens_details.cached_tokens == sent["cacheReadInputTokens"]
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert (row.input_tokens, row.cached_tokens, row.cache_write_tokens, row.status) == (
        inclusive, sent["cacheReadInputTokens"], sent["cacheWriteInputTokens"], 200)


def test_streamed_parallel_tool_calls_arrive_intact_and_results_answer_in_one_turn(gateway, fake_bedrock):
    sdk = gateway.sdk()
    stream = sdk.chat.completions.create(model="bedrock-test/claude-tool-parallel", messages=MSG,
                                         tools=[WEATHER, TIME], tool_choice="required", stream=True)
    got = assemble(stream)
    calls, finish = got.calls, got.finish
    config = fake_bedrock.requests[-1]["body"]["toolConfig"]
    assert config["toolChoice"] == {"any": {}}
    assert config["tools"][0] == {"toolSpec": {"name": "get_weather", "description": "Weather now",
                                               "inputSchema": {"json": WEATHER["function"]["parameters"]}}}
    frames = fake_bedrock.streams[-1]["frames"]
    starts = [p["start"]["toolUse"] for name, p in frames if name == "contentBlockStart"]
    assert [(c["id"], c["name"]) for c in calls.values()] == [(s["toolUseId"], s["name"]) for s in starts]
    assert [json.loads(c["args"]) for c in calls.values()] == [{"city": "Paris", "days": 42}, {"zone": "utc"}]
    assert finish == "tool_calls"
    answer = sdk.chat.completions.create(model="bedrock-test/claude-tool-parallel", tools=[WEATHER, TIME],
                                         messages=[
        *MSG, {"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["args"]}}
            for c in calls.values()]},
        *[{"role": "tool", "tool_call_id": c["id"], "content": f"result {i}"} for i, c in calls.items()],
        {"role": "user", "content": "and so?"}])
    assert answer.choices[0].message.content == "Tool result: result 0; result 1"
    turns = fake_bedrock.requests[-1]["body"]["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]  # results + next user turn: merged
    assert turns[1]["content"][0]["toolUse"]["input"] == {"city": "Paris", "days": 42}
    assert turns[2]["content"] == [
        {"toolResult": {"toolUseId": calls[0]["id"], "content": [{"text": "result 0"}], "status": "success"}},
        {"toolResult": {"toolUseId": calls[1]["id"], "content": [{"text": "result 1"}], "status": "success"}},
        {"text": "and so?"}]


@pytest.mark.parametrize("model, kwargs, content, finish", [
    ("bedrock-test/claude-fake", {"max_tokens": 2}, "Hello from", "length"),
    ("bedrock-test/guardrail", {}, "Hello from fake bedrock fake.guardrail-v1:0.", "content_filter"),
    ("bedrock-test/claude-tool", {"tools": [WEATHER]}, None, "tool_calls"),
])
def test_finish_reasons(gateway, model, kwargs, content, finish):
    reply = gateway.sdk().chat.completions.create(model=model, messages=MSG, **kwargs)
    assert (reply.choices[0].message.content or None, reply.choices[0].finish_reason) == (content, finish)


@pytest.mark.parametrize("model, exc, status", [
    ("bedrock-test/error-429", openai.RateLimitError, 429),
    ("bedrock-test/error-400", openai.BadRequestError, 400),
    ("bedrock-test/error-403", openai.InternalServerError, 502),
    ("bedrock-test/error-500", openai.InternalServerError, 502),
])
def test_upstream_errors_are_mapped_and_never_leak(gateway, model, exc, status):
    with pytest.raises(exc) as err:
        gateway.sdk().chat.completions.create(model=model, messages=MSG)
    response = err.value.response
    assert response.status_code == status
    validate(response.json(), "ErrorResponse")
    assert LEAK_MARKER not in response.text and "AKID" not in response.text
    assert "Exception" not in response.text


def test_stream_cut_before_message_stop_ends_in_an_error(gateway):
    with pytest.raises(openai.APIError):
        for _ in gateway.sdk().chat.completions.create(model="bedrock-test/reset", messages=MSG, stream=True):
            pass
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert row.status == 502


def test_an_exception_frame_mid_stream_is_an_error_event(gateway):
    text = ""
    with pytest.raises(openai.APIError) as err:
        for chunk in gateway.sdk().chat.completions.create(model="bedrock-test/throttled", messages=MSG,
                                                           stream=True):
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == "Hello" and LEAK_MARKER not in str(err.value.body)
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert row.status == 429 and row.error_type == "rate_limit_error"


def test_anthropic_sdk_against_bedrock(gateway, fake_bedrock):
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    message = client.messages.create(model="bedrock-test/claude-thinking", max_tokens=100, system="be brief",
                                     messages=[{"role": "user", "content": "hello there"}])
    kinds = [b.type for b in message.content]
    assert kinds == ["thinking", "text"] and message.content[0].signature == "sig-1"
    assert message.content[1].text == "Hello from fake bedrock fake.claude-thinking-v1:0."
    tools = [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]
    with client.messages.stream(model="bedrock-test/claude-tool", max_tokens=100, tools=tools,
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    (use,) = [b for b in final.content if b.type == "tool_use"]
    frames = fake_bedrock.streams[-1]["frames"]
    assert use.id == frames[1][1]["start"]["toolUse"]["toolUseId"]
    assert use.input == {"city": "Paris", "days": 42}
    assert final.stop_reason == "tool_use"
    follow = client.messages.create(model="bedrock-test/claude-tool", max_tokens=100, tools=tools, messages=[
        {"role": "user", "content": "weather?"}, {"role": "assistant", "content": final.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "hail",
                                      "is_error": True}]}])
    assert follow.content[0].text == "Tool result: hail"
    result = fake_bedrock.requests[-1]["body"]["messages"][2]["content"][0]["toolResult"]
    assert result == {"toolUseId": use.id, "content": [{"text": "hail"}], "status": "error"}


def test_titan_embeddings_seam(fake_bedrock):
    request = {"model": "x", "input": ["hello big world", "bye"], "dimensions": 4, "encoding_format": "float"}
    body, usage = bedrock.embeddings(Call("embeddings", request), route(fake_bedrock, "amazon.titan-embed-text-v2:0"))
    validate(body, "CreateEmbeddingResponse")
    sent = fake_bedrock.requests[-2:]
    assert [s["raw_path"] for s in sent] == ["/model/amazon.titan-embed-text-v2%3A0/invoke"] * 2
    assert [s["body"] for s in sent] == [{"inputText": "hello big world", "dimensions": 4},
                                         {"inputText": "bye", "dimensions": 4}]
    assert all(s["auth"] == "sigv4" for s in sent)
    assert [len(d["embedding"]) for d in body["data"]] == [4, 4]
    assert usage.input_tokens == body["usage"]["prompt_tokens"] == 3 + 1  # Titan's inputTextTokenCounts


def test_embeddings_through_the_endpoint(gateway, fake_bedrock):
    reply = gateway.sdk().embeddings.create(model="bedrock-test/titan-embed-text", input="one two three",
                                            encoding_format="base64")
    vector = struct.unpack("<8f", base64.b64decode(reply.data[0].embedding))
    assert vector == pytest.approx(fake_bedrock._titan({"inputText": "one two three"})["embedding"], abs=1e-6)
    assert fake_bedrock.requests[-1]["raw_path"] == "/model/fake.titan-embed-text-v1%3A0/invoke"
    (row,) = wait_for(lambda: gateway.rows(endpoint="embeddings"))
    assert (row.input_tokens, row.usage_estimated, row.status) == (3, False, 200)


# ---- pure functions ----------------------------------------------------------------------------------

def test_region_and_credentials_from_config():
    assert bedrock.endpoint("https://bedrock-runtime.us-west-2.amazonaws.com") == (
        "https://bedrock-runtime.us-west-2.amazonaws.com", "us-west-2")
    vpce = "https://vpce-01ab.bedrock-runtime.ap-south-1.vpce.amazonaws.com"
    assert bedrock.endpoint(vpce)[1] == "ap-south-1"
    assert bedrock.endpoint("http://127.0.0.1:9000/proxy/?region=eu-west-1") == (
        "http://127.0.0.1:9000/proxy", "eu-west-1")
    assert bedrock.endpoint("http://127.0.0.1:9000")[1] == "us-east-1"
    creds = bedrock.credentials("AKID:se/cr+et:tok==")
    assert (creds.access_key, creds.secret_key, creds.token) == ("AKID", "se/cr+et", "tok==")
    assert bedrock.credentials("AKID:secret").token is None and bedrock.credentials("bedrock-api-key") is None


def test_converse_request_merges_turns_and_maps_choices():
    req = ChatRequest(model="m", messages=[
        Message("system", [Part("text", text="sys", cache_control={"type": "ephemeral"})]),
        Message("user", [Part("text", text="a"), Part("image", media_type="image/jpeg", data="AAAA")]),
        Message("user", [Part("text", text="")]),  # blank text is dropped, not sent
        Message("assistant", [Part("thinking", text="hmm", signature="s")],
                tool_calls=[ToolCall("t1", "f", "")]),
        Message("tool", [Part("text", text="out")], tool_call_id="t1", is_error=True)],
        tools=[Tool("f", "does f")], tool_choice={"name": "f"},
        thinking={"type": "enabled", "budget_tokens": 1024})
    wire = bedrock.to_wire(req)
    assert wire["system"] == [{"text": "sys"}, {"cachePoint": {"type": "default"}}]
    assert wire["messages"] == [
        {"role": "user", "content": [
            {"text": "a"}, {"image": {"format": "jpeg", "source": {"bytes": "AAAA"}}}]},
        {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s"}}},
            {"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "out"}],
                                                     "status": "error"}}]}]
    assert wire["toolConfig"]["toolChoice"] == {"tool": {"name": "f"}}
    assert wire["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    with pytest.raises(Exception) as err:  # a web image cannot be carried: another route may take it
        bedrock.to_wire(ChatRequest(model="m", messages=[Message("user", [Part("image", url="https://x/y.png")])]))
    assert err.value.status == 400 and err.value.retryable


def test_stream_decoding_handles_split_frames_and_exceptions():
    frames = [event("messageStart", {"role": "assistant"}),
              event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
              event("messageStop", {"stopReason": "max_tokens"}),
              event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}})]
    data = b"".join(frames)
    pieces = [data[i:i + 5] for i in range(0, len(data), 5)]  # frames split across reads
    events = list(bedrock.decode_stream(iter(pieces), "m", "req-1"))
    assert [(e.kind, e.text, e.finish_reason) for e in events] == [
        ("start", None, None), ("text", "Hi", None), ("finish", None, "length"), ("usage", None, None),
        ("end", None, None)]
    cut = list(bedrock.decode_stream(iter([data[:-7]]), "m", "req-1"))  # last frame incomplete
    assert cut[-1].kind == "error" and "before it was complete" in cut[-1].error.message
    broken = [frames[0], exception("modelStreamErrorException", "boom")]
    failed = list(bedrock.decode_stream(iter(broken), "m", "r"))
    assert failed[-1].kind == "error" and failed[-1].error.status == 502
    corrupt = bytearray(frames[0])
    corrupt[-1] ^= 0xFF  # the message CRC no longer matches
    assert list(bedrock.decode_stream(iter([bytes(corrupt)]), "m", "r"))[-1].kind == "error"
