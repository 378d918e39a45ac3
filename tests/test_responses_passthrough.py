"""POST /v1/responses passed through to an OpenAI-kind upstream that speaks the Responses API.

The upstream here is FakeResponsesOpenAI (chat fake + `/v1/responses`). "responses" is native to
the OpenAI adapter, whose pass-through hands it to gateway/providers/openai_responses.py; the
`native` fixture has provider "fake" declare `responses_api: true`, as its config or the console
would, and `speaks` flips it to mix both paths.
"""

import json
from types import SimpleNamespace

import openai
import pytest
from sqlalchemy import select

from gateway import db, memo
from gateway.memo import MEMO
from gateway.models import Provider
from gateway.providers import openai_responses
from gateway.stores.responses import STORE
from tests.conftest import UPSTREAM_KEY, wait_for
from tests.fakes import serve
from tests.fakes.responses_upstream import FakeResponsesOpenAI
from tests.test_responses import chat_requests, sse_events


@pytest.fixture(scope="module")
def fake_openai():
    """Overrides conftest's: the same chat fake, speaking `/v1/responses` too."""
    fake = FakeResponsesOpenAI(api_key=UPSTREAM_KEY)
    server, url = serve(fake)
    fake.url = url
    yield fake
    server.stop()


@pytest.fixture
def speaks(gateway):
    """Declare provider "fake"'s `responses_api` flag (as the config or the console would)."""
    def declare(value: bool | None) -> None:
        with db.write_lock, db.session_scope() as s:
            s.scalar(select(Provider).where(Provider.name == "fake")).responses_api = value
            memo.announce(s, "catalog")
        gateway.flush()
        wait_for(lambda: MEMO.catalog.providers["fake"].responses_api is value or None)

    return declare


@pytest.fixture
def native(gateway, speaks):
    STORE.clear()
    speaks(True)
    yield gateway
    STORE.clear()


def responses_requests(fake) -> list[dict]:
    return [r["body"] for r in fake.requests if r["path"] == "/v1/responses"]


def test_body_passes_through_and_the_response_is_stored(native, fake_openai):
    raw = native.sdk().responses.with_raw_response.create(
        model="test/fake-gpt", input="hello there", instructions="be brief", metadata={"k": "v"}, store=True,
        extra_body={"x_vendor_field": {"nested": [1, 2]}})
    resp = raw.parse()
    assert responses_requests(fake_openai)[-1] == {
        "model": "fake-gpt", "input": "hello there", "instructions": "be brief", "metadata": {"k": "v"},
        "store": True, "x_vendor_field": {"nested": [1, 2]}}
    assert chat_requests(fake_openai) == []
    assert resp.output_text == "Hello from fake fake-gpt."
    assert resp.model == "fake-gpt"  # the upstream's body, as it sent it
    assert resp.id in fake_openai.conversations
    (row,) = native.rows(request_id=raw.headers["x-request-id"])
    assert (row.endpoint, row.status, row.input_tokens, row.output_tokens) == ("responses", 200, 5, 4)
    assert json.loads(raw.content) == native.sdk().responses.retrieve(resp.id).model_dump(mode="json",
                                                                                        exclude_unset=True)


def test_stream_bytes_are_relayed_and_metered(native, fake_openai):
    r = native.post("/v1/responses", {"model": "test/fake-gpt", "input": "hello there", "stream": True},
                    stream=True)
    events = sse_events(r.content)
    names = [n for n, _ in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert fake_openai.streams[-1]["completed"]
    with native.sdk().responses.stream(model="test/fake-tool", input="go", tools=[
            {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}}}}]) as stream:
        final = stream.get_final_response()
    assert json.loads(final.output[0].arguments) == {"city": "Paris"}
    rows = wait_for(lambda: native.rows(stream=True) if len(native.rows(stream=True)) == 2 else None)
    assert [(row.status, row.input_tokens, row.output_tokens) for row in rows] == [(200, 5, 4), (200, 4, 6)]
    assert native.sdk().responses.retrieve(final.id).output[0].call_id == final.output[0].call_id


def test_previous_response_id_goes_upstream_for_its_own_org_only(native, fake_openai):
    first = native.sdk().responses.create(model="test/fake-gpt", input="hello there")
    second = native.sdk().responses.create(model="test/echo", input="again", previous_response_id=first.id)
    sent = responses_requests(fake_openai)[-1]
    assert sent == {"model": "echo", "input": "again", "previous_response_id": first.id}
    assert second.previous_response_id == first.id
    native.new_org("other")
    theirs = native.sdk(key=native.new_key("other"))
    count = len(fake_openai.requests)
    with pytest.raises(openai.NotFoundError) as err:
        theirs.responses.create(model="test/fake-gpt", input="more", previous_response_id=first.id)
    assert err.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(first.id)
    assert len(fake_openai.requests) == count  # the id never reached the upstream


