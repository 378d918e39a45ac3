"""Every error on an OpenAI route has OpenAI's shape and status code; upstream bodies never leak."""

import openai
import orjson
import pytest
import requests

from gateway import errors
from tests.conftest import wait_for
from tests.fakes import LEAK_MARKER
from tests.openapi import validate

MSG = [{"role": "user", "content": "hi"}]


def error_body(r: requests.Response) -> dict:
    body = r.json()
    validate(body, "ErrorResponse")
    assert r.headers["content-type"].startswith("application/json")
    return body["error"]


def test_malformed_json_is_400(gateway):
    r = requests.post(gateway.v1 + "/chat/completions", data=b'{"model": "test/fake-gpt", ',
                      headers={"Authorization": f"Bearer {gateway.api_key}", "Content-Type": "application/json"})
    assert r.status_code == 400
    err = error_body(r)
    assert err["type"] == "invalid_request_error" and "JSON" in err["message"]


@pytest.mark.parametrize("body, param", [
    ({"messages": MSG}, "model"),
    ({"model": "test/fake-gpt"}, "messages"),
    ({"model": "test/fake-gpt", "messages": []}, "messages"),
    ({"model": "test/fake-gpt", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "test/fake-gpt", "messages": MSG, "temperature": 9}, "temperature"),
    ({"model": "test/fake-gpt", "messages": MSG, "max_tokens": "lots"}, "max_tokens"),
    ({"model": "test/fake-gpt", "messages": MSG, "stream": "yes"}, "stream"),
    ({"model": "test/fake-gpt", "messages": MSG, "stream_options": {"include_usage": True}}, "stream_options"),
])
def test_invalid_fields_are_400_naming_the_param(gateway, fake_openai, body, param):
    before = len(fake_openai.requests)
    r = gateway.post("/v1/chat/completions", body)
    assert r.status_code == 400
    assert error_body(r)["param"] == param
    assert len(fake_openai.requests) == before  # nothing reached the upstream


def test_missing_and_bad_keys_are_401(gateway):
    with pytest.raises(openai.AuthenticationError) as e:
        gateway.sdk(key="gw-not-a-real-key").chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    r = requests.post(gateway.v1 + "/chat/completions", json={"model": "test/fake-gpt", "messages": MSG})
    assert r.status_code == 401 and error_body(r)["code"] == "missing_api_key"


def test_org_without_credits_gets_402_before_any_upstream_call(gateway, fake_openai):
    gateway.new_org("broke", usd=0)
    key = gateway.new_key("broke")
    before = len(fake_openai.requests)
    with pytest.raises(openai.APIStatusError) as e:
        gateway.sdk(key).chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert e.value.status_code == 402 and e.value.code == "insufficient_credits"
    validate(e.value.body and {"error": e.value.body}, "ErrorResponse")
    assert len(fake_openai.requests) == before


def test_read_key_gets_403_on_inference(gateway, fake_openai):
    key = gateway.new_key(scope="read")
    with pytest.raises(openai.PermissionDeniedError) as e:
        gateway.sdk(key).chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert e.value.status_code == 403
    assert gateway.sdk(key).models.list().data  # but it may read


def test_unknown_model_is_404_model_not_found(gateway):
    with pytest.raises(openai.NotFoundError) as e:
        gateway.sdk().chat.completions.create(model="nope/nothing", messages=MSG)
    assert e.value.code == "model_not_found" and e.value.param == "model"


