"""Provider keys never leave through an error: a hostile upstream echoes its key (without the `sk-`
prefix, and in 12-character pieces) in a 400, and no piece of it reaches the client on chat,
messages or responses (stream or not), the ledger's error_message, the console's drill-down or logs."""

import logging

import anthropic
import openai
import pytest
import requests

from gateway import db, seed
from gateway.scrub import REDACTED, Scrubber
from tests.conftest import PRICES
from tests.fakes import FakeOpenAI, serve
from tests.test_console import login

LEAKY_KEY = "sk-proj-Qm7xT2vLp9RwZk4NcYb8HsJd3FgA6eU1"
MSG = [{"role": "user", "content": "hi"}]


def pieces(key: str, size: int = 8) -> list[str]:
    return [key[i:i + size] for i in range(len(key) - size + 1)]


def assert_clean(text: str, key: str = LEAKY_KEY) -> None:
    found = [p for p in pieces(key) if p in text]
    assert not found, f"key pieces leaked: {found[:3]} in {text[:300]!r}"


@pytest.fixture(scope="module")
def leaky_upstream():
    fake = FakeOpenAI(api_key=LEAKY_KEY)
    server, fake.url = serve(fake)
    yield fake
    server.stop()


@pytest.fixture
def gw(gateway, leaky_upstream):
    config = {"providers": [{"name": "leaky", "kind": "openai", "base_url": leaky_upstream.url,
                             "api_key": LEAKY_KEY, "allow_private": True}],
              "models": [{"slug": "leaky/echo-key", "routes": [
                  {"provider": "leaky", "upstream_model": "leak-key", **PRICES}]},
                         {"slug": "leaky/midstream", "routes": [
                  {"provider": "leaky", "upstream_model": "midstream-leak", **PRICES}]}]}
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, config, "test-secret")
    gateway.flush()
    return gateway


def test_scrubber_removes_whole_keys_stripped_prefixes_and_runs_of_eight():
    scrub = Scrubber()
    scrub.update([LEAKY_KEY, None, "AKIDEXAMPLE000001:wJalrXUtnFEMI/K7MDENG:FwoGZXIvYXdz"])
    for text in (f"key {LEAKY_KEY}.", f"key {LEAKY_KEY[3:]}!", f"starts {LEAKY_KEY[:12]} ends {LEAKY_KEY[-9:]}",
                 "secret wJalrXUtnFEMI/K7MDENG here"):
        out = scrub(text)
        assert REDACTED in out
        assert_clean(out)
        assert "wJalrXUt" not in out
    # words shared with a key (a test key like "sk-upstream-test") are not secrets
    scrub.update(["sk-upstream-test"])
    assert scrub("The upstream provider timed out.") == "The upstream provider timed out."
    assert "upstream-test" not in scrub("bad key upstream-test given")
    assert scrub("") == "" and scrub("short") == "short"


def test_openai_chat_errors_carry_no_piece_of_the_key(gw):
    sdk = gw.sdk()
    with pytest.raises(openai.BadRequestError) as e:
        sdk.chat.completions.create(model="leaky/echo-key", messages=MSG)
    assert e.value.status_code == 400 and "Invalid request" in e.value.message
    assert_clean(e.value.response.text)
    r = gw.post("/v1/chat/completions", {"model": "leaky/echo-key", "messages": MSG, "stream": True}, stream=True)
    assert_clean(r.content.decode())


def test_messages_errors_carry_no_piece_of_the_key(gw):
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="leaky/echo-key", max_tokens=20, messages=MSG)
    assert_clean(e.value.response.text)
    r = requests.post(gw.url + "/v1/messages", headers={"x-api-key": gw.api_key, "anthropic-version": "2023-06-01"},
                      json={"model": "leaky/echo-key", "max_tokens": 20, "messages": MSG, "stream": True})
    assert r.status_code == 400 or "error" in r.text
    assert_clean(r.text)