def test_delete_reaches_the_upstream_that_holds_the_response(native, fake_openai):
    sdk = native.sdk()
    first = sdk.responses.create(model="test/fake-gpt", input="forget me")
    assert first.id in fake_openai.conversations
    native.new_org("other")
    count = len(fake_openai.requests)
    with pytest.raises(openai.NotFoundError):
        native.sdk(key=native.new_key("other")).responses.delete(first.id)
    assert len(fake_openai.requests) == count  # another org's delete never reaches the upstream
    sdk.responses.delete(first.id)
    sent = fake_openai.requests[-1]
    assert (sent["method"], sent["path"]) == ("DELETE", f"/v1/responses/{first.id}")
    assert sent["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert first.id not in fake_openai.conversations
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first.id)


def test_history_crosses_between_translated_and_passed_through(native, fake_openai, speaks):
    speaks(False)  # built by translation: the upstream never saw its id
    first = native.sdk().responses.create(model="test/fake-gpt", input="hello")
    assert chat_requests(fake_openai)[-1]["messages"] == [{"role": "user", "content": "hello"}]
    speaks(True)
    second = native.sdk().responses.create(model="test/fake-gpt", input="again",
                                           previous_response_id=first.id)
    sent = responses_requests(fake_openai)[-1]
    assert "previous_response_id" not in sent
    assert sent["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        {"type": "message", "status": "completed", "role": "assistant", "content": [
            {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello from fake fake-gpt."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "again"}]}]
    speaks(False)  # and back: the pass-through turn is continued by translation
    native.sdk().responses.create(model="test/fake-gpt", input="thanks", previous_response_id=second.id)
    assert [m["content"] for m in chat_requests(fake_openai)[-1]["messages"]] == [
        "hello", "Hello from fake fake-gpt.", "again", "Hello from fake fake-gpt.", "thanks"]


def test_truncated_stream_ends_in_failure_events(native):
    r = native.post("/v1/responses", {"model": "test/reset", "input": "x", "stream": True}, stream=True)
    events = sse_events(r.content)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert [n for n, _ in events][-3:] == ["response.output_text.delta", "error", "response.failed"]
    assert events[-1][1]["response"]["id"] == events[0][1]["response"]["id"]
    assert events[-1][1]["response"]["status"] == "failed"
    with pytest.raises(openai.APIError):
        for _ in native.sdk().responses.create(model="test/reset", input="x", stream=True):
            pass
    rows = wait_for(lambda: native.rows(stream=True) if len(native.rows(stream=True)) == 2 else None)
    assert [(row.status, row.usage_estimated) for row in rows] == [(502, True)] * 2
    assert rows[0].input_tokens > 0 and rows[0].output_tokens == 2  # two text deltas were relayed


def test_upstream_failure_event_is_relayed_and_recorded(native):
    r = native.post("/v1/responses", {"model": "test/fail", "input": "x", "stream": True}, stream=True)
    names = [n for n, _ in sse_events(r.content)]
    assert names[-2:] == ["error", "response.failed"] and names.count("error") == 1  # the upstream's own
    assert "boom (key [redacted])" in r.text and "upstream-test" not in r.text  # but never our provider key
    (row,) = wait_for(lambda: native.rows(stream=True))
    assert row.status == 502 and row.error_type == "api_error"


def test_upstream_errors_map_onto_the_catalogue(native):
    with pytest.raises(openai.RateLimitError):
        native.sdk().responses.create(model="test/error-429", input="x")
    assert native.rows()[-1].status == 429


def test_upstream_without_responses_is_translated(native, fake_openai, speaks):
    speaks(False)
    resp = native.sdk().responses.create(model="test/fake-gpt", input="hello there")
    assert resp.output_text == "Hello from fake fake-gpt." and resp.model == "test/fake-gpt"
    assert responses_requests(fake_openai) == [] and len(chat_requests(fake_openai)) == 1


def test_which_upstreams_speak_responses():
    def route(base_url, **declared):
        return SimpleNamespace(provider=SimpleNamespace(base_url=base_url, **declared))

    assert openai_responses.speaks_responses(route("https://api.openai.com/v1"))
    assert not openai_responses.speaks_responses(route("http://127.0.0.1:8000/v1"))
    assert openai_responses.speaks_responses(route("http://127.0.0.1:8000/v1", responses_api=True))
    assert not openai_responses.speaks_responses(route("https://api.openai.com/v1", responses_api=False))
