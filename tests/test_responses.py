"""POST /v1/responses translated onto chat (the fake upstream speaks chat only), via the openai SDK.

Covers input shapes, instructions, function tools, previous_response_id, the stream's event
sequence, spec conformance, tenant isolation of stored responses, store=false and failures.
"""

import json

import openai
import orjson
import pytest
import requests
from sqlalchemy import inspect, select

from gateway import db
from gateway.models import StoredResponse
from gateway.stores.responses import STORE
from gateway.wire import openai_responses
from gateway.wire.canonical import StreamEvent, Usage
from tests.conftest import database_statements, wait_for
from tests.openapi import validate

EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent", "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent", "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent", "error": "ResponseErrorEvent",
    "response.reasoning_text.delta": "ResponseReasoningTextDeltaEvent",
    "response.reasoning_text.done": "ResponseReasoningTextDoneEvent",
}
WEATHER = [{"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]}}]


@pytest.fixture(autouse=True)
def _fresh_store():
    """Each test's gateway has a fresh database; the process-wide memory of responses must match."""
    STORE.clear()
    yield
    STORE.clear()


def sse_events(body: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of each SSE event; comments (the gateway's cost trailer) are skipped."""
    out = []
    for block in body.decode().split("\n\n"):
        lines = block.split("\n")
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        if data:
            out.append((name, json.loads(data)))
    return out


def check_stream(events: list[tuple[str, dict]]) -> None:
    """Every event names its type, is numbered from 0 without gaps, and matches the spec."""
    for n, (name, data) in enumerate(events):
        assert name == data["type"] and data["sequence_number"] == n
        validate(data, EVENT_SCHEMAS[name])


def chat_requests(fake) -> list[dict]:
    return [r["body"] for r in fake.requests if r["path"] == "/v1/chat/completions"]


def test_string_input(gateway, fake_openai):
    raw = gateway.sdk().responses.with_raw_response.create(model="test/fake-gpt", input="hello there")
    resp = raw.parse()
    assert resp.output_text == "Hello from fake fake-gpt."
    assert resp.id.startswith("resp_") and resp.object == "response" and resp.status == "completed"
    assert resp.model == "test/fake-gpt" and resp.output[0].id.startswith("msg_")
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (5, 4, 9)
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0
    validate(orjson.loads(raw.content), "Response")
    assert chat_requests(fake_openai)[-1] == {"model": "fake-gpt",
                                              "messages": [{"role": "user", "content": "hello there"}]}
    (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
    assert (row.endpoint, row.status, row.input_tokens, row.output_tokens) == ("responses", 200, 5, 4)
    assert raw.headers["x-gateway-charge"] == "0.013000"


def test_items_input_with_instructions_and_settings(gateway, fake_openai):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    resp = gateway.sdk().responses.create(
        model="test/fake-cached", instructions="be brief",
        input=[{"role": "developer", "content": "use French"},
               {"role": "user", "content": [{"type": "input_text", "text": "hello"},
                                            {"type": "input_image", "image_url": "https://x.test/a.png",
                                             "detail": "low"}]},
               {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]},
               {"role": "user", "content": "again"}],
        temperature=0.2, top_p=0.9, max_output_tokens=64, metadata={"k": "v"}, parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}})
    assert resp.usage.input_tokens_details.cached_tokens > 0
    assert resp.temperature == 0.2 and resp.max_output_tokens == 64 and resp.metadata == {"k": "v"}
    assert resp.instructions == "be brief" and resp.text.format.type == "json_schema"
    sent = chat_requests(fake_openai)[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "system", "content": "use French"},
        {"role": "user", "content": [{"type": "text", "text": "hello"},
                                     {"type": "image_url", "image_url": {"url": "https://x.test/a.png",
                                                                         "detail": "low"}}]},
        {"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"}]
    settings = (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["parallel_tool_calls"])
    assert settings == (0.2, 0.9, 64, False)
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "out", "schema": schema, "strict": True}}