def test_responses_errors_carry_no_piece_of_the_key(gw):
    r = gw.post("/v1/responses", {"model": "leaky/echo-key", "input": "hi"})
    assert r.status_code == 400
    assert_clean(r.text)
    r = gw.post("/v1/responses", {"model": "leaky/echo-key", "input": "hi", "stream": True})
    assert "error" in r.text
    assert_clean(r.text)


def test_ledger_and_console_drill_down_carry_no_piece_of_the_key(gw):
    raw = gw.post("/v1/chat/completions", {"model": "leaky/echo-key", "messages": MSG})
    assert raw.status_code == 400
    rows = gw.rows(model="leaky/echo-key")
    assert rows and all(r.error_message and "Invalid request" in r.error_message for r in rows)
    for row in rows:
        assert_clean(row.error_message)
    s, _ = login(gw, gw.admin_email, gw.admin_password)
    page = s.get(gw.url + f"/admin/logs/{raw.headers['x-request-id']}")
    assert page.status_code == 200 and "Invalid request" in page.text
    assert_clean(page.text)


def test_log_records_carry_no_piece_of_the_key(gw, caplog):
    caplog.set_level(logging.INFO)
    log = logging.getLogger("gateway.providers.openai")
    log.warning("upstream said: %s", f"bad key {LEAKY_KEY[3:]}")
    try:
        raise ValueError(f"boom {LEAKY_KEY[-14:]}")
    except ValueError:
        log.exception("failed")
    assert "upstream said" in caplog.text and "boom" in caplog.text
    assert_clean(caplog.text)


def test_a_changed_key_is_scrubbed_from_the_next_request(gw, leaky_upstream):
    new_key = "sk-proj-Zz9yX8wV7uT6sR5qP4oN3mL2kJ1iH0gF"
    leaky_upstream.api_key = new_key
    try:
        config = {"providers": [{"name": "leaky", "kind": "openai", "base_url": leaky_upstream.url,
                                 "api_key": new_key, "allow_private": True}]}
        with db.write_lock, db.session_scope() as s:
            seed.apply(s, config, "test-secret")
        gw.flush()
        r = gw.post("/v1/chat/completions", {"model": "leaky/echo-key", "messages": MSG})
        assert r.status_code == 400
        assert_clean(r.text, new_key)
    finally:
        leaky_upstream.api_key = LEAKY_KEY


def test_a_mid_stream_error_echoing_the_key_is_not_passed_through(gw):
    """Pass-through (same dialect, bytes forwarded as they arrive) and translated streams alike."""
    for options in ({}, {"stream_options": {"include_usage": True}}):  # usage hidden from the client, or not
        r = gw.post("/v1/chat/completions", {"model": "leaky/midstream", "messages": MSG, "stream": True, **options})
        assert r.status_code == 200 and "Hello" in r.text and '"error"' in r.text  # the gateway's own error event
        assert_clean(r.text)
    r = requests.post(gw.url + "/v1/messages", headers={"x-api-key": gw.api_key, "anthropic-version": "2023-06-01"},
                      json={"model": "leaky/midstream", "max_tokens": 20, "messages": MSG, "stream": True})
    assert "error" in r.text
    assert_clean(r.text)
    r = gw.post("/v1/responses", {"model": "leaky/midstream", "input": "hi", "stream": True})
    assert "error" in r.text
    assert_clean(r.text)
    for row in gw.rows(model="leaky/midstream"):
        assert_clean(row.error_message or "")


def test_an_anthropic_mid_stream_error_keeps_its_type_and_loses_the_key(gateway, fake_anthropic):
    from tests.conftest import ANTHROPIC_UPSTREAM_KEY

    r = requests.post(gateway.url + "/v1/messages", json={
        "model": "anthropic-test/midstream-error", "max_tokens": 20, "messages": MSG, "stream": True},
        headers={"x-api-key": gateway.api_key, "anthropic-version": "2023-06-01"})
    assert "overloaded_error" in r.text and "Overloaded (key [redacted])" in r.text
    assert ANTHROPIC_UPSTREAM_KEY[3:] not in r.text and "upstream-test" not in r.text
