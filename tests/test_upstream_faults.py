"""A hostile upstream: one that hangs, a stream that stalls mid-body, malformed SSE events.

Hangs and stalls are bounded by the request's deadline (`routing.deadline_seconds`), not by the
idle timeout: the client gets 504 in its dialect's shape (or the dialect's error event, once a
stream has begun) and the ledger a 504 row. A malformed event on a translated stream ends it
with the dialect's error event and a 502 row, never a clean end or an aborted connection.
The fakes (tests/fakes/) pick these behaviours by model name: `hang`, `stall`, `bad-sse-list`,
`bad-sse-json`; they stay silent for 30 s, far past the 2 s deadline set here.
"""

import json

import gevent
import pytest
import requests

from tests.conftest import configure_routing, wait_for

DEADLINE = 2


@pytest.fixture
def gw(gateway):
    configure_routing(gateway, deadline_seconds=DEADLINE)
    return gateway


def events(body: bytes) -> list[tuple[str | None, object]]:
    """(event name, data) of each SSE event; data that is not JSON is kept as text."""
    out = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        lines = block.split("\n")
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        if data:
            try:
                out.append((name, json.loads(data)))
            except json.JSONDecodeError:
                out.append((name, data))
    return out


def post(gw, path: str, body: dict, anthropic: bool = False) -> requests.Response:
    headers = {"x-api-key": gw.api_key, "anthropic-version": "2023-06-01"} if anthropic else {}
    if anthropic:
        return requests.post(gw.url + path, json=body, headers=headers, timeout=60)
    return gw.post(path, body, timeout=60)


def row_of(gw, resp: requests.Response):
    (row,) = wait_for(lambda: gw.rows(request_id=resp.headers["x-request-id"]))
    return row


CHAT = {"messages": [{"role": "user", "content": "hello there"}]}
MESSAGES = {"max_tokens": 50, "messages": [{"role": "user", "content": "hello there"}]}


# ---- (a) the deadline bounds every wait ------------------------------------------------------------

def test_hanging_upstream_gets_504_in_the_openai_shape(gw, fake_openai):
    r = post(gw, "/v1/chat/completions", {"model": "test/hang", **CHAT})
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "timeout_error" and r.json()["error"]["code"] == "upstream_timeout"
    row = row_of(gw, r)
    assert (row.status, row.charge_micros) == (504, 0)


def test_hanging_upstream_gets_504_in_the_anthropic_shape(gw, fake_openai):
    r = post(gw, "/v1/messages", {"model": "test/hang", "stream": True, **MESSAGES}, anthropic=True)
    assert r.status_code == 504
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "timeout_error"
    assert row_of(gw, r).status == 504


def test_stalled_pass_through_stream_is_cut_with_an_openai_error_event(gw, fake_openai):
    r = post(gw, "/v1/chat/completions", {"model": "test/stall", "stream": True, **CHAT})
    assert r.status_code == 200
    got = events(r.content)
    assert got[0][1]["choices"][0]["delta"]["role"] == "assistant"
    assert got[-1][1]["error"]["type"] == "timeout_error" and "[DONE]" not in [d for _, d in got]
    row = row_of(gw, r)
    assert row.status == 504 and row.stream and row.error_type == "timeout_error"


def test_stalled_translated_stream_is_cut_with_an_anthropic_error_event(gw, fake_openai):
    r = post(gw, "/v1/messages", {"model": "test/stall", "stream": True, **MESSAGES}, anthropic=True)
    assert r.status_code == 200
    got = events(r.content)
    assert got[0][0] == "message_start" and "message_stop" not in [n for n, _ in got]
    assert got[-1] == ("error", {"type": "error", "error": {"type": "timeout_error",
                                                           "message": "The upstream provider timed out."}})
    assert row_of(gw, r).status == 504


def test_stalled_translated_responses_stream_ends_failed(gw, fake_openai):
    r = post(gw, "/v1/responses", {"model": "test/stall", "input": "hello there", "stream": True})
    got = events(r.content)
    assert [n for n, _ in got][-2:] == ["error", "response.failed"]
    assert "response.completed" not in [n for n, _ in got]
    assert row_of(gw, r).status == 504


def test_concurrent_hangs_each_end_at_the_deadline_with_their_own_row(gw, fake_openai):
    calls = [("/v1/chat/completions", {"model": "test/hang", **CHAT}, False),
             ("/v1/chat/completions", {"model": "test/stall", "stream": True, **CHAT}, False),
             ("/v1/messages", {"model": "test/hang", **MESSAGES}, True),
             ("/v1/messages", {"model": "test/stall", "stream": True, **MESSAGES}, True)]
    jobs = [gevent.spawn(post, gw, path, body, anthropic) for path, body, anthropic in calls]
    gevent.joinall(jobs, raise_error=True)
    replies = [j.value for j in jobs]
    assert [r.status_code for r in replies] == [504, 200, 504, 200]
    assert all(row_of(gw, r).status == 504 for r in replies)
    assert len(gw.rows()) == 4


# ---- (b) a malformed event on a translated stream -----------------------------------------------------

@pytest.mark.parametrize("model", ["test/bad-sse-list", "test/bad-sse-json"])
def test_malformed_sse_ends_a_messages_stream_over_openai(gw, fake_openai, model):
    r = post(gw, "/v1/messages", {"model": model, "stream": True, **MESSAGES}, anthropic=True)
    assert r.status_code == 200
    got = events(r.content)
    names = [n for n, _ in got]
    assert names[0] == "message_start" and "message_stop" not in names
    assert got[-1] == ("error", {"type": "error", "error": {
        "type": "api_error", "message": "The upstream provider sent a malformed stream."}})
    row = row_of(gw, r)
    assert row.status == 502 and row.error_type == "api_error"


@pytest.mark.parametrize("model", ["test/bad-sse-list", "test/bad-sse-json"])
def test_malformed_sse_ends_a_responses_stream_over_openai(gw, fake_openai, model):
    r = post(gw, "/v1/responses", {"model": model, "input": "hello there", "stream": True})
    got = events(r.content)
    names = [n for n, _ in got]
    assert names[-2:] == ["error", "response.failed"] and "response.completed" not in names
    assert got[-2][1]["message"] == "The upstream provider sent a malformed stream."
    assert row_of(gw, r).status == 502


@pytest.mark.parametrize("model", ["anthropic-test/bad-sse-list", "anthropic-test/bad-sse-json"])
def test_malformed_sse_ends_a_chat_stream_over_anthropic(gw, fake_anthropic, model):
    r = post(gw, "/v1/chat/completions", {"model": model, "stream": True, **CHAT})
    assert r.status_code == 200
    got = events(r.content)
    assert got[-1][1]["error"] == {"message": "The upstream provider sent a malformed stream.",
                                   "type": "api_error", "param": None, "code": "upstream_error"}
    assert "[DONE]" not in [d for _, d in got]
    row = row_of(gw, r)
    assert row.status == 502
    # charged for what was seen (the prompt and the deltas before the bad event), nothing more
    assert row.output_tokens <= 2


def test_a_malformed_stream_is_billed_once_and_others_are_unaffected(gw, fake_openai):
    bad = post(gw, "/v1/messages", {"model": "test/bad-sse-list", "stream": True, **MESSAGES}, anthropic=True)
    good = post(gw, "/v1/messages", {"model": "test/fake-gpt", "stream": True, **MESSAGES}, anthropic=True)
    assert [n for n, _ in events(good.content)][-1] == "message_stop"
    assert (row_of(gw, bad).status, row_of(gw, good).status) == (502, 200)