def test_function_tools_round_trip(gateway, fake_openai):
    sdk = gateway.sdk()
    first = sdk.responses.create(model="test/fake-tool", input="weather in Paris?", tools=WEATHER,
                                 tool_choice={"type": "function", "name": "get_weather"})
    (call,) = first.output
    assert call.type == "function_call" and call.id.startswith("fc_") and call.status == "completed"
    assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "Paris"}
    assert chat_requests(fake_openai)[-1]["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER[0]["parameters"]}}]
    assert chat_requests(fake_openai)[-1]["tool_choice"] == {"type": "function",
                                                             "function": {"name": "get_weather"}}
    validate(first.model_dump(mode="json", exclude_unset=True), "Response")
    second = sdk.responses.create(model="test/fake-tool", tools=WEATHER, input=[
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}])
    assert second.output_text == "Tool result: sunny, 21C"
    sent = chat_requests(fake_openai)[-1]["messages"]
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.call_id, "type": "function",
         "function": {"name": "get_weather", "arguments": call.arguments}}]}
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"}


def test_previous_response_id_continues_the_conversation(gateway, fake_openai):
    sdk = gateway.sdk()
    first = sdk.responses.create(model="test/fake-tool", instructions="first rules",
                                 input="weather in Paris?", tools=WEATHER)
    call = first.output[0]
    second = sdk.responses.create(model="test/fake-tool", previous_response_id=first.id, tools=WEATHER,
                                  input=[{"type": "function_call_output", "call_id": call.call_id,
                                          "output": "sunny"}])
    assert second.output_text == "Tool result: sunny" and second.previous_response_id == first.id
    third = sdk.responses.create(model="test/fake-gpt", previous_response_id=second.id, input="thanks")
    # the upstream got every earlier turn; the first request's instructions are not carried over
    assert chat_requests(fake_openai)[-1]["messages"] == [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": call.call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
        {"role": "assistant", "content": "Tool result: sunny"},
        {"role": "user", "content": "thanks"}]
    assert sdk.responses.retrieve(third.id).output_text == third.output_text


def test_stream_event_sequence_and_sdk_output_text(gateway):
    r = gateway.post("/v1/responses", {"model": "test/fake-gpt", "input": "hello there", "stream": True},
                     stream=True)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.content)
    check_stream(events)
    names = [n for n, _ in events]
    deltas = names.count("response.output_text.delta")
    assert deltas >= 2 and names == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    final = events[-1][1]["response"]
    assert final["usage"]["total_tokens"] == 9 and final["status"] == "completed"
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == "Hello from fake fake-gpt."
    item_ids = {d.get("item_id") or d.get("item", {}).get("id") for _, d in events[2:-1]}
    assert item_ids == {final["output"][0]["id"]}
    with gateway.sdk().responses.stream(model="test/fake-gpt", input="hello there") as stream:
        for _ in stream:
            pass
        assert stream.get_final_response().output_text == "Hello from fake fake-gpt."
    rows = wait_for(lambda: gateway.rows(stream=True) if len(gateway.rows(stream=True)) == 2 else None)
    assert [(row.endpoint, row.status, row.output_tokens) for row in rows] == [("responses", 200, 4)] * 2


def test_streamed_function_calls_arrive_intact(gateway):
    tools = [{"type": "function", "name": n, "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}} for n in ("a", "b")]
    r = gateway.post("/v1/responses", {"model": "test/fake-tool-parallel", "input": "go", "tools": tools,
                                       "stream": True}, stream=True)
    events = sse_events(r.content)
    check_stream(events)
    args: dict[int, str] = {}
    for name, data in events:
        if name == "response.function_call_arguments.delta":
            args[data["output_index"]] = args.get(data["output_index"], "") + data["delta"]
    done = {d["output_index"]: d for n, d in events if n == "response.function_call_arguments.done"}
    final = events[-1][1]["response"]["output"]
    assert [json.loads(args[i]) for i in (0, 1)] == [{"city": "Paris"}, {"city": "London"}]
    assert [(done[i]["name"], done[i]["arguments"]) for i in (0, 1)] == [("a", args[0]), ("b", args[1])]
    assert [(item["type"], item["name"], item["arguments"]) for item in final] == [
        ("function_call", "a", args[0]), ("function_call", "b", args[1])]
    # each call is its own item: added, its deltas, done; then the next one
    order = [(n, d.get("output_index")) for n, d in events if n.startswith("response.output_item")]
    assert order == [("response.output_item.added", 0), ("response.output_item.done", 0),
                     ("response.output_item.added", 1), ("response.output_item.done", 1)]
    with gateway.sdk().responses.stream(model="test/fake-tool-parallel", input="go", tools=tools) as stream:
        calls = [item for item in stream.get_final_response().output if item.type == "function_call"]
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"city": "London"}]


