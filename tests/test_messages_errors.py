"""Every error on /v1/messages has Anthropic's shape, type and status; upstream bodies never leak."""

import anthropic
import pytest
import requests

from tests.conftest import wait_for
from tests.fakes import LEAK_MARKER

pytestmark = pytest.mark.usefixtures("fake_anthropic")
MSG = [{"role": "user", "content": "hi"}]
FAKE = "anthropic-test/claude-fake"
ANTHROPIC_ERROR_TYPES = {"invalid_request_error", "authentication_error", "billing_error", "permission_error",
                         "not_found_error", "request_too_large", "rate_limit_error", "api_error",
                         "overloaded_error", "timeout_error"}


def client(gateway, key=None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key or gateway.api_key, max_retries=0)


def error_of(r: requests.Response | dict) -> dict:
    """The `error` object of an Anthropic error body, after checking the envelope."""
    body = r if isinstance(r, dict) else r.json()
    if not isinstance(r, dict):
        assert r.headers["content-type"].startswith("application/json")
    assert body["type"] == "error" and set(body) <= {"type", "error", "request_id"}
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] in ANTHROPIC_ERROR_TYPES
    assert LEAK_MARKER not in body["error"]["message"]
    return body["error"]


def post(gateway, body, **headers) -> requests.Response:
    return requests.post(gateway.url + "/v1/messages", json=body,
                         headers={"x-api-key": gateway.api_key, "anthropic-version": "2023-06-01", **headers})


def test_missing_and_bad_keys_are_401_authentication_error(gateway):
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(gateway, key="gw-not-a-real-key").messages.create(model=FAKE, max_tokens=10, messages=MSG)
    assert error_of(e.value.body)["type"] == "authentication_error"
    r = requests.post(gateway.url + "/v1/messages", json={"model": FAKE, "messages": MSG})
    assert r.status_code == 401 and error_of(r)["type"] == "authentication_error"


def test_unknown_model_is_404_not_found_error(gateway):
    with pytest.raises(anthropic.NotFoundError) as e:
        client(gateway).messages.create(model="no/such-model", max_tokens=10, messages=MSG)
    err = error_of(e.value.body)
    assert err["type"] == "not_found_error" and "no/such-model" in err["message"]


@pytest.mark.parametrize("body, field", [
    ({"messages": MSG}, "model"),
    ({"model": FAKE}, "messages"),
    ({"model": FAKE, "messages": []}, "messages"),
    ({"model": FAKE, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": FAKE, "messages": [{"role": "user"}]}, "messages.0.content"),
    ({"model": FAKE, "messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"model": FAKE, "messages": MSG, "max_tokens": "lots"}, "max_tokens"),
    ({"model": FAKE, "messages": MSG, "temperature": 1.5}, "temperature"),
    ({"model": FAKE, "messages": MSG, "stream": "yes"}, "stream"),
    ({"model": FAKE, "messages": MSG, "stop_sequences": "END"}, "stop_sequences"),
])
def test_invalid_fields_are_400_naming_the_field(gateway, fake_anthropic, body, field):
    before = len(fake_anthropic.requests)
    r = post(gateway, body)
    assert r.status_code == 400
    err = error_of(r)
    assert err["type"] == "invalid_request_error" and err["message"].startswith(field + ":")
    assert len(fake_anthropic.requests) == before  # nothing reached the upstream


def test_malformed_json_and_unknown_path(gateway):
    r = requests.post(gateway.url + "/v1/messages", data=b'{"model": ',
                      headers={"x-api-key": gateway.api_key, "content-type": "application/json"})
    assert r.status_code == 400 and error_of(r)["type"] == "invalid_request_error"
    r = requests.post(gateway.url + "/v1/messages/nope", json={}, headers={"x-api-key": gateway.api_key})
    assert r.status_code == 404 and error_of(r)["type"] == "not_found_error"


def test_org_without_credits_gets_402_billing_error(gateway, fake_anthropic):
    gateway.new_org("broke", usd=0)
    before = len(fake_anthropic.requests)
    with pytest.raises(anthropic.APIStatusError) as e:
        client(gateway, key=gateway.new_key("broke")).messages.create(model=FAKE, max_tokens=10, messages=MSG)
    assert e.value.status_code == 402 and error_of(e.value.body)["type"] == "billing_error"
    assert len(fake_anthropic.requests) == before


def test_read_key_gets_403_permission_error(gateway):
    sdk = client(gateway, key=gateway.new_key(scope="read"))
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        sdk.messages.create(model=FAKE, max_tokens=10, messages=MSG)
    assert error_of(e.value.body)["type"] == "permission_error"


def test_upstream_429_is_a_rate_limit_error_with_retry_after(gateway):
    with pytest.raises(anthropic.RateLimitError) as e:
        client(gateway).messages.create(model="anthropic-test/error-429", max_tokens=10, messages=MSG)
    assert error_of(e.value.body)["type"] == "rate_limit_error"
    assert e.value.response.headers["retry-after"] == "1"


@pytest.mark.parametrize("model, status, kind", [
    ("anthropic-test/error-529", 502, "api_error"),
    ("anthropic-test/error-500", 502, "api_error"),
    ("anthropic-test/error-401", 502, "api_error"),  # our provider key is wrong: not the client's fault
    ("anthropic-test/error-400", 400, "invalid_request_error"),
    ("anthropic-test/error-413", 413, "request_too_large"),
])
def test_upstream_errors_are_mapped_and_scrubbed(gateway, model, status, kind):
    for stream in (False, True):
        r = post(gateway, {"model": model, "max_tokens": 10, "messages": MSG, "stream": stream})
        assert r.status_code == status
        assert error_of(r)["type"] == kind
    with pytest.raises(anthropic.APIStatusError) as e:
        client(gateway).messages.create(model=model, max_tokens=10, messages=MSG)
    assert e.value.status_code == status
    if status == 502:
        assert isinstance(e.value, anthropic.InternalServerError)
    rows = gateway.rows(requested_model=model)
    assert len(rows) == 3 and {(r.status, r.charge_micros) for r in rows} == {(status, 0)}


def test_overloaded_route_falls_through_to_the_next(gateway, fake_anthropic):
    message = client(gateway).messages.create(model="anthropic-test/overloaded-first", max_tokens=10,
                                              messages=MSG)
    assert message.content[0].text == "Hello from fake claude-fake."
    assert [r["body"]["model"] for r in fake_anthropic.requests[-2:]] == ["error-529", "claude-fake"]
    (row,) = wait_for(lambda: gateway.rows(requested_model="anthropic-test/overloaded-first"))
    assert (row.status, row.attempts, row.upstream_model) == (200, 2, "claude-fake")
