"""POST /api/v1/llm/chat and /api/v1/llm/chat/stream: chat completions under other paths, same
bodies, auth, responses and OpenAI-shaped errors (the stream alias always streams)."""

import json

import openai
import pytest
import requests
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.conftest import wait_for
from tests.fakes import LEAK_MARKER
from tests.openapi import validate

MSG = [{"role": "user", "content": "hello there"}]


def compat_sdk(gw, key: str | None = None) -> openai.OpenAI:
    """The openai SDK pointed at the alias prefix; its generic post() reaches the alias paths."""
    return openai.OpenAI(base_url=gw.url + "/api/v1", api_key=key or gw.api_key, max_retries=0)


def chat(gw, body: dict, key: str | None = None) -> ChatCompletion:
    return compat_sdk(gw, key).post("/llm/chat", cast_to=ChatCompletion, body=body)


def chat_stream(gw, body: dict) -> list[ChatCompletionChunk]:
    return list(compat_sdk(gw).post("/llm/chat/stream", cast_to=ChatCompletionChunk, body=body, stream=True,
                                    stream_cls=openai.Stream[ChatCompletionChunk]))


def error_of(r: requests.Response) -> dict:
    assert r.headers["content-type"].startswith("application/json")
    validate(r.json(), "ErrorResponse")
    return r.json()["error"]


def test_chat_alias_answers_like_chat_completions(gateway, fake_openai):
    r = gateway.post("/api/v1/llm/chat", {"model": "test/fake-gpt", "messages": MSG})
    validate(r.json(), "CreateChatCompletionResponse")
    assert r.headers["x-gateway-charge"] == "0.013000" and r.headers["x-request-id"].startswith("req_")
    completion = chat(gateway, {"model": "fast", "messages": MSG})
    assert completion.choices[0].message.content == "Hello from fake fake-gpt."
    assert fake_openai.requests[-1]["body"] == {"model": "fake-gpt", "messages": MSG}
    rows = gateway.rows()
    assert [(row.endpoint, row.requested_model, row.status) for row in rows] == [
        ("chat.completions", "test/fake-gpt", 200), ("chat.completions", "fast", 200)]


def test_chat_alias_carries_tools(gateway):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}}}}]
    completion = chat(gateway, {"model": "test/fake-tool", "messages": MSG, "tools": tools})
    assert completion.choices[0].finish_reason == "tool_calls"
    assert json.loads(completion.choices[0].message.tool_calls[0].function.arguments) == {"location": "Paris"}


def test_stream_alias_forces_streaming(gateway, fake_openai):
    chunks = chat_stream(gateway, {"model": "test/fake-gpt", "messages": MSG})  # no "stream" in the body
    for c in chunks:
        validate(c.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionStreamResponse")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from fake fake-gpt."
    assert fake_openai.requests[-1]["body"]["stream"] is True
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert (row.endpoint, row.input_tokens, row.output_tokens, row.status) == ("chat.completions", 5, 4, 200)


def test_stream_alias_overrides_stream_false_and_keeps_stream_options(gateway):
    r = gateway.post("/api/v1/llm/chat/stream", {"model": "test/fake-gpt", "messages": MSG, "stream": False,
                                                 "stream_options": {"include_usage": True}}, stream=True)
    assert r.headers["content-type"].startswith("text/event-stream")
    datas = [e[len("data: "):] for e in r.content.decode().split("\n\n") if e.startswith("data: ")]
    assert datas[-1] == "[DONE]" and json.loads(datas[-2])["usage"]["total_tokens"] == 9


def test_stream_alias_mid_stream_error_in_openai_shape(gateway):
    with pytest.raises(openai.APIError) as e:
        chat_stream(gateway, {"model": "test/reset", "messages": MSG})
    assert "ended the stream" in e.value.message


@pytest.mark.parametrize("path", ["/api/v1/llm/chat", "/api/v1/llm/chat/stream"])
def test_errors_have_openai_shape(gateway, fake_openai, path):
    r = requests.post(gateway.url + path, json={"model": "test/fake-gpt", "messages": MSG})
    assert r.status_code == 401 and error_of(r)["code"] == "missing_api_key"
    r = requests.post(gateway.url + path, data=b'{"model": ', headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"
    r = gateway.post(path, {"model": "test/fake-gpt", "messages": []})
    assert r.status_code == 400 and error_of(r)["param"] == "messages"
    r = gateway.post(path, {"model": "nope/none", "messages": MSG})
    assert r.status_code == 404 and error_of(r)["code"] == "model_not_found"
    r = gateway.post(path, {"model": "test/error-429", "messages": MSG})
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and LEAK_MARKER not in r.text
    error_of(r)
    r = requests.get(gateway.url + path)
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"


def test_sdk_errors_on_the_alias(gateway):
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, {"model": "test/fake-gpt", "messages": MSG}, key="gw-not-a-real-key")
    with pytest.raises(openai.APIStatusError) as e:
        chat(gateway, {"model": "test/error-503", "messages": MSG})
    assert e.value.status_code == 502 and LEAK_MARKER not in e.value.response.text


def test_unknown_path_under_the_prefix_is_openai_404(gateway):
    r = gateway.post("/api/v1/llm/nothing", {})
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
