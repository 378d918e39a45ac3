"""The translated path (client dialect -> canonical -> provider) with OpenAI on both ends.

Forcing translation proves the canonical round trip loses nothing an OpenAI client relies on:
text, tool calls (streamed too), finish reasons and usage.
"""

import json

import pytest

from tests.conftest import assemble, configure_routing, wait_for
from tests.openapi import validate


@pytest.fixture
def translating(gateway):
    configure_routing(gateway, translate=["fake"])  # OpenAI on both ends, translated all the same
    return gateway


def test_non_stream_round_trip(translating, fake_openai):
    raw = translating.sdk().chat.completions.with_raw_response.create(
        model="test/fake-cached", messages=[{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "hello there"}],
        temperature=0.2, stop=["zzz"], max_tokens=50)
    body = json.loads(raw.content)
    validate(body, "CreateChatCompletionResponse")
    assert body["model"] == "test/fake-cached"  # the client sees the model it asked for
    assert body["choices"][0]["message"]["content"] == "Hello from fake fake-cached."
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 5  # half of 10 prompt tokens
    sent = fake_openai.requests[-1]["body"]
    assert sent["model"] == "fake-cached" and sent["temperature"] == 0.2 and sent["stop"] == ["zzz"]
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}


def test_stream_round_trip_with_tools(translating):
    tools = [{"type": "function", "function": {"name": n, "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}} for n in ("a", "b")]
    stream = translating.sdk().chat.completions.create(
        model="test/fake-tool-parallel", messages=[{"role": "user", "content": "go"}], tools=tools, stream=True,
        stream_options={"include_usage": True})
    got = assemble(stream, lambda chunk: validate(chunk.model_dump(mode="json", exclude_unset=True),
                                                  "CreateChatCompletionStreamResponse"))
    calls, finish, usage = got.calls, got.finish, got.usage
    assert [json.loads(c["args"]) for c in calls.values()] == [{"city": "Paris"}, {"city": "London"}]
    assert finish == "tool_calls" and usage.completion_tokens > 0
    (row,) = wait_for(lambda: translating.rows(stream=True))
    assert row.output_tokens == usage.completion_tokens and row.status == 200


def test_truncated_stream_ends_in_an_error_event(translating):
    import openai

    with pytest.raises(openai.APIError):
        for _ in translating.sdk().chat.completions.create(
                model="test/reset", messages=[{"role": "user", "content": "x"}], stream=True):
            pass
    (row,) = wait_for(lambda: translating.rows(stream=True))
    assert row.status == 502
