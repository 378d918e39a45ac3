"""Every client dialect in front of every provider kind: text (whole and streamed) and a tool call.

One cell per (dialect, provider): the README's table points here. Each cell drives the gateway with
the dialect's official SDK against a wire-exact fake of the provider, and checks what the SDK
assembles, that a stream assembles to the same text as the whole reply, and the ledger row.
"""

import json

import anthropic
import pytest

from tests.conftest import wait_for

PROVIDERS = {  # kind -> (text model, tool model)
    "openai": ("test/fake-gpt", "test/fake-tool"),
    "anthropic": ("anthropic-test/claude-fake", "anthropic-test/claude-tool"),
    "openrouter": ("openrouter-test/fake-gpt", "openrouter-test/fake-tool"),
    "ollama": ("ollama-test/llama3.2", "ollama-test/tool"),
    "gemini": ("gemini-test/gemini-fake", "gemini-test/gemini-tool"),
    "bedrock": ("bedrock-test/claude-fake", "bedrock-test/claude-tool"),
}
DIALECTS = ("chat", "messages", "responses")
QUESTION = "What is the weather in Paris today?"
PARAMS = {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}


@pytest.fixture
def gw(gateway_factory, fake_anthropic, fake_gemini, fake_bedrock, fake_ollama, fake_openrouter):
    return gateway_factory()


def text_of(gw, dialect: str, model: str, stream: bool) -> tuple[str, str]:
    """(assembled text, request id) for a plain question."""
    if dialect == "chat":
        raw = gw.sdk().chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], stream=stream)
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices), \
                raw.headers["x-request-id"]
        return raw.parse().choices[0].message.content, raw.headers["x-request-id"]
    if dialect == "messages":
        client = anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)
        if stream:
            with client.messages.stream(model=model, max_tokens=256,
                                        messages=[{"role": "user", "content": QUESTION}]) as s:
                message = s.get_final_message()
                request_id = s.response.headers["x-request-id"]
        else:
            raw = client.messages.with_raw_response.create(model=model, max_tokens=256,
                                                           messages=[{"role": "user", "content": QUESTION}])
            message, request_id = raw.parse(), raw.headers["x-request-id"]
        return "".join(b.text for b in message.content if b.type == "text"), request_id
    raw = gw.sdk().responses.with_raw_response.create(model=model, input=QUESTION, stream=stream)
    if stream:
        text = "".join(e.delta for e in raw.parse() if e.type == "response.output_text.delta")
        return text, raw.headers["x-request-id"]
    return raw.parse().output_text, raw.headers["x-request-id"]


def tool_call_of(gw, dialect: str, model: str) -> tuple[str, dict]:
    if dialect == "chat":
        out = gw.sdk().chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}],
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": PARAMS}}])
        call = out.choices[0].message.tool_calls[0]
        assert out.choices[0].finish_reason == "tool_calls"
        return call.function.name, json.loads(call.function.arguments)
    if dialect == "messages":
        client = anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)
        out = client.messages.create(model=model, max_tokens=256, messages=[{"role": "user", "content": QUESTION}],
                                     tools=[{"name": "get_weather", "input_schema": PARAMS}])
        block = next(b for b in out.content if b.type == "tool_use")
        assert out.stop_reason == "tool_use"
        return block.name, block.input
    out = gw.sdk().responses.create(model=model, input=QUESTION,
                                    tools=[{"type": "function", "name": "get_weather", "parameters": PARAMS}])
    call = next(item for item in out.output if item.type == "function_call")
    return call.name, json.loads(call.arguments)


@pytest.mark.parametrize("kind", list(PROVIDERS))
@pytest.mark.parametrize("dialect", DIALECTS)
def test_cell(gw, dialect, kind):
    text_model, tool_model = PROVIDERS[kind]
    whole, request_id = text_of(gw, dialect, text_model, stream=False)
    streamed, stream_id = text_of(gw, dialect, text_model, stream=True)
    assert whole and streamed == whole
    name, args = tool_call_of(gw, dialect, tool_model)
    assert name == "get_weather" and isinstance(args.get("location"), str) and args["location"]
    endpoint = {"chat": "chat.completions", "messages": "messages", "responses": "responses"}[dialect]
    rows = wait_for(lambda: len(gw.rows(endpoint=endpoint)) == 3 and gw.rows(endpoint=endpoint))
    assert {r.request_id for r in rows} >= {request_id, stream_id}
    for row in rows:
        assert row.status == 200 and row.input_tokens > 0 and row.output_tokens > 0
        assert row.provider.startswith("fake")
