"""The Anthropic Messages codec as pure functions: request, response and stream, both directions.

Shapes are checked against the official SDK's own types (anthropic.types), as the OpenAI side is
checked against OpenAI's OpenAPI spec.
"""

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from pydantic import TypeAdapter

from gateway.errors import UpstreamError
from gateway.wire import anthropic_messages as wire
from gateway.wire import openai_chat
from gateway.wire.canonical import ChatResponse, Part, StreamEvent, ToolCall, Usage

EVENT = TypeAdapter(RawMessageStreamEvent)

RICH = {
    "model": "claude-x", "max_tokens": 300,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AAAA"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "document", "cache_control": {"type": "ephemeral"},
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
            {"type": "document",
             "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Look first.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque=="},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "cat", "n": 2}},
            {"type": "tool_use", "id": "toolu_2", "name": "look", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": [
                {"type": "text", "text": "failed"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
            {"type": "text", "text": "Go on."}]},
    ],
    "tools": [{"name": "look", "description": "Look at things",
               "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
               "cache_control": {"type": "ephemeral"}}],
    "tool_choice": {"type": "tool", "name": "look", "disable_parallel_tool_use": True},
    "temperature": 0.3, "top_p": 0.9, "stop_sequences": ["END"],
    "thinking": {"type": "enabled", "budget_tokens": 1024}, "metadata": {"user_id": "u-1"}, "stream": True,
}


def test_decode_then_encode_keeps_an_anthropic_request_whole():
    req = wire.decode_request(RICH)
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert req.tool_choice == {"name": "look"} and req.parallel_tool_calls is False and req.user == "u-1"
    assert req.messages[2].tool_calls[0] == ToolCall("toolu_1", "look", '{"q":"cat","n":2}')
    assert req.messages[4].is_error and req.messages[4].tool_call_id == "toolu_2"
    assert wire.encode_request(req, default_max_tokens=4096) == RICH


@pytest.mark.parametrize("choice, canonical", [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "f"}, {"name": "f"})])
def test_tool_choice_both_ways(choice, canonical):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "f", "input_schema": {}}], "tool_choice": choice}
    req = wire.decode_request(body)
    assert req.tool_choice == canonical
    assert wire.encode_request(req, 10)["tool_choice"] == choice


def test_encode_from_an_openai_request():
    """OpenAI -> canonical -> Anthropic: system on top, tool results merged, arguments parsed."""
    req = openai_chat.decode_request({
        "model": "m", "temperature": 1.6, "seed": 3, "user": "u", "stop": "STOP",
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "one"}, {"role": "developer", "content": "two"},
            {"role": "user", "content": [
                {"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}]},
            {"role": "assistant", "content": None, "reasoning_content": "unsigned thoughts", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
                {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "tool", "tool_call_id": "c2", "content": "r2"}]})
    body = wire.encode_request(req, default_max_tokens=777)
    assert body == {
        "model": "m", "max_tokens": 777, "system": "one\n\ntwo",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": "QUJD"}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "c2", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
                                         {"type": "tool_result", "tool_use_id": "c2", "content": "r2"}]}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "temperature": 1.0, "stop_sequences": ["STOP"], "metadata": {"user_id": "u"}}


def test_response_both_ways_with_cache_usage():
    body = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "redacted_thinking", "data": "d"},
                        {"type": "text", "text": "Hi"},
                        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1]}}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30,
                      "output_tokens": 5}}
    resp = wire.decode_response(body)
    assert resp.finish_reason == "tool_calls" and resp.text == "Hi"
    assert resp.usage == Usage(input_tokens=60, output_tokens=5, cached_tokens=30, cache_write_tokens=20)
    assert resp.tool_calls == [ToolCall("toolu_1", "f", '{"a":[1]}')]
    out = wire.encode_response(resp, "alias")
    Message.model_validate(out)
    assert out == {**body, "model": "alias"}


@pytest.mark.parametrize("stop_reason, finish, back", [
    ("end_turn", "stop", "end_turn"), ("max_tokens", "length", "max_tokens"),
    ("tool_use", "tool_calls", "tool_use"),
    ("refusal", "content_filter", "refusal"), ("pause_turn", "stop", "end_turn"),
    ("model_context_window_exceeded", "length", "max_tokens")])
def test_stop_reasons(stop_reason, finish, back):
    resp = wire.decode_response({"content": [], "stop_reason": stop_reason})
    assert resp.finish_reason == finish
    assert wire.encode_response(resp, "m")["stop_reason"] == back


def test_stop_sequence_is_kept():
    resp = wire.decode_response({"content": [{"type": "text", "text": "a"}], "stop_reason": "stop_sequence",
                                 "stop_sequence": "END"})
    assert (resp.finish_reason, resp.stop_sequence) == ("stop", "END")
    out = wire.encode_response(resp, "m")
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")