def test_body_too_large_is_413(gateway_factory):
    gw = gateway_factory(max_body_bytes=2048)
    r = gw.post("/v1/chat/completions", {"model": "test/fake-gpt",
                                          "messages": [{"role": "user", "content": "x" * 5000}]})
    assert r.status_code == 413
    assert error_body(r)["type"] == "invalid_request_error"
    # a chunked body (no Content-Length) is held to the same limit
    chunked = iter([b'{"model": "test/fake-gpt", "messages": [{"role": "user", "content": "', b"x" * 5000, b'"}]}'])
    r = requests.post(gw.v1 + "/chat/completions", data=chunked,
                      headers={"Authorization": f"Bearer {gw.api_key}", "Content-Type": "application/json"})
    assert r.status_code == 413 and error_body(r)["code"] == "request_too_large"
    # and one under the limit is served
    small = iter([b'{"model": "test/fake-gpt", ', b'"messages": [{"role": "user", "content": "hi"}]}'])
    r = requests.post(gw.v1 + "/chat/completions", data=small,
                      headers={"Authorization": f"Bearer {gw.api_key}", "Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"


def test_upstream_429_is_429_with_retry_after_and_no_leak(gateway):
    with pytest.raises(openai.RateLimitError) as e:
        gateway.sdk().chat.completions.create(model="test/error-429", messages=MSG)
    assert e.value.status_code == 429
    assert e.value.response.headers.get("retry-after") == "1"
    assert LEAK_MARKER not in e.value.response.text


@pytest.mark.parametrize("model", ["test/error-503", "test/error-401"])
def test_upstream_failure_is_502_without_leaking(gateway, model):
    with pytest.raises(openai.APIStatusError) as e:
        gateway.sdk().chat.completions.create(model=model, messages=MSG)
    assert e.value.status_code == 502
    body = orjson.loads(e.value.response.content)
    validate(body, "ErrorResponse")
    assert LEAK_MARKER not in e.value.response.text and "sk-upstream-test" not in e.value.response.text


def test_upstream_400_message_is_passed_on_scrubbed(gateway):
    with pytest.raises(openai.BadRequestError) as e:
        gateway.sdk().chat.completions.create(model="test/error-400", messages=MSG)
    assert e.value.status_code == 400
    assert LEAK_MARKER not in e.value.response.text


def test_upstream_timeout_is_504(gateway_factory):
    gw = gateway_factory(upstream_idle_timeout=0.5)
    with pytest.raises(openai.APIStatusError) as e:
        gw.sdk().chat.completions.create(model="test/slow-3000", messages=MSG)
    assert e.value.status_code == 504 and e.value.type == "timeout_error"


def test_upstream_connection_reset_is_502(gateway):
    with pytest.raises(openai.APIStatusError) as e:
        gateway.sdk().chat.completions.create(model="test/reset", messages=MSG)
    assert e.value.status_code == 502


def test_fallback_chain_serves_when_the_first_route_fails(gateway):
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="test/error-500", messages=MSG)
    assert raw.parse().choices[0].message.content == "Hello from fake fake-gpt."
    row = gateway.rows(request_id=raw.headers["x-request-id"])[0]
    assert (row.model, row.upstream_model, row.attempts) == ("test/error-500", "fake-gpt", 2)
    # billed at the route used (test/cheap), benchmarked at the requested model's reference price
    assert row.charge_micros < row.benchmark_micros


def test_unknown_route_and_wrong_method_use_openai_shape(gateway):
    r = requests.get(gateway.v1 + "/nothing-here")
    assert r.status_code == 404 and error_body(r)["code"] == "not_found"
    r = requests.get(gateway.v1 + "/chat/completions")
    assert r.status_code == 405 and error_body(r)["code"] == "method_not_allowed"
    assert r.headers["Allow"] == "POST"
    r = requests.delete(gateway.url + "/v1/messages")
    assert r.status_code == 405 and r.json()["type"] == "error"  # Anthropic's shape on its route


def test_mid_stream_reset_ends_with_an_error_event(gateway):
    stream = gateway.sdk().chat.completions.create(model="test/reset", messages=MSG, stream=True)
    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            got.append(chunk)
    assert got and "ended the stream" in str(e.value.message)
    (row,) = wait_for(lambda: gateway.rows(stream=True))
    assert row.status == 502 and row.error_type == "api_error"


# ---- one mapping of upstream statuses, for every adapter ------------------------------------------

@pytest.mark.parametrize("upstream, status, retryable, kind", [
    (400, 400, False, "invalid_request_error"),  # the client's own request: its status, not retried
    (409, 400, False, "invalid_request_error"),
    (422, 400, False, "invalid_request_error"),
    (413, 413, False, "invalid_request_error"),
    (401, 502, True, "api_error"),  # our provider key: not the client's fault, another route may serve
    (403, 502, True, "api_error"),
    (404, 502, True, "api_error"),  # the route's upstream model is gone
    (408, 504, True, "timeout_error"),
    (429, 429, True, "rate_limit_error"),
    (500, 502, True, "api_error"),
    (503, 502, True, "api_error"),
    (529, 502, True, "api_error"),
])
def test_upstream_statuses_map_once(upstream, status, retryable, kind):
    e = errors.from_upstream_status(upstream, "their words", retry_after=2.0)
    assert (e.status, e.retryable, e.type) == (status, retryable, kind)
    # the provider's message reaches the client only when the request itself was at fault
    assert ("their words" in e.message) is (status in (400, 413))
    assert e.retry_after == (2.0 if upstream == 429 else None)
    assert e.anthropic_type == {413: "request_too_large", 429: "rate_limit_error"}.get(
        upstream, "timeout_error" if upstream == 408 else
        "invalid_request_error" if status == 400 else "api_error")