def test_length_cut_is_incomplete(gateway):
    resp = gateway.sdk().responses.create(model="test/drip-30", input="go", max_output_tokens=16)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    assert len(resp.output_text.split()) == 16 and resp.output[0].status == "incomplete"
    validate(resp.model_dump(mode="json", exclude_unset=True), "Response")
    r = gateway.post("/v1/responses", {"model": "test/drip-30", "input": "go", "max_output_tokens": 16,
                                       "stream": True}, stream=True)
    events = sse_events(r.content)
    check_stream(events)
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_tenant_isolation(gateway, fake_openai):
    mine = gateway.sdk().responses.create(model="test/fake-gpt", input="secret plans")
    gateway.new_org("other")
    theirs = gateway.sdk(key=gateway.new_key("other"))
    with pytest.raises(openai.NotFoundError) as err:
        theirs.responses.retrieve(mine.id)
    assert err.value.body["type"] == "invalid_request_error"
    sent = len(fake_openai.requests)
    with pytest.raises(openai.NotFoundError) as err:
        theirs.responses.create(model="test/fake-gpt", previous_response_id=mine.id, input="tell me")
    assert err.value.code == "previous_response_not_found" and err.value.param == "previous_response_id"
    assert len(fake_openai.requests) == sent  # nothing reached the upstream
    # the gateway's per-request state key cannot be smuggled in to borrow another org's history
    org_id = gateway.org().id
    smuggled = theirs.responses.create(model="test/fake-gpt", input="hi", extra_body={
        "_gateway_responses": {"org_id": org_id, "history": [{"role": "user", "content": "secret plans"}]}})
    assert "secret plans" not in orjson.dumps(chat_requests(fake_openai)[-1]).decode()
    with pytest.raises(openai.NotFoundError):
        gateway.sdk().responses.retrieve(smuggled.id)
    assert theirs.responses.retrieve(smuggled.id).id == smuggled.id
    assert gateway.sdk().responses.retrieve(mine.id).output_text == "Hello from fake fake-gpt."