def test_openai_response_becomes_a_valid_message():
    resp = ChatResponse(id="chatcmpl-abc", model="gpt", content=[Part("text", text="")],
                        tool_calls=[ToolCall("call_1", "f", "{broken")], finish_reason="tool_calls",
                        usage=Usage(input_tokens=9, output_tokens=3, cached_tokens=4))
    out = wire.encode_response(resp, "alias")
    Message.model_validate(out)
    assert out["id"] == "msg_abc" and out["content"] == [{"type": "tool_use", "id": "call_1", "name": "f",
                                                          "input": {}}]
    assert out["usage"] == {"input_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4,
                            "output_tokens": 3}


def _sse(events: list[dict]) -> list[bytes]:
    return [f"event: {e['type']}\ndata: ".encode() + orjson.dumps(e) + b"\n\n" for e in events]


UPSTREAM = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
                                          "content": [], "stop_reason": None, "stop_sequence": None,
                                          "usage": {"input_tokens": 3, "cache_read_input_tokens": 4,
                                                    "cache_creation_input_tokens": 0, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "SIG"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "t1", "name": "f",
                                                                  "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 12}},
    {"type": "message_stop"},
]


def _accumulate(payload: list[bytes]):
    """What the SDK's stream helper assembles from these events."""
    snapshot, json_bufs = None, {}
    for chunk in payload:
        data = orjson.loads(chunk.split(b"data: ", 1)[1])
        if data["type"] != "ping":
            snapshot = accumulate_event(event=EVENT.validate_python(data), current_snapshot=snapshot,
                                        json_bufs=json_bufs)
    return snapshot


def test_stream_decode_then_encode_keeps_blocks_signatures_and_usage():
    events = list(wire.decode_stream(iter(_sse(UPSTREAM))))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "error" not in kinds
    assert [e.text for e in events if e.kind == "tool_args"] == ['{"a":', " 1}"]
    out = list(wire.encode_stream(iter(events), "alias"))
    names = [orjson.loads(c.split(b"data: ", 1)[1])["type"] for c in out]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    final = _accumulate(out)
    upstream = _accumulate(_sse(UPSTREAM))
    assert final.model == "alias" and final.stop_reason == "tool_use"
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        b.model_dump(exclude_none=True) for b in upstream.content]
    assert final.content[0].signature == "SIG" and final.content[2].input == {"a": 1}
    u = final.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.output_tokens) == (3, 4, 12)


def test_stream_without_message_stop_or_with_an_error_event_ends_in_error():
    cut = list(wire.decode_stream(iter(_sse(UPSTREAM[:8]))))
    assert cut[-1].kind == "error" and isinstance(cut[-1].error, UpstreamError)
    # the partial usage from message_start is kept
    assert any(e.kind == "usage" and e.usage.input_tokens == 7 for e in cut)
    failed = list(wire.decode_stream(iter(_sse(UPSTREAM[:3] + [
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]))))
    assert failed[-1].kind == "error"
    out = list(wire.encode_stream(iter(failed), "m"))
    assert out[-1].startswith(b"event: error\ndata: ")
    assert orjson.loads(out[-1].split(b"data: ", 1)[1]) == {
        "type": "error", "error": {"type": "api_error",
                                   "message": "The upstream provider reported an error during the stream."}}


def test_encode_stream_from_openai_style_events():
    events = [StreamEvent("start", id="chatcmpl-9", model="gpt"), StreamEvent("text", text="A"),
              StreamEvent("tool_call", index=0, id="c0", name="f"),
              StreamEvent("tool_call", index=1, id="c1", name="g"),
              StreamEvent("tool_args", index=1, text='{"x":'), StreamEvent("tool_args", index=1, text="2}"),
              StreamEvent("finish", finish_reason="length"),
              StreamEvent("usage", usage=Usage(input_tokens=8, output_tokens=3, cached_tokens=2)),
              StreamEvent("end")]
    out = list(wire.encode_stream(iter(events), "m"))
    final = _accumulate(out)
    assert final.id == "msg_9" and final.stop_reason == "max_tokens"
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("text", None), ("tool_use", {}), ("tool_use", {"x": 2})]
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (6, 2)


def test_stream_observer_reads_usage_across_split_chunks():
    payload = b"".join(_sse(UPSTREAM))
    observer = wire.StreamObserver()
    relayed = b"".join(observer.feed(payload[i:i + 7]) for i in range(0, len(payload), 7))
    assert relayed == payload and observer.done and observer.upstream_error is None
    assert observer.usage == Usage(input_tokens=7, output_tokens=12, cached_tokens=4)
    assert observer.deltas == 6


def test_local_count_tokens_estimate():
    small = wire.count_tokens({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    MessageTokensCount.model_validate(small)
    big = wire.count_tokens({"model": "m", "system": "be brief and kind",
                             "messages": [{"role": "user", "content": "hello " * 50}],
                             "tools": [{"name": "f", "description": "does f",
                                        "input_schema": {"type": "object"}}]})
    assert 0 < small["input_tokens"] < big["input_tokens"]