def test_delete_forgets_a_response_for_its_own_org_only(gateway):
    sdk = gateway.sdk()
    mine = sdk.responses.create(model="test/fake-gpt", input="secret plans")
    gateway.new_org("other")
    theirs = gateway.sdk(key=gateway.new_key("other"))
    with pytest.raises(openai.NotFoundError):  # another org's id is an unknown id, also for DELETE
        theirs.responses.delete(mine.id)
    reader = requests.delete(f"{gateway.v1}/responses/{mine.id}",
                             headers={"Authorization": f"Bearer {gateway.new_key(scope='read')}"})
    assert reader.status_code == 403 and reader.json()["error"]["code"] == "insufficient_scope"
    assert sdk.responses.retrieve(mine.id).id == mine.id
    r = requests.delete(f"{gateway.v1}/responses/{mine.id}", headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert r.status_code == 200 and r.json() == {"id": mine.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError) as err:
        sdk.responses.create(model="test/fake-gpt", input="go on", previous_response_id=mine.id)
    assert err.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.delete(mine.id)
    gateway.flush()
    STORE.clear()  # gone from the database too, not only from memory
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(mine.id)
    with db.session_scope() as s:
        assert s.scalars(select(StoredResponse).where(StoredResponse.response_id == mine.id)).first() is None


def test_store_false_is_not_retrievable(gateway):
    sdk = gateway.sdk()
    resp = sdk.responses.create(model="test/fake-gpt", input="hello", store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="test/fake-gpt", input="again", previous_response_id=resp.id)
    gateway.flush()
    with db.session_scope() as s:
        assert s.scalars(select(StoredResponse).where(StoredResponse.response_id == resp.id)).first() is None


def test_truncated_upstream_stream_fails_and_is_recorded(gateway):
    with pytest.raises(openai.APIError):
        for _ in gateway.sdk().responses.create(model="test/reset", input="x", stream=True):
            pass
    r = gateway.post("/v1/responses", {"model": "test/reset", "input": "x", "stream": True}, stream=True)
    events = sse_events(r.content)
    check_stream(events)
    assert [n for n, _ in events][-2:] == ["error", "response.failed"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    rows = wait_for(lambda: gateway.rows(stream=True) if len(gateway.rows(stream=True)) == 2 else None)
    assert [(r.endpoint, r.status, r.error_type) for r in rows] == [("responses", 502, "api_error")] * 2
    with pytest.raises(openai.NotFoundError):
        gateway.sdk().responses.retrieve(failed["id"])


def test_bad_requests_are_openai_400s(gateway):
    sdk = gateway.sdk()
    with pytest.raises(openai.BadRequestError) as err:
        sdk.responses.create(model="test/fake-gpt", input="x", max_output_tokens=5)
    assert err.value.param == "max_output_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.responses.create(model="test/fake-gpt", input=[{"role": "robot", "content": "x"}])
    assert err.value.param == "input[0].role"
    with pytest.raises(openai.BadRequestError) as err:  # hosted tools need a Responses upstream
        sdk.responses.create(model="test/fake-gpt", input="x", tools=[{"type": "web_search"}])
    assert err.value.param == "tools"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="nope", input="x")


def test_stored_rows_persist_off_the_hot_path(gateway):
    """Create and continue read and write memory only; the rows reach the database via the writer,
    carry their org, and serve GET and continuations once memory has forgotten them."""

    gateway.flush()
    with database_statements() as statements:
        first = gateway.sdk().responses.create(model="fast", input="hi")
        gateway.sdk().responses.create(model="fast", input="more", previous_response_id=first.id)
        list(gateway.sdk().responses.create(model="fast", input="streamed", stream=True))
    assert statements == []

    def stored():
        gateway.flush()  # the background cycle may hold a batch taken while it waited for the lock
        with db.session_scope() as s:
            return s.scalars(select(StoredResponse).where(StoredResponse.response_id == first.id)).first()

    row = wait_for(stored)
    assert row.org_id == gateway.org().id
    assert row.response["output"][0]["content"][0]["text"] == first.output_text
    assert [(item["role"], item["content"][0]["text"]) for item in row.conversation] == [
        ("user", "hi"), ("assistant", first.output_text)]
    columns = {c["name"]: c for c in inspect(db.engine()).get_columns("stored_response")}
    assert columns["org_id"]["nullable"] is False
    indexes = inspect(db.engine()).get_indexes("stored_response")
    assert any(ix["column_names"][0] == "org_id" for ix in indexes)
    STORE.clear()
    assert gateway.sdk().responses.retrieve(first.id).output_text == first.output_text
    again = gateway.sdk().responses.create(model="test/echo", input="x", previous_response_id=first.id)
    assert '"content":"hi"' in again.output_text


def test_items_decode_into_chat_turns():
    """Pure translation: calls join their assistant turn, reasoning items are dropped, and the
    instructions come first."""
    req = openai_responses.decode_request({"model": "m", "instructions": "rules", "input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "let me check"}]},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "one"}]},
        {"type": "function_call_output", "call_id": "c2", "output": "two"},
        {"role": "user", "content": [{"type": "input_file", "file_data": "data:application/pdf;base64,QUJD"}]}]})
    assert [(m.role, m.text) for m in req.messages] == [
        ("system", "rules"), ("user", "q"), ("assistant", "let me check"), ("tool", "one"), ("tool", "two"),
        ("user", "")]
    assert [(c.id, c.name) for c in req.messages[2].tool_calls] == [("c1", "a"), ("c2", "b")]
    assert (req.messages[5].content[0].type, req.messages[5].content[0].data) == ("document", "QUJD")


def test_rendered_stream_of_reasoning_text_and_calls_matches_the_spec():
    """Pure rendering: every item kind, in order, each event valid; arguments stay whole."""
    events = [StreamEvent("start", id="x", model="m"), StreamEvent("thinking", text="hmm"),
              StreamEvent("text", text="Let me "), StreamEvent("text", text="check."),
              StreamEvent("tool_call", index=0, id="call_1", name="a"),
              StreamEvent("tool_args", index=0, text='{"x":'), StreamEvent("tool_args", index=0, text="1}"),
              StreamEvent("finish", finish_reason="tool_calls"),
              StreamEvent("usage", usage=Usage(input_tokens=7, output_tokens=3)), StreamEvent("end")]
    out = sse_events(b"".join(openai_responses.render_stream(iter(events), "test/m", {"model": "test/m"})))
    check_stream(out)
    final = out[-1][1]["response"]
    validate(final, "Response")
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][2]["arguments"] == '{"x":1}' and final["usage"]["total_tokens"] == 10
    empty = sse_events(b"".join(openai_responses.render_stream(
        iter([StreamEvent("start"), StreamEvent("finish", finish_reason="stop"), StreamEvent("end")]), "m", {})))
    check_stream(empty)
    assert [item["content"][0]["text"] for item in empty[-1][1]["response"]["output"]] == [""]
